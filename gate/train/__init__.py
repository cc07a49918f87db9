"""Train candidates (``xgate train``): the recipes' loop (:mod:`gate.train.loop`), its batch transforms
(:mod:`gate.train.augment`) and its data sources (:mod:`gate.train.data`)."""

from __future__ import annotations

from gate.train.loop import RECIPES, TrainConfig, TrainResult, train

__all__ = ["RECIPES", "TrainConfig", "TrainResult", "train"]
