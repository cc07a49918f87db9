"""xgate: a model-selection gate for CI for image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
