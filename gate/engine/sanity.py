"""The randomised copies of the sanity check (Adebayo et al. 2018) and the rank correlation of their maps.

Re-initialise the top of the network and see whether the maps change: each copy re-initialises the target
layer's top block and the head and shares every other weight with the model. Below that block a copy computes
what the model computed, so it runs only its tail, from the activation the model's explained forward kept
(gate.engine.trunk), where the model's graph splits there; else its whole forward (``SanityProbe.trunk`` says
which, for result.json's environment).
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

from gate.engine import trunk
from gate.engine.gradcam import Explained, explain
from gate.engine.layers import Layout
from gate.engine.model_faults import OutputCheck
from gate.errors import GateError
from gate.inputs.batches import Batch

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

    With ``split`` (the model's graph split at the top block, gate.engine.trunk), the copy also has its
    ``tail``: the block and the head alone, run from the activation the model's explained forward kept.
    """

    def __init__(self, model: nn.Module, target_layer: str, outputs: Sequence[str], *, seed: int, index: int,
                 split: trunk.Split | None = None) -> None:
        self.seed = derived_seed(seed, "copy", str(index))
        self.target_layer = target_layer
        self.model = randomized_copy(model, target_layer, seed=self.seed)
        layer = _class_layer(self.model, target_layer, len(outputs))
        self.rows = None if layer is None else _SampleRows(layer, tuple(outputs), self.seed)
        self.tail = None if split is None else trunk.tail(split, self.model)

    def runner(self, entry: Tensor | None) -> nn.Module:
        """The module :meth:`explain` runs for this ``entry``: the tail when there is one and an entry."""
        return self.tail if self.tail is not None and entry is not None else self.model

    def explain(self, inputs: Tensor, entry: Tensor | None, target: Tensor, layout: Layout) -> Explained:
        """The copy's Grad-CAM of ``target``: from the kept ``entry`` through the tail, else from ``inputs``."""
        if self.tail is not None and entry is not None:
            return explain(self.tail, trunk.MARKER, entry, target=target, layout=layout)
        return explain(self.model, self.target_layer, inputs, target=target)

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
    model: nn.Module, target_layer: str, outputs: Sequence[str], *, seed: int, copies: int | None = None,
    split: trunk.Split | None = None,
) -> list[RandomisedCopy]:
    """``copies`` (default ``SANITY_COPIES``) randomised copies of ``model``, seeds derived from ``seed``.

    ``split`` (from :func:`shared_trunk`): each copy gets its tail, run from the model's kept activation.
    """
    copies = SANITY_COPIES if copies is None else copies
    if copies < 1:
        raise GateError(f"expected at least one randomised copy, got {copies}", field="copies")
    return [RandomisedCopy(model, target_layer, outputs, seed=seed, index=k, split=split) for k in range(copies)]


def shared_trunk(model: nn.Module, target_layer: str) -> tuple[trunk.Split | None, str]:
    """Where the copies of ``model`` split from it, and how their forwards run, in words for the environment.

    ("shared trunk from BLOCK", or "full forward: WHY" when the graph does not split: gate.engine.trunk.)
    """
    if target_layer not in dict(model.named_modules()):
        raise GateError(f"target layer {target_layer!r} not found in the model")
    block = block_name(model, target_layer)
    try:
        return trunk.split(model, block, target_layer), f"shared trunk from {block}"
    except trunk.NoSplit as exc:
        return None, f"full forward: {exc}"


def block_name(model: nn.Module, target_layer: str) -> str:
    """The qualified name of the first module a randomised copy re-initialises (its input is the tail's)."""
    first = _reinitialised(model, target_layer)[0]
    names: list[str] = [name for name, module in model.named_modules() if module is first]
    return names[0]


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


class SanityProbe:
    """One model's randomised copies, how they run (shared trunk or full forward), and their similarities."""

    def __init__(self, model: nn.Module, target_layer: str, outputs: Sequence[str], *, seed: int, shared: bool,
                 check: OutputCheck) -> None:
        split, self.trunk = shared_trunk(model, target_layer) if shared else (None, "full forward: shared trunk off")
        self.block = split.block if split is not None else None  # the module whose input the model keeps
        self.copies = randomised_copies(model, target_layer, outputs, seed=seed, split=split)
        self.check = check
        self.verified = split is None

    def similarities(self, inputs: Tensor, entry: Tensor | None, explained: Explained, cam: Tensor,
                     batch: Batch) -> np.ndarray:
        """[B, copies] Spearman similarities of the model's map ``cam`` and each copy's, same class.

        ``inputs``: the normalised batch; ``entry``: the activation entering the top block, kept by the
        model's explained forward (None: each copy runs its whole forward from ``inputs``).
        """
        # Compared at the target layer's own resolution: upsampling adds no information, only smooth
        # interpolated pixels that inflate rank correlation (and it costs as much as a forward at 224²).
        if entry is not None and not self.verified:
            entry = self._verified(inputs, entry, explained, batch)
        columns = []
        for each in self.copies:
            guard = self.check.guarded(each.runner(entry), len(batch.indices), "randomised-copy")
            with guard, each.drawn_for(explained.target, batch.sample_ids):
                randomised = each.explain(inputs, entry, explained.target, explained.layout)
            columns.append(spearman_rows(cam, randomised.cam))
        return torch.stack(columns, dim=1).double().cpu().numpy()

    def _verified(self, inputs: Tensor, entry: Tensor, explained: Explained, batch: Batch) -> Tensor | None:
        """On the first batch, the first copy's tail against its whole forward: ``entry``, or None if they differ.

        fx traces Python once: a forward that branches on what it is given (``isinstance(x, Tensor)``, a
        tracing flag) can trace into other code than it runs. Such a model keeps the full forward. Checked on
        the batch's first sample (eval mode: samples do not mix), so the check costs one image's forward.
        """
        self.verified = True
        first, target, ids = self.copies[0], explained.target[:1], batch.sample_ids[:1]
        runs = []
        for given in (None, entry[:1]):
            with self.check.guarded(first.runner(given), 1, "randomised-copy"), first.drawn_for(target, ids):
                runs.append(first.explain(inputs[:1], given, target, explained.layout))
        whole, tail = runs
        if _close(whole.logits, tail.logits) and _close(whole.cam, tail.cam):
            return entry
        self.trunk, self.block = "full forward: its traced graph computes other logits or maps than its forward", None
        for each in self.copies:
            each.tail = None
        return None


def _close(a: Tensor, b: Tensor) -> bool:
    """Equal up to float rounding (on a GPU the same ops may pick other kernels), relative to ``a``'s size."""
    scale = float(a.abs().max()) if a.numel() else 0.0
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5 * scale))
