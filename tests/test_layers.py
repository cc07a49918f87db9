"""Layer layouts (spatial, ViT tokens, channels-last), defaults, listing and layer-name errors."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import convnext_tiny, resnet18, swin_t
from torchvision.models.vision_transformer import EncoderBlock
from torchvision.ops.misc import Permute

from gate.engine import layers
from gate.engine.gradcam import explain, upsample
from gate.errors import CandidateError
from gate.inputs.archs import tiny_cnn


class TinyViT(nn.Module):
    """A 2-block ViT with a class token and ``registers`` register tokens; any input size divisible by 8."""

    def __init__(self, num_classes: int = 3, dim: int = 16, registers: int = 2) -> None:
        super().__init__()
        self.patch_size = 8
        self.conv_proj = nn.Conv2d(3, dim, 8, stride=8)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.registers = nn.Parameter(torch.randn(1, registers, dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[EncoderBlock(2, dim, 32, 0.0, 0.0, norm) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        batch = x.shape[0]
        tokens = torch.cat([self.class_token.expand(batch, -1, -1), self.registers.expand(batch, -1, -1), tokens], 1)
        return self.head(self.norm(self.blocks(tokens)[:, 0]))


class CustomNorm(nn.Module):
    """A module xgate knows nothing about (its layout must come from its neighbours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return TinyViT().eval()


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    torch.manual_seed(0)
    return swin_t(weights=None, num_classes=3).eval()


def test_token_grid_equals_pytorch_grad_cam_reshape() -> None:
    tokens = torch.randn(2, 3 + 4 * 6, 5)
    layout = layers.Layout(layers.TOKENS, prefix=3, grid=(4, 6))
    # pytorch-grad-cam's documented ViT reshape_transform, with 3 leading tokens instead of 1
    expected = tokens[:, 3:, :].reshape(2, 4, 6, 5).transpose(2, 3).transpose(1, 2)
    assert torch.equal(layout.to_grid(tokens), expected)
    assert torch.equal(layers.Layout(layers.CHANNELS_LAST).to_grid(tokens.reshape(2, 27, 5, 1)),
                       tokens.reshape(2, 27, 5, 1).permute(0, 3, 1, 2))


def test_vit_tokens_non_square_grid_with_registers_dropped(vit: nn.Module) -> None:
    from pytorch_grad_cam import GradCAM

    batch = torch.randn(3, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    assert layers.default_layer(vit) == "blocks.1.ln_1"
    ours = explain(vit, "blocks.1.ln_1", batch)
    assert ours.layout == layers.Layout(layers.TOKENS, prefix=3, grid=(4, 6))
    assert ours.cam.shape == (3, 4, 6) and ours.cam.abs().max() > 0

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 3:, :].reshape(t.size(0), 4, 6, t.size(2)).transpose(2, 3).transpose(1, 2)

    with GradCAM(model=vit, target_layers=[vit.blocks[1].ln_1], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=batch, targets=None)
    mine = _minmax(upsample(_minmax(ours.cam), (32, 48)))
    np.testing.assert_allclose(mine.numpy(), theirs, atol=1e-4)


def _minmax(cam: torch.Tensor) -> torch.Tensor:
    shifted = cam - cam.amin(dim=(1, 2), keepdim=True)
    return shifted / (1e-7 + shifted.amax(dim=(1, 2), keepdim=True))


def test_declared_prefix_tokens_win_over_the_count(vit: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    output = torch.zeros(2, 3 + 16, 16)
    assert layers.layout_of(vit, "blocks.1", output, (2, 3, 32, 32)).prefix == 3
    monkeypatch.setattr(vit, "num_prefix_tokens", 2, raising=False)
    with pytest.raises(CandidateError, match="do not hold the 4x4 patch grid"):
        layers.layout_of(vit, "blocks.1", output, (2, 3, 32, 32))


def test_swin_layers_are_channels_last_from_module_types(swin: nn.Module) -> None:
    last = {n: layers.is_channels_last(swin, n) for n in
            ("features", "features.0", "features.1.0", "features.2", "features.1.0.mlp", "features.1.0.mlp.1",
             "norm")}
    assert all(last.values()), last
    # the Permute back to [B, C, H, W] and what follows are channels-first
    assert not layers.is_channels_last(swin, "permute")
    assert not layers.is_channels_last(swin, "avgpool")
    assert not layers.is_channels_last(swin, "features.0.0")  # the patch Conv2d
    assert layers.default_layer(swin) == "features"


def test_swin_map_is_taken_over_the_right_axes(swin: nn.Module) -> None:
    # pytorch-grad-cam's equality on swin_t is in test_backbones; here: the grid is [H, W], not [W, C]
    ours = explain(swin, "features", torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3)))
    assert ours.layout.kind == layers.CHANNELS_LAST
    assert ours.cam.shape == (2, 2, 3)  # 64×96 / 32: a non-square grid, H before W


