"""MLflow tracking: one run per candidate per gate call, an outbox when MLflow fails, history and sync.

A gate call is first *planned* (params, metrics, tags, which run gets a registry
alias) and *staged* (artifacts written to a folder beside a JSON manifest); the
same upload code then sends it to MLflow, either at once or later from the
outbox. So a tracking failure never loses a result: the staged folder is moved
to the outbox and ``xgate sync`` uploads it exactly once.

mlflow is imported inside functions only: ``xgate --help`` must not pay for it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gate.errors import CandidateError, InputError, TrackingError
from gate.records import PROBE_VARIANTS, KeptSample, Records
from gate.result import CandidateResult, GateResult

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"
OUTBOX_FORMAT = "xgate.outbox/v1"
MANIFEST = "manifest.json"
# Output files are logged under fixed names, whatever --report/--json/--junit called them,
# so that runs compare artifact for artifact.
OUTPUT_ARTIFACTS: Mapping[str, str] = {"report": "report.html", "json": "result.json", "junit": "junit.xml"}
# The scores `history` shows, in this order (those a run lacks are left out).
KEY_SCORES: tuple[str, ...] = (
    "accuracy", "ece", "confident_wrong_rate@0.99", "alignment.lift", "alignment.pointing_game",
    "background.only_bg_accuracy", "background.bg_gap",
)
KIND_TAG, ENTRY_TAG = "xgate.kind", "xgate.entry"
STALE_CLAIM_S = 3600  # an outbox entry claimed by a sync this long ago is retried
# Short network timeouts so an unreachable server costs seconds, not MLflow's default minutes of retries.
# A value the user already set in the environment wins.
_MLFLOW_ENV: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # library code does not print
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc")
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")  # MLflow's portable key alphabet (":" is refused on Windows)
_BAD_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_PARAM_MAX, _TAG_MAX = 6000, 8000  # MLflow's value length limits
_MIN_MAP_SIDE = 128  # maps are upscaled (nearest) to at least this many pixels so they are legible in the UI


@dataclass(frozen=True)
class TrackingConfig:
    """Where and how a gate call is logged."""

    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str | None = None  # None: xgate/<review set>/<policy>
    register: str | None = None  # registered model name: a passing candidate becomes a version
    alias: str = "champion"
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
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@dataclass(frozen=True)
class TrackingOutcome:
    """What ``log_gate`` did: logged runs, or an outboxed folder and a warning."""

    logged: bool
    run_ids: tuple[str, ...]
    registered_version: str | None
    outboxed: Path | None
    warning: str | None


@dataclass(frozen=True)
class HistoryRow:
    """One candidate run of a past gate call, as listed by ``history``."""

    run_id: str
    start_time: datetime  # UTC
    candidate: str
    verdict: str
    scores: Mapping[str, float]  # KEY_SCORES the run has, under their policy names
    failed_rules: tuple[str, ...]
    sha256: str = ""
    registered: str | None = None  # "NAME/VERSION" when the run's checkpoint became a model version
    experiment: str = ""


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


# --- public API ------------------------------------------------------------------


def log_gate(
    result: GateResult, outputs: Mapping[str, Path], config: TrackingConfig, candidate_files: Mapping[str, Path]
) -> TrackingOutcome:
    """Log a gate call to MLflow; on any failure keep it in the outbox and return a warning.

    ``outputs`` maps "report"/"json"/"junit" to local files (missing ones are skipped);
    ``candidate_files`` maps a candidate name to its checkpoint (logged when it is registered).
    Raises TrackingError only when ``config.require`` is set.
    """
    plan = plan_entry(result, config)
    staging = Path(tempfile.mkdtemp(prefix="xgate-tracking-"))
    try:
        try:
            stage_entry(staging, plan, result, outputs, candidate_files)
        except Exception as exc:  # a result we cannot stage must not cost the verdict
            return _failed(config, f"could not prepare the MLflow run ({_reason(exc)})", None)
        return _deliver(staging, plan, config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
        client = _client(uri)
        for folder in folders:
            claimed = _claim(folder)
            if claimed is None:  # another sync took it
                continue
            try:
                plan = read_manifest(claimed)
                if _upload_once(client, uri, plan, claimed):
                    uploaded += 1
            except Exception as exc:
                claimed.rename(folder)
                raise TrackingError(f"sync to {uri} stopped at outbox entry {folder.name} after {uploaded} "
                                    f"uploaded: {_reason(exc)}") from None
            shutil.rmtree(claimed, ignore_errors=True)
    return uploaded


def history(config: TrackingConfig, *, experiment: str | None, limit: int = 20) -> list[HistoryRow]:
    """Candidate runs of past gate calls, newest first (every xgate experiment when none is named)."""
    uri = config.resolved_uri()
    name = experiment or config.experiment
    with mlflow_env(config.timeout_s):
        client = _client(uri)
        try:
            names = _history_experiments(client, name)
            if not names:
                return []
            runs = client.search_runs(list(names), filter_string=f"tags.`{KIND_TAG}` = 'candidate'",
                                      order_by=["attributes.start_time DESC"], max_results=limit)
        except InputError:
            raise
        except Exception as exc:
            raise TrackingError(f"cannot read MLflow history from {uri}: {_reason(exc)}") from None
    return [_history_row(run, names.get(run.info.experiment_id, "")) for run in runs]


def fetch_maps(
    config: TrackingConfig, rows: Sequence[HistoryRow], sample_ids: Sequence[str] | None = None, max_samples: int = 6
) -> dict[str, dict[str, bytes]]:
    """The ``maps/<id>.png`` artifacts of ``rows``: sample id -> run id -> PNG bytes.

    Without ``sample_ids``, the first ``max_samples`` maps of the newest run are followed.
    """
    if not rows:
        return {}
    uri = config.resolved_uri()
    with mlflow_env(config.timeout_s), tempfile.TemporaryDirectory(prefix="xgate-maps-") as tmp:
        client = _client(uri)
        try:
            if sample_ids is None:
                ids = _map_ids(client, rows[0].run_id)[:max_samples]
            else:
                ids = [safe_file_name(i) for i in sample_ids]
            maps: dict[str, dict[str, bytes]] = {}
            for sample_id in ids:
                for row in rows:
                    png = _download_map(client, row.run_id, sample_id, Path(tmp))
                    if png is not None:
                        maps.setdefault(sample_id, {})[row.run_id] = png
        except Exception as exc:
            raise TrackingError(f"cannot read maps from {uri}: {_reason(exc)}") from None
    return maps


def history_table(config: TrackingConfig, *, experiment: str | None, limit: int = 20) -> str:
    """``history`` as a plain-text table for the console."""
    return format_history(history(config, experiment=experiment, limit=limit))


def write_history_html(config: TrackingConfig, path: Path, *, experiment: str | None, limit: int = 20) -> Path:
    """Write the HTML history page (runs, score trends, maps across versions) to ``path``."""
    from gate.report.history import render_history

    rows = history(config, experiment=experiment, limit=limit)
    html = render_history(rows, fetch_maps(config, rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def load_registered_baseline(uri: str, config: TrackingConfig | None = None, *, dst: Path | None = None) -> Path:
    """Download the checkpoint behind ``models:/NAME@alias`` (or ``models:/NAME/VERSION``); returns its path."""
    name, alias, ref = _parse_models_uri(uri)
    cfg = config or TrackingConfig()
    tracking_uri = cfg.resolved_uri()
    target = dst or Path(tempfile.mkdtemp(prefix="xgate-baseline-"))
    with mlflow_env(cfg.timeout_s):
        from mlflow.exceptions import MlflowException

        client = _client(tracking_uri)
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, ref)
            local = Path(_download(mv.source or "", target, tracking_uri))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise CandidateError(f"no such registered model version ({_reason(exc)})", path=uri) from None
            raise TrackingError(f"cannot fetch {uri} from {tracking_uri}: {_reason(exc)}") from None
        except Exception as exc:
            raise TrackingError(f"cannot fetch {uri} from {tracking_uri}: {_reason(exc)}") from None
    return _single_checkpoint(local, uri)


# --- planning (pure) ------------------------------------------------------------


def experiment_name(result: GateResult, config: TrackingConfig) -> str:
    """``config.experiment`` or ``xgate/<review set>/<policy>``."""
    return config.experiment or f"xgate/{result.review_set.name}/{result.policy.name}"


def plan_entry(result: GateResult, config: TrackingConfig, *, now_ms: int | None = None) -> EntryPlan:
    """Params, metrics, tags and registry aliases of every run of one gate call."""
    end_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    common = _common_params(result)
    commit = git_commit(result)
    runs: list[RunPlan] = []
    parent: str | None = None
    if result.command == "select":
        parent = "parent"
        runs.append(RunPlan(key=parent, name=f"select ({len(result.candidates)} candidates)", parent=None,
                            params=common, metrics={}, tags=_select_tags(result, commit)))
    aliases = _aliases(result, config)
    for index, cand in enumerate(result.candidates):
        runs.append(RunPlan(
            key=f"c{index}", name=cand.candidate.name, parent=parent,
            params={**common, **_candidate_params(cand)}, metrics=metrics_of(cand.scores),
            tags=_candidate_tags(result, cand, commit), aliases=aliases.get(cand.candidate.name, ()),
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


def safe_file_name(sample_id: str) -> str:
    """A sample id as a file name: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    name = _BAD_FILE_CHARS.sub("_", sample_id)
    return name if name.strip(".") else f"_{name}"


