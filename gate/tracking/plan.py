"""Tracking plans: what a gate call logs to MLflow, worked out without MLflow.

A gate call becomes an ``EntryPlan``: one ``RunPlan`` per MLflow run with its params,
metrics, tags and registry aliases. Planning writes no files and asks no server, but it is not
pure: it reads the clock, a new uuid, the environment and the git commit (``git rev-parse``).
``EntryPlan.to_json`` is the outbox manifest that ``gate.tracking.outbox`` stages.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gate.records import Records
from gate.result import CandidateResult, GateResult
from gate.settings import DEFAULTS, default_tracking_uri
from gate.tracking.browse import (
    NOTE_TAG,
    candidate_note,
    candidate_run_name,
    select_note,
    select_run_name,
    source_tags,
)

OUTBOX_FORMAT = "xgate.outbox/v1"
KIND_TAG, ENTRY_TAG = "xgate.kind", "xgate.entry"
FIXED_MAPS_TAG = "xgate.maps.fixed"  # the maps/ names of the samples every run keeps, for history
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")  # MLflow's portable key alphabet (":" is refused on Windows)
_BAD_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_PARAM_MAX, _TAG_MAX = 6000, 8000  # MLflow's value length limits


@dataclass(frozen=True)
class TrackingConfig:
    """Where and how a gate call is logged."""

    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else DEFAULT_TRACKING_URI in the working directory
    experiment: str | None = None  # None: xgate/<review set>/<policy>
    register: str | None = None  # registered model name: a passing candidate becomes a version
    alias: str = DEFAULTS.alias
    challenger_alias: str | None = None  # select only: given to a passing candidate that was not selected
    require: bool = False  # raise TrackingError instead of warning when logging fails
    outbox: Path = Path(".xgate/outbox")
    timeout_s: int = 10  # per HTTP request, no retries

    def resolved_uri(self) -> str:
        """The tracking URI in effect; the default SQLite store is made absolute."""
        if self.uri:
            return self.uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return default_tracking_uri()


@dataclass(frozen=True)
class RunPlan:
    """One MLflow run to create: its artifacts are staged under ``files/<key>/``."""

    key: str
    name: str
    parent: str | None  # key of the parent run (select) or None
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    aliases: tuple[str, ...] = ()  # registry aliases for this run's checkpoint; () = not registered


@dataclass(frozen=True)
class EntryPlan:
    """One gate call: the unit that is uploaded, outboxed and synced as a whole."""

    entry_id: str
    experiment: str
    start_ms: int
    end_ms: int
    model_name: str | None
    primary_alias: str
    runs: tuple[RunPlan, ...]
    error: str = ""  # why it was outboxed

    def to_json(self) -> dict[str, Any]:
        """The outbox manifest."""
        return {
            "format": OUTBOX_FORMAT, "entry_id": self.entry_id, "experiment": self.experiment,
            "start_ms": self.start_ms, "end_ms": self.end_ms, "model_name": self.model_name,
            "primary_alias": self.primary_alias, "error": self.error,
            "runs": [
                {"key": r.key, "name": r.name, "parent": r.parent, "params": dict(r.params),
                 "metrics": dict(r.metrics), "tags": dict(r.tags), "aliases": list(r.aliases)}
                for r in self.runs
            ],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> EntryPlan:
        """Read a manifest written by ``to_json``."""
        runs = tuple(
            RunPlan(key=r["key"], name=r["name"], parent=r["parent"], params=r["params"], metrics=r["metrics"],
                    tags=r["tags"], aliases=tuple(r["aliases"]))
            for r in data["runs"]
        )
        return EntryPlan(entry_id=data["entry_id"], experiment=data["experiment"], start_ms=int(data["start_ms"]),
                         end_ms=int(data["end_ms"]), model_name=data["model_name"],
                         primary_alias=data["primary_alias"], runs=runs, error=data.get("error", ""))


# --- planning (no files, no server; the clock, the environment and git are read) -----


def experiment_name(result: GateResult, config: TrackingConfig) -> str:
    """``config.experiment`` or ``xgate/<review set>/<policy>``."""
    return config.experiment or f"xgate/{result.review_set.name}/{result.policy.name}"


def plan_entry(result: GateResult, config: TrackingConfig, *, now_ms: int | None = None) -> EntryPlan:
    """Params, metrics, tags and registry aliases of every run of one gate call."""
    end_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    common = _common_params(result)
    runs: list[RunPlan] = []
    parent: str | None = None
    if result.command == "select":
        parent = "parent"
        runs.append(RunPlan(key=parent, name=select_run_name(result), parent=None,
                            params=common, metrics=_select_metrics(result), tags=_select_tags(result)))
    aliases = _aliases(result, config)
    for index, cand in enumerate(result.candidates):
        runs.append(RunPlan(
            key=f"c{index}", name=candidate_run_name(cand), parent=parent,
            params={**common, **_candidate_params(cand), **threshold_params(cand)}, metrics=candidate_metrics(cand),
            tags=_candidate_tags(result, cand), aliases=aliases.get(cand.candidate.name, ()),
        ))
    return EntryPlan(entry_id=uuid.uuid4().hex, experiment=experiment_name(result, config),
                     start_ms=_created_ms(result.created, end_ms), end_ms=end_ms, model_name=config.register,
                     primary_alias=config.alias, runs=tuple(runs))


def metric_key(score: str) -> str:
    """An MLflow-safe key for a score name: ``confident_wrong_rate@0.99`` -> ``confident_wrong_rate_at_0.99``."""
    key = _BAD_KEY_CHARS.sub("_", score.replace("@", "_at_"))
    if posixpath.normpath(key) != key or key.startswith(("/", "..")) or key in ("", "."):
        key = key.replace("/", "_") or "_"  # MLflow refuses keys that resolve to another path
    return key[:250]


def metrics_of(scores: Mapping[str, float | None]) -> dict[str, float]:
    """Every finite score, under its MLflow key."""
    return {metric_key(k): float(v) for k, v in scores.items() if v is not None and math.isfinite(v)}


def candidate_metrics(cand: CandidateResult) -> dict[str, float]:
    """Every finite score, plus what a runs table sorts and charts by.

    ``passed`` (1/0) and the rule counts make the verdict numeric; each rule's interval bounds
    (``bound.<score>.low/high``), the comparison's intervals (``delta.<score>_at_<conf>.low/high``)
    and ``mcnemar_p`` are the numbers a non-inferiority decision rests on.
    """
    metrics = metrics_of(cand.scores)
    metrics["passed"] = 1.0 if cand.passed else 0.0
    metrics["rules.total"] = float(len(cand.rules))
    metrics["rules.failed"] = float(len(cand.failed_rules))
    for rule in cand.rules:
        if rule.interval is not None and rule.op in (">=", "<="):
            metrics.update(_bounds(f"bound.{rule.score}", rule.interval))
    if cand.comparison is not None:
        for interval in cand.comparison.intervals:
            metrics.update(_bounds(interval.key, (interval.low, interval.high)))
        metrics.update(metrics_of({"mcnemar_p": cand.comparison.mcnemar_p}))
    return metrics


def _bounds(name: str, interval: Sequence[float | None]) -> dict[str, float]:
    low, high = interval
    return metrics_of({f"{name}.low": low, f"{name}.high": high})


def _select_metrics(result: GateResult) -> dict[str, float]:
    passing = sum(1 for c in result.candidates if c.passed)
    return {"passed": 1.0 if result.passed else 0.0, "candidates.total": float(len(result.candidates)),
            "candidates.passed": float(passing)}


def fixed_map_names(records: Records) -> list[str]:
    """The ``maps/`` names of the samples every run of this review set keeps, one class at a time.

    The engine always keeps the first ``fixed_per_class`` samples of each class (same ids across model
    versions); here they are the kept prefix of each class in review-set order, found without knowing that
    number. Round-robin over classes (the first of each class, then the second ...), so a reader that shows
    only a few still covers many classes.
    """
    kept = records.kept
    prefixes: dict[int, list[str]] = {}
    closed: set[int] = set()
    for sample_id, label in zip(records.ids, records.labels.tolist(), strict=True):
        if label in closed:
            continue
        if sample_id in kept:
            prefixes.setdefault(label, []).append(sample_id)
        else:
            closed.add(label)
    columns = [prefixes[label] for label in sorted(prefixes)]
    depth = max((len(c) for c in columns), default=0)
    return [safe_file_name(c[i]) for i in range(depth) for c in columns if i < len(c)]


def _join_whole(names: Sequence[str], limit: int) -> str:
    """Comma-joined names, as many whole ones as fit in ``limit`` characters."""
    out: list[str] = []
    size = 0
    for name in names:
        size += len(name) + (1 if out else 0)
        if size > limit:
            break
        out.append(name)
    return ",".join(out)


def safe_file_name(sample_id: str) -> str:
    """A sample id as a file name: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    name = _BAD_FILE_CHARS.sub("_", sample_id)
    return name if name.strip(".") else f"_{name}"


