"""timm models by name: built offline, packed with timm's own preprocessing, gated like timm evaluates them.

Each model is built locally with random weights and saved as its users save it (``torch.save(model.state_dict())``);
the gate's probabilities and predictions must equal timm's ``create_transform(**resolve_data_config(...))``
pipeline on JPEG photos of several sizes, and its maps pytorch-grad-cam's at the default layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gate.engine import layers
from gate.errors import CandidateError, UsageError
from gate.inputs.archs import build_model
from gate.inputs.candidate import load
from gate.inputs.pack import PackRequest, Preprocessing, describe, pack
from gate.inputs.review_set import ReviewSet
from tests.source_fixtures import CLASSES, assert_same_as_library, gate_run, reference_inputs, write_photos

timm = pytest.importorskip("timm")

# name, create_model kwargs (a small input through the pretrained config, as a team fine-tuning at 64 px does),
# the default layer, its layout kind and prefix tokens
MODELS = (
    ("resnet10t", {"pretrained_cfg_overlay": {"input_size": [3, 64, 64]}}, "layer4", layers.SPATIAL, 0),
    ("vit_tiny_patch16_224", {"img_size": 32, "depth": 2, "pretrained_cfg_overlay": {"input_size": [3, 32, 32]}},
     "blocks.1.norm1", layers.TOKENS, 1),
    ("vit_small_patch16_224", {"img_size": 32, "depth": 2, "num_heads": 2, "embed_dim": 32, "reg_tokens": 4,
                               "pretrained_cfg_overlay": {"input_size": [3, 32, 32]}},
     "blocks.1.norm1", layers.TOKENS, 5),  # class token + 4 register tokens
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    return write_photos(tmp_path_factory.mktemp("timm-photos"))


def _saved(tmp_path: Path, name: str, kwargs: dict[str, object]) -> tuple[torch.nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=len(CLASSES), **kwargs).eval()
    weights = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return model, weights, classes


@pytest.mark.parametrize(("name", "kwargs", "layer", "kind", "prefix"), MODELS, ids=[m[0] for m in MODELS])
def test_packed_timm_model_gates_like_timm_evaluates_it(
    tmp_path: Path, photos: ReviewSet, name: str, kwargs: dict[str, object], layer: str, kind: str, prefix: int,
) -> None:
    model, weights, classes = _saved(tmp_path, name, kwargs)
    result = pack(PackRequest(weights=weights, arch=f"timm:{name}", classes_file=classes,
                              output=tmp_path / "cand.safetensors", arch_kwargs=kwargs))
    cand = result.candidate
    assert (cand.source, cand.target_layer, cand.input.pipeline) == ("timm", layer, "timm")
    config = timm.data.resolve_data_config({}, model=model)
    assert cand.input.size == tuple(config["input_size"][1:])
    assert cand.input.resize == math.floor(config["input_size"][1] / config["crop_pct"])
    assert cand.input.interpolation == config["interpolation"] == "bicubic"
    records = gate_run(cand, photos)
    transform = timm.data.create_transform(**config)
    inputs = reference_inputs(photos, records, transform)
    grid = (inputs.shape[-2] // 16, inputs.shape[-1] // 16)
    layout = layers.Layout(kind, prefix=prefix, grid=grid if kind == layers.TOKENS else (0, 0))
    assert_same_as_library(model, layer, layout, inputs, records)


def test_timm_names_build_offline_and_refuse_weights_from_elsewhere() -> None:
    model = build_model("timm:resnet10t", {"num_classes": 3})
    assert type(model).__module__.startswith("timm.") and model.fc.out_features == 3
    with pytest.raises(CandidateError, match="pretrained") as refused:
        build_model("timm:resnet10t", {"num_classes": 3, "pretrained": True})
    assert refused.value.field == "arch_kwargs.pretrained"
    with pytest.raises(CandidateError) as checkpoint:
        build_model("timm:resnet10t", {"checkpoint_path": "/etc/passwd"})
    assert checkpoint.value.field == "arch_kwargs.checkpoint_path"
    with pytest.raises(CandidateError, match="timm has no model 'resnet10tt'") as unknown:
        build_model("timm:resnet10tt", {})
    assert unknown.value.field == "arch"
    with pytest.raises(CandidateError, match="after 'timm:'"):
        build_model("timm:", {})


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(CandidateError, match=r"this model needs timm: pip install 'xgate\[timm\]'") as missing:
        build_model("timm:resnet10t", {"num_classes": 3})
    assert missing.value.field == "arch"


def test_command_line_options_override_timm_preprocessing(tmp_path: Path) -> None:
    _, weights, classes = _saved(tmp_path, "resnet10t", {})
    result = pack(PackRequest(weights=weights, arch="timm:resnet10t", classes_file=classes, output=tmp_path / "c.pt",
                              preprocessing=Preprocessing(size=(64, 64), resize=72, interpolation="bilinear")))
    spec = result.candidate.input
    assert (spec.size, spec.resize, spec.interpolation, spec.pipeline) == ((64, 64), 72, "bilinear", "timm")
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406))  # still timm's for this model
    info = describe(tmp_path / "c.pt")
    assert info["source"] == "timm" and info["input"]["resampling"] == "timm"
    assert info["target_layer"] == "layer4" and info["target_layer_source"] == "default for this model"


def test_a_bare_timm_state_dict_takes_timms_preprocessing(tmp_path: Path) -> None:
    _, weights, _ = _saved(tmp_path, "resnet10t", {})
    cand = load(weights, arch="timm:resnet10t", classes=CLASSES)
    assert (cand.input.size, cand.input.resize, cand.input_origin) == ((176, 176), 201, "timm data config")


def test_pack_of_a_state_dict_still_needs_arch_and_classes(tmp_path: Path) -> None:
    _, weights, classes = _saved(tmp_path, "resnet10t", {})
    with pytest.raises(UsageError, match="--arch and --classes"):
        pack(PackRequest(weights=weights, arch=None, classes_file=classes, output=tmp_path / "c.pt"))


def test_default_layers_of_the_listed_timm_families() -> None:
    # ConvNeXt, EfficientNet, RegNet and Swin at their smallest; Swin's stages are channels-last
    expected = {"convnext_atto": ("stages", layers.SPATIAL), "efficientnet_b0": ("bn2", layers.SPATIAL),
                "regnetx_002": ("s4", layers.SPATIAL), "resnet18d": ("layer4", layers.SPATIAL)}
    for name, (layer, kind) in expected.items():
        model = timm.create_model(name, pretrained=False, num_classes=3)
        assert layers.default_layer(model) == layer, name
        assert layers.expected_layout(model, layer) == kind, name
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, depths=(1, 1, 1, 1),
                             embed_dim=16, num_heads=(1, 1, 1, 1))
    assert layers.default_layer(swin) == "norm"
    assert layers.is_channels_last(swin, "norm") and layers.is_channels_last(swin, "layers.3")


def test_help_imports_neither_timm_nor_transformers() -> None:
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom gate.cli import _run\n_run(['--help'])\n_run(['pack', '--help'])\n"
            "print(sorted(m for m in ('timm', 'transformers', 'huggingface_hub') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
