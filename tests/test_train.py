from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gate.errors import CandidateError, DataError, ReviewSetError
from gate.inputs import candidate, review_set, shapes
from gate.train import RECIPES, TrainConfig, train
from gate.train.augment import bgmix_batch, cutmix_batch, cutmix_box, remove_object, smooth_targets
from gate.train.data import load_data
from gate.train.loop import evaluate, lr_at, split_indices

TINY = "synth:shapes?bias=0.5&n=64&seed=3&size=32"


class FakeRng:
    """Hands out fixed draws so a CutMix case can be computed by hand."""

    def __init__(self, lam: float, centre: tuple[int, int], perm: list[int]) -> None:
        self.lam, self.ints, self.perm = lam, list(centre), perm

    def beta(self, a: float, b: float) -> float:
        return self.lam

    def integers(self, high: int) -> int:
        return self.ints.pop(0)

    def permutation(self, n: int) -> np.ndarray:
        return np.asarray(self.perm)


def tiny_config(tmp_path: Path, recipe: str, **kwargs: object) -> TrainConfig:
    base: dict[str, object] = {"recipe": recipe, "data": TINY, "epochs": 1, "batch_size": 16, "image_size": 32,
                               "seed": 5, "output": tmp_path / f"{recipe}.pt"}
    return TrainConfig(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_trains_one_epoch_and_saves_a_loadable_candidate(tmp_path: Path, recipe: str) -> None:
    lines: list[str] = []
    result = train(tiny_config(tmp_path, recipe), progress=lines.append)
    assert result.path == tmp_path / f"{recipe}.pt"
    loaded = candidate.load(result.path)
    assert loaded.classes == shapes.CLASSES == result.classes
    assert loaded.arch == "tiny_cnn" and loaded.input.size == (32, 32)
    assert loaded.input.mean == (0.5, 0.5, 0.5) and loaded.input.std == (0.25, 0.25, 0.25)
    meta = loaded.meta
    assert (meta["recipe"], meta["epochs"], meta["seed"], meta["data"]) == (recipe, 1, 5, TINY)
    assert meta["data_digest"].startswith("sha256:") and len(meta["data_digest"]) == 71
    assert (meta["n_train"], meta["n_val"]) == (56, 8)  # 2 of each class's 16 held out
    assert meta["code_version"] == "0.1.0"
    assert meta["val_accuracy"] == result.history[-1].val_accuracy
    assert 0.0 <= meta["train_accuracy"] <= 1.0
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), result.model(x))
    assert len(result.history) == 1 and "epoch 1/1" in lines[-2] and lines[-1].startswith("saved ")


@pytest.mark.parametrize("recipe", ["cutmix", "bgmix"])
def test_one_seed_gives_identical_weights(tmp_path: Path, recipe: str) -> None:
    a = train(tiny_config(tmp_path, recipe, output=None)).model.state_dict()
    b = train(tiny_config(tmp_path, recipe, output=None)).model.state_dict()
    c = train(tiny_config(tmp_path, recipe, output=None, seed=6)).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_cutmix_box_clips_and_weight_is_the_clipped_area() -> None:
    # lam 0.64 -> side 0.6 of 10 = 6 px, centred at (x=1, y=8): x in [0, 4), y in [5, 10) after clipping.
    assert cutmix_box(0.64, 10, 10, FakeRng(0.64, (1, 8), [0])) == (0, 5, 4, 10)  # type: ignore[arg-type]
    x = torch.stack([torch.zeros(1, 10, 10), torch.ones(1, 10, 10)])
    y = torch.tensor([2, 3])
    mixed, y_a, y_b, lam = cutmix_batch(x, y, FakeRng(0.64, (1, 8), [1, 0]))  # type: ignore[arg-type]
    assert lam == pytest.approx(1 - 20 / 100)  # not the 0.64 drawn: the box lost 16 of its 36 pixels
    assert y_a.tolist() == [2, 3] and y_b.tolist() == [3, 2]
    assert mixed[0].sum().item() == 20 and mixed[0, 0, 5:10, 0:4].eq(1).all()
    assert mixed[1, 0, 5:10, 0:4].eq(0).all() and mixed[1].sum().item() == 80
    assert 1 - lam == pytest.approx(float(mixed[0].mean()))  # y_b's weight is its pixel share


def test_cutmix_lambda_matches_pixel_share_on_random_draws() -> None:
    rng = np.random.default_rng(0)
    x = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32)])
    checked = 0
    for _ in range(50):
        mixed, _, y_b, lam = cutmix_batch(x, torch.tensor([0, 1]), rng)
        if y_b[0] == 1:  # image 0 received a box from image 1: the ones in it are the pasted pixels
            assert 1 - lam == pytest.approx(float(mixed[0].mean()))
            checked += 1
    assert checked > 10


def test_smooth_targets_exact() -> None:
    targets = smooth_targets(torch.tensor([1, 3]), 4, 0.1)
    expected = torch.tensor([[0.025, 0.925, 0.025, 0.025], [0.025, 0.025, 0.025, 0.925]])
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(smooth_targets(torch.tensor([0]), 3, 0.0), torch.tensor([[1.0, 0.0, 0.0]]))


