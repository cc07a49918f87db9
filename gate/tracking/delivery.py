"""Sending a gate to MLflow: plan, stage, upload once (or move to the outbox), register; and fetching a
registered baseline back."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gate.errors import CandidateError, InputError, TrackingError, reason
from gate.result import GateResult
from gate.tracking.client import client_for, mlflow_env
from gate.tracking.outbox import (
    claim,
    discard_staged,
    move_to_outbox,
    pending_entries,
    read_manifest,
    stage_entry,
    staging_folder,
    write_manifest,
)
from gate.tracking.plan import (
    ENTRY_TAG,
    EntryPlan,
    RunPlan,
    TrackingConfig,
    plan_entry,
    safe_file_name,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc")


@dataclass(frozen=True)
class TrackingOutcome:
    """What ``log_gate`` did: logged runs, or an outboxed folder and a warning."""

    logged: bool
    run_ids: tuple[str, ...]
    registered_version: str | None
    outboxed: Path | None
    warning: str | None
    experiment_id: str = ""  # where the runs are (for their URL)


def log_gate(
    result: GateResult, outputs: Mapping[str, Path], config: TrackingConfig, candidate_files: Mapping[str, Path]
) -> TrackingOutcome:
    """Log a gate call to MLflow; on any failure keep it in the outbox and return a warning.

    ``outputs`` maps "report"/"json"/"junit" to local files (missing ones are skipped);
    ``candidate_files`` maps a candidate name to its checkpoint (logged when it is registered).
    Raises TrackingError only when ``config.require`` is set.
    """
    plan = plan_entry(result, config)
    # Staged inside the outbox (hidden) BEFORE any upload: an interrupt or a crash mid-upload keeps the record.
    staging = staging_folder(config.outbox, plan.entry_id)
    try:
        try:
            stage_entry(staging, plan, result, outputs, candidate_files)
        except Exception as exc:  # a result we cannot stage must not cost the verdict
            discard_staged(staging, config.outbox)
            return _failed(config, f"could not prepare the MLflow run ({reason(exc)})", None)
        return _deliver(staging, plan, config)
    except BaseException:  # Ctrl-C or SIGTERM during the upload: hand the staged record to the outbox
        if staging.is_dir():
            with contextlib.suppress(Exception):
                write_manifest(staging, replace(plan, error="interrupted during the upload"))
                move_to_outbox(staging, plan.entry_id, config.outbox)
        raise


def sync(config: TrackingConfig) -> int:
    """Upload every outboxed gate call once; returns how many were uploaded.

    Each uploaded entry is removed from the outbox; an entry whose runs are already
    complete on the server (a sync that died before removing it) is removed without
    a second upload. Raises TrackingError when the server fails.
    """
    folders = pending_entries(config.outbox)
    if not folders:
        return 0
    uri = config.resolved_uri()
    uploaded = 0
    with mlflow_env(config.timeout_s):
        client = client_for(uri)
        for folder in folders:
            claimed = claim(folder)
            if claimed is None:  # another sync took it
                continue
            try:
                plan = read_manifest(claimed)
                if _upload_once(client, uri, plan, claimed):
                    uploaded += 1
            except Exception as exc:
                claimed.rename(folder)
                raise TrackingError(f"sync to {uri} stopped at outbox entry {folder.name} after {uploaded} "
                                    f"uploaded: {reason(exc)}") from None
            shutil.rmtree(claimed, ignore_errors=True)
    return uploaded


def load_registered_baseline(uri: str, config: TrackingConfig | None = None, *, dst: Path | None = None) -> Path:
    """Download the checkpoint behind ``models:/NAME@alias`` (or ``models:/NAME/VERSION``); returns its path."""
    name, alias, ref = _parse_models_uri(uri)
    cfg = config or TrackingConfig()
    tracking_uri = cfg.resolved_uri()
    target = dst or Path(tempfile.mkdtemp(prefix="xgate-baseline-"))
    with mlflow_env(cfg.timeout_s):
        from mlflow.exceptions import MlflowException

        client = client_for(tracking_uri)
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, ref)
            local = Path(_download(mv.source or "", target, tracking_uri))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise CandidateError(f"no such registered model version ({reason(exc)})", path=uri) from None
            raise TrackingError(f"cannot fetch {uri} from {tracking_uri}: {reason(exc)}") from None
        except Exception as exc:
            raise TrackingError(f"cannot fetch {uri} from {tracking_uri}: {reason(exc)}") from None
    return _single_checkpoint(local, uri)


def _deliver(staging: Path, plan: EntryPlan, config: TrackingConfig) -> TrackingOutcome:
    uri = config.resolved_uri()
    created: list[str] = []
    try:
        with mlflow_env(config.timeout_s):
            client = client_for(uri)
            done = upload_entry(client, uri, plan, staging, created)
        discard_staged(staging, config.outbox)
        return TrackingOutcome(logged=True, run_ids=done.run_ids, registered_version=done.version, outboxed=None,
                               warning="; ".join(done.notes) or None, experiment_id=done.experiment_id)
    except Exception as exc:  # server down, HTTP error, timeout, bad store: keep the result for `xgate sync`
        error = reason(exc)
        with mlflow_env(config.timeout_s):
            _discard(uri, created)
    write_manifest(staging, replace(plan, error=error))
    try:
        saved = move_to_outbox(staging, plan.entry_id, config.outbox)
    except OSError as exc:
        return _failed(config, f"MLflow logging to {uri} failed ({error}) and the outbox could not be written "
                               f"({reason(exc)})", None)
    return _failed(config, f"MLflow logging to {uri} failed ({error}); kept in {saved}; "
                           "run `xgate sync` to upload it", saved)


def _failed(config: TrackingConfig, warning: str, saved: Path | None) -> TrackingOutcome:
    if config.require:
        raise TrackingError(warning)
    return TrackingOutcome(logged=False, run_ids=(), registered_version=None, outboxed=saved, warning=warning)


@dataclass(frozen=True)
class Uploaded:
    """What ``upload_entry`` made: run ids, the version that now holds the primary alias, and notes."""

    run_ids: tuple[str, ...]
    version: str | None
    notes: tuple[str, ...] = ()
    experiment_id: str = ""


def upload_entry(client: MlflowClient, uri: str, plan: EntryPlan, root: Path, created: list[str]) -> Uploaded:
    """Create the runs of ``plan`` with their values and ``root/files`` artifacts; register; finish.

    Run ids are appended to ``created`` as they are made, so a caller can discard a partial upload.
    """
    experiment_id = ensure_experiment(client, plan.experiment, uri)
    ids: dict[str, str] = {}
    primary: str | None = None
    notes: list[str] = []
    for run in plan.runs:
        tags = {**run.tags, ENTRY_TAG: plan.entry_id}
        if run.parent is not None:
            tags["mlflow.parentRunId"] = ids[run.parent]
        run_id = client.create_run(experiment_id, start_time=plan.start_ms, tags=tags, run_name=run.name).info.run_id
        created.append(run_id)
        ids[run.key] = run_id
        _log_values(client, run_id, run, plan.end_ms)
        folder = root / "files" / run.key
        if folder.is_dir() and any(folder.iterdir()):
            client.log_artifacts(run_id, str(folder))
        if run.aliases and plan.model_name:
            version, moved = _register(client, plan.model_name, run_id, run.aliases, plan.start_ms)
            client.set_tag(run_id, "xgate.registered_version", f"{plan.model_name}/{version}")
            primary = version if plan.primary_alias in moved else primary
            notes += [f"registered {plan.model_name} version {version}, but @{alias} stays on the version of a "
                      "later gate call" for alias in run.aliases if alias not in moved]
    for run_id in reversed(created):  # children first, then the parent
        client.set_terminated(run_id, "FINISHED", end_time=plan.end_ms)
    return Uploaded(run_ids=tuple(ids[r.key] for r in plan.runs), version=primary, notes=tuple(notes),
                    experiment_id=experiment_id)


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if needed (with artifacts beside a local database, never in ./mlruns)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=local_artifact_location(uri, name)))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # created by a concurrent gate call
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(f"experiment {name!r} is deleted; restore it or log to another --experiment")
    return str(experiment.experiment_id)


def local_artifact_location(uri: str, experiment: str) -> str | None:
    """For a database URI, ``mlartifacts/<experiment>`` beside the database (MLflow would use ./mlruns); else None."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _REMOTE_SCHEMES or scheme == "file" or ":" not in uri:
        return None
    base = Path.cwd()
    if scheme == "sqlite":
        db = uri.split(":///", 1)[1] if ":///" in uri else ""
        if db and db != ":memory:":
            base = Path(db).expanduser().resolve().parent
    slug = "/".join(safe_file_name(part) for part in experiment.split("/") if part)
    return (base / "mlartifacts" / slug).as_uri()