def git_commit(result: GateResult) -> str | None:
    """The source commit: the result's environment, CI variables, or ``git rev-parse HEAD``."""
    for key in ("git_commit", "git.commit"):
        if result.environment.get(key):
            return str(result.environment[key])
    for var in ("GITHUB_SHA", "CI_COMMIT_SHA"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _common_params(result: GateResult) -> dict[str, str]:
    params = {
        "command": result.command, "policy": result.policy.name, "policy.sha256": result.policy.sha256,
        "review_set": result.review_set.name, "review_set.version": result.review_set.version,
        "review_set.digest": result.review_set.digest, "review_set.size": str(result.review_set.size),
    }
    if result.baseline is not None:
        params["baseline"] = result.baseline.candidate.path
        params["baseline.sha256"] = result.baseline.candidate.sha256
    return {k: v[:_PARAM_MAX] for k, v in params.items()}


def _candidate_params(cand: CandidateResult) -> dict[str, str]:
    info = cand.candidate
    params = {"candidate": info.path, "candidate.sha256": info.sha256, "arch": info.arch,
              "target_layer": info.target_layer}
    return {k: v[:_PARAM_MAX] for k, v in params.items()}


def _base_tags(result: GateResult, commit: str | None) -> dict[str, str]:
    tags = {"xgate.policy": result.policy.name, "xgate.review_set": result.review_set.name,
            "xgate.command": result.command}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _select_tags(result: GateResult, commit: str | None) -> dict[str, str]:
    failed = [c.candidate.name for c in result.candidates if not c.passed]
    return {**_base_tags(result, commit), KIND_TAG: "select", "xgate.verdict": result.verdict,
            "xgate.selected": result.selected or "", "xgate.failed_candidates": _clip(",".join(failed))}


def _candidate_tags(result: GateResult, cand: CandidateResult, commit: str | None) -> dict[str, str]:
    tags = {**_base_tags(result, commit), KIND_TAG: "candidate", "xgate.candidate": cand.candidate.name,
            "xgate.verdict": "passed" if cand.passed else "failed",
            "xgate.failed_rules": _clip(",".join(r.rule_id for r in cand.failed_rules))}
    if result.command == "select":
        tags["xgate.selected"] = "true" if cand.candidate.name == result.selected else "false"
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


# --- staging ------------------------------------------------------------------------


def stage_entry(
    root: Path, plan: EntryPlan, result: GateResult, outputs: Mapping[str, Path], candidate_files: Mapping[str, Path]
) -> None:
    """Write the manifest and every run's artifacts under ``root/files/<run key>/``."""
    by_key = {f"c{i}": cand for i, cand in enumerate(result.candidates)}
    for run in plan.runs:
        folder = root / "files" / run.key
        folder.mkdir(parents=True)
        if run.parent is None:  # the outputs cover the whole call: on the check run, or on the select parent
            _copy_outputs(outputs, folder)
        cand = by_key.get(run.key)
        if cand is None:
            continue
        write_samples_csv(cand.records, folder / "samples.csv")
        write_maps(cand.records.kept.values(), folder / "maps")
        if run.aliases:
            _stage_checkpoint(cand, candidate_files, folder / "checkpoint")
    write_manifest(root, plan)


def write_samples_csv(records: Records, path: Path) -> None:
    """The per-sample table: id,label,pred,confidence,correct,energy,lift,pointing_hit,probe.<variant>..."""
    variants = [v for v in PROBE_VARIANTS if v in records.probe_preds]
    variants += sorted(set(records.probe_preds) - set(variants))
    names = records.classes
    preds, confidence, correct, lift = records.preds, records.confidence, records.correct, records.lift
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "pred", "confidence", "correct", "energy", "lift", "pointing_hit",
                         *(f"probe.{v}" for v in variants)])
        for i, sample_id in enumerate(records.ids):
            writer.writerow([
                sample_id, names[int(records.labels[i])], names[int(preds[i])], _num(confidence[i]),
                int(bool(correct[i])), _num(records.energy[i]), _num(lift[i]), _num(records.pointing_hit[i]),
                *(names[int(records.probe_preds[v][i])] for v in variants),
            ])