def _scene_and_object_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Image i: flat scene of value 10*i, a square object of value 200+i at a different place per image.
    images = torch.zeros(4, 3, 24, 24, dtype=torch.uint8)
    masks = torch.zeros(4, 24, 24, dtype=torch.bool)
    for i in range(4):
        images[i] = 10 * i
        masks[i, 3 + 4 * i:9 + 4 * i, 2 + 3 * i:8 + 3 * i] = True
        images[i][:, masks[i]] = 200 + i
    return images, masks


def test_bgmix_keeps_objects_and_swaps_scenes_without_their_objects() -> None:
    images, masks = _scene_and_object_batch()
    out = bgmix_batch(images, masks, np.random.default_rng(1))
    partners = set()
    for i in range(4):
        assert torch.equal(out[i][:, masks[i]], images[i][:, masks[i]])  # every object pixel kept
        scene = out[i][:, ~masks[i]]
        values = set(scene.unique().tolist())
        assert len(values) == 1 and values != {10 * i}  # another image's scene, and only its scene
        partners.add(values.pop() // 10)
    assert partners == {0, 1, 2, 3}  # a cycle: every scene is used once


def test_remove_object_fills_dilated_box_from_outside() -> None:
    image = torch.arange(20 * 20, dtype=torch.float32).view(1, 20, 20)
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[8:11, 8:12] = True  # box rows 6..13, cols 6..14 after a 2-px dilation
    out = remove_object(image, mask, np.random.default_rng(0))
    assert torch.equal(out[:, :6], image[:, :6]) and torch.equal(out[:, 13:], image[:, 13:])
    patch = out[0, 6:13, 6:14]
    assert not torch.equal(patch, image[0, 6:13, 6:14])
    # The patch is a contiguous crop of the original image that does not touch the box.
    top, left = divmod(int(patch[0, 0].item()), 20)
    assert torch.equal(patch, image[0, top:top + 7, left:left + 8])
    assert top + 7 <= 6 or top >= 13 or left + 8 <= 6 or left >= 14


def test_remove_object_tiles_a_strip_when_no_patch_fits() -> None:
    image = torch.arange(10 * 10, dtype=torch.float32).view(1, 10, 10)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:8, 2:7] = True  # dilated box: all 10 rows, columns 0-8; only column 9 is outside it
    out = remove_object(image, mask, np.random.default_rng(0))
    assert torch.equal(out[0, :, 9], image[0, :, 9])
    assert torch.equal(out[0, :, :9], image[0, :, 9:10].expand(10, 9))  # the 1-px strip tiled across


def test_lr_schedule_and_split() -> None:
    assert [lr_at(e, 8, 0.1) for e in range(8)] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert lr_at(0, 1, 0.1) == 0.1
    labels = np.repeat(np.arange(4), 10)
    train_idx, val_idx = split_indices(labels, 0.2, np.random.default_rng(0))
    assert np.bincount(labels[val_idx]).tolist() == [2, 2, 2, 2]
    assert sorted([*train_idx, *val_idx]) == list(range(40))


def _write_folder(root: Path, classes: list[str], with_masks: bool) -> None:
    samples = shapes.generate(8, bias=0.0, seed=1, size=16)
    for i, sample in enumerate(samples):
        name = classes[i % len(classes)]
        folder = root / ("images" if with_masks else "") / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(folder / f"{i}.png")
        if with_masks:
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(sample.mask, 255, 0).astype(np.uint8)).save(root / "masks" / name / f"{i}.png")


def test_load_image_folder_with_and_without_masks(tmp_path: Path) -> None:
    _write_folder(tmp_path / "plain", ["b", "a"], with_masks=False)
    data = load_data(str(tmp_path / "plain"), 16)
    assert data.classes == ("a", "b") and data.masks is None
    assert data.images.shape == (8, 16, 16, 3) and np.bincount(data.labels).tolist() == [4, 4]
    _write_folder(tmp_path / "masked", ["b", "a"], with_masks=True)
    masked = load_data(str(tmp_path / "masked"), 32, need_masks=True)
    assert masked.masks is not None and masked.masks.shape == (8, 32, 32) and masked.images.shape[1] == 32


def _pinned_review_set(tmp_path: Path, classes_line: str) -> Path:
    src, root = tmp_path / "src", tmp_path / "rs"
    shapes.write_plain(shapes.generate(8, bias=0.0, seed=2, size=16), src)
    review_set.build(src, root)
    (root / "review.yaml").write_text(f"format: xgate.review_set/v1\nname: t\nclasses: {classes_line}\n")
    review_set.write_sums(root)
    return root