def _log_values(client: MlflowClient, run_id: str, run: RunPlan, timestamp: int) -> None:
    from mlflow.entities import Metric, Param

    params = [Param(k, v) for k, v in run.params.items()]
    metrics = [Metric(k, v, timestamp, 0) for k, v in run.metrics.items()]
    for chunk in _chunks(params, 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(run_id, params=chunk)
    for metric_chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=metric_chunk)


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _register(
    client: MlflowClient, name: str, run_id: str, aliases: Sequence[str], start_ms: int
) -> tuple[str, tuple[str, ...]]:
    """A new version from the run's ``checkpoint/`` artifact; returns it and the aliases moved to it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = str(client.create_model_version(name, f"runs:/{run_id}/checkpoint", run_id=run_id,
                                              await_creation_for=0).version)
    moved = tuple(alias for alias in aliases if not _alias_is_newer(client, name, alias, start_ms))
    for alias in moved:
        client.set_registered_model_alias(name, alias, version)
    return version, moved


def _alias_is_newer(client: MlflowClient, name: str, alias: str, start_ms: int) -> bool:
    """True when the alias already points at a version from a later gate call.

    Matters for ``sync``: an old outboxed pass must not take the alias back from a newer one.
    """
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
        if not current.run_id:
            return False
        return int(client.get_run(current.run_id).info.start_time or 0) > start_ms
    except MlflowException:
        return False  # no such alias yet, or its run is gone


def _upload_once(client: MlflowClient, uri: str, plan: EntryPlan, root: Path) -> bool:
    """Upload an outboxed entry unless a previous sync completed it; a partial earlier upload is replaced."""
    experiment_id = ensure_experiment(client, plan.experiment, uri)
    found = client.search_runs([experiment_id], filter_string=f"tags.`{ENTRY_TAG}` = '{plan.entry_id}'")
    if len(found) == len(plan.runs) and all(r.info.status == "FINISHED" for r in found):
        return False
    for run in found:
        client.delete_run(run.info.run_id)
    upload_entry(client, uri, plan, root, [])
    return True


def _discard(uri: str, run_ids: Sequence[str]) -> None:
    """Best effort: delete the runs of a failed upload (sync would replace them anyway)."""
    if not run_ids:
        return
    try:
        client = client_for(uri)
        for run_id in run_ids:
            client.delete_run(run_id)
    except Exception:  # the server that just failed may still be failing
        return


def _parse_models_uri(uri: str) -> tuple[str, str | None, str]:
    """(name, alias, version): exactly one of alias and version is set (version is "" with an alias)."""
    rest = uri[len("models:/"):] if uri.startswith("models:/") else ""
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias and "/" not in name:
            return name, alias, ""
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, version
    raise InputError(f"expected models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}", field="baseline")


def _download(source: str, target: Path, tracking_uri: str) -> str:
    import mlflow.artifacts

    return str(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target),
                                                   tracking_uri=tracking_uri))


def _single_checkpoint(local: Path, uri: str) -> Path:
    if local.is_file():
        return local
    files = sorted(p for p in local.rglob("*") if p.is_file())
    if len(files) != 1:
        raise CandidateError(f"expected one checkpoint file in the registered version, found {len(files)}", path=uri)
    return files[0]
