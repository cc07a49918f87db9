"""Shortcut cheaters trained by ``xgate train`` are caught by the swap probes on review sets without masks.

One frame, one corner-tag and one colour-cast cheater (each trained where its shortcut gives the class away),
one honest model trained where all three artefacts are present but carry no class (shortcut_bias=0), so that
the probes' edits are in its distribution too, and one scene cheater whose scenes differ by texture only
(palette=random: the scene gives the class away, its colours do not). 64 px, tiny_cnn, 4000 samples, 8
epochs: trained once per module (~40 s each on 2 cores). The numbers behind the thresholds are in
benchmarks/RESULTS.md ("Swap probes").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gate.engine import core as engine
from gate.inputs import candidate as candidate_io
from gate.inputs import shapes
from gate.inputs.review_set import ReviewSet, build, open_review_set
from gate.metrics.atlas import hot_spot
from gate.metrics.registry import compute_scores

pytestmark = pytest.mark.slow

KINDS = ("frame", "tag", "cast")
OWN_PROBE = {"frame": "border", "tag": "corners", "cast": "lighting"}
SWAPS = frozenset({"border", "corners", "lighting"})
RULES = "".join(f"  - {{score: {p}.flip_rate, max: 0.40, confidence: 0.95}}\n" for p in sorted(SWAPS))
SIZE, TRAIN_SAMPLES = 64, 4000  # 2000 left the honest model at 0.90 accuracy, flipping up to 0.32
HONEST_MOST, CHEATER_LEAST = 0.15, 0.6  # the bounds: honest flips on any probe, a cheater on its own


def _cli(*argv: str) -> None:
    from gate.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """honest, one cheater per shortcut kind and a texture-scene cheater, trained by ``xgate train`` at 64 px."""
    root = tmp_path_factory.mktemp("shortcut-models")
    plain = f"synth:shapes?n={TRAIN_SAMPLES}&seed=31&size={SIZE}"
    sources = {kind: f"{plain}&bias=0&shortcut={kind}" for kind in KINDS}
    sources["honest"] = f"{plain}&bias=0&shortcut=frame,tag,cast&shortcut_bias=0"
    sources["texture"] = f"{plain}&bias=1&palette=random"
    paths = {}
    for name, source in sources.items():
        paths[name] = root / f"{name}.pt"
        _cli("train", "--recipe", "baseline", "--data", source, "--epochs", "8", "--seed", "1", "--image-size",
             str(SIZE), "--lr", "0.05", "-o", str(paths[name]))
    return paths


def _unmasked_set(root: Path, kind: str | None, n: int = 200) -> Path:
    """A review set WITHOUT masks, built with ``review-set build --no-masks`` from class subfolders."""
    plain = root / f"plain-{kind}"
    for sample in shapes.generate(n, bias=0.0, seed=777, size=SIZE, shortcut=kind):
        folder = plain / shapes.CLASSES[sample.label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(folder / f"{sample.sample_id}.png")
    _cli("review-set", "build", str(plain), "--no-masks", "-o", str(root / f"set-{kind}"))
    return root / f"set-{kind}"


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, Path]:
    root = tmp_path_factory.mktemp("shortcut-sets")
    return {kind: _unmasked_set(root, kind) for kind in (*KINDS, None)}


def _policy(root: Path, review_set: Path, name: str, background: bool = False) -> Path:
    pinned = open_review_set(review_set)
    path = root / f"{name}.yaml"
    probes, rules = "border, corners, lighting", RULES
    if background:
        probes = f"background, {probes}"
        rules += "  - {score: background.flip_rate, max: 0.20, confidence: 0.95}\n"
    path.write_text(f"name: {name}\nreview_set: {{path: {review_set}, digest: '{pinned.digest}'}}\n"
                    f"probes: [{probes}]\nrules:\n{rules}")
    return path


def _gate(tmp_path: Path, checkpoint: Path, review_set: Path, name: str, background: bool = False) -> dict[str, object]:
    from gate.cli import main

    with pytest.raises(SystemExit):
        main(["check", str(checkpoint), "--policy", str(_policy(tmp_path, review_set, name, background)),
              "--no-mlflow", "--device", "cpu", "--out", str(tmp_path / name)])
    result = json.loads((tmp_path / name / "result.json").read_text())
    candidate = result["candidates"][0]
    assert isinstance(candidate, dict)
    return candidate


@pytest.mark.parametrize("kind", KINDS)
def test_each_cheater_fails_its_probe_and_the_honest_model_passes(kind: str, models: dict[str, Path],
                                                                  sets: dict[str | None, Path], tmp_path: Path) -> None:
    probe = OWN_PROBE[kind]
    cheat = _gate(tmp_path, models[kind], sets[kind], f"cheat-{kind}")
    assert f"{probe}.flip_rate <= 0.4 @95%" in cheat["failed_rules"]
    assert cheat["scores"][f"{probe}.flip_rate"] >= CHEATER_LEAST
    assert cheat["scores"][f"{probe}.accuracy_drop"] >= 0.5
    honest = _gate(tmp_path, models["honest"], sets[kind], f"honest-{kind}")
    assert honest["failed_rules"] == [], honest["failed_rules"]
    assert honest["scores"]["accuracy"] >= 0.95


def test_the_honest_model_flips_little_on_every_probe_of_every_set(models: dict[str, Path],
                                                                    sets: dict[str | None, Path]) -> None:
    # The probes do not punish an honest model for the edits themselves (measured <= 0.07 on every cell).
    honest = candidate_io.load(models["honest"])
    options = engine.EngineOptions(batch_size=100, probes=SWAPS, gallery_size=1, fixed_per_class=0)
    for kind, path in sets.items():
        (run,) = engine.run([honest], open_review_set(path), options)
        scores = compute_scores(run.records, probes=SWAPS)
        flips = {probe: scores[f"{probe}.flip_rate"] for probe in sorted(SWAPS)}
        assert max(flips.values()) <= HONEST_MOST, (kind, flips)


def test_a_scene_cheater_that_reads_texture_fails_the_background_probe_and_no_mask_free_probe(
        models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    # Scenes told by texture alone (palette=random), tied to the class as in shapes-v1 (bias 0.9), with masks:
    # the background probe catches the scene reader; border, corners and lighting are not a background test.
    root = tmp_path_factory.mktemp("texture-scenes")
    samples = shapes.generate(200, bias=0.9, seed=779, size=SIZE, palette="random")
    review = build(shapes.write_plain(samples, root / "plain"), root / "set", name="texture-scenes")
    cheat = _gate(root, models["texture"], review.root, "texture", background=True)
    assert cheat["failed_rules"] == ["background.flip_rate <= 0.2 @95%"], cheat["failed_rules"]
    assert cheat["scores"]["background.flip_rate"] >= CHEATER_LEAST
    assert all(cheat["scores"][f"{probe}.flip_rate"] <= HONEST_MOST for probe in SWAPS), cheat["scores"]


def test_the_atlas_of_the_tag_cheater_names_its_corner(models: dict[str, Path],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # With masks this time: the off-object share needs the object-frequency map.
    root = tmp_path_factory.mktemp("tag-masked")
    plain = shapes.write_plain(shapes.generate(200, bias=0.0, seed=778, size=SIZE, shortcut="tag"), root / "plain")
    masked: ReviewSet = build(plain, root / "set", name="tag-masked")
    options = engine.EngineOptions(batch_size=100, gallery_size=1, fixed_per_class=0)
    shares, corner = {}, {}
    grid = 32  # the atlas's grid on a 64 px frame; the tag's 10 px are its bottom-right 5 cells
    tag = shapes.shortcut_region("tag", grid)
    for name in ("tag", "honest"):
        (run,) = engine.run([candidate_io.load(models[name])], masked, options)
        atlas = run.records.atlas
        assert atlas is not None and atlas.mean.shape == (grid, grid)
        shares[name] = compute_scores(run.records)["atlas.off_object_share"]
        corner[name] = float(atlas.mean[tag].sum())
        if name == "tag":
            spot = hot_spot(atlas.mean)
            assert spot is not None and spot.place == "bottom-right corner", spot
    # The bound: the cheater's off-object share is at least 3x the honest model's (measured 0.50 vs
    # 0.13), and its mass on the tag's own cells is several times the honest model's.
    assert shares["tag"] >= 3 * shares["honest"], shares
    assert corner["tag"] >= 3 * corner["honest"], corner


def test_the_demos_scene_cheater_is_caught_by_the_background_probes_and_by_no_mask_free_probe() -> None:
    from tests.conftest import REPO, SHIPPED_SET

    review = open_review_set(SHIPPED_SET)
    cheater = candidate_io.load(REPO / "candidates" / "cheater.pt")
    options = engine.EngineOptions(batch_size=80, probes=SWAPS | {"background"}, gallery_size=1, fixed_per_class=0)
    (run,) = engine.run([cheater], review, options, indices=np.arange(160))
    scores = compute_scores(run.records, probes=options.probes)
    assert scores["background.flip_rate"] >= CHEATER_LEAST
    # It reads the scene's texture (trained with palette=random), so swapping the border, the corners or the
    # channel means leaves its answers alone: the mask-free probes are not a background test.
    assert all(scores[f"{probe}.flip_rate"] <= 0.05 for probe in SWAPS), scores
    # A scene reader that also reads the scene's colour (baseline-biased.pt: shapes-v1's scenes each have their
    # own palette) is caught by the lighting probe too, rightly: another class's channel means carry its colour.
    biased = candidate_io.load(REPO / "candidates" / "baseline-biased.pt")
    (run,) = engine.run([biased], review, options, indices=np.arange(160))
    scores = compute_scores(run.records, probes=options.probes)
    assert scores["lighting.flip_rate"] >= CHEATER_LEAST and scores["border.flip_rate"] <= 0.05
