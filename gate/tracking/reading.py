"""Reading past gates back from MLflow: the history table and page, the maps of fixed samples and the atlases."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gate.errors import InputError, TrackingError, reason
from gate.result import SHORT_SHA
from gate.tracking.client import client_for, mlflow_env
from gate.tracking.plan import (
    FIXED_MAPS_TAG,
    KIND_TAG,
    TrackingConfig,
    metric_key,
    read_thresholds,
    safe_file_name,
    threshold_keys,
)
from gate.tracking.rows import KEY_SCORES, KIND_SELECT, HistoryRow, commit_prefix, format_history, map_rows

if TYPE_CHECKING:
    from mlflow import MlflowClient

# A run's atlas artifacts (gate.tracking.outbox.write_atlas) are read only up to these sizes: the PNG is a small
# upscaled grid (a few kB) and the JSON its summary (the grid as numbers, ~12 kB); anything larger is not an atlas
# xgate wrote and is skipped, as is a hot spot that is not a short line of words.
ATLAS_PNG_MAX_BYTES = 8_000_000
ATLAS_JSON_MAX_BYTES = 1_000_000
HOT_SPOT_MAX_CHARS = 120


@dataclass(frozen=True)
class RunAtlas:
    """One run's attention atlas as its ``atlas/`` artifacts hold it."""

    png: bytes  # atlas/atlas.png as logged (the page checks that it is an image)
    hot_spot: str | None = None  # from atlas/atlas.json, e.g. "bottom-right corner, 4% of the image"; None: no words


class HistoryPage(NamedTuple):
    """What the history page shows: ``history``'s rows, the maps (sample id -> run id -> PNG), the atlases by run."""

    rows: list[HistoryRow]
    maps: dict[str, dict[str, bytes]]
    atlases: dict[str, RunAtlas]


def history(
    config: TrackingConfig, *, experiment: str | None, limit: int = 20, commit: str | None = None
) -> list[HistoryRow]:
    """Runs of past gate calls, newest first (every xgate experiment when none is named).

    Candidate runs and the parent runs of ``select`` calls (``kind == "select"``) are both listed.
    ``commit``: only the gates of that commit (a SHA or a prefix of 4+ hex digits; a UsageError otherwise).
    """
    wanted = "" if commit is None else f" AND tags.`mlflow.source.git.commit` LIKE '{commit_prefix(commit)}%'"
    uri = config.resolved_uri()
    name = experiment or config.experiment
    with mlflow_env(config.timeout_s):
        client = client_for(uri)
        try:
            names = _history_experiments(client, name)
            if not names:
                return []
            # Every run xgate made (candidate or select); MLflow's filter has no IN for tags.
            runs = client.search_runs(list(names), filter_string=f"tags.`{KIND_TAG}` LIKE '%'{wanted}",
                                      order_by=["attributes.start_time DESC", "attributes.run_name ASC"],
                                      max_results=limit)
        except InputError:
            raise
        except Exception as exc:
            raise TrackingError(f"cannot read MLflow history from {uri}: {reason(exc)}") from None
    rows = sorted((_history_row(run, names.get(run.info.experiment_id, "")) for run in runs), key=lambda r: r.candidate)
    # Newest call first; within one select call (one start time) the parent, then its candidates by name.
    return sorted(rows, key=lambda r: (r.start_time, r.kind == KIND_SELECT), reverse=True)


def fetch_maps(
    config: TrackingConfig, rows: Sequence[HistoryRow], sample_ids: Sequence[str] | None = None, max_samples: int = 8
) -> dict[str, dict[str, bytes]]:
    """The ``maps/<id>.png`` artifacts of ``rows``' candidate runs: sample id -> run id -> PNG bytes.

    Without ``sample_ids``, the samples most runs kept are followed: the engine keeps its fixed samples
    (the first of each class, at most ``FIXED_TOTAL``) in every run, with the same ids across versions,
    while the gallery's picks change from model to model. Up to ``max_samples``, one class at a time.
    """
    rows = [row for row in rows if row.kind != KIND_SELECT]  # a select's parent run keeps no maps
    if not rows:
        return {}
    maps: dict[str, dict[str, bytes]] = {}
    with _artifact_session(config, "maps") as (client, tmp):
        if sample_ids is None:
            ids = _shared_map_ids(client, rows, max_samples)
        else:
            ids = [safe_file_name(i) for i in sample_ids]
        for sample_id in ids:
            for row in rows:
                png = _download_map(client, row.run_id, sample_id, tmp)
                if png is not None:
                    maps.setdefault(sample_id, {})[row.run_id] = png
    return maps


