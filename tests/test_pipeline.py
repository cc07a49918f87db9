"""The input pipeline: worker threads change nothing but speed; bf16 keeps verdicts; fixed samples are capped."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_runs
from PIL import Image

from gate.engine import core as engine
from gate.errors import GateError
from gate.inputs import candidate as candidate_io
from gate.inputs.review_set import ReviewSet, Sample

ROOT = Path(__file__).resolve().parents[1]
PROBES = frozenset({"background", "sanity"})


def test_workers_give_the_same_records_as_the_calling_thread(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    runs = {w: engine.run([cand], small_set, engine.EngineOptions(batch_size=8, probes=PROBES, workers=w))[0]
            for w in (0, 2)}
    assert_same_runs(runs[0], runs[2])
    # A progress callback sees the batches in order, whatever the workers.
    seen: list[tuple[int, int]] = []
    options = engine.EngineOptions(batch_size=20, workers=3)
    engine.run([cand], small_set, options, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(20, 48), (40, 48), (48, 48)]


def _broken_copy(small_set: ReviewSet, root: Path, how: str) -> tuple[ReviewSet, Path]:
    """The small set copied, with one image (sample 29: in the fourth batch of 8) broken after opening."""
    shutil.copytree(small_set.root, root)
    copy = replace(small_set, root=root)
    path = root / copy.samples[29].image
    if how == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 8)
    else:  # a decompression bomb: 8000×7000 = 56 MP of 1-bit pixels, a small file
        Image.new("1", (8000, 7000)).save(path, format="PNG")
    return copy, path


@pytest.mark.parametrize("how", ["corrupt", "bomb"])
def test_an_error_in_a_worker_is_the_same_one_line_input_error(
    small_set: ReviewSet, untrained_checkpoint: Path, tmp_path: Path, how: str
) -> None:
    broken, path = _broken_copy(small_set, tmp_path / "set", how)
    cand = candidate_io.load(untrained_checkpoint)
    errors = {}
    for workers in (0, 2):
        with pytest.raises(GateError) as info:
            engine.run([cand], broken, engine.EngineOptions(batch_size=8, workers=workers))
        errors[workers] = info.value
    assert type(errors[0]) is type(errors[2]) and errors[2].exit_code == 2
    line = errors[2].one_line()
    assert line == errors[0].one_line() and line.startswith(str(path)) and "\n" not in line, line


def test_bf16_gives_fp32_records_within_tolerance(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    runs = {p: engine.run([cand], small_set, engine.EngineOptions(probes=PROBES, precision=p))[0]
            for p in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"].records, runs["bf16"].records
    assert fp32.probs.dtype == bf16.probs.dtype == np.float32  # scores stay float32 whatever the forwards
    # bf16 keeps 8 bits of mantissa: probabilities within 0.02, and the same predictions
    # (this untrained model's top two classes are never within bf16's rounding of each other here).
    assert 0 < np.abs(fp32.probs - bf16.probs).max() < 0.02  # > 0: the forwards did run in bf16
    np.testing.assert_array_equal(fp32.pred, bf16.pred)
    assert np.nanmax(np.abs(fp32.energy - bf16.energy)) < 0.05
    # The randomised copies run in bf16 too (their head hook scatters in the logits' dtype).
    assert fp32.sanity_similarity is not None and bf16.sanity_similarity is not None
    np.testing.assert_array_equal(np.isnan(fp32.sanity_similarity), np.isnan(bf16.sanity_similarity))
    # Per sample, bf16 rounding can swap near-tied ranks of a small map; the score is the mean.
    assert 0 < np.nanmax(np.abs(fp32.sanity_similarity - bf16.sanity_similarity)) < 0.25
    assert abs(np.nanmean(fp32.sanity_similarity) - np.nanmean(bf16.sanity_similarity)) < 0.01
    with pytest.raises(GateError, match="precision"):
        engine.run([cand], small_set, engine.EngineOptions(precision="fp16"))


@pytest.mark.slow
def test_bf16_keeps_the_verdicts_of_the_shipped_candidates() -> None:
    from gate.run import GateRequest, run_gate

    # Two of the shipped six (a minute on an idle machine for all six at both precisions): the model that
    # looks at the background and the one trained against it.
    candidates = (ROOT / "candidates" / "cheater.pt", ROOT / "candidates" / "bgmix.pt")
    results = {}
    for precision in ("fp32", "bf16"):
        request = GateRequest(command="select", candidates=candidates, policy=ROOT / "policies" / "default.yaml",
                              engine=engine.EngineOptions(device="cpu", precision=precision, workers=1))
        results[precision] = {c.candidate.name: c for c in run_gate(request).candidates}
    assert results["fp32"].keys() == results["bf16"].keys() and len(results["fp32"]) == len(candidates)
    for name, fp32 in results["fp32"].items():
        bf16 = results["bf16"][name]
        assert bf16.passed == fp32.passed, name
        assert [r.passed for r in bf16.rules] == [r.passed for r in fp32.rules], name
        for score, value in fp32.scores.items():
            # Stated tolerance: 0.03 absolute on every score (rates over 600 samples move by 1/600 per flip).
            assert bf16.scores[score] == pytest.approx(value, abs=0.03, nan_ok=True), (name, score)


def _labelled(labels: list[int]) -> ReviewSet:
    samples = tuple(Sample(sample_id=f"s{i:05d}", image="", mask="", label=label) for i, label in enumerate(labels))
    return ReviewSet(root=Path("."), name="t", version="1", description="", classes=tuple(map(str, range(1000))),
                     samples=samples, digest="sha256:0")


def test_fixed_samples_small_set_keep_every_class_prefix() -> None:
    # 3 classes, interleaved: the first two of each class (6 <= 48).
    review = _labelled([2, 0, 1, 0, 2, 1, 0, 2, 1])
    assert engine.fixed_ids(review, 2) == {"s00000", "s00004", "s00001", "s00003", "s00002", "s00005"}


def test_fixed_samples_are_capped_and_spread_over_the_classes() -> None:
    # 1000 classes × 2 samples (class c at rows c and 1000 + c): one sample of 48 evenly spread classes.
    review = _labelled(list(range(1000)) * 2)
    fixed = engine.fixed_ids(review, 2)
    assert fixed == {f"s{c * 1000 // 48:05d}" for c in range(48)}
    assert "s00000" in fixed and "s00979" in fixed  # classes 0 and 47 × 1000 // 48 = 979
    # 30 classes × 4: the first of all 30, then the second of 18 of them spread (i * 30 // 18).
    review = _labelled(list(range(30)) * 4)
    fixed = engine.fixed_ids(review, 2)
    second = {30 + i * 30 // 18 for i in range(18)}
    assert fixed == {f"s{r:05d}" for r in [*range(30), *second]} and len(fixed) == 48
    # Only the review set decides: a cap of 5 over 10 classes takes classes 0, 2, 4, 6, 8.
    assert engine.fixed_ids(_labelled(list(range(10))), 2, total=5) == {"s00000", "s00002", "s00004", "s00006",
                                                                     "s00008"}
