"""The model's own preprocessing: the engine sees exactly what a plain torchvision transforms.v2 eval loop sees."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from gate.engine import core as engine
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import InputSpec
from gate.inputs.preprocess import Geometry, image_to_frame, mask_to_frame
from gate.inputs.review_set import ReviewSet, open_review_set, write_sums
from tests.conftest import REPO, pinned_policy

CLASSES = ("cat", "dog", "fox")
# (height, width, file type): several sizes and aspect ratios, PNG and JPEG.
PHOTOS = [(37, 53, "png"), (64, 31, "jpg"), (40, 40, "png"), (23, 90, "jpg"), (50, 45, "jpg"), (40, 60, "png")]
MODES = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
         "nearest": v2.InterpolationMode.NEAREST}


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # Smooth content plus noise: resizing matters, and JPEG keeps it recognisable.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(xx / 5.0), np.cos(yy / 7.0), np.sin((xx + yy) / 9.0)], axis=-1) * 90 + 128
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    """A pinned review set of photos of mixed sizes; the 40×60 one has a hand-made mask and void band."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rows = []
    for i, (height, width, kind) in enumerate(PHOTOS):
        image = f"images/p{i}.{kind}"
        Image.fromarray(_photo(rng, height, width)).save(root / image, quality=90)
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 4 : height // 2, width // 3 : 2 * width // 3] = 255
        void = ""
        if (height, width) == (40, 60):
            mask[:] = 0
            mask[10:30, 20:50] = 255
            void_pixels = np.zeros((40, 60), dtype=np.uint8)
            void_pixels[0:4, :] = 255
            void = "masks/p5_void.png"
            Image.fromarray(void_pixels).save(root / void)
        mask_rel = "" if i == 1 else f"masks/p{i}.png"  # one photo without a mask
        if mask_rel:
            Image.fromarray(mask).save(root / mask_rel)
        rows.append([f"p{i}", image, mask_rel, CLASSES[i % 3], void])
    (root / "review.yaml").write_text(yaml.safe_dump({"format": "xgate.review_set/v1", "name": "photos",
                                                      "version": "1", "classes": list(CLASSES)}))
    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "image", "mask", "label", "void"])
        writer.writerows(rows)
    write_sums(root)
    return open_review_set(root)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


def _reference(review_set: ReviewSet, model: nn.Module, spec: InputSpec) -> np.ndarray:
    """A plain torchvision eval loop over the same files: ToImage, Resize, CenterCrop, ToDtype, Normalize."""
    mode = MODES[spec.interpolation]
    geometry = [v2.Resize(spec.resize, interpolation=mode), v2.CenterCrop(spec.size)] if spec.resize else \
        [v2.Resize(spec.size, interpolation=mode)]
    transform = v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(spec.mean, spec.std)])
    batch = []
    for sample in review_set.samples:
        with Image.open(review_set.root / sample.image) as image:
            batch.append(transform(image.convert("RGB")))
    with torch.no_grad():
        return torch.softmax(model(torch.stack(batch)), dim=1).numpy()