def fetch_atlases(config: TrackingConfig, rows: Sequence[HistoryRow]) -> dict[str, RunAtlas]:
    """The ``atlas/atlas.png`` artifacts of ``rows``' candidate runs and their hot spots: run id -> RunAtlas.

    Runs without an atlas PNG (logged before the atlas existed, or with no map mass) are left out; a PNG or JSON
    above its size cap counts as absent, and a JSON that does not hold a short hot-spot string gives no words.
    """
    rows = [row for row in rows if row.kind != KIND_SELECT]
    if not rows:
        return {}
    atlases: dict[str, RunAtlas] = {}
    with _artifact_session(config, "atlases") as (client, tmp):
        for row in rows:
            atlas = _download_atlas(client, row.run_id, tmp)
            if atlas is not None:
                atlases[row.run_id] = atlas
    return atlases


@contextlib.contextmanager
def _artifact_session(config: TrackingConfig, what: str) -> Iterator[tuple[MlflowClient, Path]]:
    """A client and a scratch folder for downloading run artifacts; a failure inside is one TrackingError."""
    uri = config.resolved_uri()
    with mlflow_env(config.timeout_s), tempfile.TemporaryDirectory(prefix="xgate-read-") as tmp:
        client = client_for(uri)
        try:
            yield client, Path(tmp)
        except Exception as exc:
            raise TrackingError(f"cannot read {what} from {uri}: {reason(exc)}") from None


def hot_spot_words(summary: bytes) -> str | None:
    """The ``hot_spot`` words of an ``atlas.json``; None unless it is a JSON object (at most ``ATLAS_JSON_MAX_BYTES``)
    whose ``hot_spot`` is a printable string of at most ``HOT_SPOT_MAX_CHARS`` characters."""
    if len(summary) > ATLAS_JSON_MAX_BYTES:
        return None
    try:
        value = json.loads(summary)
    except (ValueError, RecursionError):  # not JSON, not UTF-8 (a ValueError too), or nested too deep
        return None
    words = value.get("hot_spot") if isinstance(value, dict) else None
    if not isinstance(words, str):
        return None
    words = words.strip()
    return words if words and len(words) <= HOT_SPOT_MAX_CHARS and words.isprintable() else None


def history_table(
    config: TrackingConfig, *, experiment: str | None, limit: int = 20, width: int = 120, commit: str | None = None
) -> str:
    """``history`` as a plain-text table for the console, at most ``width`` columns wide."""
    return format_history(history(config, experiment=experiment, limit=limit, commit=commit), width)


def history_with_maps(
    config: TrackingConfig, *, experiment: str | None, limit: int = 20, commit: str | None = None
) -> HistoryPage:
    """``history`` and the maps and atlases its page shows, for the runs of its map strip (``map_rows``).

    The page itself is drawn by ``gate.outputs.report.history``.
    """
    rows = history(config, experiment=experiment, limit=limit, commit=commit)
    shown = map_rows(rows)
    return HistoryPage(rows=rows, maps=fetch_maps(config, shown), atlases=fetch_atlases(config, shown))


def _history_experiments(client: MlflowClient, name: str | None) -> dict[str, str]:
    """Experiment id -> name: the named one, or every ``xgate/...`` experiment."""
    if name:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise InputError(f"no MLflow experiment named {name!r}", field="experiment")
        return {str(experiment.experiment_id): name}
    found = client.search_experiments(filter_string="name LIKE 'xgate/%'")
    return {str(e.experiment_id): e.name for e in found}