def test_convnext_internals() -> None:
    model = convnext_tiny(weights=None, num_classes=3)
    assert not layers.is_channels_last(model, "features")
    assert not layers.is_channels_last(model, "features.1.0")  # CNBlock permutes back inside
    assert not layers.is_channels_last(model, "features.1.0.block")  # ends in Permute([0, 3, 1, 2])
    assert layers.is_channels_last(model, "features.1.0.block.2")  # the LayerNorm between the permutes
    assert layers.is_channels_last(model, "features.1.0.block.4")  # GELU after a Linear
    assert not layers.is_channels_last(model, "classifier.0")  # LayerNorm2d keeps [B, C, H, W]


def test_a_permute_after_an_unknown_module_says_channels_last() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Permute([0, 2, 3, 1]), CustomNorm(), Permute([0, 3, 1, 2]),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert layers.is_channels_last(model, "2")
    assert not layers.is_channels_last(model, "0")
    assert layers.is_channels_last(model, "1")
    # an element-wise module after the unknown one: the Permute after it still tells
    gelu = nn.Sequential(Permute([0, 2, 3, 1]), CustomNorm(), nn.GELU(), Permute([0, 3, 1, 2]))
    assert layers.is_channels_last(gelu, "2")
    assert not layers.is_channels_last(nn.Sequential(nn.Conv2d(3, 4, 1), CustomNorm(), nn.GELU()), "2")
    out = explain(model, "2", torch.randn(2, 3, 9, 9))
    assert out.layout.kind == layers.CHANNELS_LAST and out.cam.shape == (2, 7, 7)
    same = explain(model, "0", torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)))
    again = explain(model, "2", torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)))
    # twice the activations, half the gradient: the same map, on the same 7×7 grid (wrong axes: 7×4)
    torch.testing.assert_close(again.cam, same.cam)


def test_tokens_without_a_patch_size_are_an_input_error_naming_the_layer() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 3, padding=1)  # not a patchify conv: stride 1 ≠ kernel 3
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.mix(self.embed(x).flatten(2).transpose(1, 2)).mean(1))

    with pytest.raises(CandidateError) as info:
        explain(Tokens(), "mix", torch.randn(2, 3, 8, 8))
    assert info.value.field == "target_layer" and info.value.exit_code == 2
    assert "'mix'" in info.value.message and "no patch size" in info.value.message


@pytest.mark.parametrize(("layer", "words"), [("fc", "no spatial or token grid"), ("avgpool", None)],
                         ids=["2-d", "1x1-grid"])
def test_layers_without_a_map(layer: str, words: str | None) -> None:
    model = resnet18(weights=None, num_classes=3)
    if words is None:  # a 1×1 grid is a grid: allowed (a CAM of one cell)
        assert explain(model, layer, torch.randn(2, 3, 32, 32)).cam.shape == (2, 1, 1)
        return
    with pytest.raises(CandidateError, match=words):
        explain(model, layer, torch.randn(2, 3, 32, 32))


def test_tuple_output_is_an_input_error(vit: nn.Module) -> None:
    with pytest.raises(CandidateError, match="'blocks.1.self_attention' gives no Grad-CAM map: it outputs a tuple"):
        explain(vit, "blocks.1.self_attention", torch.randn(1, 3, 16, 16))


def test_a_layer_that_never_runs_is_an_input_error() -> None:
    model = resnet18(weights=None, num_classes=2)
    model.spare = nn.Conv2d(3, 4, 3)  # registered, never called by forward
    with pytest.raises(CandidateError, match="'spare' .Conv2d. did not run"):
        explain(model, "spare", torch.randn(1, 3, 32, 32))


def test_unknown_layer_lists_close_matches() -> None:
    model = resnet18(weights=None, num_classes=3)
    with pytest.raises(CandidateError) as info:
        layers.find_layer(model, "layer5")
    assert "close matches: layer4" in info.value.message
    assert info.value.field == "target_layer"
    with pytest.raises(CandidateError, match="xgate layers"):
        layers.find_layer(model, "zzzzzz")
    with pytest.raises(CandidateError):
        layers.find_layer(model, "")  # the model itself is no target layer


