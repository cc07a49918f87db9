"""A candidate's model faults as input errors naming its file, never exit 3 and never a pass.

A forward that raises, an output that is not a floating [B, outputs] tensor of
logits (a tuple, a dict, 1-D, three columns for four class names, more outputs
than names), or a NaN/±inf logit: each is one line naming the candidate file and
the field (``forward``, ``logits``, ``classes``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gate.errors import GateError, ModelOutputError, reason


@dataclass(frozen=True)
class OutputCheck:
    """What a model's forward must give: ``width`` logits per sample; errors name ``path``."""

    path: str
    width: int

    @contextmanager
    def guarded(self, model: nn.Module, batch_size: int, variant: str = "") -> Iterator[None]:
        """Within the block, ``model``'s forward must not raise and must return [batch_size, width] logits.

        Hooks on the model itself check its output before any caller uses it; an exception is the model's
        fault only when raised inside its forward (a bug around it stays an internal error).
        """
        where = _where(variant)
        state = {"inside": False}

        def entered(_module: nn.Module, _inputs: object) -> None:
            state["inside"] = True

        def check(_module: nn.Module, _inputs: object, output: object) -> None:
            state["inside"] = False
            self.check_shape(output, batch_size, where)

        handles = [model.register_forward_pre_hook(entered), model.register_forward_hook(check)]
        try:
            yield
        except GateError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise  # not the model's fault: a smaller --batch-size helps
        except Exception as exc:
            if not state["inside"]:
                raise
            raise ModelOutputError(f"model forward raised {reason(exc)}{where}", path=self.path,
                                   field="forward") from None
        finally:
            for handle in handles:
                handle.remove()

    def check_shape(self, output: object, batch_size: int, where: str = "") -> None:
        """A floating [batch_size, width] tensor, else a ModelOutputError."""
        expected = f"a [{batch_size}, {self.width}] tensor of logits (one per output name)"
        if not isinstance(output, Tensor):
            raise ModelOutputError(f"model returned a {type(output).__name__}{where}, expected {expected}",
                                   path=self.path, field="logits")
        if output.dim() != 2 or output.shape[0] != batch_size or not output.is_floating_point():
            raise ModelOutputError(f"model returned a {output.dtype} tensor of shape {list(output.shape)}{where}, "
                                   f"expected {expected}", path=self.path, field="logits")
        if output.shape[1] != self.width:
            more = " (a model with more outputs than class names is refused, never truncated)" \
                if output.shape[1] > self.width else ""
            raise ModelOutputError(f"model gives {output.shape[1]} outputs but {self.width} class names{more}",
                                   path=self.path, field="classes")

    def check_finite(self, logits: Tensor, sample_ids: Sequence[str], variant: str = "") -> Tensor:
        """``logits`` when every value is finite, else a ModelOutputError naming the first such sample."""
        bad = ~torch.isfinite(logits).all(1)
        if bad.any():
            first = sample_ids[int(bad.nonzero()[0])]
            raise ModelOutputError(f"model output is NaN or infinite{_where(variant)} (first on sample {first!r})",
                                   path=self.path, field="logits")
        return logits


def _where(variant: str) -> str:
    return f" on the {variant} variant" if variant else ""
