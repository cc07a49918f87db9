"""xgate: a model-selection gate for CI for image classifiers.

The public API (docs/python.md), imported lazily (PEP 562) so that ``import gate`` and ``xgate --help``
pay for neither torch nor numpy until a name that needs them is used:

- ``check``, ``select``: the gate the CLI runs, returning a ``GateResult``;
- ``explain``, ``energy_in_mask``, ``lift``, ``pointing_game``: Grad-CAM and alignment over tensors;
- ``InputSpec``, ``Candidate``, ``load_candidate``, ``save_candidate``, ``Policy``, ``load_policy``,
  ``ReviewSet``, ``open_review_set``, ``Settings``, ``GateResult``: what they take and give;
- the typed errors: ``GateError`` and its subclasses, each with its ``exit_code``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from gate.errors import (
    CandidateError,
    GateError,
    InputError,
    ModelOutputError,
    PolicyError,
    ReviewSetError,
    TrackingError,
    UsageError,
)
from gate.settings import Settings

if TYPE_CHECKING:
    from gate.api import check, energy_in_mask, explain, lift, load_policy, pointing_game, select
    from gate.decide.policy import Policy
    from gate.inputs.candidate import Candidate
    from gate.inputs.candidate import load as load_candidate
    from gate.inputs.candidate import save as save_candidate
    from gate.inputs.model_input import InputSpec
    from gate.inputs.review_set import ReviewSet, open_review_set
    from gate.result import GateResult

__version__ = "0.1.0"

# public name -> (module, attribute): imported on first use
_LAZY: dict[str, tuple[str, str]] = {
    "check": ("gate.api", "check"),
    "select": ("gate.api", "select"),
    "explain": ("gate.api", "explain"),
    "energy_in_mask": ("gate.api", "energy_in_mask"),
    "lift": ("gate.api", "lift"),
    "pointing_game": ("gate.api", "pointing_game"),
    "load_policy": ("gate.api", "load_policy"),
    "Policy": ("gate.decide.policy", "Policy"),
    "Candidate": ("gate.inputs.candidate", "Candidate"),
    "InputSpec": ("gate.inputs.model_input", "InputSpec"),
    "load_candidate": ("gate.inputs.candidate", "load"),
    "save_candidate": ("gate.inputs.candidate", "save"),
    "ReviewSet": ("gate.inputs.review_set", "ReviewSet"),
    "open_review_set": ("gate.inputs.review_set", "open_review_set"),
    "GateResult": ("gate.result", "GateResult"),
}

__all__ = [
    "Candidate", "CandidateError", "GateError", "GateResult", "InputError", "InputSpec", "ModelOutputError", "Policy",
    "PolicyError", "ReviewSet", "ReviewSetError", "Settings", "TrackingError", "UsageError", "__version__", "check",
    "energy_in_mask", "explain", "lift", "load_candidate", "load_policy", "open_review_set", "pointing_game",
    "save_candidate", "select",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gate' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