def write_maps(samples: Iterable[KeptSample], folder: Path) -> list[Path]:
    """One ``<sample id>.png`` per kept sample: the image with its mask outline | the Grad-CAM overlay."""
    written = []
    for sample in samples:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_file_name(sample.sample_id)}.png"
        path.write_bytes(map_png(sample))
        written.append(path)
    return written


def map_png(sample: KeptSample) -> bytes:
    """A kept sample's map panel as PNG bytes (inferno overlay, cyan mask outline, upscaled when small)."""
    import io

    from PIL import Image

    from gate.report.plots import cam_overlay, draw_outline

    image = np.asarray(sample.image, dtype=np.uint8)
    mask = np.asarray(sample.mask, dtype=bool)
    gap = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
    panel = np.concatenate([draw_outline(image, mask), gap, cam_overlay(image, sample.cam, mask)], axis=1)
    scale = max(1, math.ceil(_MIN_MAP_SIDE / max(1, min(image.shape[:2]))))
    picture = Image.fromarray(panel, mode="RGB")
    if scale > 1:
        picture = picture.resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_manifest(root: Path, plan: EntryPlan) -> Path:
    """``root/manifest.json``."""
    path = root / MANIFEST
    path.write_text(json.dumps(plan.to_json(), indent=1), encoding="utf-8")
    return path


