"""Model faults are input errors naming the candidate; a failure around the model stays an internal error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gate.engine.model_faults import OutputCheck
from gate.errors import ModelOutputError

CHECK = OutputCheck(path="cand.pt", width=3)


def test_an_error_inside_the_forward_is_the_model_s_fault() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("bad reshape")

    model = Broken()
    with pytest.raises(ModelOutputError) as info, CHECK.guarded(model, 2):
        model(torch.zeros(2, 3))
    assert info.value.one_line() == "cand.pt: forward: model forward raised ValueError: bad reshape"
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_an_error_after_a_good_forward_is_not_blamed_on_the_model() -> None:
    model = nn.Linear(4, 3)
    with pytest.raises(KeyError), CHECK.guarded(model, 2):
        model(torch.zeros(2, 4))
        raise KeyError("a bug in the caller")


@pytest.mark.parametrize(
    ("output", "field", "message"),
    [
        (torch.zeros(2, 3), None, None),
        (torch.zeros(2, 4), "classes", "model gives 4 outputs but 3 class names (a model with more outputs"),
        (torch.zeros(2, 2), "classes", "model gives 2 outputs but 3 class names"),
        (torch.zeros(3, 3), "logits", "shape [3, 3], expected a [2, 3] tensor"),
        ([torch.zeros(2, 3)], "logits", "model returned a list, expected a [2, 3] tensor"),
    ],
)
def test_output_shape(output: object, field: str | None, message: str | None) -> None:
    if field is None:
        CHECK.check_shape(output, 2)
        return
    with pytest.raises(ModelOutputError) as info:
        CHECK.check_shape(output, 2)
    assert info.value.field == field and message in info.value.message


def test_first_non_finite_sample_is_named() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [0.0, float("-inf"), 1.0], [float("nan"), 0.0, 0.0]])
    with pytest.raises(ModelOutputError, match="NaN or infinite on the only_bg variant .first on sample 'b'."):
        CHECK.check_finite(logits, ["a", "b", "c"], "only_bg")
    assert CHECK.check_finite(logits[:1], ["a"]) is not None