def test_defaults_for_custom_models() -> None:
    assert layers.default_layer(tiny_cnn(2, width=4)) == "features"
    convs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.AdaptiveAvgPool2d(1))
    assert layers.default_layer(convs) == "2"
    encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)
    vit_like = nn.Module()
    vit_like.conv_proj = nn.Conv2d(3, 16, 4, stride=4)
    vit_like.layers = nn.ModuleList([encoder, nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)])
    assert layers.default_layer(vit_like) == "layers.1.norm1"
    with pytest.raises(CandidateError, match="no Conv2d"):
        layers.default_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_expected_layout_agrees_with_the_run(vit: nn.Module, swin: nn.Module) -> None:
    for model, names, size in [
        (vit, ["conv_proj", "blocks.1.ln_1", "blocks.0", "blocks.1.mlp"], (32, 48)),
        (swin, ["features", "features.0.0", "norm", "features.5.1"], (64, 64)),
        (resnet18(weights=None, num_classes=3), ["layer4", "layer3.1.relu", "maxpool"], (32, 32)),
    ]:
        rows = {row.name: row for row in layers.list_layers(model, size)}
        for name in names:
            assert rows[name].layout is not None, name
            assert layers.expected_layout(model, name) == rows[name].layout.kind, name


def test_listing_shapes_maps_and_zero_token_layers(vit: nn.Module) -> None:
    rows = {row.name: row for row in layers.list_layers(vit, (32, 48))}
    assert rows["conv_proj"].shape == (2, 16, 4, 6) and rows["conv_proj"].gives_map
    assert rows["blocks.1.ln_1"].shape == (2, 27, 16) and rows["blocks.1.ln_1"].gives_map
    assert rows["blocks.1.ln_1"].layout == layers.Layout(layers.TOKENS, prefix=3, grid=(4, 6))
    # after the last attention only the class token reaches the head: listed, but not as a map
    assert not rows["blocks.1"].gives_map and "class token" in rows["blocks.1"].note
    assert not rows["blocks.1.ln_2"].gives_map
    assert not rows["head"].gives_map and rows["head"].shape == (2, 3)
    assert rows["blocks.1.self_attention"].shape is None and not rows["blocks.1.self_attention"].gives_map
    # and the listing is right about blocks.1: its map is zero
    assert explain(vit, "blocks.1", torch.randn(2, 3, 32, 48)).cam.abs().max() == 0
    assert explain(vit, "blocks.1.ln_1", torch.randn(2, 3, 32, 48)).cam.abs().max() > 0


def test_listing_counts_calls_and_check_layer() -> None:
    model = resnet18(weights=None, num_classes=3)
    rows = layers.list_layers(model, (32, 32))
    by_name = {row.name: row for row in rows}
    assert by_name["layer4.1.relu"].calls == 2  # BasicBlock calls its ReLU twice
    assert by_name["layer4"].shape == (2, 512, 1, 1)
    assert [r.name for r in rows][-1] == "fc"  # call order
    assert layers.check_layer(rows, "layer4").name == "layer4"
    with pytest.raises(CandidateError, match="close matches that give a map: layer4"):
        layers.check_layer(rows, "layer44")
    with pytest.raises(CandidateError, match="'fc' gives no map"):
        layers.check_layer(rows, "fc")


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    from gate.inputs import candidate

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("layers") / "r18.pt"
    candidate.save(path, resnet18(weights=None, num_classes=3), arch="resnet18", arch_kwargs={"num_classes": 3},
                   classes=["a", "b", "c"], input_size=(64, 64))
    return str(path)


def test_xgate_layers_lists_shapes_maps_and_the_default(resnet_checkpoint: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from gate.cli import _run

    assert _run(["layers", resnet_checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "default layer 'layer4'" in lines[0]
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[2:]}
    assert rows["layer4"].split() == ["Sequential", "[B,", "512,", "2,", "2]", "spatial", "<-", "default"]
    assert "no spatial or token grid" in rows["fc"] and rows["fc"].startswith("Linear")
    assert _run(["layers", resnet_checkpoint, "--maps-only", "--target-layer", "layer3"]) == 0
    out = capsys.readouterr().out
    assert "fc " not in out and "<- chosen" in out.split("layer3 ")[1].splitlines()[0]


@pytest.mark.parametrize(("layer", "words"), [("layer44", "close matches that give a map: layer4"),
                                              ("fc", "'fc' gives no map")], ids=["missing", "no-map"])
def test_xgate_layers_bad_target_layer_exits_2(resnet_checkpoint: str, layer: str, words: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from gate.cli import _run

    assert _run(["layers", resnet_checkpoint, "--target-layer", layer]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and err.startswith("xgate: error: target_layer:")