def read_manifest(root: Path) -> EntryPlan:
    """The plan stored in an outbox folder; a malformed manifest is an input error."""
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != OUTBOX_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return EntryPlan.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable outbox manifest ({_reason(exc)})", path=path) from None


def pending_entries(outbox: Path) -> list[Path]:
    """Outbox folders waiting for ``sync``, oldest first (hidden folders are in flight)."""
    if not outbox.is_dir():
        return []
    for claimed in outbox.glob(".syncing-*"):  # a sync that died mid-way: give its entry back after a while
        if time.time() - claimed.stat().st_mtime > STALE_CLAIM_S:
            with contextlib.suppress(OSError):
                claimed.rename(outbox / claimed.name[len(".syncing-"):])
    folders = [p for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: (p.stat().st_mtime, p.name))


def _copy_outputs(outputs: Mapping[str, Path], folder: Path) -> None:
    for kind, name in OUTPUT_ARTIFACTS.items():
        source = outputs.get(kind)
        if source is not None and Path(source).is_file():
            shutil.copyfile(source, folder / name)


def _stage_checkpoint(cand: CandidateResult, candidate_files: Mapping[str, Path], folder: Path) -> None:
    source = Path(candidate_files.get(cand.candidate.name) or cand.candidate.path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint of {cand.candidate.name} not found at {source}")
    folder.mkdir(parents=True)
    target = folder / source.name
    try:
        os.link(source, target)  # checkpoints can be large: link when the file system allows
    except OSError:
        shutil.copyfile(source, target)


def _num(value: float) -> str:
    return "" if not math.isfinite(float(value)) else f"{float(value):.6g}"


# --- delivery ----------------------------------------------------------------------------


def _deliver(staging: Path, plan: EntryPlan, config: TrackingConfig) -> TrackingOutcome:
    uri = config.resolved_uri()
    created: list[str] = []
    try:
        with mlflow_env(config.timeout_s):
            client = _client(uri)
            done = upload_entry(client, uri, plan, staging, created)
        return TrackingOutcome(logged=True, run_ids=done.run_ids, registered_version=done.version, outboxed=None,
                               warning="; ".join(done.notes) or None)
    except Exception as exc:  # server down, HTTP error, timeout, bad store: keep the result for `xgate sync`
        reason = _reason(exc)
        with mlflow_env(config.timeout_s):
            _discard(uri, created)
    write_manifest(staging, replace(plan, error=reason))
    try:
        saved = _move_to_outbox(staging, plan.entry_id, config.outbox)
    except OSError as exc:
        return _failed(config, f"MLflow logging to {uri} failed ({reason}) and the outbox could not be written "
                               f"({_reason(exc)})", None)
    return _failed(config, f"MLflow logging to {uri} failed ({reason}); kept in {saved}; "
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
    return Uploaded(run_ids=tuple(ids[r.key] for r in plan.runs), version=primary, notes=tuple(notes))


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
        client = _client(uri)
        for run_id in run_ids:
            client.delete_run(run_id)
    except Exception:  # the server that just failed may still be failing
        return


def _move_to_outbox(staging: Path, entry_id: str, outbox: Path) -> Path:
    outbox.mkdir(parents=True, exist_ok=True)
    hidden = outbox / f".incoming-{entry_id}"  # invisible to sync until complete
    shutil.copytree(staging, hidden)
    final = outbox / entry_id
    hidden.rename(final)
    return final.resolve()


def _claim(folder: Path) -> Path | None:
    claimed = folder.with_name(f".syncing-{folder.name}")
    try:
        folder.rename(claimed)
    except OSError:
        return None
    return claimed


# --- reading back ----------------------------------------------------------------------------


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
    metrics = run.data.metrics
    tags = run.data.tags
    scores = {s: float(metrics[metric_key(s)]) for s in KEY_SCORES if metric_key(s) in metrics}
    failed = tuple(r for r in tags.get("xgate.failed_rules", "").split(",") if r)
    return HistoryRow(
        run_id=run.info.run_id, start_time=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
        candidate=tags.get("xgate.candidate", run.info.run_name or ""), verdict=tags.get("xgate.verdict", ""),
        scores=scores, failed_rules=failed, sha256=run.data.params.get("candidate.sha256", ""),
        registered=tags.get("xgate.registered_version"), experiment=experiment,
    )


def format_history(rows: Sequence[HistoryRow]) -> str:
    """A plain-text table of history rows."""
    if not rows:
        return "no gate runs found"
    names = [s for s in KEY_SCORES if any(s in r.scores for r in rows)]
    header = ["started (UTC)", "candidate", "sha256", "verdict", *names, "failed rules"]
    lines = [header]
    for row in rows:
        values = [f"{row.scores[s]:.4f}" if s in row.scores else "-" for s in names]
        lines.append([row.start_time.strftime("%Y-%m-%d %H:%M"), row.candidate, row.sha256[:12], row.verdict,
                      *values, ", ".join(row.failed_rules) or "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _map_ids(client: MlflowClient, run_id: str) -> list[str]:
    names = [Path(a.path).name for a in client.list_artifacts(run_id, "maps") if a.path.endswith(".png")]
    return sorted(name[: -len(".png")] for name in names)


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


# --- MLflow plumbing -------------------------------------------------------------------------


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


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 300 characters."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__

