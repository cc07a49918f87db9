"""The sanity copies' shared trunk: where a model's graph splits, what each copy runs, and when it does not split."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gate.engine import core as engine
from gate.engine import sanity, trunk
from gate.engine.gradcam import explain
from gate.inputs import candidate as candidate_io
from gate.inputs import shapes
from gate.inputs.archs import build_model
from gate.inputs.review_set import ReviewSet
from tests.conftest import pinned_policy

NAMES = ("circle", "square", "triangle", "star")
SANITY = frozenset({"sanity"})


class Small(nn.Module):
    """stem → features (conv, relu, conv, relu) → pooled → fc; ``skip`` adds the stem's output above the block."""

    def __init__(self, skip: bool = False, twice: bool = False, branch: bool = False, lies: bool = False) -> None:
        super().__init__()
        self.skip, self.twice, self.branch, self.lies = skip, twice, branch, lies
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.features = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        a = self.stem(x)
        if self.branch and a.mean() > 0:  # data-dependent: fx cannot trace it
            a = a * 2
        f = self.features(a)
        if self.skip:
            f = f + a  # the stem's output reaches the layers above the top block
        if self.twice:
            f = self.features[2](f)
        if self.lies and not isinstance(x, Tensor):  # traced (x is a Proxy) into other code than it runs
            f = f * 0
        return self.fc(f.mean(dim=(2, 3)))


def _maps_both_ways(model: nn.Module, layer: str, x: Tensor) -> tuple[list[Tensor], list[Tensor], str]:
    """Each copy's map from its whole forward and from its tail (the model's kept entry), and the split's words."""
    split, words = sanity.shared_trunk(model, layer)
    assert split is not None, words
    copies = sanity.randomised_copies(model, layer, NAMES, seed=3, copies=2, split=split)
    with trunk.kept_entry(model, split.block) as entry:
        explained = explain(model, layer, x)
    kept = entry.get()
    assert kept is not None and entry.calls == 1
    whole, tails = [], []
    for each in copies:
        with each.drawn_for(explained.target, [f"s{i}" for i in range(len(x))]):
            whole.append(each.explain(x, None, explained.target, explained.layout).cam)
            tails.append(each.explain(x, kept, explained.target, explained.layout).cam)
    return whole, tails, words


def test_a_small_model_splits_at_its_top_conv_and_the_tail_gives_the_same_maps() -> None:
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    whole, tails, words = _maps_both_ways(model, "features", x)
    assert words == "shared trunk from features.2"
    for a, b in zip(whole, tails, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(whole[0], whole[1])  # two copies, two draws: the comparison is not vacuous


@pytest.mark.parametrize(("kind", "why"), [
    ("skip", "reaches the layers above it"),
    ("twice", "runs 2 and 1 times per forward"),
    ("branch", "does not trace with torch.fx"),
])
def test_graphs_that_do_not_split_keep_the_full_forward_and_say_why(kind: str, why: str) -> None:
    model = Small(**{kind: True}).eval()
    split, words = sanity.shared_trunk(model, "features")
    assert split is None
    assert words.startswith("full forward: ") and why in words


def test_a_block_at_the_model_input_keeps_the_full_forward() -> None:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(4, 2))
    split, words = sanity.shared_trunk(model, "features")
    assert split is None and words == "full forward: nothing runs below features.0: its input is the model's"


def test_kept_entry_is_the_block_input_once_and_none_when_the_block_runs_twice() -> None:
    model = Small().eval()
    x = torch.randn(2, 3, 8, 8)
    with trunk.kept_entry(model, "features.2") as entry:
        model(x)
    expected = model.features[:2](model.stem(x))
    assert entry.get() is not None and torch.equal(entry.get(), expected)
    with trunk.kept_entry(model, "features.2") as entry:
        model(x)
        model(x)
    assert entry.calls == 2 and entry.get() is None
    with trunk.kept_entry(model, None) as entry:
        model(x)
    assert entry.get() is None
    assert not model.features[2]._forward_pre_hooks  # the hook is gone after the block


