"""The sanity probe: randomised copies (gate.engine.sanity), their rank correlation, and the score end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn
from torchvision.models import resnet18

from gate.engine import core as engine
from gate.engine import sanity as engine_sanity
from gate.engine.sanity import RandomisedCopy, randomised_copies, randomized_copy, spearman_rows
from gate.errors import GateError
from gate.inputs import archs, shapes
from gate.inputs import candidate as candidate_io
from gate.inputs.archs import tiny_cnn
from gate.inputs.review_set import ReviewSet
from gate.metrics import sanity
from gate.metrics.registry import compute_scores, value_of
from gate.records import Records
from tests.conftest import SHIPPED_SET

NAN = math.nan
SANITY = frozenset({"sanity"})


def _records(table: list[list[float]]) -> Records:
    n = len(table)
    return Records(classes=("a", "b"), ids=tuple(map(str, range(n))), labels=np.zeros(n, dtype=np.int64),
                   probs=np.tile(np.float32([0.9, 0.1]), (n, 1)), energy=np.full(n, NAN), mask_area=np.full(n, NAN),
                   pointing_hit=np.full(n, NAN), rank_accuracy=np.full(n, NAN),
                   sanity_similarity=np.array(table, dtype=np.float64))


def test_score_pools_samples_and_copies_and_spread_is_the_std_of_copy_means() -> None:
    # Copy means: (0.1 + 0.3) / 2 = 0.2 and (0.5 + 0.7 + 0.9) / 3 = 0.7; pooled: 2.5 / 5 = 0.5.
    records = _records([[0.1, 0.5], [0.3, 0.7], [NAN, 0.9]])
    assert value_of("sanity.randomization_similarity", records) == pytest.approx(0.5)
    assert sanity.per_copy_similarity(records) == pytest.approx([0.2, 0.7])
    spread = value_of("sanity.randomization_similarity.spread", records)
    assert spread == pytest.approx(math.sqrt(0.125))  # sample std of 0.2, 0.7


def test_one_copy_column_has_no_spread() -> None:
    records = _records([[0.2], [0.4]])
    assert value_of("sanity.randomization_similarity", records) == pytest.approx(0.3)
    assert math.isnan(value_of("sanity.randomization_similarity.spread", records))


def _perturbed_tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = archs.tiny_cnn(4, width=12)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def _save(model: nn.Module, path: Path, classes: tuple[str, ...]) -> Path:
    return candidate_io.save(path, model, arch="tiny_cnn", arch_kwargs={"num_classes": 4, "width": 12},
                             classes=classes, input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)


def _permuted(model: nn.Module, order: list[int]) -> nn.Module:
    """The same model with its outputs listed in ``order`` (rows of the head permuted to match)."""
    clone = archs.tiny_cnn(4, width=12)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"] = state["fc.weight"][order]
    state["fc.bias"] = state["fc.bias"][order]
    clone.load_state_dict(state)
    return clone.eval()


def _similarity(path: Path, review_set: ReviewSet, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    options = engine.EngineOptions(probes=SANITY, seed=seed, batch_size=batch_size)
    (run,) = engine.run([candidate_io.load(path)], review_set, options)
    assert run.records.sanity_similarity is not None
    return np.asarray(run.records.sanity_similarity)


def test_permuted_class_order_gives_the_same_sanity_values(small_set: ReviewSet, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = _perturbed_tiny(3)
    order = [2, 0, 3, 1]
    classes = tuple(shapes.CLASSES)
    plain = _save(model, tmp_path / "plain.pt", classes)
    permuted = _save(_permuted(model, order), tmp_path / "permuted.pt", tuple(classes[i] for i in order))
    a, b = _similarity(plain, small_set), _similarity(permuted, small_set)
    assert a.shape == (small_set.size, engine_sanity.SANITY_COPIES)
    assert np.isfinite(a).mean() > 0.7  # 4×4 maps: a random one is sometimes all zero (NaN)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    scores_a = compute_scores(engine.run([candidate_io.load(plain)], small_set,
                                         engine.EngineOptions(probes=SANITY))[0].records, SANITY)
    scores_b = compute_scores(engine.run([candidate_io.load(permuted)], small_set,
                                         engine.EngineOptions(probes=SANITY))[0].records, SANITY)
    assert scores_a["sanity.randomization_similarity"] == pytest.approx(
        scores_b["sanity.randomization_similarity"], abs=1e-6)


def test_sanity_values_do_not_depend_on_batches_and_are_seeded(small_set: ReviewSet, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    path = _save(_perturbed_tiny(4), tmp_path / "m.pt", tuple(shapes.CLASSES))
    first = _similarity(path, small_set, batch_size=16)
    np.testing.assert_array_equal(first, _similarity(path, small_set, batch_size=16))  # two runs, same numbers
    np.testing.assert_allclose(first, _similarity(path, small_set, batch_size=7), atol=1e-6)  # other batches
    assert not np.allclose(first, _similarity(path, small_set, seed=1), equal_nan=True)  # --seed draws anew


@pytest.mark.slow
def test_shipped_cheater_sanity_score_is_stable_across_seeds() -> None:
    """The least stable shipped candidate (per-copy spread ≈ 0.024): five --seed values within 0.05."""
    from gate.inputs.review_set import open_review_set

    torch.set_num_threads(1)
    review = open_review_set(SHIPPED_SET)
    cheater = candidate_io.load(Path(SHIPPED_SET).parents[1] / "candidates" / "cheater.pt")
    values = []
    for seed in range(5):
        (run,) = engine.run([cheater], review, engine.EngineOptions(probes=SANITY, seed=seed, batch_size=200))
        values.append(compute_scores(run.records, SANITY)["sanity.randomization_similarity"])
    assert max(values) - min(values) <= 0.05, values


# --- randomized_copy ---------------------------------------------------------------------------------------------


def perturbed(model: nn.Module) -> nn.Module:
    """Non-default weights and BN statistics, so that a reset is visible."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return model.eval()


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, Tensor], model: nn.Module) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])}


