"""Train candidates: the ``xgate train`` recipes.

Three recipes, one loop:

- ``baseline``: SGD (momentum 0.9, weight decay 5e-4), LR decayed 10x at 50% and
  80% of the epochs, random crop (4 px reflect padding) and horizontal flip,
  cross-entropy.
- ``cutmix``: baseline plus CutMix (λ ~ Beta(1, 1), on half the batches, λ
  corrected to the clipped box's area) and label smoothing 0.1.
- ``bgmix``: baseline where, in every batch, each object is pasted onto the
  scene of another image of the batch whose own object was removed the
  Only-BG-T way. Every batch, not half of them: on scene-biased data any batch
  left unmixed still pays the model for reading the scene.

Everything runs in memory on CPU, single-threaded on the data side and with no
DataLoader workers, so one seed gives the same weights twice.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gate import __version__, shapes
from gate.archs import build_model
from gate.candidate import save
from gate.errors import DataError
from gate.probes import dilated_box

RECIPES: tuple[str, ...] = ("baseline", "cutmix", "bgmix")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
PAD = 4
CUTMIX_PROB = 0.5
LABEL_SMOOTHING = 0.1
BOX_DILATION = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, for how long; ``output`` is where the checkpoint goes (None: not saved)."""

    recipe: str
    data: str
    arch: str = "tiny_cnn"
    epochs: int = 8
    seed: int = 0
    batch_size: int = 64
    lr: float = 0.1
    val_fraction: float = 0.1
    image_size: int = 64
    output: Path | None = None


@dataclass(frozen=True)
class EpochLog:
    """One epoch: mean training loss, training accuracy (on the augmented batches) and held-out accuracy."""

    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float  # NaN when there is no held-out split


@dataclass(frozen=True)
class TrainResult:
    """The trained model (eval mode), its classes, the per-epoch log and the checkpoint path if saved."""

    path: Path | None
    model: nn.Module
    classes: tuple[str, ...]
    history: tuple[EpochLog, ...]


@dataclass(frozen=True)
class TrainData:
    """A training source loaded into memory."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    masks: np.ndarray | None  # bool [N, H, W]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    digest: str  # "sha256:...": the review set's digest, else sha256 over the arrays


BatchProgress = Callable[[int, int, int, float, float], None]
"""``(epoch, batches done, batches in the epoch, running loss, running train accuracy)``."""


def train(
    config: TrainConfig, progress: Callable[[str], None] | None = None, batch_progress: BatchProgress | None = None
) -> TrainResult:
    """Train ``config.arch`` with ``config.recipe`` on ``config.data``; save it when ``config.output`` is set.

    ``progress`` gets a line per stage and epoch; ``batch_progress`` is called after every batch.
    """
    say = progress or (lambda line: None)
    _validate_config(config)
    data = load_data(config.data, config.image_size, need_masks=config.recipe == "bgmix")
    rng = np.random.default_rng(config.seed)
    train_idx, val_idx = split_indices(data.labels, config.val_fraction, rng)
    if len(train_idx) < 2:
        raise DataError(f"only {len(train_idx)} training sample(s) after the held-out split", path=config.data)
    torch.manual_seed(config.seed)
    model = build_model(config.arch, {"num_classes": len(data.classes)})
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    say(f"data {config.data}: {len(data.labels)} images {data.images.shape[1]}x{data.images.shape[2]}, "
        f"classes {list(data.classes)}, {len(train_idx)} train / {len(val_idx)} held out; recipe {config.recipe}")
    history: list[EpochLog] = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        lr = lr_at(epoch, config.epochs, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tick = partial(batch_progress, epoch + 1) if batch_progress is not None else None
        loss, train_acc = _train_epoch(model, optimizer, data, train_idx, config, rng, tick)
        val_acc = evaluate(model, data.images[val_idx], data.labels[val_idx])
        history.append(EpochLog(epoch=epoch + 1, loss=loss, train_accuracy=train_acc, val_accuracy=val_acc))
        say(f"epoch {epoch + 1}/{config.epochs}  lr {lr:g}  loss {loss:.4f}  train_acc {train_acc:.3f}  "
            f"val_acc {val_acc:.3f}  ({time.perf_counter() - started:.1f}s)")
    model.eval()
    counts = (len(train_idx), len(val_idx))
    path = _save(config, model, data, history, counts) if config.output is not None else None
    if path is not None:
        say(f"saved {path}")
    return TrainResult(path=path, model=model, classes=data.classes, history=tuple(history))


def lr_at(epoch: int, epochs: int, base_lr: float) -> float:
    """Step schedule: ``base_lr``, divided by 10 from 50% of the epochs and again from 80%."""
    milestones = (max(1, round(0.5 * epochs)), max(1, round(0.8 * epochs)))
    return base_lr * 0.1 ** sum(epoch >= m for m in milestones)


def split_indices(labels: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split stratified by class: about ``val_fraction`` of each class is held out, at least one kept."""
    train_parts, val_parts = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = min(round(val_fraction * len(idx)), len(idx) - 1)
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of ``model`` (put in eval mode) on uint8 NHWC images; NaN for no images."""
    if len(labels) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), _EVAL_BATCH):
            x = _normalise(_to_float(torch.from_numpy(images[start:start + _EVAL_BATCH])))
            pred = model(x).argmax(dim=1).numpy()
            correct += int((pred == labels[start:start + _EVAL_BATCH]).sum())
    return correct / len(labels)


# ---------------------------------------------------------------- batch transforms


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The CutMix box ``(x0, y0, x1, y1)`` (half-open) of area about ``(1 - lam)``, centred at a random pixel.

    The box is clipped to the image, so its true area can be smaller; callers must
    recompute λ from the clipped box (see :func:`cutmix_batch`).
    """
    cut = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * cut), int(height * cut)
    cx, cy = int(rng.integers(width)), int(rng.integers(height))
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    return x0, y0, x1, y1