def _resnet_candidate(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", {"num_classes": 4})
    return candidate_io.save(tmp_path / "r18.pt", model, arch="resnet18", arch_kwargs={"num_classes": 4},
                             classes=shapes.CLASSES, input_size=(96, 96))  # layer4: 3×3


def test_each_copy_runs_only_its_top_block_and_head(small_set: ReviewSet, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module of every copy counted: below layer4.1 nothing runs again; the old path runs them all."""
    torch.set_num_threads(1)
    cand = candidate_io.load(_resnet_candidate(tmp_path))
    calls: list[Counter[str]] = []
    real_copy = sanity.randomized_copy

    def counting_copy(model: nn.Module, layer: str, seed: int = 0) -> nn.Module:
        copy = real_copy(model, layer, seed)
        counter: Counter[str] = Counter()
        for name, module in copy.named_modules():
            if name and not any(True for _ in module.children()):
                module.register_forward_pre_hook(lambda *_, n=name, c=counter: c.update([n]))
        calls.append(counter)
        return copy

    monkeypatch.setattr(sanity, "randomized_copy", counting_copy)
    runs, counts = {}, {}
    for shared in (False, True):
        calls.clear()
        options = engine.EngineOptions(batch_size=16, probes=SANITY, device="cpu", shared_trunk=shared)
        (runs[shared],) = engine.run([cand], small_set, options)
        counts[shared] = [dict(c) for c in calls]
    batches = -(-small_set.size // 16)
    leaves = [n for n, m in cand.model.named_modules() if n and not any(True for _ in m.children())]
    # The old path: every copy runs every module in every batch (a block's relu twice per forward).
    old = counts[False]
    assert all(set(c) == set(leaves) and c["conv1"] == batches and c["layer1.0.relu"] == 2 * batches for c in old)
    per_forward = {n: old[0][n] // batches for n in leaves}
    tail = [n for n in leaves if n.startswith("layer4.1.") or n in ("avgpool", "fc")]
    for counter in counts[True][1:]:
        assert counter == {n: per_forward[n] * batches for n in tail}  # conv1 … layer4.0: never again
    # The first copy also runs its whole forward and its tail once more, on the first batch (the check).
    assert counts[True][0] == {n: per_forward[n] * (1 + (batches + 1 if n in tail else 0)) for n in leaves}
    assert runs[True].sanity_trunk == "shared trunk from layer4.1"
    assert runs[False].sanity_trunk == "full forward: shared trunk off"
    a, b = runs[True].records.sanity_similarity, runs[False].records.sanity_similarity
    assert a is not None and b is not None and np.isfinite(a).mean() > 0.7  # 3×3 maps: some all zero
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_model_traced_into_other_code_than_it_runs_keeps_the_full_forward(small_set: ReviewSet,
                                                                             tmp_path: Path) -> None:
    """The once-per-gate check: a tail that differs from the copy's forward is dropped; the old path's scores."""
    torch.set_num_threads(1)
    cand = candidate_io.load(_resnet_candidate(tmp_path))
    runs = {}
    for lies in (True, False):
        torch.manual_seed(0)
        model = Small(lies=lies).eval()
        liar = replace(cand, model=model, target_layer="features")
        options = engine.EngineOptions(batch_size=16, probes=SANITY, device="cpu")
        (runs[lies],) = engine.run([liar], small_set, options)
    assert runs[True].sanity_trunk == "full forward: its traced graph computes other logits or maps than its forward"
    assert runs[False].sanity_trunk == "shared trunk from features.2"
    a, b = runs[True].records.sanity_similarity, runs[False].records.sanity_similarity
    assert a is not None and b is not None
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_result_json_records_how_the_copies_ran(small_set: ReviewSet, untrained_checkpoint: Path,
                                                tmp_path: Path) -> None:
    from gate.run import GateRequest, run_gate

    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}], probes=("sanity",))
    result = run_gate(GateRequest(command="check", candidates=(untrained_checkpoint,), policy=policy))
    assert result.to_json()["environment"]["sanity_trunk"] == "untrained.pt: shared trunk from features.12"
    plain = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}], name="plain")
    result = run_gate(GateRequest(command="check", candidates=(untrained_checkpoint,), policy=plain))
    assert "sanity_trunk" not in result.to_json()["environment"]
