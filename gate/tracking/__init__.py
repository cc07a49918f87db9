"""MLflow tracking: one run per candidate per gate call, an outbox when MLflow fails, history and sync.

A gate call is first *planned* (params, metrics, tags, which run gets a registry
alias: ``gate.tracking.plan``) and *staged* (artifacts written to a folder beside a
JSON manifest: ``gate.tracking.outbox``); the same upload code here then sends it to MLflow,
either at once or later from the outbox. So a tracking failure never loses a result:
the staged folder is moved to the outbox and ``xgate sync`` uploads it exactly once.
The package also reads past runs back (history, maps, registered baselines).

mlflow is imported inside functions only: ``xgate --help`` must not pay for it.
This package is the only place that imports mlflow:
:mod:`~gate.tracking.delivery` (log, sync, registered baselines), :mod:`~gate.tracking.reading`
(history, maps, atlases) and :mod:`~gate.tracking.client` (the client and its environment).
"""

from __future__ import annotations

from gate.tracking.client import mlflow_env
from gate.tracking.delivery import TrackingOutcome, load_registered_baseline, log_gate, sync
from gate.tracking.reading import (
    HistoryPage,
    RunAtlas,
    fetch_atlases,
    fetch_maps,
    history,
    history_table,
    history_with_maps,
)

__all__ = ["HistoryPage", "RunAtlas", "TrackingOutcome", "fetch_atlases", "fetch_maps", "history", "history_table",
           "load_registered_baseline", "log_gate", "mlflow_env", "sync", "history_with_maps"]
