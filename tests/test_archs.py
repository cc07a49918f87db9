"""Architectures by name (built-ins, torchvision, import paths) and default Grad-CAM layers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from gate.errors import CandidateError
from gate.inputs import safe_import
from gate.inputs.archs import build_model, cifar_resnet18, default_target_layer, tiny_cnn

FACTORY_MODULE = '''
from torch import nn


def convs(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    )


def not_a_model(num_classes: int = 2) -> str:
    return "model"


VALUE = 3
'''


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on sys.path, as a user's own repository would provide: returns its name."""
    name = f"xgate_user_arch_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with safe_import.allowing(root=tmp_path):  # as if tmp_path were the working tree under test
        yield name
    sys.modules.pop(name, None)


def test_tiny_cnn_shapes() -> None:
    model = tiny_cnn(5, width=4).eval()
    with torch.no_grad():
        features = model.features(torch.zeros(2, 3, 64, 64))
        logits = model(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 16, 8, 8)  # 64×64 in, 8×8 at `features`, 4·width channels
    assert logits.shape == (2, 5)


def test_cifar_resnet18_keeps_small_images_large() -> None:
    model = cifar_resnet18(10)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.fc.out_features == 10


def test_build_builtin_with_kwargs() -> None:
    model = build_model("tiny_cnn", {"num_classes": 3, "width": 4})
    assert isinstance(model, nn.Sequential)
    assert model.fc.out_features == 3 and model.fc.in_features == 16


def test_build_torchvision_name_without_weights() -> None:
    model = build_model("resnet18", {"num_classes": 4})
    assert model.fc.out_features == 4  # would be 1000 (and a download) with pretrained weights


def test_build_import_path(factory_module: str) -> None:
    model = build_model(f"{factory_module}:convs", {"num_classes": 5})
    assert model[-1].out_features == 5


@pytest.mark.parametrize(
    ("arch", "kwargs", "field", "words"),
    [
        ("no_such_net", {}, "arch", "unknown arch"),
        ("tiny_cnn", {"num_classes": 2, "depth": 9}, "arch_kwargs", "does not accept"),
        ("xgate_no_such_module_anywhere:make", {}, "arch", "cannot import"),
    ],
    ids=["unknown", "bad-kwargs", "missing-module"],
)
def test_build_errors(arch: str, kwargs: dict[str, int], field: str, words: str) -> None:
    with pytest.raises(CandidateError) as info:
        build_model(arch, kwargs)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("attr", "words"), [("missing", "cannot import"), ("VALUE", "not callable"), ("not_a_model", "nn.Module")]
)
def test_build_import_path_errors(factory_module: str, attr: str, words: str) -> None:
    with pytest.raises(CandidateError, match=words):
        build_model(f"{factory_module}:{attr}")


def test_default_target_layers(factory_module: str) -> None:
    assert default_target_layer(build_model("resnet18", {"num_classes": 2})) == "layer4"
    assert default_target_layer(cifar_resnet18(2)) == "layer4"
    assert default_target_layer(tiny_cnn(2, width=4)) == "features"
    # No known family: the last Conv2d, "2" in Sequential(conv, relu, conv, ...).
    assert default_target_layer(build_model(f"{factory_module}:convs")) == "2"


@pytest.mark.parametrize(
    ("arch", "kwargs", "layer"),
    [
        ("resnext50_32x4d", {}, "layer4"), ("wide_resnet50_2", {}, "layer4"), ("mobilenet_v2", {}, "features"),
        ("squeezenet1_1", {}, "features"), ("shufflenet_v2_x0_5", {}, "conv5"), ("mnasnet0_5", {}, "layers"),
        ("alexnet", {}, "features"), ("efficientnet_v2_s", {}, "features"),
        ("googlenet", {"aux_logits": False, "init_weights": False}, "inception5b"),
        ("vit_b_32", {"image_size": 64}, "encoder.layers.encoder_layer_11.ln_1"),
        ("swin_v2_t", {}, "features"),
    ],
)
def test_family_defaults_beyond_the_backbone_tests(arch: str, kwargs: dict[str, object], layer: str) -> None:
    """The families tests/test_backbones.py does not gate: the default layer exists and is the family's."""
    model = build_model(arch, {"num_classes": 2, **kwargs})
    assert default_target_layer(model) == layer
    assert layer in dict(model.named_modules())


def test_default_target_layer_needs_a_conv() -> None:
    with pytest.raises(CandidateError) as info:
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    assert info.value.field == "target_layer"


def test_source_of_names_where_the_arch_comes_from() -> None:
    from gate.inputs.archs import source_of

    assert [source_of(a) for a in ("resnet18", "tiny_cnn", "timm:convnext_tiny", "transformers:ViTForImage",
                                   "mypkg.models:make")] == [
        "torchvision", "xgate", "timm", "transformers", "import path"]


def test_hub_ids_are_told_apart_from_local_paths(tmp_path: Path) -> None:
    from gate.inputs.model_sources import hub_id_error

    error = hub_id_error(Path("google/vit-base-patch16-224"))
    assert error is not None and error.field == "path" and "hf download google/vit-base-patch16-224" in error.message
    assert hub_id_error(Path("models/cand.pt")) is None  # a missing checkpoint file: "cannot read" elsewhere
    assert hub_id_error(Path("a/b/c")) is None
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    assert hub_id_error(tmp_path / "org" / "model") is None  # exists