def cutmix_batch(
    x: Tensor, y: Tensor, rng: np.random.Generator, alpha: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Paste a box from a shuffled copy of the batch; returns ``(mixed, y_a, y_b, lam)``.

    ``lam`` is the share of pixels still from the image's own sample, so the loss
    is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(np.asarray(rng.permutation(x.shape[0]), dtype=np.int64))
    height, width = x.shape[-2], x.shape[-1]
    x0, y0, x1, y1 = cutmix_box(lam, height, width, rng)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (x1 - x0) * (y1 - y0) / (height * width)
    return mixed, y, y[perm], lam


def smooth_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label-smoothed one-hot targets: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere."""
    one_hot = F.one_hot(labels.long(), num_classes).to(torch.float32)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def bgmix_batch(images: Tensor, masks: Tensor, rng: np.random.Generator) -> Tensor:
    """Paste each image's object onto another batch image's scene, that image's own object removed (Only-BG-T).

    ``images`` [B, C, H, W] (any dtype), ``masks`` bool [B, H, W]. Partners follow
    a random cycle, so no image keeps its own scene when B > 1.
    """
    count = images.shape[0]
    order = rng.permutation(count)
    partner = np.empty(count, dtype=np.int64)
    partner[order] = np.roll(order, -1)
    out = images.clone()
    for i in range(count):
        j = int(partner[i])
        scene = remove_object(images[j], masks[j], rng)
        out[i] = torch.where(masks[i], images[i], scene)
    return out


def remove_object(image: Tensor, mask: Tensor, rng: np.random.Generator, dilation: int = BOX_DILATION) -> Tensor:
    """Only-BG-T: fill the object's box (dilated) with a same-size scene patch from outside it, else tile a strip.

    Filling only the mask would leave the silhouette, which a shape-reading model
    still recognises; the whole box goes.
    """
    height, width = mask.shape
    box = dilated_box(mask.any(dim=1).numpy(), mask.any(dim=0).numpy(), dilation, height, width)
    if box is None:
        return image.clone()
    y0, y1, x0, x1 = box
    out = image.clone()
    out[:, y0:y1, x0:x1] = _scene_patch(image, box, rng)
    return out


def _scene_patch(image: Tensor, box: tuple[int, int, int, int], rng: np.random.Generator) -> Tensor:
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0, x1 - x0
    height, width = image.shape[-2:]
    py = np.arange(height - bh + 1)[:, None]
    px = np.arange(width - bw + 1)[None, :]
    outside = (px + bw <= x0) | (px >= x1) | (py + bh <= y0) | (py >= y1)
    spots = np.flatnonzero(outside)
    if len(spots):
        top, left = divmod(int(spots[rng.integers(len(spots))]), outside.shape[1])
        return image[:, top:top + bh, left:left + bw]
    # No patch fits: tile the thickest strip of scene beside the box.
    strips = [image[:, :, :x0], image[:, :, x1:], image[:, :y0, :], image[:, y1:, :]]
    strip = max(strips, key=lambda s: min(s.shape[-2], s.shape[-1]))
    if strip.numel() == 0:  # the box is the whole image: nothing of the scene is left
        return image.to(torch.float32).mean(dim=(1, 2), keepdim=True).to(image.dtype).expand(-1, bh, bw)
    reps = (1, math.ceil(bh / strip.shape[-2]), math.ceil(bw / strip.shape[-1]))
    return strip.repeat(*reps)[:, :bh, :bw]


def random_crop_flip(x: Tensor, rng: np.random.Generator, pad: int = PAD) -> Tensor:
    """Per-sample random crop from a ``pad``-pixel reflect-padded copy, then a horizontal flip with p=0.5."""
    count, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = rng.integers(0, 2 * pad + 1, size=(count, 2))
    flips = rng.random(count) < 0.5
    crops = [padded[i, :, oy:oy + height, ox:ox + width] for i, (oy, ox) in enumerate(offsets)]
    out = torch.stack(crops)
    if flips.any():
        index = torch.from_numpy(np.flatnonzero(flips))
        out[index] = out[index].flip(-1)
    return out


# ---------------------------------------------------------------- the loop


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainData,
    train_idx: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    tick: Callable[[int, int, float, float], None] | None = None,
) -> tuple[float, float]:
    model.train()
    order = rng.permutation(train_idx)
    # Near-equal batches, none of size 1 (BatchNorm cannot train on one sample).
    batches = np.array_split(order, math.ceil(len(order) / config.batch_size))
    images = torch.from_numpy(data.images)
    masks = torch.from_numpy(data.masks) if data.masks is not None else None
    labels = torch.from_numpy(data.labels)
    total_loss, correct, seen = 0.0, 0, 0
    for done, batch in enumerate(batches, start=1):
        index = torch.from_numpy(batch)
        x = _to_float(images[index])
        if config.recipe == "bgmix" and masks is not None:
            x = bgmix_batch(x, masks[index], rng)
        y = labels[index]
        x, targets = _mix(_normalise(random_crop_flip(x, rng)), y, config.recipe, len(data.classes), rng)
        logits = model(x)
        loss = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(batch)
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        seen += len(batch)
        if tick is not None:
            tick(done, len(batches), total_loss / seen, correct / seen)
    return total_loss / len(order), correct / len(order)


def _mix(x: Tensor, y: Tensor, recipe: str, num_classes: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    # Inputs and soft targets for every recipe (baseline: plain one-hot); cutmix may also mix the inputs.
    if recipe != "cutmix":
        return x, smooth_targets(y, num_classes, 0.0)
    if rng.random() >= CUTMIX_PROB:
        return x, smooth_targets(y, num_classes, LABEL_SMOOTHING)
    mixed, y_a, y_b, lam = cutmix_batch(x, y, rng)
    soft_a = smooth_targets(y_a, num_classes, LABEL_SMOOTHING)
    soft_b = smooth_targets(y_b, num_classes, LABEL_SMOOTHING)
    return mixed, lam * soft_a + (1.0 - lam) * soft_b


def _to_float(images: Tensor) -> Tensor:
    # uint8 NHWC -> float NCHW in [0, 1]
    return images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def _normalise(x: Tensor) -> Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _validate_config(config: TrainConfig) -> None:
    if config.recipe not in RECIPES:
        raise DataError(f"unknown recipe {config.recipe!r} (expected one of {list(RECIPES)})", field="recipe")
    checks: Sequence[tuple[bool, str, str]] = (
        (config.epochs >= 1, "epochs", f"expected epochs >= 1, got {config.epochs}"),
        (config.batch_size >= 2, "batch_size", f"expected batch_size >= 2, got {config.batch_size}"),
        (config.lr > 0, "lr", f"expected lr > 0, got {config.lr}"),
        (0.0 <= config.val_fraction < 1.0, "val_fraction",
         f"expected val_fraction in [0, 1), got {config.val_fraction}"),
        (config.image_size >= 16, "image_size", f"expected image_size >= 16, got {config.image_size}"),
    )
    for ok, name, message in checks:
        if not ok:
            raise DataError(message, field=name)


def _save(
    config: TrainConfig, model: nn.Module, data: TrainData, history: Sequence[EpochLog], counts: tuple[int, int]
) -> Path:
    assert config.output is not None
    last = history[-1]
    meta: dict[str, Any] = {
        "recipe": config.recipe,
        "epochs": config.epochs,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "data": config.data,
        "data_digest": data.digest,
        "n_train": counts[0],
        "n_val": counts[1],
        "train_accuracy": last.train_accuracy,
        "val_accuracy": last.val_accuracy,
        "code_version": __version__,
        "git_commit": git_commit(),
    }
    return save(config.output, model, arch=config.arch, arch_kwargs={"num_classes": len(data.classes)},
                classes=data.classes, input_size=(config.image_size, config.image_size), mean=MEAN, std=STD,
                meta=meta)


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout holding this package, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and head else None


# ---------------------------------------------------------------- data sources


def load_data(source: str, image_size: int, *, need_masks: bool = False) -> TrainData:
    """Load ``synth:shapes?...``, an ImageFolder tree (optionally ``images/`` + ``masks/``) or a review-set folder."""
    if source.startswith("synth:"):
        return _load_synth(source, image_size)
    root = Path(source)
    if not root.is_dir():
        raise DataError("no such folder (expected a folder or synth:shapes?bias=..&n=..&seed=..)", path=source)
    if (root / "review.yaml").is_file():
        data = _load_review_set(root, image_size)
    else:
        data = _load_folder(root, image_size, need_masks)
    if need_masks and data.masks is None:
        raise DataError("recipe bgmix needs masks: none found (expected DIR/images/<class>/*.png "
                        "+ DIR/masks/<class>/*.png)", path=source)
    return data


def _load_synth(source: str, image_size: int) -> TrainData:
    params = shapes.parse_synth_source(source)
    seed, size = int(params["seed"]), int(params["size"])
    if seed in shapes.RESERVED_SEEDS:
        raise DataError(f"seed {seed} is reserved for the shipped review set; train on another seed",
                        path=source, field="seed")
    samples = shapes.generate(int(params["n"]), bias=float(params["bias"]), seed=seed, size=size)
    images = np.stack([_fit_image(s.image, image_size) for s in samples])
    masks = np.stack([_fit_mask(s.mask, image_size) for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    return _finish(images, masks, labels, shapes.CLASSES, source, digest=None)


def _load_folder(root: Path, image_size: int, need_masks: bool) -> TrainData:
    image_root = root / "images" if (root / "images").is_dir() else root
    mask_root = root / "masks" if image_root != root and (root / "masks").is_dir() else None
    classes = tuple(sorted(d.name for d in image_root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    files = {name: sorted(p for p in (image_root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
             for name in classes}
    if not any(files.values()):
        raise DataError("no images found (expected DIR/<class>/*.png or DIR/images/<class>/*.png)", path=root)
    empty = [name for name in classes if not files[name]]
    if empty:
        raise DataError(f"class folder(s) {empty} hold no images", path=image_root)
    paths = [(p, label) for label, name in enumerate(classes) for p in files[name]]
    images = np.stack([_read_image(p, image_size) for p, _ in paths])
    labels = np.asarray([label for _, label in paths], dtype=np.int64)
    masks = None
    if mask_root is not None:
        mask_paths = [mask_root / p.parent.name / f"{p.stem}.png" for p, _ in paths]
        missing = [m for m in mask_paths if not m.is_file()]
        if missing and need_masks:
            raise DataError(f"recipe bgmix needs masks: {len(missing)} missing, e.g. {missing[0]}", path=root)
        if not missing:
            masks = np.stack([_read_mask(m, image_size) for m in mask_paths])
    return _finish(images, masks, labels, classes, str(root), digest=None)


def _load_review_set(root: Path, image_size: int) -> TrainData:
    # The review set's own reader: the pin, the path rules and the image decoding (EXIF, 16-bit, ...) are the
    # gate's, and its class order is kept so the candidate matches it without remapping.
    from gate.review_set import open_review_set

    review = open_review_set(root)
    if review.digest in shapes.RESERVED_DIGESTS:
        raise DataError("this is the shipped review set; a candidate trained on it would be gated on its own "
                        "training data", path=root)
    images = np.stack([_fit_image(review.load_image(i), image_size) for i in range(review.size)])
    loaded = [review.load_mask(i) for i in range(review.size)]
    masks = None if any(m is None for m in loaded) else np.stack([_fit_mask(m, image_size) for m in loaded
                                                                  if m is not None])
    return _finish(images, masks, review.labels(), review.classes, str(root), review.digest)


def _finish(
    images: np.ndarray,
    masks: np.ndarray | None,
    labels: np.ndarray,
    classes: Sequence[str],
    source: str,
    digest: str | None,
) -> TrainData:
    present = np.unique(labels)
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DataError(f"found a single class ({only!r}); training needs at least two", path=source)
    return TrainData(images=images, masks=masks, labels=labels, classes=tuple(classes),
                     digest=digest or array_digest(images, masks, labels, classes))


def array_digest(images: np.ndarray, masks: np.ndarray | None, labels: np.ndarray, classes: Sequence[str]) -> str:
    """``sha256:`` over the class names, labels, images and masks as loaded."""
    digest = hashlib.sha256()
    digest.update("\n".join(classes).encode())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    if masks is not None:
        digest.update(np.packbits(masks).tobytes())
    return f"sha256:{digest.hexdigest()}"


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _fit_image(np.asarray(img.convert("RGB")), size)
    except OSError as exc:
        raise DataError(f"cannot read image: {exc}".splitlines()[0], path=path) from None


def _read_mask(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _fit_mask(np.asarray(img.convert("L")) > 0, size)
    except OSError as exc:
        raise DataError(f"cannot read mask: {exc}".splitlines()[0], path=path) from None


def _fit_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _fit_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    from PIL import Image

    small = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(small) > 0
