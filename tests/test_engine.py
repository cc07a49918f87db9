"""The engine: one forward per batch, one more per probe variant, bounded memory, bad outputs refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import without_masks, write_rows
from torch import nn

from gate.engine import core as engine
from gate.engine import model_state, sanity
from gate.errors import ModelOutputError, UsageError
from gate.inputs import candidate as candidate_io
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet
from gate.metrics.registry import compute_scores
from gate.records import PROBE_VARIANTS, Records


class CountingNet(nn.Module):
    """tiny_cnn-like model that counts its forward calls (per instance: copies count apart)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy):  # torch.fx tracing (the sanity copies' split) computes nothing
            self.calls += 1
        return self.inner(x)


def _counting(checkpoint: Path) -> tuple[candidate_io.Candidate, CountingNet]:
    loaded = candidate_io.load(checkpoint)
    net = CountingNet(loaded.model)
    return replace(loaded, model=net, target_layer="inner.features"), net


@pytest.mark.parametrize(
    ("enabled", "per_batch"),
    [(frozenset(), 1), (frozenset({"background"}), 1 + len(PROBE_VARIANTS)), (frozenset({"sanity"}), 1)],
    ids=["plain", "background", "sanity"],
)
def test_forward_calls_per_batch(small_set: ReviewSet, untrained_checkpoint: Path, enabled: frozenset[str],
                                 per_batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cand, net = _counting(untrained_checkpoint)
    copies: list[CountingNet] = []
    blocks: list[int] = []
    real_copy = sanity.randomized_copy

    def counting_copy(model: nn.Module, layer: str, seed: int = 0) -> nn.Module:
        copy = real_copy(model, layer, seed)
        assert isinstance(copy, CountingNet)
        copy.calls = 0
        copies.append(copy)
        block = len(blocks)
        blocks.append(0)
        # the copy's top block (re-initialised), counted apart from the copy's whole forward
        copy.inner.features[12].register_forward_pre_hook(lambda *_: blocks.__setitem__(block, blocks[block] + 1))
        return copy

    monkeypatch.setattr(sanity, "randomized_copy", counting_copy)
    options = engine.EngineOptions(batch_size=16, probes=enabled)
    (result,) = engine.run([cand], small_set, options)
    batches = -(-small_set.size // 16)
    assert net.calls == batches * per_batch
    if "sanity" in enabled:
        assert len(copies) == sanity.SANITY_COPIES
        # Each copy runs its top block and head once per batch, from the activation the model's forward kept,
        # never its whole forward (gate.engine.trunk); but once per gate the first copy runs both, to check
        # that its tail computes what its forward does.
        assert blocks == [batches + 2] + [batches] * (sanity.SANITY_COPIES - 1)
        assert [copy.calls for copy in copies] == [1] + [0] * (sanity.SANITY_COPIES - 1)
        assert result.records.sanity_similarity is not None
    else:
        assert not copies


def test_candidates_share_decoded_batches(small_set: ReviewSet, untrained_checkpoint: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []
    original = ReviewSet.load_image

    def counting_load(self: ReviewSet, index: int) -> np.ndarray:
        loads.append(index)
        return original(self, index)

    monkeypatch.setattr(ReviewSet, "load_image", counting_load)
    cand = candidate_io.load(untrained_checkpoint)
    resized = replace(cand, input=replace(cand.input, size=(24, 24), resize=28, interpolation="bicubic"))
    engine.run([cand, cand, resized], small_set, engine.EngineOptions(batch_size=16))
    # Each sample decoded once for all three models, also the one with its own preprocessing.
    assert sorted(loads) == list(range(small_set.size))


def test_batch_size_does_not_change_records(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    options = {"probes": frozenset({"background"}), "seed": 3}
    (one,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=1, **options))
    (many,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=48, **options))
    np.testing.assert_allclose(one.records.probs, many.records.probs, atol=1e-5)
    np.testing.assert_allclose(one.records.energy, many.records.energy, atol=1e-5)
    for variant in PROBE_VARIANTS:
        np.testing.assert_array_equal(one.records.probe_preds[variant], many.records.probe_preds[variant])
    assert one.records.ids == tuple(s.sample_id for s in small_set.samples)


def test_pairings_are_seeded_and_recorded(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    runs = [engine.run([cand], small_set, engine.EngineOptions(probes=frozenset({"background"}), seed=s))[0]
            for s in (7, 7, 8)]
    same = runs[0].records.pairings["mixed_rand"]
    np.testing.assert_array_equal(same, runs[1].records.pairings["mixed_rand"])
    assert not np.array_equal(same, runs[2].records.pairings["mixed_rand"])
    labels = small_set.labels()
    assert (labels[same] != labels).all()
    assert (labels[runs[0].records.pairings["mixed_same"]] == labels).all()


def test_gallery_is_bounded_and_consistent(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    (result,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=8, gallery_size=3,
                                                                   fixed_per_class=1))
    records, gallery = result.records, result.gallery
    fixed = {next(s.sample_id for s in small_set.samples if s.label == k) for k in range(4)}
    assert len(gallery.borderline) == 3
    assert len(gallery.easy) + len(gallery.failures) >= 3
    shown = set(gallery.easy) | set(gallery.borderline) | set(gallery.failures) | set(gallery.wrong_reason)
    assert set(records.kept) == shown | fixed
    # Right for the wrong reason: only right answers whose lift is below 1, the lowest lift first.
    lift = dict(zip(records.ids, records.lift, strict=True))
    assert all(correct_of(records, i) and lift[i] < 1 for i in gallery.wrong_reason)
    assert [lift[i] for i in gallery.wrong_reason] == sorted(lift[i] for i in gallery.wrong_reason)
    eligible = sorted(lift[i] for i in records.ids if correct_of(records, i) and lift[i] < 1)
    assert [lift[i] for i in gallery.wrong_reason] == eligible[:3]
    confidence = dict(zip(records.ids, records.confidence, strict=True))
    correct = dict(zip(records.ids, records.correct, strict=True))
    wrong_conf = sorted((confidence[i] for i in records.ids if not correct[i]), reverse=True)
    assert [confidence[i] for i in gallery.failures] == pytest.approx(wrong_conf[: len(gallery.failures)])
    kept = records.kept[gallery.borderline[0]]
    assert kept.image.shape == (32, 32, 3) and kept.image.dtype == np.uint8
    assert kept.cam.shape == (32, 32) and kept.mask.dtype == bool


def test_nan_outputs_are_an_input_error_naming_the_candidate(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    with torch.no_grad():
        cand.model.fc.bias.fill_(float("nan"))  # type: ignore[union-attr]
    with pytest.raises(ModelOutputError) as info:
        engine.run([cand], small_set)
    assert info.value.exit_code == 2
    assert str(untrained_checkpoint) in info.value.one_line() and "logits" in info.value.one_line()


def test_cuda_without_a_gpu_is_a_usage_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="no CUDA device"):
        engine.resolve_device("cuda")
    assert engine.resolve_device("auto").type == "cpu"


def _edge_explainer(model: nn.Module, layer: str, inputs: torch.Tensor, target: Any = None, layout: Any = None) -> Any:
    """An 'explainer' that ignores the model: image edges, the classic failed sanity check."""
    from gate.engine.gradcam import Explained

    with torch.no_grad():
        logits = model(inputs)
    gray = inputs.mean(1)
    edges = (gray[:, 1:, 1:] - gray[:, :-1, 1:]).abs() + (gray[:, 1:, 1:] - gray[:, 1:, :-1]).abs()
    chosen = logits.argmax(1) if target is None else target
    return Explained(logits=logits, cam=edges, target=chosen)


@pytest.mark.slow
def test_sanity_separates_a_trained_model_from_a_model_blind_explainer(
    honest_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate.inputs.review_set import open_review_set
    from tests.conftest import SHIPPED_SET

    review = open_review_set(SHIPPED_SET)
    subset = np.arange(0, review.size, 5)
    options = engine.EngineOptions(probes=frozenset({"sanity"}))
    cand = candidate_io.load(honest_checkpoint)
    (real,) = engine.run([cand], review, options, indices=subset)
    monkeypatch.setattr(model_state, "explain", _edge_explainer)
    monkeypatch.setattr(sanity, "explain", _edge_explainer)  # the copies' maps: edges of the same images
    # The whole-forward copies: with the shared trunk a copy's explainer is handed the kept activation, not the
    # images, and an explainer blind to the model is the point here.
    (blind,) = engine.run([cand], review, replace(options, shared_trunk=False), indices=subset)
    real_score = compute_scores(real.records, {"sanity"})["sanity.randomization_similarity"]
    blind_score = compute_scores(blind.records, {"sanity"})["sanity.randomization_similarity"]
    assert real_score < 0.5  # the trained model's maps change when its top is randomised
    assert blind_score > 0.99  # edges do not depend on the model: the strict policy (max 0.5) fails it


def _trained_32(tmp_path: Path) -> candidate_io.Candidate:
    from tests.conftest import save_tiny, train_tiny

    return candidate_io.load(save_tiny(train_tiny(0.9, seed=4, n=300, epochs=2, size=32), tmp_path / "t.pt", size=32))


def test_shards_merged_equal_one_run(tmp_path: Path, small_set: ReviewSet) -> None:
    """What torchrun does: each rank runs a block of rows; the joined runs equal a single-process run."""
    cand = _trained_32(tmp_path)
    options = engine.EngineOptions(batch_size=8, probes=frozenset({"background", "sanity"}), seed=5, gallery_size=3)
    (whole,) = engine.run([cand], small_set, options)
    blocks = np.array_split(np.arange(small_set.size), 3)
    parts = [engine.run([cand], small_set, options, indices=block)[0] for block in blocks]
    merged = engine.merge_runs(parts, small_set, options)
    a, b = whole.records, merged.records
    assert a.ids == b.ids
    for column in ("labels", "probs", "energy", "mask_area", "pointing_hit", "rank_accuracy", "sanity_similarity"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)
    for variant in PROBE_VARIANTS:
        np.testing.assert_array_equal(a.probe_preds[variant], b.probe_preds[variant])
    assert set(a.pairings) == set(b.pairings) == {"mixed_same", "mixed_rand"}
    for variant in a.pairings:
        np.testing.assert_array_equal(a.pairings[variant], b.pairings[variant])
    assert compute_scores(a, frozenset({"background", "sanity"})) == compute_scores(b, frozenset({"background",
                                                                                                  "sanity"}))
    assert merged.gallery == whole.gallery
    assert set(b.kept) == set(a.kept)
    np.testing.assert_array_equal(b.kept[whole.gallery.borderline[0]].cam, a.kept[whole.gallery.borderline[0]].cam)


def test_gallery_ties_go_to_the_earlier_sample_whatever_the_batch_size(small_set: ReviewSet,
                                                                        untrained_checkpoint: Path) -> None:
    # An untrained model gives near-identical outputs: many equal keys. The choice must not depend on batching.
    cand = candidate_io.load(untrained_checkpoint)
    galleries = {engine.run([cand], small_set, engine.EngineOptions(batch_size=size, gallery_size=4))[0].gallery
                 for size in (1, 5, 48)}
    assert len(galleries) == 1
    (gallery,) = galleries
    assert gallery == engine.select_gallery(engine.run([cand], small_set, engine.EngineOptions())[0].records, 4)


def correct_of(records: Records, sample_id: str) -> bool:
    return bool(records.correct[records.ids.index(sample_id)])


def test_select_gallery_borderline_cut_off_and_right_for_the_wrong_reason() -> None:
    from gate.records import Records

    # margins 0.8, 0.2, 0.44, 0.6 and 0.1; lifts 0.5, 2.0, 0.9, 0.2 (a wrong answer), and no mask.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.72, 0.28], [0.2, 0.8], [0.45, 0.55]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1])
    energy = np.array([0.1, 0.4, 0.18, 0.04, np.nan])
    area = np.array([0.2, 0.2, 0.2, 0.2, np.nan])
    records = Records(classes=("x", "y"), ids=("a", "b", "c", "d", "e"), labels=labels, probs=probs, energy=energy,
                      mask_area=area, pointing_hit=np.full(5, np.nan), rank_accuracy=np.full(5, np.nan))
    gallery = engine.select_gallery(records, 3)
    assert gallery.borderline == ("e", "b", "c")  # 0.1, 0.2, 0.44; a (0.8) and d (0.6) lead by 0.5 or more
    assert gallery.wrong_reason == ("a", "c")  # right with lift 0.5 and 0.9; d is wrong, b has lift 2, e no mask


def test_select_gallery_hand_case() -> None:
    from gate.records import Records

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1])
    nan = np.full(5, np.nan)
    records = Records(classes=("x", "y"), ids=("a", "b", "c", "d", "e"), labels=labels, probs=probs, energy=nan,
                      mask_area=nan, pointing_hit=nan, rank_accuracy=nan)
    gallery = engine.select_gallery(records, 2)
    assert gallery.easy == ("a", "c")  # 0.9 ties: the earlier first; b (0.6) and e (0.7) lose
    assert gallery.failures == ("d",)  # the only wrong answer
    assert gallery.borderline == ("b", "e")  # margins 0.2 and 0.4 (smallest first)


def test_more_shards_than_samples_still_merge(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    # torchrun with more ranks than samples: the last ranks get empty blocks.
    cand = candidate_io.load(untrained_checkpoint)
    options = engine.EngineOptions(probes=frozenset({"background", "sanity"}), gallery_size=2)
    (whole,) = engine.run([cand], small_set, options)
    blocks = np.array_split(np.arange(small_set.size), small_set.size + 3)
    parts = [engine.run([cand], small_set, options, indices=block)[0] for block in blocks]
    assert [p.records.size for p in parts[-3:]] == [0, 0, 0]
    assert parts[-1].records.probs.shape == (0, 4) and parts[-1].gallery == engine.select_gallery(parts[-1].records, 2)
    merged = engine.merge_runs(parts, small_set, options)
    assert merged.records.ids == whole.records.ids and merged.gallery == whole.gallery
    np.testing.assert_allclose(merged.records.probs, whole.records.probs, atol=1e-6)
    assert set(merged.records.probe_preds) == set(PROBE_VARIANTS)


OUTPUTS = ("x0", "circle", "x1", "cross", "square", "triangle")  # the shapes classes among six outputs


def _six_output_candidate(small_set: ReviewSet) -> tuple[candidate_io.Candidate, np.ndarray]:
    """A tiny_cnn with six outputs, two outside the review set, biased so that about half its answers are x0."""
    from gate.inputs import archs

    torch.manual_seed(11)
    model = archs.tiny_cnn(len(OUTPUTS), width=12).eval()
    images = torch.stack([torch.from_numpy(small_set.load_image(i)).permute(2, 0, 1) for i in range(small_set.size)])
    x = (images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        logits = model(x)
        gaps = (logits[:, 1:].max(1).values - logits[:, 0]).sort().values
        half = len(gaps) // 2  # halfway between two samples' gaps: no sample sits on a tie
        model.fc.bias[0] += (gaps[half - 1] + gaps[half]) / 2  # type: ignore[index, union-attr]
        full = torch.softmax(model(x).double(), 1).numpy()
    spec = InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    cand = candidate_io.Candidate(path="six.pt", sha256="", arch="tiny_cnn", model=model, classes=OUTPUTS,
                                  input=spec, target_layer="features")
    return cand, full


def test_a_review_set_of_some_of_the_model_classes(small_set: ReviewSet) -> None:
    from torchmetrics.classification import MulticlassCalibrationError

    cand, full = _six_output_candidate(small_set)
    (model_run,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=16, gallery_size=4))
    records = model_run.records
    columns = [OUTPUTS.index(name) for name in small_set.classes]
    np.testing.assert_allclose(records.probs, full[:, columns], atol=1e-6)
    to_review = {c: i for i, c in enumerate(columns)}
    expected_preds = np.array([to_review.get(int(k), -1) for k in full.argmax(1)])
    np.testing.assert_array_equal(records.preds, expected_preds)
    assert (expected_preds == -1).sum() >= 10 and (expected_preds >= 0).sum() >= 10
    np.testing.assert_allclose(records.confidence, full.max(1), atol=1e-6)
    labels = small_set.labels()
    model_labels = np.array(columns)[labels]
    scores = compute_scores(records)
    assert scores["accuracy"] == pytest.approx(float((full.argmax(1) == model_labels).mean()))
    onehot = np.eye(len(OUTPUTS))[model_labels]
    assert scores["brier"] == pytest.approx(float(((full - onehot) ** 2).sum(1).mean()), abs=1e-6)
    assert scores["nll"] == pytest.approx(float(-np.log(full[np.arange(len(labels)), model_labels]).mean()), abs=1e-6)
    ece = MulticlassCalibrationError(num_classes=len(OUTPUTS), n_bins=15, norm="l1")
    reference = float(ece(torch.from_numpy(full).float(), torch.from_numpy(model_labels)))
    assert scores["ece"] == pytest.approx(reference, abs=1e-6)
    assert {k.split(".", 1)[1] for k in scores if k.startswith("class_accuracy.")} == set(small_set.classes)
    outside = [s for s in records.kept.values() if s.pred == -1]
    assert outside and all(s.pred_name in ("x0", "x1") for s in outside)


class Faulty(nn.Module):
    """Wraps a 4-class model and breaks its output in one way."""

    def __init__(self, inner: nn.Module, fault: str) -> None:
        super().__init__()
        self.inner = inner
        self.fault = fault

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        faults = {
            "narrow": lambda: out[:, :3],
            "wide": lambda: torch.cat([out, out[:, :1]], 1),  # five outputs, four names
            "flat": lambda: out[:, 0],
            "tuple": lambda: (out, out),
            "dict": lambda: {"logits": out},
            "inf": lambda: out + torch.tensor([float("inf"), 0, 0, 0]),
            "minus_inf": lambda: out - torch.tensor([float("inf"), 0, 0, 0]),
            "integer": lambda: out.long(),
            # Fine when explained (grad enabled), broken on the probe variants' plain forwards.
            "nan_on_variants": lambda: out if torch.is_grad_enabled() else out * float("nan"),
        }
        if self.fault == "raises":
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return faults[self.fault]()


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("raises", "model forward raised RuntimeError: mat1 and mat2"),
        ("narrow", "3 outputs but 4 class names"),
        ("wide", "5 outputs but 4 class names (a model with more outputs than class names is refused, never "
                 "truncated)"),
        ("flat", "shape [48]"),
        ("tuple", "returned a tuple"),
        ("dict", "returned a dict"),
        ("inf", "NaN or infinite"),
        ("minus_inf", "NaN or infinite"),
        ("integer", "torch.int64 tensor"),
        ("nan_on_variants", "NaN or infinite on the only_fg variant"),
    ],
)
def test_model_faults_are_input_errors_naming_the_candidate(
    small_set: ReviewSet, untrained_checkpoint: Path, fault: str, needle: str
) -> None:
    loaded = candidate_io.load(untrained_checkpoint)
    cand = replace(loaded, model=Faulty(loaded.model, fault), target_layer="inner.features")
    with pytest.raises(ModelOutputError) as info:
        engine.run([cand], small_set, engine.EngineOptions(batch_size=48, probes=frozenset({"background"})))
    assert info.value.exit_code == 2
    line = info.value.one_line()
    assert line.startswith(str(untrained_checkpoint)) and needle in line, line
    assert "\n" not in line and len(line) < 300
    assert not loaded.model._forward_hooks and not loaded.model._forward_pre_hooks  # type: ignore[attr-defined]


def test_background_probes_on_a_set_without_masks_are_an_input_error(small_set: ReviewSet, tmp_path: Path,
                                                                     untrained_checkpoint: Path) -> None:
    from gate.errors import ReviewSetError

    unmasked = write_rows(tmp_path / "set", without_masks(small_set, tmp_path / "set", 1))
    cand = candidate_io.load(untrained_checkpoint)
    (plain,) = engine.run([cand], unmasked, engine.EngineOptions())  # metrics need no mask
    assert np.isnan(plain.records.energy).all() and compute_scores(plain.records)["alignment.coverage"] == 0.0
    with pytest.raises(ReviewSetError, match="background probes need samples with masks") as info:
        engine.run([cand], unmasked, engine.EngineOptions(probes=frozenset({"background"})))
    assert info.value.exit_code == 2 and info.value.path == str(unmasked.root)


def test_samples_without_a_mask_count_for_metrics_only(partly_masked: ReviewSet, small_set: ReviewSet,
                                                       untrained_checkpoint: Path) -> None:
    from gate.records import NO_VARIANT

    cand, net = _counting(untrained_checkpoint)
    options = engine.EngineOptions(batch_size=48, probes=frozenset({"background"}), seed=2)
    (model_run,) = engine.run([cand], partly_masked, options)
    records = model_run.records
    masked = partly_masked.has_mask
    assert masked.sum() == 32 and records.masked.tolist() == masked.tolist()
    # Every sample is scored; the mask-less ones have no alignment numbers, no variants and no partner.
    (full_run,) = engine.run([candidate_io.load(untrained_checkpoint)], small_set, engine.EngineOptions())
    np.testing.assert_allclose(records.probs, full_run.records.probs, atol=1e-6)
    assert np.isnan(records.mask_area[~masked]).all() and np.isnan(records.energy[~masked]).all()
    assert (records.mask_area[masked] > 0).all()
    for variant in PROBE_VARIANTS:
        assert (records.probe_preds[variant][~masked] == NO_VARIANT).all()
        assert (records.probe_preds[variant][masked] >= -1).all()
    for variant, partners in records.pairings.items():
        assert (partners[~masked] == -1).all() and masked[partners[masked]].all(), variant
    # One explained forward plus four variant forwards (of the 32 masked rows only).
    assert net.calls == 1 + len(PROBE_VARIANTS)
    # Background scores stand on the masked samples alone: the same as a run over just those rows.
    (only_masked,) = engine.run([candidate_io.load(untrained_checkpoint)], partly_masked, options,
                                indices=np.flatnonzero(masked))
    scores = compute_scores(records, {"background"})
    alone = compute_scores(only_masked.records, {"background"})
    for name in ("only_fg_accuracy", "only_bg_accuracy", "mixed_same_accuracy", "mixed_rand_accuracy", "flip_rate"):
        assert scores[f"background.{name}"] == alone[f"background.{name}"], name
    assert scores["alignment.coverage"] == pytest.approx(float((~np.isnan(records.energy)).mean()))
    assert scores["alignment.coverage"] <= 32 / 48


def test_void_pixels_change_only_the_alignment_of_their_sample(partly_masked: ReviewSet, small_set: ReviewSet,
                                                                untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    (with_void,) = engine.run([cand], partly_masked, engine.EngineOptions(fixed_per_class=12))
    (plain,) = engine.run([cand], small_set, engine.EngineOptions(fixed_per_class=12))
    # Sample 1: the left 8 columns are void; its mask area is over the 32·24 other pixels.
    mask = small_set.load_mask(1)
    assert mask is not None
    expected_area = (mask[:, 8:]).sum() / (32 * 24)
    assert with_void.records.mask_area[1] == pytest.approx(expected_area)
    cam = with_void.records.kept[small_set.samples[1].sample_id].cam
    expected_energy = (cam[:, 8:] * mask[:, 8:]).sum() / cam[:, 8:].sum()
    assert with_void.records.energy[1] == pytest.approx(expected_energy, rel=1e-5)
    others = np.flatnonzero(partly_masked.has_mask)
    others = others[others != 1]
    np.testing.assert_allclose(with_void.records.energy[others], plain.records.energy[others], atol=1e-9)


def test_a_model_handed_over_in_training_mode_is_run_in_eval_mode(small_set: ReviewSet,
                                                                    untrained_checkpoint: Path) -> None:
    # tiny_cnn has BatchNorm: in training mode its outputs would depend on the batch (and Grad-CAM's
    # restore of the mode must not leave the probe forwards in training mode either).
    options = engine.EngineOptions(batch_size=48, probes=frozenset({"background"}))
    (reference,) = engine.run([candidate_io.load(untrained_checkpoint)], small_set, options)
    training = candidate_io.load(untrained_checkpoint)
    training.model.train()
    (result,) = engine.run([training], small_set, options)
    np.testing.assert_array_equal(result.records.probs, reference.records.probs)
    for variant in PROBE_VARIANTS:
        np.testing.assert_array_equal(result.records.probe_preds[variant], reference.records.probe_preds[variant])
