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

from gate import __version__
from gate.errors import DataError
from gate.inputs.archs import build_model
from gate.inputs.candidate import save
from gate.train.augment import bgmix_batch, cutmix_batch, random_crop_flip, smooth_targets
from gate.train.data import TrainData, load_data

RECIPES: tuple[str, ...] = ("baseline", "cutmix", "bgmix")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
CUTMIX_PROB = 0.5
LABEL_SMOOTHING = 0.1
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
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
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