SPECS = {
    "squash": InputSpec(size=(24, 20), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
    "resize_crop": InputSpec(size=(24, 24), resize=28),
    "bicubic_crop": InputSpec(size=(24, 26), resize=30, interpolation="bicubic", mean=(0.4,) * 3, std=(0.3,) * 3),
    "nearest_squash": InputSpec(size=(32, 32), interpolation="nearest"),
}


def test_engine_equals_a_torchvision_eval_loop(photos: ReviewSet) -> None:
    # All four models in one engine run: each brings the once-decoded batch into its own frame.
    candidates = [Candidate(path=f"{name}.pt", sha256="", arch="net", model=_net(i), classes=CLASSES, input=spec,
                            target_layer="2") for i, (name, spec) in enumerate(SPECS.items())]
    runs = engine.run(candidates, photos, engine.EngineOptions(batch_size=4))
    for cand, model_run in zip(candidates, runs, strict=True):
        expected = _reference(photos, cand.model, cand.input)
        np.testing.assert_allclose(model_run.records.probs, expected, atol=1e-5, err_msg=cand.path)
        np.testing.assert_array_equal(model_run.records.preds, expected.argmax(1), err_msg=cand.path)
        kept = next(iter(model_run.records.kept.values()))
        assert kept.image.shape == (*cand.input.size, 3)  # the report shows the frame the model saw


def test_mask_geometry_by_hand() -> None:
    mask = np.arange(24).reshape(4, 6) % 5 == 0  # rows 0..3, cols 0..5
    # Shorter side 4 -> 2: [2, 3]; nearest takes rows floor(i·2) and cols floor(j·2); the centre crop to
    # [2, 2] starts at column round((3 - 2) / 2) = 0 (torchvision rounds half to even).
    framed = mask_to_frame(mask, Geometry(size=(2, 2), resize=2))
    np.testing.assert_array_equal(framed.numpy(), mask[[0, 2]][:, [0, 2]])
    squashed = mask_to_frame(mask, Geometry(size=(2, 3)))  # squash: rows 0, 2; cols 0, 2, 4
    np.testing.assert_array_equal(squashed.numpy(), mask[[0, 2]][:, [0, 2, 4]])
    assert framed.dtype == torch.bool


def test_squash_to_the_same_size_leaves_pixels_alone() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    framed = image_to_frame(image, Geometry(size=(5, 7)))
    np.testing.assert_allclose(framed.permute(1, 2, 0).numpy() * 255, image, atol=1e-4)


def test_masks_and_void_follow_the_model_frame(photos: ReviewSet) -> None:
    # p5 is 40×60 with object rows 10:30, cols 20:50 and void rows 0:4. Resize 20 gives [20, 30] (rows
    # floor(2i), cols floor(2j)); the crop to 20×20 keeps columns 5..24. Object: i in 5..14 (10 rows),
    # j in 10..24 (15 columns) = 150 pixels; void: i in {0, 1} = 40 pixels. Area = 150 / (400 - 40).
    cand = Candidate(path="m.pt", sha256="", arch="net", model=_net(0), classes=CLASSES,
                     input=InputSpec(size=(20, 20), resize=20), target_layer="2")
    (model_run,) = engine.run([cand], photos, engine.EngineOptions(fixed_per_class=3))
    records = model_run.records
    row = records.ids.index("p5")
    assert records.mask_area[row] == pytest.approx(150 / 360)
    kept = records.kept["p5"]
    expected = np.zeros((20, 20), dtype=bool)
    expected[5:15, 5:20] = True
    np.testing.assert_array_equal(kept.mask, expected)
    no_mask = records.ids.index("p1")
    assert np.isnan(records.mask_area[no_mask]) and np.isnan(records.energy[no_mask])
    assert not records.kept["p1"].has_mask


def _check(tmp_path: Path, candidate_file: Path, policy: Path, *extra: str) -> dict[str, float]:
    out = tmp_path / candidate_file.stem
    result = subprocess.run([sys.executable, "-m", "gate", "check", str(candidate_file), "--policy", str(policy),
                             "--no-mlflow", "--out", str(out), *extra], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "CI": "true", "PYTHONPATH": str(REPO)})
    assert result.returncode in (0, 1), result.stderr
    scores: dict[str, float] = json.loads((out / "result.json").read_text())["candidates"][0]["scores"]
    return scores


def test_check_on_a_bare_state_dict_with_resize_equals_the_v1_checkpoint(tmp_path: Path, photos: ReviewSet) -> None:
    from gate.inputs import candidate
    from gate.inputs.archs import build_model

    torch.manual_seed(3)
    model = build_model("resnet18", {"num_classes": 3})
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    packed = candidate.save(tmp_path / "packed.pt", model, arch="resnet18", arch_kwargs={"num_classes": 3},
                            classes=CLASSES, input_size=(48, 48), resize=56, interpolation="bicubic",
                            mean=(0.5, 0.45, 0.4), std=(0.2, 0.2, 0.25))
    policy = pinned_policy(tmp_path, photos, [{"score": "accuracy", "min": 0.0}])
    from_bare = _check(tmp_path, bare, policy, "--arch", "resnet18", "--classes", ",".join(CLASSES),
                       "--input-size", "48,48", "--resize", "56", "--interpolation", "bicubic",
                       "--mean", "0.5,0.45,0.4", "--std", "0.2,0.2,0.25")
    from_packed = _check(tmp_path, packed, policy)
    assert from_bare == from_packed
    assert from_bare["accuracy"] == pytest.approx(_accuracy_by_hand(photos, model, candidate.load(packed).input))


def _accuracy_by_hand(review_set: ReviewSet, model: nn.Module, spec: InputSpec) -> float:
    probs = _reference(review_set, model.eval(), spec)
    return float((probs.argmax(1) == review_set.labels()).mean())