def _common_params(result: GateResult) -> dict[str, str]:
    params = {
        "command": result.command, "policy": result.policy.name, "policy.sha256": result.policy.sha256,
        "review_set": result.review_set.name, "review_set.version": result.review_set.version,
        "review_set.digest": result.review_set.digest, "review_set.size": str(result.review_set.size),
    }
    params.update(_run_params(result))
    if result.source is not None:
        params["git.commit"] = result.source.short
        if result.source.branch:
            params["git.branch"] = result.source.branch
    if result.baseline is not None:
        params["baseline"] = result.baseline.candidate.path
        params["baseline.sha256"] = result.baseline.candidate.sha256
    return {k: v[:_PARAM_MAX] for k, v in params.items()}


def _candidate_params(cand: CandidateResult) -> dict[str, str]:
    info = cand.candidate
    params = {"candidate": info.path, "candidate.sha256": info.sha256, "arch": info.arch,
              "target_layer": info.target_layer, "target_layout": info.target_layout}
    return {k: v[:_PARAM_MAX] for k, v in params.items() if v}


THRESHOLD_PREFIX = "threshold."
_BOUND_NAMES = {">=": "min", "<=": "max"}


def threshold_params(cand: CandidateResult) -> dict[str, str]:
    """The policy's ``min``/``max`` rules as params: ``threshold.<metric key>.min`` = ``"0.9"``.

    So a run says which line it was held to; ``history`` draws them on the trends.
    Comparison rules (``vs_baseline``) have no fixed line and are left out.
    """
    return {f"{THRESHOLD_PREFIX}{metric_key(rule.score)}.{_BOUND_NAMES[rule.op]}": repr(float(rule.threshold))
            for rule in cand.rules if rule.op in _BOUND_NAMES and math.isfinite(rule.threshold)}