def activation(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    store: list[Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: store.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return store[0]


def gradcam(model: nn.Module, layer: str, x: Tensor, target: Tensor) -> Tensor:
    store: list[Tensor] = []

    def keep(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        out = out.detach().requires_grad_()
        store.append(out)
        return out

    handle = dict(model.named_modules())[layer].register_forward_hook(keep)
    logits = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), store[0])
    return torch.relu((grad.mean(dim=(2, 3), keepdim=True) * store[0]).sum(1)).detach()


@pytest.mark.parametrize("trainable", [True, False])
def test_randomized_copy_tiny_cnn(trainable: bool) -> None:
    torch.set_num_threads(1)
    model = perturbed(tiny_cnn(4, width=8))
    model.requires_grad_(trainable)
    before = snapshot(model)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    copy = randomized_copy(model, "features", seed=0)
    assert not changed(before, model)
    assert all(p.requires_grad is trainable for p in model.parameters())
    # The last conv stage of `features` (conv 12, BN 13) and the head `fc` are re-initialised; nothing else.
    fresh = {"features.12", "features.13", "fc"}
    assert {k.rsplit(".", 1)[0] for k in changed(before, copy)} == fresh
    assert not copy.training
    originals = dict(model.named_parameters())
    for name, param in copy.named_parameters():
        if name.rsplit(".", 1)[0] in fresh:
            assert param is not originals[name] and not param.requires_grad  # its own, frozen
        else:
            assert param is originals[name]  # shared, not copied: a copy costs only what it re-initialises
    assert not torch.allclose(copy(x), model(x))
    assert not torch.allclose(activation(copy, "features", x), activation(model, "features", x))
    target = model(x).argmax(1)
    maps = gradcam(model, "features", x, target)
    random_maps = gradcam(copy, "features", x, target)
    similarity = spearman_rows(maps, random_maps)
    assert torch.all(torch.isnan(similarity) | (similarity < 0.99))


def test_randomized_copy_is_seeded() -> None:
    model = perturbed(tiny_cnn(3, width=8))
    a, b, c = (randomized_copy(model, "features", seed=s) for s in (5, 5, 6))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_randomized_copy_resnet18_top_block_and_head() -> None:
    torch.set_num_threads(1)
    model = perturbed(resnet18(weights=None, num_classes=4))
    before = snapshot(model)
    copy = randomized_copy(model, "layer4", seed=0)
    assert not changed(before, model)
    assert all(p.requires_grad for p in model.parameters())
    prefixes = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("layer") else "")
                for k in changed(before, copy)}
    assert prefixes == {"layer4.1", "fc"}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(copy(x), model(x))
    assert not torch.allclose(activation(copy, "layer4", x), activation(model, "layer4", x))


def test_randomized_copy_unknown_layer() -> None:
    with pytest.raises(GateError, match="nope"):
        randomized_copy(tiny_cnn(2, width=4), "nope")


NAMES = ("circle", "square", "triangle", "star")


def penultimate(model: nn.Module, x: Tensor) -> Tensor:
    """What tiny_cnn's fc sees: pooled features [B, D]."""
    with torch.no_grad():
        return model.flatten(model.pool(model.features(x)))


