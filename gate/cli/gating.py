"""``xgate check`` and ``select`` (and the MLflow-side ``history`` and ``sync``): wire a gate, print, exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from gate.cli.app import RESULT_WRITTEN, cli
from gate.cli.options import gate_options
from gate.cli.progress import color, engine_progress
from gate.errors import InputError, UsageError
from gate.settings import BY_NAME

CHECK_EXAMPLES = """
\b
Examples:
  xgate check candidates/bgmix.pt --policy policies/strict.yaml
  xgate check candidates/cutmix.pt --policy policies/release.yaml --baseline candidates/baseline.pt
  xgate check cand.pt --policy strict.yaml --baseline models:/shapes@champion --out gate-out/
  xgate check cand.pt --policy strict.yaml --no-mlflow --device cpu
  torchrun --standalone --nproc-per-node 4 -m gate check cand.pt --policy strict.yaml
"""


SELECT_EXAMPLES = """
\b
Examples:
  xgate select candidates/*.pt --policy policies/strict.yaml
  xgate select a.pt b.pt --policy release.yaml --baseline models:/shapes@champion --register shapes
"""


@cli.command(epilog=CHECK_EXAMPLES)
@click.argument("candidate", type=click.Path(path_type=Path))
@gate_options
def check(candidate: Path, **options: Any) -> None:
    """Gate one CANDIDATE checkpoint against a policy; exit 0 passed, 1 failed, 2 bad input."""
    _gate("check", (candidate,), options)


@cli.command(epilog=SELECT_EXAMPLES)
@click.argument("candidates", nargs=-1, required=True, type=click.Path(path_type=Path))
@gate_options
def select(candidates: tuple[Path, ...], **options: Any) -> None:
    """Gate several CANDIDATES and pick the best that passes; exit 0 when one passes."""
    _gate("select", candidates, options)


def _gate(command: str, candidates: Sequence[Path], options: dict[str, Any]) -> NoReturn:
    from gate.api import gate_request, run_sharded
    from gate.engine import distributed
    from gate.outputs import files as outputs
    from gate.outputs.summary import format_summary
    from gate.settings import SETTINGS, Settings

    settings = Settings(**{item.name: options[item.name] for item in SETTINGS}).checked()
    RESULT_WRITTEN.clear()
    tracking = _tracking_config(settings)
    paths = outputs.default_paths(settings.out, report=settings.report, json=settings.json, junit=settings.junit)
    _refuse_inputs_as_outputs(paths, options, candidates)
    if not distributed.launched_by_torchrun() or os.environ.get("RANK", "0") == "0":
        # Before any work: an unwritable path fails now, and no earlier "passed" survives a failing run.
        outputs.check_paths(paths)
    baseline = _baseline_path(options["baseline"], tracking)
    models = [(path.name, path) for path in candidates]
    request = gate_request(command, models, options["policy"], options["review_set"], baseline, settings)
    result = run_sharded(request, settings.device, engine_progress("gating"))
    if result is None:
        sys.exit(0)  # not rank 0: the exit code is rank 0's, agreed in main()
    try:
        outputs.write_outputs(result, paths)
        unwritten = None
        RESULT_WRITTEN.append(str(paths.json))
    except InputError as exc:  # the disk filled up since check_paths: still keep the record in MLflow/the outbox
        unwritten = exc
    # Staged before anything is printed: a signal at any moment from here on keeps the MLflow record.
    staged = _stage(result, paths, tracking, candidates) if tracking is not None else None
    try:
        click.echo(format_summary(result, None if unwritten else paths, color=color()), color=color())
        if unwritten is None:
            _github(result, paths)
        if staged is not None:
            _track(staged, tracking)
    except BaseException:
        if staged is not None:
            from gate.tracking.delivery import keep_staged

            keep_staged(staged, "interrupted before the upload")
        raise
    if unwritten is not None:
        raise unwritten
    sys.exit(0 if result.passed else 1)


def _refuse_inputs_as_outputs(paths: Any, options: dict[str, Any], candidates: Sequence[Path]) -> None:
    """An output path naming an input (``--json cand.pt``) is refused before check_paths would delete it."""
    baseline = options.get("baseline")
    inputs = {"policy": options["policy"], "review-set": options.get("review_set"),
              "baseline": Path(baseline) if baseline and not baseline.startswith("models:/") else None}
    named = [*((str(path), path) for path in candidates), *((f"--{k}", v) for k, v in inputs.items() if v)]
    for field, output in (("report", paths.report), ("json", paths.json), ("junit", paths.junit)):
        for what, source in named:
            if _same_file(output, source):
                raise UsageError(f"--{field} would overwrite an input ({what}); write the outputs elsewhere",
                                 path=output, field=field)


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve() or (first.exists() and os.path.samefile(first, second))
    except OSError:
        return False


def _tracking_config(settings: Any) -> Any:
    if settings.no_mlflow:
        return None
    from gate.tracking.plan import TrackingConfig

    return TrackingConfig(uri=settings.tracking_uri, experiment=settings.experiment, register=settings.register,
                          alias=settings.alias, require=settings.require_tracking)


def _baseline_path(baseline: str | None, tracking: Any) -> Path | None:
    if not baseline:
        return None
    if baseline.startswith("models:/"):
        from gate.tracking import load_registered_baseline
        from gate.tracking.plan import TrackingConfig

        config = tracking if tracking is not None else TrackingConfig()
        return load_registered_baseline(baseline, config)
    return Path(baseline)


def _github(result: Any, paths: Any) -> None:
    from gate.outputs.github import emit_github

    for line in emit_github(result, paths, os.environ):
        click.echo(line)


def _stage(result: Any, paths: Any, tracking: Any, candidates: Sequence[Path]) -> Any:
    from gate.tracking.delivery import stage_gate

    files = {Path(p).name: Path(p) for p in candidates}
    return stage_gate(result, {"report": paths.report, "json": paths.json, "junit": paths.junit}, tracking, files)


def _track(staged: Any, tracking: Any) -> None:
    from gate.tracking.delivery import deliver_staged

    outcome = deliver_staged(staged)
    if outcome.warning:
        click.echo(f"xgate: warning: {outcome.warning}", err=True)
    elif outcome.logged:
        click.echo(f"MLflow: logged {len(outcome.run_ids)} run(s) to {tracking.resolved_uri()}")
    if outcome.logged and outcome.run_ids:  # the first run: a select's parent, which lists its candidates
        from gate.tracking.plan import where_to_see

        click.echo(f"MLflow: {where_to_see(tracking.resolved_uri(), outcome.experiment_id, outcome.run_ids[0])}")
    if outcome.registered_version:
        click.echo(f"MLflow: registered {tracking.register} version {outcome.registered_version} "
                   f"as @{tracking.alias}")
    if outcome.logged:
        from gate.outputs.github import emit_tracking

        emit_tracking(outcome.run_ids, tracking.resolved_uri(), os.environ)


@cli.command(epilog="""
\b
Examples:
  xgate history
  xgate history --experiment xgate/shapes-v1/strict --limit 50 --html history.html
  xgate history --commit 1a2b3c4
""")
@click.option("--experiment", help="Experiment name (default: every xgate experiment).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Also write an HTML history page.")
@click.option("--tracking-uri", help=BY_NAME["tracking_uri"].help)
@click.option("--commit", help="Only the gates of this commit (a SHA or its first 4+ hex digits, e.g. 1a2b3c4).")
def history(experiment: str | None, limit: int, html_path: Path | None, tracking_uri: str | None,
            commit: str | None) -> None:
    """List past gate runs from MLflow, newest first."""
    from gate.outputs.report.history import write_history_html
    from gate.tracking import history_table, history_with_maps
    from gate.tracking.plan import TrackingConfig
    from gate.tracking.rows import commit_prefix

    if commit is not None:
        commit_prefix(commit)  # a bad value is refused before MLflow is asked
    config = TrackingConfig(uri=tracking_uri, require=True)
    click.echo(history_table(config, experiment=experiment, limit=limit, commit=commit))
    if html_path is not None:
        shown = history_with_maps(config, experiment=experiment, limit=limit, commit=commit)
        page = write_history_html(shown.rows, shown.maps, html_path, atlases=shown.atlases)
        click.echo(f"wrote {page}")


@cli.command()
@click.option("--tracking-uri", help=BY_NAME["tracking_uri"].help)
def sync(tracking_uri: str | None) -> None:
    """Upload gate runs that were kept in the local outbox while MLflow was unreachable."""
    from gate.tracking import sync as sync_outbox
    from gate.tracking.plan import TrackingConfig

    count = sync_outbox(TrackingConfig(uri=tracking_uri, require=True))
    click.echo(f"uploaded {count} run(s) from the outbox")