def threshold_keys(params: Mapping[str, str]) -> list[str]:
    """The metric keys ``threshold_params`` gave a line, in param order (each once)."""
    keys = [k[len(THRESHOLD_PREFIX):].rsplit(".", 1)[0] for k in params
            if k.startswith(THRESHOLD_PREFIX) and k.rsplit(".", 1)[-1] in _BOUND_NAMES.values()]
    return list(dict.fromkeys(keys))


def read_thresholds(params: Mapping[str, str], scores: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
    """``threshold_params`` read back for ``scores``: score -> ((">=" or "<=", value), ...)."""
    ops = {name: op for op, name in _BOUND_NAMES.items()}
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for score in scores:
        found = []
        for name, op in ops.items():
            value = _float(params.get(f"{THRESHOLD_PREFIX}{metric_key(score)}.{name}"))
            if value is not None:
                found.append((op, value))
        if found:
            out[score] = tuple(found)
    return out


# How the gate ran, from the result's environment: what a reader needs to reproduce a number.
_RUN_PARAMS = ("device", "device_name", "batch_size", "seed", "torch", "torchvision", "xgate")


def _run_params(result: GateResult) -> dict[str, str]:
    env = result.environment
    return {key: str(env[key])[:_PARAM_MAX] for key in _RUN_PARAMS if env.get(key) not in (None, "")}


def _base_tags(result: GateResult) -> dict[str, str]:
    return {"xgate.policy": result.policy.name, "xgate.review_set": result.review_set.name,
            "xgate.command": result.command, **source_tags(result)}


def _select_tags(result: GateResult) -> dict[str, str]:
    failed = [c.candidate.name for c in result.candidates if not c.passed]
    return {**_base_tags(result), KIND_TAG: "select", NOTE_TAG: _clip(select_note(result)),
            "xgate.verdict": result.verdict, "xgate.selected": result.selected or "",
            "xgate.failed_candidates": _clip(",".join(failed))}


def _candidate_tags(result: GateResult, cand: CandidateResult) -> dict[str, str]:
    tags = {**_base_tags(result), KIND_TAG: "candidate", "xgate.candidate": cand.candidate.name,
            NOTE_TAG: _clip(candidate_note(result, cand)),
            "xgate.verdict": "passed" if cand.passed else "failed",
            "xgate.failed_rules": _clip(",".join(r.rule_id for r in cand.failed_rules))}
    fixed = fixed_map_names(cand.records)
    if fixed:
        tags[FIXED_MAPS_TAG] = _join_whole(fixed, _TAG_MAX)
    # One tag per failed rule, so the runs table can filter on a single rule (tags."xgate.failed.2" ...).
    for number, rule in enumerate(cand.failed_rules, start=1):
        tags[f"xgate.failed.{number}"] = _clip(f"{rule.rule_id}: {rule.message}" if rule.message else rule.rule_id)
    if result.command == "select":
        tags["xgate.selected"] = "true" if cand.candidate.name == result.selected else "false"
        if cand.candidate.name in result.ranking:  # 1 = the winner; rejected candidates rank after passing ones
            tags["xgate.rank"] = str(result.ranking.index(cand.candidate.name) + 1)
    return tags


def _aliases(result: GateResult, config: TrackingConfig) -> dict[str, tuple[str, ...]]:
    """Which candidates become model versions, and their aliases.

    A failing candidate is never registered (the registry is what deployments read).
    check: a passing candidate gets ``alias``. select: the selected candidate gets ``alias``;
    with ``challenger_alias``, the first other passing candidate (command-line order) gets it.
    """
    if not config.register:
        return {}
    passing = [c.candidate.name for c in result.candidates if c.passed]
    if result.command != "select":
        return {name: (config.alias,) for name in passing}
    out: dict[str, tuple[str, ...]] = {}
    if result.selected in passing:
        out[result.selected] = (config.alias,)
    others = [name for name in passing if name != result.selected]
    if config.challenger_alias and others:
        out[others[0]] = (config.challenger_alias,)
    return out


def _created_ms(created: str, fallback: int) -> int:
    try:
        stamp = datetime.fromisoformat(created)
    except ValueError:
        return fallback
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def _clip(text: str, limit: int = _TAG_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:  # a param someone else wrote under our prefix
        return None


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in an MLflow UI served at ``uri`` (http/https): ``<uri>/#/experiments/<id>/runs/<run id>``."""
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def where_to_see(uri: str, experiment_id: str, run_id: str) -> str:
    """One line telling a person where the logged run is: its URL, or how to open a local store's UI."""
    if uri.startswith(("http://", "https://")):
        return run_url(uri, experiment_id, run_id)
    if uri.startswith("sqlite:"):
        return (f"run {run_id}: mlflow ui --backend-store-uri {uri} and open "
                f"{run_url('http://127.0.0.1:5000', experiment_id, run_id)}")
    return f"run {run_id} in experiment {experiment_id} of {uri}"