def test_randomised_copies_key_class_rows_by_name() -> None:
    model = perturbed(tiny_cnn(4, width=8))
    order = [3, 1, 0, 2]
    permuted = perturbed(tiny_cnn(4, width=8))
    permuted.load_state_dict({**model.state_dict(), "fc.weight": model.fc.weight[order].detach().clone(),
                              "fc.bias": model.fc.bias[order].detach().clone()})
    (a,), (b,) = (randomised_copies(m, "features", names, seed=7, copies=1)
                  for m, names in ((model, NAMES), (permuted, tuple(NAMES[i] for i in order))))
    assert torch.equal(a.model.fc.weight[order], b.model.fc.weight)
    assert torch.equal(a.model.fc.bias[order], b.model.fc.bias)
    assert torch.equal(a.model.features[12].weight, b.model.features[12].weight)  # top block: class-free
    bound = 1 / np.sqrt(a.model.fc.in_features)
    assert float(a.model.fc.weight.abs().max()) <= bound  # PyTorch's default U(±1/√fan_in)


def test_randomised_copies_differ_from_each_other_and_from_the_model() -> None:
    model = perturbed(tiny_cnn(4, width=8))
    copies = randomised_copies(model, "features", NAMES, seed=0, copies=3)
    weights = [c.model.features[12].weight for c in copies]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert not any(torch.equal(w, model.features[12].weight) for w in weights)
    again = randomised_copies(model, "features", NAMES, seed=0, copies=3)
    assert all(torch.equal(c.model.fc.weight, d.model.fc.weight) for c, d in zip(copies, again, strict=True))
    with pytest.raises(GateError, match="at least one"):
        randomised_copies(model, "features", NAMES, seed=0, copies=0)


def test_sample_rows_replace_only_the_explained_logit_with_a_row_per_class_and_sample() -> None:
    model = perturbed(tiny_cnn(4, width=8))
    (copy,) = randomised_copies(model, "features", NAMES, seed=1, copies=1)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    feats = penultimate(copy.model, x)
    with torch.no_grad():
        plain = copy.model(x)
    target = torch.tensor([2, 0, 2])
    with torch.no_grad(), copy.drawn_for(target, ["s0", "s1", "s2"]):
        drawn = copy.model(x)
    others = torch.ones_like(plain, dtype=torch.bool)
    others[torch.arange(3), target] = False
    assert torch.equal(drawn[others], plain[others])
    assert not torch.allclose(drawn[torch.arange(3), target], plain[torch.arange(3), target])
    # The explained logit is linear in the sample's own features: recover each row by least squares on
    # scaled copies of the sample, check its bound, and that it is keyed by (class, sample id), not position.
    rows = _recover_rows(copy, feats, target, ["s0", "s1", "s2"])
    assert float(rows.abs().max()) <= 1 / np.sqrt(feats.shape[1]) + 1e-6
    assert not torch.allclose(rows[0], rows[2], atol=1e-4)  # same class, other sample: another row
    swapped = _recover_rows(copy, feats[[2, 1, 0]], target[[2, 1, 0]], ["s2", "s1", "s0"])
    torch.testing.assert_close(swapped[[2, 1, 0]], rows, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert torch.equal(copy.model(x), plain)  # nothing drawn outside the context


def _recover_rows(copy: RandomisedCopy, feats: Tensor, target: Tensor, ids: list[str]) -> Tensor:
    """Each sample's explained-class row, read back through the fc layer with unit-vector inputs."""
    dim = feats.shape[1]
    rows = []
    for i in range(len(ids)):
        probe = torch.eye(dim)
        with torch.no_grad(), copy.drawn_for(target[i].repeat(dim), [ids[i]] * dim):
            out = copy.model.fc(probe)
        with torch.no_grad(), copy.drawn_for(target[i].repeat(1), [ids[i]]):
            bias = copy.model.fc(torch.zeros(1, dim))[0, int(target[i])]
        rows.append(out[:, int(target[i])] - bias)
    return torch.stack(rows)


# --- spearman_rows -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [3, 6, 1000], ids=["many-ties", "some-ties", "few-ties"])
def test_spearman_rows_matches_scipy(levels: int) -> None:
    gen = torch.Generator().manual_seed(levels)
    a = torch.randint(0, levels, (5, 6, 7), generator=gen).float()
    b = (a + torch.randint(0, levels, (5, 6, 7), generator=gen)).float()
    got = spearman_rows(a, b)
    assert got.dtype == torch.float64
    for i in range(5):
        expected = spearmanr(a[i].ravel().numpy(), b[i].ravel().numpy()).statistic
        assert got[i].item() == pytest.approx(expected, abs=1e-12)


def test_spearman_rows_exact_values_and_constant_row() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 1.0, 2.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    got = spearman_rows(a, b)
    assert got[0].item() == pytest.approx(1.0)
    assert got[1].item() == pytest.approx(-1.0)
    assert torch.isnan(got[2])
    # Ranks [0.5, 0.5, 2, 3] vs [0, 1, 2, 3]: r = 4.5 / sqrt(4.5 * 5).
    assert got[3].item() == pytest.approx(4.5 / (4.5 * 5.0) ** 0.5)
