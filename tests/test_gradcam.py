"""Our one-forward Grad-CAM against captum and pytorch-grad-cam, and its contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from gate.engine.gradcam import explain, hooked, upsample
from gate.errors import CandidateError


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=5).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_equals_captum_layer_gradcam(resnet: nn.Module, batch: torch.Tensor) -> None:
    from captum.attr import LayerGradCam

    ours = explain(resnet, "layer4", batch)
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(batch, target=ours.target, relu_attributions=True)
    assert theirs.shape == (4, 1, 3, 3)
    assert ours.cam.abs().max() > 0
    torch.testing.assert_close(ours.cam, theirs[:, 0], atol=1e-5, rtol=0)


def test_equals_pytorch_grad_cam_after_minmax(resnet: nn.Module, batch: torch.Tensor) -> None:
    from pytorch_grad_cam import GradCAM

    ours = explain(resnet, "layer4", batch)
    with GradCAM(model=resnet, target_layers=[resnet.layer4]) as cam:
        theirs = cam(input_tensor=batch, targets=None)  # None: each image's own top class
    # pytorch-grad-cam min-max normalises at the layer's resolution, resizes (cv2 bilinear), then
    # min-max normalises again when it aggregates target layers.
    mine = upsample(_minmax(ours.cam), (96, 96))
    mine = _minmax(mine).numpy()
    assert theirs.shape == (4, 96, 96)
    np.testing.assert_allclose(mine, theirs, atol=1e-4)


def _minmax(cam: torch.Tensor) -> torch.Tensor:
    shifted = cam - cam.amin(dim=(1, 2), keepdim=True)
    return shifted / (1e-7 + shifted.amax(dim=(1, 2), keepdim=True))


def test_batched_equals_one_at_a_time(resnet: nn.Module, batch: torch.Tensor) -> None:
    together = explain(resnet, "layer4", batch)
    for i in range(batch.shape[0]):
        alone = explain(resnet, "layer4", batch[i : i + 1])
        torch.testing.assert_close(alone.cam[0], together.cam[i], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(alone.logits[0], together.logits[i], atol=1e-5, rtol=1e-4)


def test_logits_equal_plain_forward_and_target_is_prediction(resnet: nn.Module, batch: torch.Tensor) -> None:
    with torch.no_grad():
        plain = resnet(batch)
    ours = explain(resnet, "layer4", batch)
    torch.testing.assert_close(ours.logits, plain)
    assert torch.equal(ours.target, plain.argmax(1))


def test_explicit_target_explains_that_class(resnet: nn.Module, batch: torch.Tensor) -> None:
    from captum.attr import LayerGradCam

    target = torch.tensor([4, 3, 2, 1])
    ours = explain(resnet, "layer4", batch, target=target)
    theirs = LayerGradCam(resnet, resnet.layer4).attribute(batch, target=target, relu_attributions=True)
    torch.testing.assert_close(ours.cam, theirs[:, 0], atol=1e-5, rtol=0)


def test_flags_mode_and_hooks_restored_even_on_error(resnet: nn.Module) -> None:
    model = resnet18(weights=None, num_classes=3)
    model.train()
    model.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError), hooked(model, "layer4"):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.layer4._forward_hooks


def test_works_under_no_grad_and_with_inplace_relu_after_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        out = explain(model, "0", torch.randn(2, 3, 8, 8))
    assert out.cam.shape == (2, 8, 8)
    assert (out.cam >= 0).all()


def test_unknown_layer_and_non_spatial_layer_are_input_errors(resnet: nn.Module, batch: torch.Tensor) -> None:
    with pytest.raises(CandidateError, match="no layer 'layer9'"):
        explain(resnet, "layer9", batch)
    with pytest.raises(CandidateError, match=r"\[B, C, H, W\]"):
        explain(resnet, "fc", batch)


def test_upsample_keeps_mass_nonnegative_and_is_identity_at_same_size() -> None:
    cam = torch.rand(2, 4, 4)
    assert upsample(cam, (4, 4)) is cam
    big = upsample(cam, (16, 16))
    assert big.shape == (2, 16, 16)
    assert big.min() >= 0
    # bilinear (align_corners=False) reproduces a constant map exactly
    torch.testing.assert_close(upsample(torch.full((1, 4, 4), 0.3), (8, 8)), torch.full((1, 8, 8), 0.3))


class SharedActivation(nn.Module):
    """One ReLU module called after each of two convs (as ResNet blocks reuse theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        return self.fc(self.act(self.conv2(x)).mean((2, 3)))


class SplitActivation(SharedActivation):
    """The same network with a separate ReLU for the second call."""

    def __init__(self) -> None:
        super().__init__()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        return self.fc(self.act2(self.conv2(x)).mean((2, 3)))


def test_module_called_twice_is_explained_at_its_last_call() -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    shared = SharedActivation().eval()
    split = SplitActivation().eval()
    split.load_state_dict(shared.state_dict())
    batch = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ours = explain(shared, "act", batch)
    with hooked(shared, "act") as capture:
        shared(batch)
    assert capture.calls == 2
    last_call = explain(split, "act2", batch)
    first_call = explain(split, "act", batch)
    torch.testing.assert_close(ours.cam, last_call.cam, atol=0, rtol=0)
    assert not torch.allclose(ours.cam, first_call.cam)
    theirs = LayerGradCam(shared, shared.act).attribute(batch, target=ours.target, relu_attributions=True)
    torch.testing.assert_close(ours.cam, theirs[:, 0], atol=1e-5, rtol=0)  # captum keeps the last call too


def test_channels_last_memory_format_gives_the_same_maps(resnet: nn.Module, batch: torch.Tensor) -> None:
    import copy

    plain = explain(resnet, "layer4", batch)
    model = copy.deepcopy(resnet).to(memory_format=torch.channels_last)
    fast = explain(model, "layer4", batch.contiguous(memory_format=torch.channels_last))
    assert fast.layout.kind == "spatial"
    torch.testing.assert_close(fast.cam, plain.cam, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.logits, plain.logits, atol=1e-5, rtol=1e-4)


class InplaceAfter(nn.Module):
    """DenseNet's ending: the target layer's output goes through F.relu(inplace=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.fc(out.mean((2, 3)))


def test_inplace_op_after_the_layer_keeps_captum_equality() -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = InplaceAfter().eval()
    with torch.no_grad():  # shift BN so that many activations are negative: the in-place ReLU then matters
        model.features[1].bias.fill_(-0.5)
    batch = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ours = explain(model, "features", batch)
    theirs = LayerGradCam(model, model.features).attribute(batch, target=ours.target, relu_attributions=True)
    torch.testing.assert_close(ours.cam, theirs[:, 0], atol=1e-5, rtol=0)
    # the leaf kept the negative (pre-ReLU) activations: the in-place ReLU ran on the clone
    with hooked(model, "features") as capture:
        model(batch)
    assert capture.activation is not None and capture.activation.min() < 0


def test_bf16_autocast_maps_are_float32_from_the_bf16_activation_and_gradient(
    resnet: nn.Module, batch: torch.Tensor
) -> None:
    # Reference by hand: the layer's bf16 output and its gradient, combined in float64.
    saved: list[torch.Tensor] = []
    handle = resnet.layer4.register_forward_hook(lambda _m, _i, out: saved.append(out))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.enable_grad():
            logits = resnet(batch)
            target = logits.argmax(1)
            (grads,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), saved[0])
    finally:
        handle.remove()
    activation = saved[0].detach()
    assert activation.dtype == grads.dtype == torch.bfloat16  # the forward did run in bf16
    weights = grads.double().mean(dim=(2, 3), keepdim=True)
    expected = F.relu((weights * activation.double()).sum(1))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = explain(resnet, "layer4", batch)
    assert ours.cam.dtype == torch.float32
    torch.testing.assert_close(ours.cam.double(), expected, atol=1e-6 * float(expected.max()), rtol=1e-5)
