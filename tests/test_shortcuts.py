"""Shortcut cheaters trained by ``xgate train`` are caught by the swap probes on review sets without masks.

One frame, one corner-tag and one colour-cast cheater (each trained where its shortcut gives the class away),
and one honest model trained where all three artefacts are present but carry no class (shortcut_bias=0), so
that the probes' edits are in its distribution too. 32 px, tiny_cnn, 1000 samples, 8 epochs: trained once per
module. The numbers behind the thresholds are in benchmarks/RESULTS.md.
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


def _cli(*argv: str) -> None:
    from gate.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """honest + one cheater per shortcut kind, trained by ``xgate train`` at 32 px."""
    root = tmp_path_factory.mktemp("shortcut-models")
    sources = {kind: f"synth:shapes?bias=0&n=1000&seed=31&size=32&shortcut={kind}" for kind in KINDS}
    sources["honest"] = "synth:shapes?bias=0&n=1000&seed=31&size=32&shortcut=frame,tag,cast&shortcut_bias=0"
    paths = {}
    for name, source in sources.items():
        paths[name] = root / f"{name}.pt"
        _cli("train", "--recipe", "baseline", "--data", source, "--epochs", "8", "--seed", "1", "--image-size", "32",
             "--lr", "0.05", "-o", str(paths[name]))
    return paths


def _unmasked_set(root: Path, kind: str | None, n: int = 200) -> Path:
    """A review set WITHOUT masks, built with ``review-set build --no-masks`` from class subfolders."""
    plain = root / f"plain-{kind}"
    for sample in shapes.generate(n, bias=0.0, seed=777, size=32, shortcut=kind):
        folder = plain / shapes.CLASSES[sample.label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(folder / f"{sample.sample_id}.png")
    _cli("review-set", "build", str(plain), "--no-masks", "-o", str(root / f"set-{kind}"))
    return root / f"set-{kind}"


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shortcut-sets")
    return {kind: _unmasked_set(root, kind) for kind in KINDS}


def _policy(root: Path, review_set: Path, name: str) -> Path:
    pinned = open_review_set(review_set)
    path = root / f"{name}.yaml"
    path.write_text(f"name: {name}\nreview_set: {{path: {review_set}, digest: '{pinned.digest}'}}\n"
                    f"probes: [border, corners, lighting]\nrules:\n{RULES}")
    return path


def _gate(tmp_path: Path, checkpoint: Path, review_set: Path, name: str) -> dict[str, object]:
    from gate.cli import main

    with pytest.raises(SystemExit):
        main(["check", str(checkpoint), "--policy", str(_policy(tmp_path, review_set, name)), "--no-mlflow",
              "--device", "cpu", "--out", str(tmp_path / name)])
    result = json.loads((tmp_path / name / "result.json").read_text())
    candidate = result["candidates"][0]
    assert isinstance(candidate, dict)
    return candidate


@pytest.mark.parametrize("kind", KINDS)
def test_each_cheater_fails_its_probe_and_the_honest_model_passes(kind: str, models: dict[str, Path],
                                                                  sets: dict[str, Path], tmp_path: Path) -> None:
    probe = OWN_PROBE[kind]
    cheat = _gate(tmp_path, models[kind], sets[kind], f"cheat-{kind}")
    assert f"{probe}.flip_rate <= 0.4 @95%" in cheat["failed_rules"]
    assert cheat["scores"][f"{probe}.flip_rate"] >= 0.6
    assert cheat["scores"][f"{probe}.accuracy_drop"] >= 0.5
    honest = _gate(tmp_path, models["honest"], sets[kind], f"honest-{kind}")
    assert honest["failed_rules"] == [], honest["failed_rules"]
    assert honest["scores"][f"{probe}.flip_rate"] <= 0.35


def test_the_atlas_of_the_tag_cheater_names_its_corner(models: dict[str, Path],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # With masks this time: the off-object share needs the object-frequency map.
    root = tmp_path_factory.mktemp("tag-masked")
    plain = shapes.write_plain(shapes.generate(120, bias=0.0, seed=778, size=32, shortcut="tag"), root / "plain")
    masked: ReviewSet = build(plain, root / "set", name="tag-masked")
    options = engine.EngineOptions(batch_size=64, gallery_size=1, fixed_per_class=0)
    shares, corner = {}, {}
    tag = shapes.shortcut_region("tag", 32)
    for name in ("tag", "honest"):
        (run,) = engine.run([candidate_io.load(models[name])], masked, options)
        atlas = run.records.atlas
        assert atlas is not None and atlas.mean.shape == (32, 32)
        shares[name] = compute_scores(run.records)["atlas.off_object_share"]
        corner[name] = float(atlas.mean[tag].sum())
        if name == "tag":
            spot = hot_spot(atlas.mean)
            assert spot is not None and spot.place == "bottom-right corner", spot
    # The atlas puts >= 3x the honest model's mass on the tag (measured 0.084 vs 0.018 on 400 samples), but
    # the off-object share only ~1.3x: tiny_cnn's maps are blurry, and the ring where objects never are is
    # ~30% of the frame, which any spread-out map covers (benchmarks/RESULTS.md, "Swap probes").
    assert corner["tag"] >= 3 * corner["honest"], corner
    assert shares["tag"] > shares["honest"], shares


def test_the_scene_cheater_is_caught_by_the_background_probes_not_by_border_or_corners() -> None:
    from tests.conftest import REPO, SHIPPED_SET

    review = open_review_set(SHIPPED_SET)
    cheater = candidate_io.load(REPO / "candidates" / "cheater.pt")
    options = engine.EngineOptions(batch_size=80, probes=SWAPS | {"background"}, gallery_size=1, fixed_per_class=0)
    (run,) = engine.run([cheater], review, options, indices=np.arange(160))
    scores = compute_scores(run.records, probes=options.probes)
    assert scores["background.flip_rate"] >= 0.6
    assert scores["border.flip_rate"] <= 0.1 and scores["corners.flip_rate"] <= 0.1
    # Its scenes differ by palette: another class's channel means carry the scene's colour, so the lighting
    # probe does catch it (the scene and a colour cast are one cue on this data); see README, "Shortcut probes".
    assert scores["lighting.flip_rate"] >= 0.6
