"""The MLflow client and its environment: short timeouts, no printing. mlflow is imported inside functions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


# Short network timeouts so an unreachable server costs seconds, not MLflow's default minutes of retries.
# A value the user already set in the environment wins.
_MLFLOW_ENV: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # library code does not print
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@contextlib.contextmanager
def mlflow_env(timeout_s: int) -> Iterator[None]:
    """Short HTTP timeouts and no retries, no URL printing or progress bars; the environment is restored after."""
    wanted = {**_MLFLOW_ENV, "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s))}
    added = [k for k in wanted if k not in os.environ]
    for key in added:
        os.environ[key] = wanted[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def client_for(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)
