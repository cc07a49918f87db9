"""The attention atlas: running sums by hand, the hot spot in words, off-object share, and the engine's path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gate.engine import core as engine
from gate.engine.atlas import AtlasSums, grid_shape
from gate.inputs import candidate as candidate_io
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet
from gate.metrics import atlas as atlas_scores
from gate.metrics.registry import compute_scores
from gate.records import OUTSIDE, Atlas, Records


def test_grid_shape_keeps_the_aspect_and_never_refines() -> None:
    assert grid_shape(224, 224) == (32, 32)
    assert grid_shape(224, 448) == (16, 32)
    assert grid_shape(20, 30) == (20, 30)


def test_sums_by_hand() -> None:
    sums = AtlasSums(classes=2, frame=(2, 2))
    cam = torch.tensor([[[3.0, 0.0], [0.0, 1.0]],   # unit mass: .75 0 / 0 .25, predicted class 1
                        [[1.0, 1.0], [1.0, 1.0]],   # uniform .25, predicted outside the review set
                        [[0.0, 0.0], [0.0, 0.0]]])  # no mass: not added
    masks = torch.tensor([[[True, False], [False, False]], [[False] * 2] * 2, [[True] * 2] * 2])
    sums.add(cam, np.array([1, OUTSIDE, 0]), masks, torch.tensor([True, False, True]))
    atlas = sums.atlas()
    assert atlas.count == 2 and atlas.mask_count == 2
    np.testing.assert_allclose(atlas.mean, [[0.5, 0.125], [0.125, 0.25]])
    np.testing.assert_allclose(atlas.by_class[1], [[0.75, 0], [0, 0.25]])
    assert atlas.by_class[0].sum() == 0 and atlas.class_count.tolist() == [0, 1]
    np.testing.assert_allclose(atlas.object_frequency, [[1.0, 0.5], [0.5, 0.5]])


def test_pooling_keeps_each_cells_share_of_the_mass() -> None:
    sums = AtlasSums(classes=1, frame=(64, 64))
    cam = torch.zeros(1, 64, 64)
    cam[0, 60:, 60:] = 1.0  # a 4 × 4 patch: the bottom-right 2 × 2 cells of a 32 × 32 grid
    sums.add(cam, np.array([0]), torch.zeros(1, 64, 64, dtype=torch.bool), torch.tensor([False]))
    mean = sums.atlas().mean
    assert mean.shape == (32, 32)
    np.testing.assert_allclose(mean[30:, 30:], 0.25)
    assert mean.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cell", "place"),
    [((3, 3), "bottom-right corner"), ((0, 0), "top-left corner"), ((0, 2), "top edge"), ((2, 0), "left edge"),
     ((1, 2), "centre")],
)
def test_hot_spot_place_in_words(cell: tuple[int, int], place: str) -> None:
    values = np.full((4, 5), 0.01)
    values[cell] = 1.0  # alone more than half the mass: the hot spot is this one cell
    spot = atlas_scores.hot_spot(values)
    assert spot is not None and spot.cells.sum() == 1 and spot.cells[cell]
    assert spot.place == place
    assert spot.words == f"{place}, 5% of the image"


def test_hot_spot_takes_the_hottest_cells_until_half_the_mass() -> None:
    values = np.array([[4.0, 3.0], [2.0, 1.0]])  # 0.4 + 0.3 >= 0.5: two cells, the top row
    spot = atlas_scores.hot_spot(values)
    assert spot is not None
    np.testing.assert_array_equal(spot.cells, [[True, True], [False, False]])
    assert spot.area == 0.5 and spot.row == pytest.approx(0.25)
    assert spot.col == pytest.approx((0.25 * 4 + 0.75 * 3) / 7)
    assert atlas_scores.hot_spot(np.zeros((3, 3))) is None


def _atlas(mean: np.ndarray, frequency: np.ndarray | None) -> Atlas:
    return Atlas(total=mean * 4, count=4, by_class=np.zeros((1, *mean.shape)), class_count=np.zeros(1, dtype=int),
                 mask_sum=np.zeros(mean.shape) if frequency is None else frequency * 2,
                 mask_count=0 if frequency is None else 2)


def test_off_object_share_by_hand() -> None:
    mean = np.array([[0.1, 0.2], [0.3, 0.4]])
    frequency = np.array([[0.0, 0.5], [0.01, 0.9]])  # below 0.02: the left column
    assert atlas_scores.off_object_share(_atlas(mean, frequency)) == pytest.approx(0.4)
    assert math.isnan(atlas_scores.off_object_share(_atlas(mean, None)))
    assert math.isnan(atlas_scores.off_object_share(None))


def _records(atlas: Atlas | None) -> Records:
    nan = np.full(2, np.nan)
    return Records(classes=("a",), ids=("x", "y"), labels=np.zeros(2, dtype=int),
                   probs=np.ones((2, 1), dtype=np.float32), energy=nan, mask_area=nan, pointing_hit=nan,
                   rank_accuracy=nan, atlas=atlas)


def test_shards_add_up_and_resamples_carry_no_atlas() -> None:
    mean = np.array([[0.25, 0.25], [0.25, 0.25]])
    one = _atlas(mean, np.array([[0.0, 1.0], [1.0, 1.0]]))
    both = Records.concat([_records(one), _records(one)])
    assert both.atlas is not None and both.atlas.count == 8 and both.atlas.mask_count == 4
    np.testing.assert_allclose(both.atlas.mean, mean)
    assert compute_scores(both)["atlas.off_object_share"] == pytest.approx(0.25)
    assert both.take(np.array([0, 1])).atlas is None


class CornerFeatures(nn.Module):
    """A 1×1 conv whose output is zero outside the bottom-right 3 × 3 pixels: Grad-CAM can only light there."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(x.shape[-2:], device=x.device)
        keep[-3:, -3:] = 1.0
        return torch.relu(self.conv(x)) * keep + 0.01 * keep


