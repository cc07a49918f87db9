from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn
from torchvision.models import resnet18

from gate.engine.probes import (
    RandomisedCopy,
    mixed,
    only_fg,
    pair_partners,
    paste_object,
    randomised_copies,
    randomized_copy,
    remove_object,
    spearman_rows,
)
from gate.errors import GateError, ReviewSetError
from gate.inputs.archs import tiny_cnn

RED = torch.tensor([1.0, 0.0, 0.0])


def scene(height: int, width: int, seed: int = 0) -> Tensor:
    """A textured scene in [0, 0.9]: never exactly the object's red."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=gen) * 0.9


def with_object(image: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[None], RED[:, None, None], image)


def red_pixels(image: Tensor) -> int:
    return int((image == RED[:, None, None]).all(dim=0).sum())


# --- only_fg / paste_object -------------------------------------------------------------------------------------


def test_only_fg_default_fill_is_mid_grey() -> None:
    images = torch.arange(12, dtype=torch.float32).reshape(1, 3, 2, 2) / 12
    masks = torch.tensor([[[True, False], [False, True]]])
    out = only_fg(images, masks)
    expected = torch.tensor([[[0 / 12, 0.5], [0.5, 3 / 12]], [[4 / 12, 0.5], [0.5, 7 / 12]],
                             [[8 / 12, 0.5], [0.5, 11 / 12]]])
    assert torch.equal(out[0], expected)


@pytest.mark.parametrize(
    ("fill", "expected_fill"),
    [
        (0.0, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        (torch.tensor([0.1, 0.2, 0.3]), [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]),
        (torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]]), [[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]]),
    ],
    ids=["scalar", "per-channel", "per-image"],
)
def test_only_fg_fill_forms(fill: float | Tensor, expected_fill: list[list[float]]) -> None:
    images = torch.ones(2, 3, 2, 3)
    masks = torch.zeros(2, 2, 3, dtype=torch.bool)
    masks[:, 0, 0] = True
    out = only_fg(images, masks, fill)
    for i in range(2):
        assert torch.equal(out[i, :, 0, 0], torch.ones(3))
        assert torch.allclose(out[i, :, 1, 2], torch.tensor(expected_fill[i]))
        assert torch.allclose(out[i, :, 0, 1], torch.tensor(expected_fill[i]))


def test_paste_object_exact() -> None:
    images = torch.full((2, 3, 2, 2), 1.0)
    scenes = torch.zeros(2, 3, 2, 2)
    scenes[1] = 0.25
    masks = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    out = paste_object(images, masks, scenes)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert out[0, :, 1, 1].tolist() == [0.0, 0.0, 0.0]
    assert out[1, 0].tolist() == [[0.25, 1.0], [1.0, 1.0]]


def test_paste_object_rejects_wrong_scene_shape() -> None:
    with pytest.raises(GateError, match="scenes shape"):
        paste_object(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 3, 4, 5))


def test_masks_must_be_bool() -> None:
    with pytest.raises(GateError, match="bool"):
        only_fg(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))


# --- remove_object -----------------------------------------------------------------------------------------------


def test_remove_object_copies_the_adjacent_patch_on_the_widest_side() -> None:
    # 24×32 image, object near the right edge: the left strip (widest) holds a whole patch.
    mask = torch.zeros(24, 32, dtype=torch.bool)
    mask[8:12, 22:27] = True
    mask[12, 24] = True  # an irregular shape: the box, not the mask, is replaced
    base = scene(24, 32)
    image = with_object(base, mask)
    out = remove_object(image[None], mask[None], dilate=2)[0]
    y0, y1, x0, x1 = 6, 15, 20, 29  # rows 8..12 and cols 22..26, grown by 2
    assert red_pixels(out) == 0
    assert torch.equal(out[:, y0:y1, x0:x1], image[:, y0:y1, x0 - 9 : x0])
    outside = torch.ones(24, 32, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(out[:, outside], image[:, outside])


def test_remove_object_dilation_is_clipped_at_the_border() -> None:
    mask = torch.zeros(20, 16, dtype=torch.bool)
    mask[0:2, 14:16] = True
    image = with_object(scene(20, 16), mask)
    out = remove_object(image[None], mask[None], dilate=3)[0]
    # Box rows 0..4, cols 11..15; strips left 11, bottom 15: the bottom one holds the 5×5 patch below the box.
    assert torch.equal(out[:, 0:5, 11:16], image[:, 5:10, 11:16])
    assert torch.equal(out[:, :, :11], image[:, :, :11])
    assert torch.equal(out[:, 5:, :], image[:, 5:, :])
    assert red_pixels(out) == 0


def test_remove_object_tiles_the_widest_strip_when_no_patch_fits() -> None:
    # Box rows 0..15 (full height), cols 3..12: strips left 3, right 3, top 0, bottom 0; no 10-wide patch fits.
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:, 3:13] = True
    image = with_object(scene(16, 16), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    assert red_pixels(out) == 0
    expected_cols = [j % 3 for j in range(10)]  # the left strip (tie with right: left first), repeated
    assert torch.equal(out[:, :, 3:13], image[:, :, expected_cols])
    assert torch.equal(out[:, :, :3], image[:, :, :3])
    assert torch.equal(out[:, :, 13:], image[:, :, 13:])


def test_remove_object_tiles_a_vertical_strip() -> None:
    # Box rows 4..11, cols 0..15 (full width): only the top (4 rows) and bottom (4 rows) strips exist.
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, :] = True
    image = with_object(scene(16, 16), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    expected_rows = [j % 4 for j in range(8)]  # top strip rows 0..3, repeated
    assert torch.equal(out[:, 4:12, :], image[:, expected_rows, :])
    assert red_pixels(out) == 0


def test_remove_object_box_covering_the_image_gets_the_scene_mean() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, 0] = mask[7, 7] = True
    image = with_object(scene(8, 8), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    mean = image[:, ~mask].mean(dim=1)
    assert torch.allclose(out, mean[:, None, None].expand(3, 8, 8))


def test_remove_object_empty_mask_and_batch_independence() -> None:
    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[0, 2:5, 2:5] = True
    masks[2, 14:18, 10:13] = True
    images = torch.stack([with_object(scene(20, 20, seed=i), masks[i]) for i in range(3)])
    out = remove_object(images, masks, dilate=1)
    assert torch.equal(out[1], images[1])  # empty mask: unchanged
    for i in range(3):
        single = remove_object(images[i : i + 1], masks[i : i + 1], dilate=1)
        assert torch.equal(out[i], single[0])
        assert red_pixels(out[i]) == 0
    assert torch.equal(images[0], with_object(scene(20, 20, seed=0), masks[0]))  # input not modified


def test_mixed_pastes_object_on_partner_scene_without_its_object() -> None:
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 6:9, 6:9] = True
    partner_masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    partner_masks[0, 1:4, 10:14] = True
    images = with_object(scene(16, 16), masks[0])[None]
    partner = with_object(scene(16, 16, seed=5), partner_masks[0])[None]
    out = mixed(images, masks, partner, partner_masks, dilate=1)
    assert red_pixels(out[0]) == 9  # only this sample's object
    assert torch.equal(out[0][:, masks[0]], images[0][:, masks[0]])
    background = remove_object(partner, partner_masks, dilate=1)
    assert torch.equal(out[0][:, ~masks[0]], background[0][:, ~masks[0]])


# --- pair_partners -----------------------------------------------------------------------------------------------


def test_pair_partners_properties_and_determinism() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    pairs = pair_partners(labels, seed=3)
    again = pair_partners(labels, seed=3)
    assert set(pairs) == {"mixed_same", "mixed_rand"}
    for key in pairs:
        assert pairs[key].dtype == np.int64
        assert pairs[key].shape == labels.shape
        assert np.array_equal(pairs[key], again[key])
    same, rand = pairs["mixed_same"], pairs["mixed_rand"]
    assert np.array_equal(labels[same], labels)
    assert same[5] == 5  # alone in its class
    assert all(same[i] != i for i in range(len(labels)) if i != 5)
    assert np.all(labels[rand] != labels)


def test_pair_partners_seed_changes_pairs() -> None:
    labels = np.repeat(np.arange(4), 10)
    a, b = pair_partners(labels, seed=0), pair_partners(labels, seed=1)
    assert not np.array_equal(a["mixed_same"], b["mixed_same"])
    assert not np.array_equal(a["mixed_rand"], b["mixed_rand"])


def test_pair_partners_uniform_over_samples_not_classes() -> None:
    # Class-0 samples pick among 1 sample of class 1 and 3 of class 2: sample 4000 about 1/4 of the time.
    labels = np.array([0] * 4000 + [1] + [2] * 3)
    rand = pair_partners(labels, seed=0)["mixed_rand"][:4000]
    assert abs(np.mean(rand == 4000) - 0.25) < 0.03
    same = pair_partners(labels, seed=0)["mixed_same"][4001:]
    assert set(same.tolist()) <= {4001, 4002, 4003}


def test_pair_partners_single_class_is_an_error() -> None:
    with pytest.raises(ReviewSetError, match="two classes"):
        pair_partners(np.array([1, 1, 1]), seed=0)


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