def _history_row(run: Any, experiment: str) -> HistoryRow:
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    # The key scores, and every other score the run's policy drew a line for (by its MLflow key).
    by_key = {metric_key(s): s for s in KEY_SCORES}
    names = list(dict.fromkeys([*KEY_SCORES, *(by_key.get(k, k) for k in threshold_keys(params))]))
    scores = {s: float(metrics[metric_key(s)]) for s in names if metric_key(s) in metrics}
    # One tag per failed rule ("xgate.failed.<n>": "<rule id>: <message>"); older runs: one comma string.
    numbered = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tags.items()
                      if k.startswith("xgate.failed.") and k.rsplit(".", 1)[1].isdigit())
    failed = tuple(v.split(": ", 1)[0] for _, v in numbered) or tuple(
        r for r in tags.get("xgate.failed_rules", "").split(",") if r)
    kind = tags.get(KIND_TAG, "candidate")
    lineage = _select_name(metrics) if kind == KIND_SELECT else tags.get("xgate.candidate", run.info.run_name or "")
    return HistoryRow(
        run_id=run.info.run_id, start_time=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
        candidate=lineage,
        verdict=tags.get("xgate.verdict", ""), scores=scores, failed_rules=failed,
        sha256=params.get("candidate.sha256", ""), registered=tags.get("xgate.registered_version"),
        experiment=experiment, kind=kind, policy=params.get("policy", tags.get("xgate.policy", "")),
        thresholds=read_thresholds(params, names), rules_total=_count(metrics, "rules.total"),
        rules_failed=_count(metrics, "rules.failed"), parent_run_id=tags.get("mlflow.parentRunId", ""),
        fixed_maps=tuple(name for name in tags.get(FIXED_MAPS_TAG, "").split(",") if name),
        commit=tags.get("mlflow.source.git.commit", "")[:SHORT_SHA], branch=tags.get("mlflow.source.git.branch", ""),
    )


def _select_name(metrics: Mapping[str, float]) -> str:
    # The run name carries the verdict, which the table shows in its own column.
    count = _count(metrics, "candidates.total")
    return "select" if count is None else f"select of {count}"



def _count(metrics: Mapping[str, float], key: str) -> int | None:
    return int(metrics[key]) if key in metrics else None


def _map_ids(client: MlflowClient, run_id: str) -> list[str]:
    names = [Path(a.path).name for a in client.list_artifacts(run_id, "maps") if a.path.endswith(".png")]
    return sorted(name[: -len(".png")] for name in names)


def _shared_map_ids(client: MlflowClient, rows: Sequence[HistoryRow], limit: int) -> list[str]:
    """The map ids kept by the most runs; among those, the fixed samples the runs name (class by class) first.

    The engine keeps its fixed samples in every run of a review set, so they fill every column; a gallery
    pick is shared only by chance. Runs logged before the fixed samples were tagged: lowest id first.
    """
    fixed: dict[str, int] = {}
    for row in rows:  # newest first: its order (round-robin over classes) wins
        for name in row.fixed_maps:
            fixed.setdefault(name, len(fixed))
    counts: dict[str, int] = {}
    for row in rows:
        for sample_id in _map_ids(client, row.run_id):
            counts[sample_id] = counts.get(sample_id, 0) + 1
    return sorted(counts, key=lambda i: (-counts[i], fixed.get(i, len(fixed)), i))[:limit]


def _download_map(client: MlflowClient, run_id: str, sample_id: str, tmp: Path) -> bytes | None:
    from mlflow.exceptions import MlflowException

    target = tmp / run_id
    target.mkdir(exist_ok=True)
    try:
        local = client.download_artifacts(run_id, f"maps/{sample_id}.png", str(target))
    except (MlflowException, OSError):
        return None  # this run did not keep that sample
    path = Path(local)
    return path.read_bytes() if path.is_file() else None


def _download_atlas(client: MlflowClient, run_id: str, tmp: Path) -> RunAtlas | None:
    sizes = {Path(a.path).name: a.file_size for a in client.list_artifacts(run_id, "atlas") if not a.is_dir}
    png = _download_capped(client, run_id, "atlas.png", sizes, ATLAS_PNG_MAX_BYTES, tmp)
    if png is None:
        return None
    summary = _download_capped(client, run_id, "atlas.json", sizes, ATLAS_JSON_MAX_BYTES, tmp)
    return RunAtlas(png=png, hot_spot=None if summary is None else hot_spot_words(summary))


def _download_capped(
    client: MlflowClient, run_id: str, name: str, sizes: Mapping[str, int | None], cap: int, tmp: Path
) -> bytes | None:
    """``atlas/<name>`` of the run when it is listed and at most ``cap`` bytes (as listed, and as downloaded)."""
    from mlflow.exceptions import MlflowException

    if name not in sizes or (sizes[name] or 0) > cap:
        return None
    target = tmp / run_id
    target.mkdir(exist_ok=True)
    try:
        path = Path(client.download_artifacts(run_id, f"atlas/{name}", str(target)))
        if not path.is_file() or path.stat().st_size > cap:
            return None
        return path.read_bytes()
    except (MlflowException, OSError):
        return None