class CornerGlancer(nn.Module):
    """Answers from the bottom-right corner only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = CornerFeatures()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).sum(dim=(2, 3))


def test_the_atlas_of_a_corner_glancer_names_that_corner(small_set: ReviewSet) -> None:
    spec = InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    cand = candidate_io.Candidate(path="glance.pt", sha256="", arch="custom", model=CornerGlancer().eval(),
                                  classes=small_set.classes, input=spec, target_layer="features")
    (run,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=16))
    atlas = run.records.atlas
    assert atlas is not None and atlas.mean.shape == (32, 32)
    assert atlas.count + 0 <= small_set.size and atlas.mask_count == small_set.size
    spot = atlas_scores.hot_spot(atlas.mean)
    assert spot is not None and spot.place == "bottom-right corner" and spot.area <= 9 / 1024
    # The shapes never reach the bottom-right 3 × 3 pixels (a 1-pixel margin, then rarely that far).
    assert compute_scores(run.records)["atlas.off_object_share"] > 0.9
    per_class = atlas.by_class.sum(axis=(1, 2))
    np.testing.assert_allclose(per_class, atlas.class_count)  # each predicted-class sum holds unit masses


def _cornered_records() -> Records:
    from gate.records import KeptSample

    mean = np.full((8, 8), 0.2 / 60)
    mean[6:, 6:] = 0.2  # 80% of the mass in the bottom-right 2 × 2 cells
    frequency = np.zeros((8, 8))
    frequency[2:6, 2:6] = 0.5
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    kept = KeptSample(sample_id="s0", image=image, mask=np.zeros((8, 8), dtype=bool), cam=np.zeros((8, 8)),
                      label=0, pred=0, confidence=0.9, variants={"corners": image + 255, "lighting": image},
                      variant_preds={"corners": 1, "lighting": 0}, pred_name="a")
    nan = np.full(1, np.nan)
    return Records(classes=("a", "b"), ids=("s0",), labels=np.zeros(1, dtype=int),
                   probs=np.array([[0.9, 0.1]], dtype=np.float32), energy=nan, mask_area=nan, pointing_hit=nan,
                   rank_accuracy=nan, kept={"s0": kept},
                   atlas=Atlas(total=mean * 5, count=5, by_class=np.stack([mean * 5, np.zeros((8, 8))]),
                               class_count=np.array([5, 0]), mask_sum=frequency * 4, mask_count=4))


def test_the_report_section_shows_the_atlas_and_the_flipped_sample() -> None:
    from bs4 import BeautifulSoup

    from gate.outputs.report.html import environment
    from gate.outputs.report.shortcuts import shortcut_views

    views = shortcut_views(["cand.pt"], ["c0"], [_cornered_records()])
    (view,) = views
    assert view.atlas is not None and view.atlas.hot_spot == "bottom-right corner, 5% of the image"
    # 3 hot cells of 0.2 hold half the mass: 3/64 of the grid; off-object: all but the 16 centre cells (0.2/60 each).
    assert view.atlas.off_object == "95% of the atlas lies where objects never are"
    assert view.atlas.per_class == (("a", "bottom-right corner, 5% of the image", 5),)
    (row,) = view.flips
    assert [(p.probe, p.pred, p.flipped) for p in row.panels] == [("corners", "b", True), ("lighting", "a", False)]
    html = environment().get_template("_shortcuts.j2").render(ctx=type("Ctx", (), {"shortcuts": views}))
    soup = BeautifulSoup(html, "html.parser")
    assert soup.select_one("#c0-shortcuts").get_text() == "cand.pt"
    assert "bottom-right corner" in soup.select_one(".atlas figcaption").get_text()
    assert [f["data-variant"] for f in soup.select(".showroom-row figure[data-variant]")] == ["corners", "lighting"]


def test_the_section_counts_changed_answers_over_the_set_and_says_when_no_kept_sample_changed() -> None:
    from dataclasses import replace

    from bs4 import BeautifulSoup

    from gate.outputs.report.html import environment
    from gate.outputs.report.shortcuts import shortcut_views

    flipped = replace(_cornered_records(), probe_preds={"corners": np.array([1]), "lighting": np.array([0])})
    (kept,) = flipped.kept.values()
    steady = replace(flipped, probe_preds={"corners": np.array([0]), "lighting": np.array([0])},
                     kept={"s0": replace(kept, variant_preds={"corners": 0, "lighting": 0})}, atlas=None)
    views = shortcut_views(["flip.pt", "steady.pt"], ["c0", "c1"], [flipped, steady])
    assert [(v.name, v.answers_changed, v.samples) for v in views] == [
        ("flip.pt", (("corners", 1), ("lighting", 0)), 1), ("steady.pt", (("corners", 0), ("lighting", 0)), 1)]
    html = environment().get_template("_shortcuts.j2").render(ctx=type("Ctx", (), {"shortcuts": views}))
    soup = BeautifulSoup(html, "html.parser")
    said = {p["data-candidate"]: " ".join(p.get_text().split()) for p in soup.select("p.answers-changed")}
    assert said == {
        "flip.pt": "Answers changed over the whole review set (1 sample): corners 1, lighting 0. Kept samples whose "
                   "answer changed:",
        "steady.pt": "Answers changed over the whole review set (1 sample): corners 0, lighting 0. No kept sample "
                     "changed its answer."}
    assert not soup.select('.showroom-row[data-candidate="steady.pt"]')  # shown although it has no atlas or flip


def test_mlflow_staging_writes_the_atlas(tmp_path: Path) -> None:
    import json

    from gate.tracking.outbox import write_atlas

    written = write_atlas(_cornered_records(), tmp_path / "atlas")
    assert [p.name for p in written] == ["atlas.png", "atlas.json"]
    summary = json.loads((tmp_path / "atlas" / "atlas.json").read_text())
    assert summary["hot_spot"] == "bottom-right corner, 5% of the image" and summary["samples"] == 5
    assert summary["off_object_share"] == pytest.approx(1 - 16 * 0.2 / 60)
    assert write_atlas(_records(None), tmp_path / "none") == []


def test_a_select_report_shows_the_atlas_of_the_winner_only() -> None:
    from dataclasses import replace

    from gate.outputs.report.context import build_context
    from tests.report_fixtures import six_select

    result = six_select(n=40, kept=2, size=16)
    cornered = replace(_cornered_records(), classes=result.candidates[0].records.classes)
    with_atlas = tuple(replace(c, records=replace(c.records, atlas=cornered.atlas)) for c in result.candidates)
    ctx = build_context(replace(result, candidates=with_atlas))
    assert [v.name for v in ctx.shortcuts] == ["bgmix.pt"]  # the selected one; the other five link to their rules
    single = replace(result, command="check", candidates=with_atlas[3:4], selected=None, ranking=())
    assert [v.name for v in build_context(single).shortcuts] == ["cheater.pt"]
