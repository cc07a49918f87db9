"""Counterfactual probes built from object masks, and the randomised model for the sanity check.

Background probes follow Xiao et al. 2020 ("Noise or Signal", ImageNet-9): the
object on a flat fill (Only-FG), the object removed Only-BG-T style (its
bounding box filled with scene from outside the box, so no silhouette is left),
and the object pasted on another sample's object-free scene (Mixed-Same /
Mixed-Rand). The sanity check follows Adebayo et al. 2018: re-initialise the top
of the network and see whether the maps change.

Image functions are pure and batched: images are float [B, 3, H, W] in [0, 1]
(before normalisation), masks bool [B, H, W], on any device; nothing here runs a
model.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from gate.errors import GateError, ReviewSetError

# Mid grey: carries no colour of any scene. A per-image mean scene colour would
# leak the scene (the very cue the probe removes) to a model that reads it.
DEFAULT_FILL = 0.5

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


def only_fg(images: Tensor, masks: Tensor, fill: float | Tensor | None = None) -> Tensor:
    """The object on a flat fill, the "showroom test"; the scene becomes ``fill`` (default mid grey 0.5).

    ``fill`` is a number, a per-channel colour [3], or a per-image colour [B, 3].
    """
    _check_batch(images, masks)
    value = DEFAULT_FILL if fill is None else fill
    flat = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if flat.dim() == 1:
        flat = flat.view(1, -1, 1, 1)
    elif flat.dim() == 2:
        flat = flat.view(flat.shape[0], flat.shape[1], 1, 1)
    return torch.where(masks[:, None], images, flat.expand_as(images))


def paste_object(images: Tensor, masks: Tensor, scenes: Tensor) -> Tensor:
    """Object pixels of ``images[i]`` (where ``masks[i]``) over ``scenes[i]``; scenes shaped like images."""
    _check_batch(images, masks)
    if scenes.shape != images.shape:
        raise GateError(f"scenes shape {tuple(scenes.shape)} differs from images shape {tuple(images.shape)}")
    return torch.where(masks[:, None], images, scenes)


def mixed(images: Tensor, masks: Tensor, partner_images: Tensor, partner_masks: Tensor, dilate: int = 3) -> Tensor:
    """Mixed-Same / Mixed-Rand: each object pasted on its partner's scene with the partner's object removed."""
    return paste_object(images, masks, remove_object(partner_images, partner_masks, dilate=dilate))


def remove_object(images: Tensor, masks: Tensor, dilate: int = 3) -> Tensor:
    """Only-BG-T: fill each object's bounding box (grown by ``dilate`` px) with scene from outside the box.

    The box is filled with the same-size patch right next to it (the nearest
    scene, so the texture matches), taken from the widest free strip that holds
    a whole patch (ties: left, right, top, bottom); when no strip does, with
    tiles of the widest strip's pixels beside the box, repeated across it. A box
    that covers the whole image gets the mean colour of the non-object pixels.
    An empty mask leaves the image unchanged.
    """
    _check_batch(images, masks)
    if dilate < 0:
        raise GateError(f"dilate must be >= 0, got {dilate}")
    height, width = images.shape[-2:]
    # Two small host copies per batch instead of one sync per image.
    rows = masks.any(dim=2).cpu().numpy()
    cols = masks.any(dim=1).cpu().numpy()
    out = images.clone()
    for i in range(images.shape[0]):
        box = dilated_box(rows[i], cols[i], dilate, height, width)
        if box is not None:
            _fill_box(out[i], images[i], masks[i], box)
    return out


def _check_batch(images: Tensor, masks: Tensor) -> None:
    shapes_ok = images.dim() == 4 and masks.dim() == 3 and images.shape[2:] == masks.shape[1:]
    shapes_ok = shapes_ok and images.shape[0] == masks.shape[0]
    if not shapes_ok:
        raise GateError(f"expected images [B,C,H,W] and masks [B,H,W], got {tuple(images.shape)}, {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise GateError(f"masks must be bool, got {masks.dtype}")


def dilated_box(rows: np.ndarray, cols: np.ndarray, dilate: int, height: int, width: int) -> Box | None:
    """The object's bounding box ``(y0, y1, x0, x1)``, half-open, grown by ``dilate`` px and clipped.

    ``rows``/``cols`` say which rows and columns hold object pixels; None when there are none.
    """
    ys = np.flatnonzero(rows)
    xs = np.flatnonzero(cols)
    if ys.size == 0:
        return None
    y0, y1 = max(int(ys[0]) - dilate, 0), min(int(ys[-1]) + 1 + dilate, height)
    x0, x1 = max(int(xs[0]) - dilate, 0), min(int(xs[-1]) + 1 + dilate, width)
    return y0, y1, x0, x1


def _strips(box: Box, height: int, width: int) -> list[tuple[str, int]]:
    """Free strips beside the box, widest first; ties keep the order left, right, top, bottom."""
    y0, y1, x0, x1 = box
    strips = [("left", x0), ("right", width - x1), ("top", y0), ("bottom", height - y1)]
    return sorted(strips, key=lambda s: -s[1])


def _fill_box(out: Tensor, image: Tensor, mask: Tensor, box: Box) -> None:
    """Write the filled box of ``image`` into ``out`` (a view of the output batch)."""
    y0, y1, x0, x1 = box
    height, width = image.shape[-2:]
    h, w = y1 - y0, x1 - x0
    strips = [s for s in _strips(box, height, width) if s[1] > 0]
    if not strips:
        out[:, y0:y1, x0:x1] = _scene_mean(image, mask)[:, None, None]
        return
    fitting = [s for s in strips if s[1] >= (w if s[0] in ("left", "right") else h)]
    side, size = fitting[0] if fitting else strips[0]
    rows, cols = _source_index(side, size, box, image.device)
    out[:, y0:y1, x0:x1] = image[:, rows[:, None], cols[None, :]]


def _source_index(side: str, size: int, box: Box, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column indices of the scene copied into the box: a whole patch if it fits, else tiles."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    rows = torch.arange(y0, y1, device=device)
    cols = torch.arange(x0, x1, device=device)
    # Tiles repeat the strip's pixels nearest the box; a strip at least as wide as the box gives one whole patch.
    if side == "left":
        cols = x0 - min(size, w) + torch.arange(w, device=device) % min(size, w)
    elif side == "right":
        cols = x1 + torch.arange(w, device=device) % min(size, w)
    elif side == "top":
        rows = y0 - min(size, h) + torch.arange(h, device=device) % min(size, h)
    else:
        rows = y1 + torch.arange(h, device=device) % min(size, h)
    return rows, cols


def _scene_mean(image: Tensor, mask: Tensor) -> Tensor:
    scene = ~mask
    if not bool(scene.any()):
        return torch.full((image.shape[0],), DEFAULT_FILL, dtype=image.dtype, device=image.device)
    return image[:, scene].mean(dim=1)


def pair_partners(labels: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    """Seeded partners per sample for the mixed probes, as int64 index arrays.

    ``mixed_same``: another sample of the same class, uniformly at random (the
    sample itself when it is alone in its class). ``mixed_rand``: a sample of a
    different class, uniformly among all other classes' samples. The same labels
    and seed give the same pairs on every rank.
    """
    y = np.asarray(labels, dtype=np.int64)
    classes = np.unique(y)
    if classes.size < 2:
        raise ReviewSetError("background probes need samples of at least two classes", field="labels")
    rng = np.random.default_rng(seed)
    same = np.arange(y.size, dtype=np.int64)
    rand = np.empty(y.size, dtype=np.int64)
    for c in classes:
        members = np.flatnonzero(y == c)
        others = np.flatnonzero(y != c)
        n = members.size
        if n > 1:
            # A shift of 1..n-1 within the class: uniform over the other members, never itself.
            shift = rng.integers(1, n, size=n)
            same[members] = members[(np.arange(n) + shift) % n]
        rand[members] = others[rng.integers(0, others.size, size=n)]
    return {"mixed_same": same, "mixed_rand": rand}


# Randomised copies the sanity probe averages over. One copy with one head draw moves by about ±0.3 with its
# seed (that draw decides whether the random maps lean towards or away from the object in every sample at
# once). With a head row drawn per sample, one copy still moves by about ±0.024 (the top block's draw, on
# cheater.pt); five copies bring the range over five --seed values to 0.025 on the shipped candidates.
SANITY_COPIES = 5


def randomized_copy(model: nn.Module, target_layer: str, seed: int = 0) -> nn.Module:
    """A frozen eval-mode copy whose top block and head are re-initialised (Adebayo et al., top part only).

    Re-initialised: the last block of ``target_layer`` (the last child with
    parameters when it is a block, e.g. ResNet ``layer4[-1]``; for a flat
    Sequential of layers, the last Conv2d and the layers after it) and every
    module registered after ``target_layer`` that has parameters (the head).
    Re-initialisation runs on the CPU under ``seed`` so that every device gets
    the same weights. The copy shares every other parameter and buffer with
    ``model`` (they are the same tensors); its re-initialised ones are frozen.
    Hooks on ``model`` are copied too: call this before registering any. The
    head's class rows follow the row order here; see :func:`randomised_copies`
    for copies that do not depend on the class order.
    """
    if target_layer not in dict(model.named_modules()):
        raise GateError(f"target layer {target_layer!r} not found in the model")
    fresh = {id(t) for module in _reinitialised(model, target_layer) for t in (*module.parameters(),
                                                                                *module.buffers())}
    # The rest is shared with the model, not copied: a copy costs only the part it re-initialises (the
    # sanity probe holds SANITY_COPIES of them). Shared weights are never written: resets touch only targets.
    shared = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in fresh}
    clone = copy.deepcopy(model, shared).eval()
    targets = _reinitialised(clone, target_layer)
    for module in targets:
        module.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in targets:
            _reinit(module)
    return clone


class RandomisedCopy:
    """One randomised copy for the sanity probe, with its class layer's rows keyed by class NAME.

    The copy's top block and hidden head layers are re-initialised under a seed derived from ``seed`` and
    ``index`` (they do not depend on the class order). The class layer (the head's last Linear, or 1×1
    conv, with one row per output) gets each row drawn from a generator keyed by the class name, and,
    while :meth:`drawn_for` is active, each sample's explained class gets a row of its own, keyed by the
    class name and the sample id. A permutation of the checkpoint's classes and rows therefore gives the
    same maps, shards and batch sizes give the same maps, and the mean over samples averages over many
    random heads instead of one (the head draw is what moves a single copy's score most).
    """

    def __init__(self, model: nn.Module, target_layer: str, outputs: Sequence[str], *, seed: int, index: int) -> None:
        self.seed = derived_seed(seed, "copy", str(index))
        self.model = randomized_copy(model, target_layer, seed=self.seed)
        layer = _class_layer(self.model, target_layer, len(outputs))
        self.rows = None if layer is None else _SampleRows(layer, tuple(outputs), self.seed)

    @contextmanager
    def drawn_for(self, target: Tensor, sample_ids: Sequence[str]) -> Iterator[None]:
        """Per-sample rows of the explained classes ``target`` (model output indices) during a forward."""
        if self.rows is None:
            yield
            return
        self.rows.draw(target, sample_ids)
        try:
            yield
        finally:
            self.rows.active = None


def randomised_copies(
    model: nn.Module, target_layer: str, outputs: Sequence[str], *, seed: int, copies: int | None = None
) -> list[RandomisedCopy]:
    """``copies`` (default ``SANITY_COPIES``) randomised copies of ``model``, seeds derived from ``seed``."""
    copies = SANITY_COPIES if copies is None else copies
    if copies < 1:
        raise GateError(f"expected at least one randomised copy, got {copies}", field="copies")
    return [RandomisedCopy(model, target_layer, outputs, seed=seed, index=k) for k in range(copies)]


def derived_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from ``seed`` and names: stable across processes and platforms (unlike ``hash``)."""
    text = "/".join(("xgate", str(seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def _class_layer(model: nn.Module, target_layer: str, width: int) -> nn.Module | None:
    """The head's class layer: its last leaf with parameters, when a Linear or 1×1 conv with ``width`` rows."""
    leaves = [m for head in _head(model, target_layer) for m in head.modules()
              if _has_params(m) and not any(True for _ in m.children())]
    if not leaves:
        return None
    last = leaves[-1]
    if isinstance(last, nn.Linear) and last.out_features == width:
        return last
    if isinstance(last, nn.Conv2d) and last.out_channels == width and last.kernel_size == (1, 1) \
            and last.groups == 1:
        return last
    return None


class _SampleRows:
    """Forward hook on a class layer: rows keyed by class name; per-sample rows of the explained class."""

    def __init__(self, layer: nn.Module, outputs: tuple[str, ...], seed: int) -> None:
        weight = layer.weight
        assert isinstance(weight, Tensor)
        self.outputs = outputs
        self.seed = seed
        self.fan_in = int(weight[0].numel())
        # PyTorch's default Linear/Conv init: kaiming_uniform(a=√5) gives U(±1/√fan_in), and so does the bias.
        self.bound = 1.0 / math.sqrt(max(self.fan_in, 1))
        self.active: tuple[Tensor, Tensor] | None = None
        self.linear = isinstance(layer, nn.Linear)
        with torch.no_grad():
            rows = np.stack([self._row("class", name) for name in outputs])
            weight.copy_(torch.from_numpy(rows).reshape(weight.shape))
            if isinstance(layer.bias, Tensor):
                biases = np.array([self._row("bias", name, size=1)[0] for name in outputs])
                layer.bias.copy_(torch.from_numpy(biases))
        self.bias = layer.bias if isinstance(layer.bias, Tensor) else None
        layer.register_forward_hook(self)

    def _row(self, kind: str, *parts: str, size: int | None = None) -> np.ndarray:
        rng = np.random.default_rng(derived_seed(self.seed, kind, *parts))
        return rng.uniform(-self.bound, self.bound, size=self.fan_in if size is None else size)

    def draw(self, target: Tensor, sample_ids: Sequence[str]) -> None:
        """Rows for this batch: sample ``i`` explains output ``target[i]`` with a row keyed by (class, id)."""
        indices = [int(t) for t in target.cpu()]
        rows = np.stack([self._row("sample", self.outputs[t], sid) for t, sid in zip(indices, sample_ids,
                                                                                       strict=True)])
        self.active = (torch.from_numpy(rows), torch.tensor(indices, dtype=torch.long))

    def __call__(self, _module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if self.active is None:
            return None
        x = inputs[0]
        rows, target = (t.to(x.device) for t in self.active)
        rows = rows.to(x.dtype)
        bias = self.bias[target] if self.bias is not None else torch.zeros_like(rows[:, 0])
        if self.linear and x.dim() == 2 and output.dim() == 2:
            picked = (x * rows).sum(1) + bias
            # bf16 autocast: x and output are bf16, the float32 bias promotes picked; scatter needs one dtype
            return output.scatter(1, target[:, None], picked[:, None].to(output.dtype))
        if not self.linear and x.dim() == 4 and output.dim() == 4:
            picked = torch.einsum("bchw,bc->bhw", x, rows) + bias[:, None, None]
            index = target[:, None, None, None].expand(-1, 1, *output.shape[2:])
            return output.scatter(1, index, picked[:, None].to(output.dtype))
        return None  # an unexpected layout: the class-keyed rows still hold


def _reinitialised(model: nn.Module, target_layer: str) -> list[nn.Module]:
    """The modules a randomised copy re-initialises: the target layer's top block and the head."""
    return [*_top_block(dict(model.named_modules())[target_layer]), *_head(model, target_layer)]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _top_block(target: nn.Module) -> list[nn.Module]:
    children = list(target.children())
    with_params = [c for c in children if _has_params(c)]
    if not with_params:
        return [target]
    last = with_params[-1]
    if any(True for _ in last.children()):
        return [last]
    convs = [i for i, c in enumerate(children) if isinstance(c, nn.modules.conv._ConvNd)]
    start = convs[-1] if convs else children.index(last)
    return children[start:]


def _head(model: nn.Module, target_layer: str) -> list[nn.Module]:
    """Outermost modules with parameters registered after the target layer (not inside it)."""
    names = [name for name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    kept: list[str] = []
    for name in names[names.index(target_layer) + 1 :]:
        # named_modules is pre-order: a kept module's reset already covers its children.
        inside = any(name.startswith(outer + ".") for outer in [target_layer, *kept])
        if not inside and _has_params(modules[name]):
            kept.append(name)
    return [modules[name] for name in kept]


def _reinit(module: nn.Module) -> None:
    """Reset every submodule on the CPU; parameters without a reset get a small normal init."""
    params = list(module.parameters())
    if not params:
        return
    device = params[0].device
    module.to("cpu")
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for param in sub.parameters(recurse=False):
                nn.init.normal_(param, std=1.0 / math.sqrt(max(param.numel(), 1)))
    module.to(device)


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Spearman rank correlation of two maps [B, ...] (average ranks for ties), float64 [B].

    A row where either map is constant has no correlation: NaN. Equals
    ``scipy.stats.spearmanr`` per row.
    """
    if a.shape != b.shape or a.dim() < 1:
        raise GateError(f"maps must have the same shape [B, ...], got {tuple(a.shape)} and {tuple(b.shape)}")
    ra = _average_ranks(a.reshape(a.shape[0], -1))
    rb = _average_ranks(b.reshape(b.shape[0], -1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    num = (ra * rb).sum(dim=1)
    den = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..P-1 per row, tied values sharing their mean rank (float64)."""
    values, order = torch.sort(x, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.cumsum(dim=1) - 1
    pos = torch.arange(x.shape[1], dtype=torch.float64, device=x.device).expand(x.shape[0], -1)
    total = torch.zeros_like(pos).scatter_add_(1, group, pos)
    count = torch.zeros_like(pos).scatter_add_(1, group, torch.ones_like(pos))
    ranks_sorted = (total / count.clamp_min(1)).gather(1, group)
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)