def test_load_review_set_folder_uses_its_class_order_and_digest(tmp_path: Path) -> None:
    root = _pinned_review_set(tmp_path, "[square, circle, triangle, cross]")
    data = load_data(str(root), 16, need_masks=True)
    assert data.classes == ("square", "circle", "triangle", "cross")
    assert data.digest == "sha256:" + candidate.sha256_file(root / "SHA256SUMS")
    sample = shapes.generate(8, bias=0.0, seed=2, size=16)
    first = sorted(sample, key=lambda s: (shapes.CLASSES[s.label], s.sample_id))[0]
    ids = [line.split(",")[0] for line in (root / "samples.csv").read_text().splitlines()[1:]]
    index = ids.index(f"{shapes.CLASSES[first.label]}/{first.sample_id}")
    assert np.array_equal(data.images[index], first.image) and np.array_equal(data.masks[index], first.mask)
    assert data.classes[data.labels[index]] == shapes.CLASSES[first.label]


def test_load_review_set_folder_is_read_through_its_pin(tmp_path: Path) -> None:
    root = _pinned_review_set(tmp_path, "[square, circle, triangle, cross]")
    image = next((root / "images").rglob("*.png"))
    image.write_bytes(image.read_bytes() + b"x")
    with pytest.raises(ReviewSetError, match="checksum mismatch"):
        load_data(str(root), 16)


def test_evaluate_counts_correct_predictions() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.0, 0.0]]).repeat(x.shape[0], 1)

    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    assert evaluate(Fixed(), images, np.array([0, 0, 1, 0])) == 0.75
    assert np.isnan(evaluate(Fixed(), images[:0], np.array([], dtype=np.int64)))


@pytest.mark.parametrize(
    ("setup", "config", "message"),
    [
        ("empty", {}, "no images found"),
        ("single", {}, "single class"),
        ("plain", {"recipe": "bgmix"}, "recipe bgmix needs masks"),
        (None, {"recipe": "mixup"}, "unknown recipe 'mixup'"),
        (None, {"data": "synth:shapes?bias=0&n=64&seed=20260"}, "reserved"),
        (None, {"data": "synth:shapes?bias=2&n=64&seed=1"}, "bias"),
        (None, {"data": "synth:shapes?bias=1&n=64&seed=1&palette=../../etc"}, "palette"),
        (None, {"data": "synth:shapes?bias=1&n=64&seed=1&palette=random&palette=scene;rm"}, "palette"),
        (None, {"data": "/no/such/dir"}, "no such folder"),
        (None, {"epochs": 0}, "epochs >= 1"),
        (None, {"val_fraction": 1.0}, "val_fraction"),
    ],
    ids=["empty", "single-class", "bgmix-no-masks", "recipe", "reserved-seed", "bad-source", "bad-palette",
         "palette-twice", "missing", "epochs", "val-fraction"],
)
def test_bad_inputs_raise_data_error(
    tmp_path: Path, setup: str | None, config: dict[str, object], message: str
) -> None:
    data = TINY
    if setup == "empty":
        (tmp_path / "d" / "cls").mkdir(parents=True)
        data = str(tmp_path / "d")
    elif setup == "single":
        _write_folder(tmp_path / "d", ["only"], with_masks=False)
        data = str(tmp_path / "d")
    elif setup == "plain":
        _write_folder(tmp_path / "d", ["a", "b"], with_masks=False)
        data = str(tmp_path / "d")
    overrides: dict[str, object] = {"data": data, **config}
    cfg = tiny_config(tmp_path, str(overrides.pop("recipe", "baseline")), **overrides)
    with pytest.raises(DataError, match=message) as err:
        train(cfg)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.pt"))


def test_unknown_arch_is_a_candidate_error(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="unknown arch"):
        train(tiny_config(tmp_path, "baseline", arch="no_such_net"))


def test_batch_progress_reports_running_loss_and_accuracy(tmp_path: Path) -> None:
    ticks: list[tuple[int, int, int, float, float]] = []
    result = train(tiny_config(tmp_path, "baseline", epochs=2, output=None),
                   batch_progress=lambda *tick: ticks.append(tick))
    # 56 training samples in batches of about 16: 4 batches per epoch, each reported once.
    assert [(t[0], t[1], t[2]) for t in ticks] == [(e, b, 4) for e in (1, 2) for b in (1, 2, 3, 4)]
    for epoch, log in zip((1, 2), result.history, strict=True):
        last = [t for t in ticks if t[0] == epoch][-1]
        assert last[3] == pytest.approx(log.loss) and last[4] == pytest.approx(log.train_accuracy)


def test_synth_source_with_a_shortcut_carries_it_and_its_mask() -> None:
    data = load_data("synth:shapes?bias=0&n=8&seed=3&size=32&shortcut=tag", 32)
    plain = load_data("synth:shapes?bias=0&n=8&seed=3&size=32", 32)
    region = shapes.shortcut_region("tag", 32)
    assert np.array_equal(data.images[:, ~region], plain.images[:, ~region])
    tags = np.stack([shapes.tag_pattern(int(label), region)[region] for label in data.labels])
    assert np.abs(data.images[:, region].astype(float) - tags).max() <= 6  # the class's tag, plus noise
    assert data.masks is not None and not data.masks[:, region].any()
    assert data.digest != plain.digest
