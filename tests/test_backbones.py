"""Every common torchvision family, transformers included, gated end to end with random weights.

For each family: the default target layer is the intended one, the engine costs one forward per batch,
and the maps equal the public libraries' (captum's LayerGradCam on CNNs, pytorch-grad-cam's GradCAM with
its reshape_transform on ViT and Swin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gate.engine import core as engine
from gate.engine import layers, model_state
from gate.engine.gradcam import Explained, explain, upsample
from gate.inputs import candidate as candidate_io
from gate.inputs import shapes
from gate.inputs.archs import build_model, default_target_layer
from gate.inputs.review_set import ReviewSet, build
from gate.metrics.registry import value_of


@dataclass(frozen=True)
class Family:
    arch: str
    kwargs: dict[str, Any]
    size: tuple[int, int]
    layer: str
    layout: str


FAMILIES = (
    Family("resnet18", {}, (64, 64), "layer4", layers.SPATIAL),
    Family("densenet121", {}, (64, 64), "features", layers.SPATIAL),  # F.relu(inplace=True) follows it
    Family("mobilenet_v3_small", {}, (64, 64), "features", layers.SPATIAL),
    Family("efficientnet_b0", {}, (64, 64), "features", layers.SPATIAL),
    Family("convnext_tiny", {}, (64, 64), "features", layers.SPATIAL),
    Family("vgg11", {}, (64, 64), "features", layers.SPATIAL),
    Family("regnet_y_400mf", {}, (64, 64), "trunk_output", layers.SPATIAL),
    Family("vit_b_16", {"image_size": 64}, (64, 64), "encoder.layers.encoder_layer_11.ln_1", layers.TOKENS),
    Family("swin_t", {}, (64, 96), "features", layers.CHANNELS_LAST),  # a non-square 2×3 grid
)
CNNS = [f for f in FAMILIES if f.layout == layers.SPATIAL]
TRANSFORMERS = [f for f in FAMILIES if f.layout != layers.SPATIAL]
# vgg11's 120M-parameter classifier alone takes seconds to initialise on 2 cores.
SLOW = {"vgg11"}


def _params(families: list[Family] | tuple[Family, ...]) -> list[Any]:
    return [pytest.param(f, id=f.arch, marks=[pytest.mark.slow] if f.arch in SLOW else []) for f in families]


@cache
def _model(arch: str) -> nn.Module:
    """A randomly initialised model (4 classes), built once per test session."""
    family = next(f for f in FAMILIES if f.arch == arch)
    torch.manual_seed(0)
    model = build_model(arch, {"num_classes": len(shapes.CLASSES), **family.kwargs}).eval()
    if arch == "vit_b_16":
        # torchvision zero-initialises the ViT head: every map would be zero (see the zero-map test)
        nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def _batch(family: Family, n: int = 2) -> Tensor:
    return torch.randn(n, 3, *family.size, generator=torch.Generator().manual_seed(7))


def _minmax(cam: Tensor) -> Tensor:
    shifted = cam - cam.amin(dim=(1, 2), keepdim=True)
    return shifted / (1e-7 + shifted.amax(dim=(1, 2), keepdim=True))


@pytest.fixture(scope="module")
def review_set(tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    """Four generated 64×64 samples, one per class, with masks."""
    root = tmp_path_factory.mktemp("backbones")
    plain = shapes.write_plain(shapes.generate(4, bias=0.5, seed=99, size=64), root / "plain")
    return build(plain, root / "set", name="backbones")


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Explained]]:
    """Record every explain() the engine makes: the layer it asked for and what came back."""
    calls: list[tuple[str, Explained]] = []

    def spying(model: nn.Module, layer: str, inputs: Tensor, target: Tensor | None = None) -> Explained:
        out = explain(model, layer, inputs, target)
        calls.append((layer, out))
        return out

    monkeypatch.setattr(model_state, "explain", spying)
    return calls


def _counting(model: nn.Module) -> tuple[list[int], Callable[[], None]]:
    counter = [0]

    def count(_module: nn.Module, _inputs: object) -> None:
        counter[0] += 1

    handle = model.register_forward_pre_hook(count)
    return counter, handle.remove


@pytest.fixture(scope="module", autouse=True)
def _free_models() -> Iterator[None]:
    yield
    _model.cache_clear()  # ~1 GB of random weights: not kept past this module


@pytest.fixture(scope="module")
def template(review_set: ReviewSet, tmp_path_factory: pytest.TempPathFactory) -> candidate_io.Candidate:
    """A loaded candidate whose model the tests swap (saving a 500 MB vgg11 per test costs more than the test)."""
    model = build_model("tiny_cnn", {"num_classes": 4, "width": 4})
    path = candidate_io.save(tmp_path_factory.mktemp("template") / "tiny.pt", model, arch="tiny_cnn",
                             arch_kwargs={"num_classes": 4, "width": 4}, classes=shapes.CLASSES, input_size=(64, 64))
    return candidate_io.load(path)


def _candidate(template: candidate_io.Candidate, family: Family, model: nn.Module) -> candidate_io.Candidate:
    return replace(template, arch=family.arch, model=model, target_layer=default_target_layer(model),
                   input=replace(template.input, size=family.size))


def test_a_saved_torchvision_checkpoint_loads_with_its_family_layer(tmp_path: Path) -> None:
    model = _model("mobilenet_v3_small")
    path = candidate_io.save(tmp_path / "m.pt", model, arch="mobilenet_v3_small", arch_kwargs={"num_classes": 4},
                             classes=shapes.CLASSES, input_size=(64, 64))
    assert candidate_io.load(path).target_layer == "features"


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_gate_every_family_one_forward_per_batch_finite_maps_from_the_intended_layer(
    family: Family, review_set: ReviewSet, template: candidate_io.Candidate, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cand = _candidate(template, family, _model(family.arch))
    assert cand.target_layer == family.layer  # the family default
    assert layers.expected_layout(cand.model, cand.target_layer) == family.layout
    calls = _spy(monkeypatch)
    forwards, unhook = _counting(cand.model)
    try:
        (run,) = engine.run([cand], review_set, engine.EngineOptions(batch_size=2, device="cpu"))
    finally:
        unhook()
    assert forwards[0] == 2  # 4 samples, batch 2: one forward per batch, logits and maps together
    assert [layer for layer, _ in calls] == [family.layer] * 2
    assert {out.layout.kind for _, out in calls} == {family.layout}
    records = run.records
    assert np.isfinite(records.energy).all()  # every sample has a mask and a non-zero map
    assert value_of("alignment.zero_maps", records) == 0
    for kept in records.kept.values():
        assert kept.cam.shape == family.size and np.isfinite(kept.cam).all() and kept.cam.max() > 0


@pytest.mark.parametrize("family", _params(CNNS))
def test_cnn_maps_equal_captum(family: Family) -> None:
    from captum.attr import LayerGradCam

    model = _model(family.arch)
    batch = _batch(family)
    ours = explain(model, family.layer, batch)
    layer = dict(model.named_modules())[family.layer]
    theirs = LayerGradCam(model, layer).attribute(batch, target=ours.target, relu_attributions=True)[:, 0]
    scale = theirs.abs().max()
    assert scale > 0
    torch.testing.assert_close(ours.cam, theirs, atol=1e-5, rtol=0)
    # random-weight maps can be tiny (mobilenet ~1e-10): equal relative to their own size too
    torch.testing.assert_close(ours.cam / scale, theirs / scale, atol=1e-4, rtol=0)


def _reshape(family: Family, model: nn.Module) -> Callable[[Tensor], Tensor]:
    if family.layout == layers.CHANNELS_LAST:
        return lambda t: t.permute(0, 3, 1, 2)
    patch = layers.patch_size(model)
    assert patch is not None
    rows, cols = family.size[0] // patch[0], family.size[1] // patch[1]
    # pytorch-grad-cam's ViT example: drop the class token, tokens to a grid, channels first
    return lambda t: t[:, 1:, :].reshape(t.size(0), rows, cols, t.size(2)).transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("family", _params(TRANSFORMERS))
def test_transformer_maps_equal_pytorch_grad_cam(family: Family) -> None:
    from pytorch_grad_cam import GradCAM

    model = _model(family.arch)
    batch = _batch(family)
    ours = explain(model, family.layer, batch)
    assert ours.cam.abs().max() > 0
    layer = dict(model.named_modules())[family.layer]
    with GradCAM(model=model, target_layers=[layer], reshape_transform=_reshape(family, model)) as cam:
        theirs = cam(input_tensor=batch, targets=None)
    for param in model.parameters():  # pytorch-grad-cam's backward filled every weight gradient: drop them
        param.grad = None
    mine = _minmax(upsample(_minmax(ours.cam), family.size)).numpy()
    np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_untrained_vit_head_gives_zero_maps_that_are_counted(review_set: ReviewSet,
                                                            template: candidate_io.Candidate) -> None:
    family = next(f for f in FAMILIES if f.arch == "vit_b_16")
    model = _model("vit_b_16")
    head = model.heads.head.weight.detach().clone()
    with torch.no_grad():
        model.heads.head.weight.zero_()  # as torchvision initialises it
    try:
        (run,) = engine.run([_candidate(template, family, model)], review_set,
                            engine.EngineOptions(batch_size=4, device="cpu"))
    finally:
        with torch.no_grad():
            model.heads.head.weight.copy_(head)
    assert value_of("alignment.zero_maps", run.records) == 4
    assert value_of("alignment.coverage", run.records) == 0.0


def test_zero_maps_are_explained_in_the_report_and_the_layout_recorded(
    tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path,
) -> None:
    from bs4 import BeautifulSoup

    from gate.outputs.report.html import render_report
    from gate.run import GateRequest, run_gate
    from tests.conftest import pinned_policy

    payload = torch.load(untrained_checkpoint, weights_only=True)
    payload["state_dict"]["fc.weight"].zero_()  # a dead head: no gradient reaches any layer
    dead = tmp_path / "dead.pt"
    torch.save(payload, dead)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    result = run_gate(GateRequest(command="check", candidates=(untrained_checkpoint, dead), policy=policy))
    by_name = {c.candidate.name: c for c in result.candidates}
    assert by_name["dead.pt"].scores["alignment.zero_maps"] == small_set.size
    assert by_name["untrained.pt"].scores["alignment.zero_maps"] == 0
    entry = result.to_json()["candidates"][0]["candidate"]
    assert (entry["target_layer"], entry["target_layout"]) == ("features", "spatial")
    soup = BeautifulSoup(render_report(result), "html.parser")
    notes = soup.select("p.zero-maps")
    assert [n["data-candidate"] for n in notes] == ["dead.pt"]
    text = " ".join(notes[0].get_text().split())
    assert f"Maps were zero for {small_set.size} samples with a mask" in text and "dead head" in text
    assert "target layer features (spatial)" in " ".join(soup.select_one("#about").get_text().split())


# The copies of every family run from the top block's input (gate.engine.trunk) but densenet's: its top block
# (`features` holds conv0 directly, so its last-conv rule takes all of `features`) starts at the model's input.
TRUNK_BLOCKS = {"resnet18": "layer4.1", "mobilenet_v3_small": "features.12", "efficientnet_b0": "features.8",
                "convnext_tiny": "features.7", "vgg11": "features.18", "regnet_y_400mf": "trunk_output.block4",
                "vit_b_16": "encoder.layers.encoder_layer_11.ln_1", "swin_t": "features.7"}


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_sanity_scores_with_and_without_the_shared_trunk_are_identical(
    family: Family, review_set: ReviewSet, template: candidate_io.Candidate,
) -> None:
    cand = _candidate(template, family, _model(family.arch))
    runs = {}
    for shared in (True, False):
        options = engine.EngineOptions(batch_size=2, device="cpu", probes=frozenset({"sanity"}), shared_trunk=shared)
        (runs[shared],) = engine.run([cand], review_set, options)
    block = TRUNK_BLOCKS.get(family.arch)
    expected = f"shared trunk from {block}" if block else \
        "full forward: nothing runs below features.conv0: its input is the model's"
    assert runs[True].sanity_trunk == expected
    a, b = runs[True].records.sanity_similarity, runs[False].records.sanity_similarity
    assert a is not None and b is not None and np.isfinite(a).any()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
