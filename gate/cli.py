"""The ``xgate`` command line: parses options and wires the library's calls.

Only this module prints for people and picks exit codes: 0 passed, 1 failed
the policy, 2 bad usage or input, 3 internal error. Heavy imports (torch,
mlflow) happen inside commands so that ``xgate --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import click

from gate.errors import GateError, InputError, Terminated

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


def _quiet() -> bool:
    """No interactive display: stderr is not a terminal, or this is CI (a redrawn bar would flood the log)."""
    return not sys.stderr.isatty() or _ci()


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _color() -> bool:
    """Colour the summary: stdout is a terminal, NO_COLOR is not set (no-color.org) and TERM is not dumb."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _progress(label: str) -> Callable[[int, int], None] | None:
    """Progress of the engine over the review set, on stderr.

    In CI (``CI`` set): a log line at each further ~10% with the rate, the device and the candidates. On a
    terminal: a one-line bar with the rate and an ETA. Piped elsewhere (not a terminal, not CI): None.
    """
    if _ci():
        return _progress_lines(label)
    if not sys.stderr.isatty():
        return None
    rate = _rate_meter()

    def show(done: int, total: int) -> None:
        speed = rate(done)
        eta = f" · ETA {_clock((total - done) / speed)}" if speed and done < total else ""
        sys.stderr.write(f"\r\033[K{label} {_bar(done, total, 30)}{_speed(speed)}{eta}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _progress_lines(label: str) -> Callable[[int, int], None]:
    rate = _rate_meter()
    printed = [-1]  # the last tenth a line was written for
    where: list[str] = []

    def show(done: int, total: int) -> None:
        speed = rate(done)
        tenth = min(10, 10 * done // max(total, 1))
        if tenth <= printed[0]:
            return
        printed[0] = tenth
        if not where:  # resolved at the first report: torch is imported by then and the models are placed
            where.append(_run_description())
        percent = 100 * done // max(total, 1)
        sys.stderr.write(f"xgate: {label} {percent}% ({done}/{total} images){_speed(speed)}, {where[0]}\n")
        sys.stderr.flush()

    return show


def _rate_meter() -> Callable[[int], float | None]:
    """Images per second. The clock starts at the first report: before it, models and the review set load."""
    created = time.monotonic()
    first: list[tuple[float, int]] = []

    def rate(done: int) -> float | None:
        now = time.monotonic()
        if not first:
            first.append((now, done))
            return done / (now - created) if now > created and done else None
        start, start_done = first[0]
        return (done - start_done) / (now - start) if now > start and done > start_done else None

    return rate


def _speed(speed: float | None) -> str:
    return f" · {speed:.1f} images/s" if speed else ""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _run_description() -> str:
    """``device cuda:0 (NVIDIA H200), candidates a.pt, b.pt``, from the running command's own options."""
    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    device = str(params.get("device") or "auto")
    if device == "auto" or device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            device = "cuda" if device == "auto" else device
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        elif device == "auto":
            device = "cpu"
    world = os.environ.get("WORLD_SIZE", "1")
    ranks = f" × {world} ranks" if world.isdigit() and int(world) > 1 else ""
    named = params.get("candidates") or ((params["candidate"],) if params.get("candidate") else ())
    names = [Path(str(path)).name for path in named]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"device {device}{ranks}" + (f", candidates {shown}" if shown else "")


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise click.BadParameter(f"expected H,W with two positive integers, got {value!r}")
    return (size[0], size[1])


def _parse_channels(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    positive = param.name != "std" or all(n > 0 for n in numbers)
    if len(numbers) != 3 or not positive or not all(math.isfinite(n) for n in numbers):
        kind = "positive numbers" if param.name == "std" else "numbers"
        raise click.BadParameter(f"expected R,G,B with three finite {kind}, got {value!r}")
    return numbers


def gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``check`` and ``select`` (design.md, 'How it is used')."""
    options = [
        click.option("--policy", "policy", required=True, type=click.Path(path_type=Path),
                     help="Policy YAML (rules, pinned review set, probes)."),
        click.option("--baseline", help="Model in production: a checkpoint or models:/NAME@ALIAS."),
        click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("xgate-out"),
                     show_default=True, help="Folder for report.html, result.json and junit.xml."),
        click.option("--report", type=click.Path(path_type=Path), help="Place report.html elsewhere."),
        click.option("--json", "json_path", type=click.Path(path_type=Path), help="Place result.json elsewhere."),
        click.option("--junit", type=click.Path(path_type=Path), help="Place junit.xml elsewhere."),
        click.option("--review-set", type=click.Path(path_type=Path), help="Override the policy's review set."),
        click.option("--allow-unpinned", is_flag=True, help="Accept a review set whose digest is not pinned."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1)),
        click.option("--workers", type=click.IntRange(0), default=lambda: min(4, (os.cpu_count() or 1) - 1),
                     show_default="min(4, CPUs - 1)",
                     help="Threads decoding and framing the next batches during the forwards (0: none)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                     help="Forwards in float32 or under bf16 autocast (maps and scores stay float32)."),
        click.option("--frame-cache", type=click.Path(path_type=Path, file_okay=False), envvar="XGATE_FRAME_CACHE",
                     help="Folder keeping the framed review set between gates on this runner (read when there, "
                          "written by a gate over the whole set; checked by sha256). Env: XGATE_FRAME_CACHE."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for pairings and bootstrap."),
        click.option("--arch", help="Architecture for a bare state_dict."),
        click.option("--classes", help="Comma-separated names of every model output, in output order (for a "
                                       "bare state_dict; the review set may use a subset)."),
        click.option("--input-size", callback=_parse_size, metavar="H,W",
                     help="Model input size, e.g. 224,224 (default: the checkpoint's, else the review set's)."),
        click.option("--resize", type=click.IntRange(1), metavar="N",
                     help="Model preprocessing: shorter side to N, then a centre crop to --input-size "
                          "(torchvision's eval transform; default: the checkpoint's, else squash to the size)."),
        click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]),
                     help="Resize interpolation, antialiased as torchvision does (default: checkpoint's, "
                          "else bilinear)."),
        click.option("--mean", callback=_parse_channels, metavar="R,G,B",
                     help="Per-channel mean of [0,1] pixels (default: checkpoint's, else ImageNet's)."),
        click.option("--std", callback=_parse_channels, metavar="R,G,B",
                     help="Per-channel std of [0,1] pixels (default: checkpoint's, else ImageNet's)."),
        click.option("--target-layer", help="Layer to explain (default: checkpoint, family default, last Conv2d)."),
        click.option("--trust-pickle", is_flag=True, help="Allow a pickled nn.Module (runs code from the file)."),
        click.option("--allow-arch-module", "allow_arch_module", multiple=True, metavar="PREFIX",
                     help="Also allow import-path archs (pkg.mod:factory) from this module prefix (repeatable); "
                          "default: only modules in the working tree."),
        click.option("--max-checkpoint-mb", default=4096.0, show_default=True, type=click.FloatRange(0, min_open=True),
                     help="Refuse checkpoint files larger than this."),
        click.option("--no-mlflow", is_flag=True, help="Do not log to MLflow."),
        click.option("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
        click.option("--experiment", help="MLflow experiment (default xgate/<review set>/<policy>)."),
        click.option("--register", help="Register a passing candidate as this model name."),
        click.option("--alias", default="champion", show_default=True, help="Alias moved to a registered winner."),
        click.option("--require-tracking", is_flag=True, help="Exit 2 when MLflow logging fails."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xgate")
def cli() -> None:
    """xgate: a model-selection gate for CI for image classifiers.

    \b
    Quick start:
      xgate check candidates/bgmix.pt --policy policies/strict.yaml
      xgate review-set verify review_sets/shapes-v1
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
    from gate import distributed, outputs
    from gate.engine import EngineOptions
    from gate.report import format_summary
    from gate.run import GateRequest, LoadOptions, run_gate, run_gate_sharded

    tracking = _tracking_config(options)
    paths = outputs.default_paths(
        options["out_dir"], report=options.get("report"), json=options.get("json_path"), junit=options.get("junit"))
    if not distributed.launched_by_torchrun() or os.environ.get("RANK", "0") == "0":
        # Before any work: an unwritable path fails now, and no earlier "passed" survives a failing run.
        outputs.check_paths(paths)
    baseline = _baseline_path(options.get("baseline"), tracking)
    classes = tuple(c.strip() for c in options["classes"].split(",")) if options.get("classes") else None
    request = GateRequest(
        command=command, candidates=tuple(candidates), policy=options["policy"], baseline=baseline,
        review_set=options.get("review_set"), allow_unpinned=options["allow_unpinned"],
        allow_arch_modules=tuple(options.get("allow_arch_module") or ()),
        max_checkpoint_mb=options["max_checkpoint_mb"],
        engine=EngineOptions(device=options["device"], batch_size=options["batch_size"], seed=options["seed"],
                             workers=options["workers"], precision=options["precision"],
                             frame_cache=str(options["frame_cache"]) if options.get("frame_cache") else None),
        load=LoadOptions(arch=options.get("arch"), classes=classes, input_size=options.get("input_size"),
                         target_layer=options.get("target_layer"), resize=options.get("resize"),
                         interpolation=options.get("interpolation"), mean=options.get("mean"), std=options.get("std"),
                         trust_pickle=options["trust_pickle"]),
    )
    shard = distributed.start(options["device"])
    if shard is None:
        result = run_gate(request, progress=_progress("gating"))
    else:
        sharded = run_gate_sharded(request, shard, progress=_progress("gating") if shard.is_main else None)
        if sharded is None:
            sys.exit(0)  # not rank 0: the exit code is rank 0's, agreed in main()
        result = sharded
    try:
        outputs.write_outputs(result, paths)
        unwritten = None
    except InputError as exc:  # the disk filled up since check_paths: still keep the record in MLflow/the outbox
        unwritten = exc
    click.echo(format_summary(result, None if unwritten else paths, color=_color()), color=_color())
    if unwritten is None:
        _github(result, paths)
    if tracking is not None:
        _track(result, paths, tracking, candidates)
    if unwritten is not None:
        raise unwritten
    sys.exit(0 if result.passed else 1)


def _tracking_config(options: dict[str, Any]) -> Any:
    if options["no_mlflow"]:
        return None
    from gate.tracking_plan import TrackingConfig

    return TrackingConfig(uri=options.get("tracking_uri"), experiment=options.get("experiment"),
                          register=options.get("register"), alias=options["alias"],
                          require=options["require_tracking"])


def _baseline_path(baseline: str | None, tracking: Any) -> Path | None:
    if not baseline:
        return None
    if baseline.startswith("models:/"):
        from gate.tracking import load_registered_baseline
        from gate.tracking_plan import TrackingConfig

        config = tracking if tracking is not None else TrackingConfig()
        return load_registered_baseline(baseline, config)
    return Path(baseline)


def _github(result: Any, paths: Any) -> None:
    from gate.github import emit_github

    for line in emit_github(result, paths, os.environ):
        click.echo(line)


def _track(result: Any, paths: Any, tracking: Any, candidates: Sequence[Path]) -> None:
    from gate.tracking import log_gate

    files = {Path(p).name: Path(p) for p in candidates}
    outcome = log_gate(result, {"report": paths.report, "json": paths.json, "junit": paths.junit}, tracking, files)
    if outcome.warning:
        click.echo(f"xgate: warning: {outcome.warning}", err=True)
    elif outcome.logged:
        click.echo(f"MLflow: logged {len(outcome.run_ids)} run(s) to {tracking.uri or _default_uri()}")
    if outcome.logged and outcome.run_ids:  # the first run: a select's parent, which lists its candidates
        from gate.tracking_plan import where_to_see

        click.echo(f"MLflow: {where_to_see(tracking.resolved_uri(), outcome.experiment_id, outcome.run_ids[0])}")
    if outcome.registered_version:
        click.echo(f"MLflow: registered {tracking.register} version {outcome.registered_version} "
                   f"as @{tracking.alias}")
    if outcome.logged:
        from gate.github import emit_tracking

        emit_tracking(outcome.run_ids, tracking.resolved_uri(), os.environ)


def _default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


@cli.command(epilog="""
\b
Examples:
  xgate train --recipe bgmix --data 'synth:shapes?bias=0.9&n=4000&seed=11' -o cand.pt
  xgate train --recipe cutmix --data review_sets/shapes-train --epochs 10 -o cand.pt
""")
@click.option("--recipe", required=True, help="baseline, cutmix or bgmix.")
@click.option("--data", required=True, help="synth:shapes?bias=B&n=N&seed=S, an ImageFolder tree or a review set.")
@click.option("--arch", default="tiny_cnn", show_default=True, help="Built-in, torchvision name or pkg.mod:factory.")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Checkpoint to write.")
def train(recipe: str, data: str, arch: str, epochs: int, seed: int, batch_size: int, lr: float,
          output: Path) -> None:
    """Train a candidate with a recipe and write an xgate.candidate/v1 checkpoint."""
    from gate.train import TrainConfig
    from gate.train import train as run_training

    config = TrainConfig(recipe=recipe, data=data, arch=arch, epochs=epochs, seed=seed, batch_size=batch_size,
                         lr=lr, output=output)
    quiet = _quiet()
    result = run_training(config, progress=None if quiet else _train_line,
                          batch_progress=None if quiet else partial(_train_bar, epochs))
    last = result.history[-1]
    click.echo(f"wrote {result.path}: train accuracy {last.train_accuracy:.3f}, "
               f"validation accuracy {last.val_accuracy:.3f} after {last.epoch} epochs")


def _train_line(line: str) -> None:
    # Epoch lines replace the batch bar on the same terminal line.
    sys.stderr.write("\r\033[K")
    click.echo(line, err=True)


def _train_bar(epochs: int, epoch: int, done: int, total: int, loss: float, accuracy: float) -> None:
    sys.stderr.write(f"\r\033[Kepoch {epoch}/{epochs} {_bar(done, total, 24)}  loss {loss:.4f}  acc {accuracy:.3f}")
    sys.stderr.flush()


PACK_EXAMPLES = """
\b
Examples:
  xgate pack resnet50-finetuned.pt --arch resnet50 --classes classes.txt --preset imagenet -o cand.pt
  xgate pack weights.safetensors --arch efficientnet_b0 --classes classes.json --preset imagenet \\
      --resize 232 --interpolation bicubic -o cand.safetensors
  xgate pack state_dict.pth --arch tiny_cnn --arch-kwargs '{"width": 12}' --classes classes.txt \\
      --size 64,64 --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 --meta recipe=cutmix --meta epochs=16 -o cand.pt
"""

INSPECT_EXAMPLES = """
\b
Examples:
  xgate inspect candidates/bgmix.pt
  xgate inspect cand.safetensors --json
"""


def _parse_pack_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    # One number means a square input (--size 224), as torchvision's CenterCrop(224).
    if value is not None and value.strip().isdigit():
        value = f"{value.strip()},{value.strip()}"
    return _parse_size(ctx, param, value)


def _parse_meta(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    import json

    meta: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            meta[key.strip()] = json.loads(text)  # numbers and booleans stay numbers and booleans
        except json.JSONDecodeError:
            meta[key.strip()] = text
    return meta


def _parse_json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    import json

    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object, e.g. '{\"width\": 12}'")
    return parsed


@cli.command(epilog=PACK_EXAMPLES)
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--arch", required=True, help="torchvision model name, xgate built-in or package.module:factory.")
@click.option("--classes", "classes_file", required=True, type=click.Path(path_type=Path),
              help='Class names in output order: one per line, a JSON list, or JSON {"0": name, ...}.')
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Candidate to write (.safetensors: safetensors; otherwise a torch file).")
@click.option("--preset", type=click.Choice(["imagenet"]),
              help="imagenet: shorter side to 256, centre crop 224, bilinear, ImageNet mean/std.")
@click.option("--size", callback=_parse_pack_size, metavar="H,W", help="Input size the model sees (the crop).")
@click.option("--resize", type=click.IntRange(1), help="Shorter side before the centre crop (else: squash).")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]))
@click.option("--mean", callback=_parse_channels, metavar="R,G,B", help="Per-channel mean on [0, 1] pixels.")
@click.option("--std", callback=_parse_channels, metavar="R,G,B", help="Per-channel std on [0, 1] pixels.")
@click.option("--target-layer", help="Layer to explain (default: the family's, else the last Conv2d).")
@click.option("--arch-kwargs", callback=_parse_json_object, metavar="JSON",
              help="Extra arguments for the arch (num_classes is the number of class names).")
@click.option("--meta", multiple=True, callback=_parse_meta, metavar="KEY=VALUE", help="Recorded in meta.")
def pack(weights: Path, arch: str, classes_file: Path, output: Path, preset: str | None,
         size: tuple[int, int] | None, resize: int | None, interpolation: str | None,
         mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None,
         target_layer: str | None, arch_kwargs: dict[str, Any], meta: dict[str, Any]) -> None:
    """Turn WEIGHTS (a state_dict: .pt, .pth or .safetensors) into a candidate, checked by one forward."""
    from gate.inputs.pack import PackRequest, Preprocessing, format_description
    from gate.inputs.pack import describe as describe_candidate
    from gate.inputs.pack import pack as pack_candidate

    preprocessing = Preprocessing(preset=preset, size=size, resize=resize, interpolation=interpolation,
                                  mean=mean, std=std)
    result = pack_candidate(PackRequest(weights=weights, arch=arch, classes_file=classes_file, output=output,
                                        preprocessing=preprocessing, arch_kwargs=arch_kwargs,
                                        target_layer=target_layer, meta=meta))
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path}: loads and gives {len(result.candidate.classes)} outputs")
    click.echo(format_description(describe_candidate(result.path)))


@cli.command(epilog=INSPECT_EXAMPLES)
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every class name) instead of text.")
def inspect(candidate: Path, as_json: bool) -> None:
    """Print what the gate will use from CANDIDATE: format, arch, classes, input pipeline, target layer."""
    import json

    from gate.inputs.pack import describe, format_description

    info = describe(candidate)
    click.echo(json.dumps(info, indent=2) if as_json else format_description(info))


@cli.group("review-set")
def review_set() -> None:
    """Build, verify and synthesise pinned review sets."""


@review_set.command("build", epilog="""
\b
Examples (formats: docs/importing.md):
  xgate review-set build photos/ -o review_sets/my-set --name my-set
  xgate review-set build photos/ --allow-missing-masks -o review_sets/my-set
  xgate review-set build voc/ --voc -o review_sets/my-set
  xgate review-set build --coco instances.json --images photos/ -o review_sets/my-set
  xgate review-set build --boxes boxes.csv --images photos/ -o review_sets/my-set
""")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--name", help="Name recorded in review.yaml (default: the output folder's name).")
@click.option("--version", "set_version", default="1", show_default=True)
@click.option("--description", default="")
@click.option("--coco", type=click.Path(path_type=Path), help="COCO instances JSON (needs --images).")
@click.option("--boxes", type=click.Path(path_type=Path), help="CSV image,label,x0,y0,x1,y1 (needs --images).")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), help="Folder the COCO/CSV paths are in.")
@click.option("--voc", is_flag=True, help="SOURCE's masks are VOC palette PNGs (0 background, 255 void).")
@click.option("--voc-classes", type=click.Path(path_type=Path),
              help="Class names in palette order (implies --voc): the object is its class's index only.")
@click.option("--allow-missing-masks", is_flag=True, help="Pin images without a mask file as mask-less samples.")
@click.option("--multi-class", type=click.Choice(["skip", "split"]), default="skip", show_default=True,
              help="An image with objects of several classes: skip it, or one sample per class.")
@click.option("--unlabelled", type=click.Choice(["skip", "folder", "error"]), default="skip", show_default=True,
              help="A COCO image without annotation: skip it, take its class from its folder, or refuse.")
def review_set_build(
    source: Path | None, output: Path, name: str | None, set_version: str, description: str, coco: Path | None,
    boxes: Path | None, images_dir: Path | None, voc: bool, voc_classes: Path | None, allow_missing_masks: bool,
    multi_class: str, unlabelled: str,
) -> None:
    """Pin SOURCE/images/<class>/* + SOURCE/masks/<class>/* (or a COCO JSON, or a boxes CSV) as a review set."""
    from gate.inputs import importers
    from gate.review_set import build_from

    chosen = [flag for flag, given in (("SOURCE", source), ("--coco", coco), ("--boxes", boxes)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give one source: SOURCE (a folder), --coco FILE or --boxes FILE")
    if (coco or boxes) and images_dir is None:
        raise click.UsageError(f"{chosen[0]} needs --images DIR (the folder its image paths are relative to)")
    if source is None and (voc or voc_classes or allow_missing_masks):
        raise click.UsageError("--voc, --voc-classes and --allow-missing-masks apply to a SOURCE folder")
    if coco is not None and images_dir is not None:
        found = importers.coco(coco, images_dir, multi_class=multi_class, unlabelled=unlabelled)
    elif boxes is not None and images_dir is not None:
        found = importers.boxes(boxes, images_dir, multi_class=multi_class)
    else:
        assert source is not None  # one source was chosen above
        names = importers.read_class_list(voc_classes) if voc_classes else None
        found = importers.plain(source, allow_missing_masks=allow_missing_masks, voc=voc, voc_classes=names)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    built = build_from(found.entries, output, source=coco or boxes or source or output, name=name,
                       version=set_version, description=description)
    masked = int(built.has_mask.sum())
    click.echo(f"{built.root}: {built.size} samples ({masked} with a mask), {len(built.classes)} classes, "
               f"digest {built.digest}")


@review_set.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--digest", help="Also require this digest.")
def review_set_verify(path: Path, digest: str | None) -> None:
    """Check every file of a review set against SHA256SUMS and print its digest."""
    from gate.review_set import open_review_set

    opened = open_review_set(path, expected_digest=digest)
    click.echo(f"{opened.root}: OK, {opened.size} samples, digest {opened.digest}")


@review_set.command("synth", epilog="""
\b
Example (the shipped review set):
  xgate review-set synth --bias 0.9 --n 400 --seed 20260 -o review_sets/shapes-v1
""")
@click.option("--bias", required=True, type=click.FloatRange(0, 1), help="0: scene independent of class; 1: tied.")
@click.option("--n", "count", required=True, type=click.IntRange(2), help="Number of samples.")
@click.option("--seed", required=True, type=int)
@click.option("--size", default=64, show_default=True, type=click.IntRange(16))
@click.option("--name", help="Name recorded in review.yaml (default: the folder's name).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
def review_set_synth(bias: float, count: int, seed: int, size: int, name: str | None, output: Path) -> None:
    """Generate coloured shapes on textured scenes (exact masks) and pin them as a review set."""
    import tempfile

    from gate import shapes
    from gate.review_set import build

    with tempfile.TemporaryDirectory() as tmp:
        plain = shapes.write_plain(shapes.iter_generate(count, bias=bias, seed=seed, size=size), Path(tmp))
        description = f"shapes generator: bias={bias}, n={count}, seed={seed}, size={size}"
        built = build(plain, output, name=name, description=description)
    click.echo(f"{built.root}: {built.size} samples, digest {built.digest}")


@cli.command(epilog="""
\b
Examples:
  xgate history
  xgate history --experiment xgate/shapes-v1/strict --limit 50 --html history.html
""")
@click.option("--experiment", help="Experiment name (default: every xgate experiment).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Also write an HTML history page.")
@click.option("--tracking-uri", help="MLflow tracking URI.")
def history(experiment: str | None, limit: int, html_path: Path | None, tracking_uri: str | None) -> None:
    """List past gate runs from MLflow, newest first."""
    from gate.tracking import history_table, write_history_html
    from gate.tracking_plan import TrackingConfig

    config = TrackingConfig(uri=tracking_uri, require=True)
    click.echo(history_table(config, experiment=experiment, limit=limit))
    if html_path is not None:
        click.echo(f"wrote {write_history_html(config, html_path, experiment=experiment, limit=limit)}")


@cli.command()
@click.option("--tracking-uri", help="MLflow tracking URI.")
def sync(tracking_uri: str | None) -> None:
    """Upload gate runs that were kept in the local outbox while MLflow was unreachable."""
    from gate.tracking import sync as sync_outbox
    from gate.tracking_plan import TrackingConfig

    count = sync_outbox(TrackingConfig(uri=tracking_uri, require=True))
    click.echo(f"uploaded {count} run(s) from the outbox")


@cli.command("layers", epilog="""
\b
Examples:
  xgate layers candidates/bgmix.pt
  xgate layers vit.pt --maps-only
  xgate layers weights.pt --arch resnet50 --classes cat,dog --input-size 224,224 --target-layer layer3
""")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--arch", help="Architecture for a bare state_dict.")
@click.option("--classes", help="Comma-separated class names for a bare state_dict.")
@click.option("--input-size", callback=_parse_size, metavar="H,W",
              help="Sample input size (default: the checkpoint's).")
@click.option("--target-layer", help="Check that this layer exists and gives a map.")
@click.option("--maps-only", is_flag=True, help="List only the layers that give a Grad-CAM map.")
@click.option("--trust-pickle", is_flag=True, help="Allow a pickled nn.Module (runs code from the file).")
@click.option("--allow-arch-module", "allow_arch_module", multiple=True, metavar="PREFIX",
              help="Module prefix an import-path arch may come from (repeatable).")
def layers_command(candidate: Path, arch: str | None, classes: str | None, input_size: tuple[int, int] | None,
                   target_layer: str | None, maps_only: bool, trust_pickle: bool,
                   allow_arch_module: tuple[str, ...]) -> None:
    """List CANDIDATE's layers with their output shapes on a sample input, which give a map, and the default."""
    from gate import layers
    from gate.candidate import load
    from gate.errors import UsageError
    from gate.inputs import safe_import

    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    with safe_import.allowing(allow_arch_module):
        cand = load(candidate, arch=arch, classes=names, input_size=input_size, trust_pickle=trust_pickle)
    size = cand.input.size
    if min(size) <= 0:
        raise UsageError("the checkpoint has no input size; give --input-size H,W", field="--input-size")
    rows = layers.list_layers(cand.model, (int(size[0]), int(size[1])))
    default = layers.default_layer(cand.model)
    if target_layer is not None:
        layers.check_layer(rows, target_layer)
    click.echo(f"{candidate}: {cand.arch}, sample input [B, 3, {size[0]}, {size[1]}], default layer {default!r}")
    for line in layers.listing_lines(rows, default, target_layer, maps_only):
        click.echo(line)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and turn errors into one line and an exit code (under torchrun: rank 0's)."""
    from gate.distributed import agree_exit_code, launched_by_torchrun  # light: no torch or numpy at import

    with _sigterm_as_interrupt():
        code = _run(argv)
    sys.exit(agree_exit_code(code) if launched_by_torchrun() else code)


# Exit codes for a run stopped by a signal: the shell's 128 + signal number (SIGINT 2, SIGTERM 15).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI cancelling a job, a runner shutting down) raises Terminated where the program is.

    Terminated is a KeyboardInterrupt, so every cleanup that handles Ctrl-C (temporary outputs removed,
    the outbox entry kept) runs for SIGTERM too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: BaseException | None) -> int:
    terminated = isinstance(exc, Terminated)
    name = "SIGTERM" if terminated else "SIGINT"
    click.echo(f"xgate: interrupted ({name}); no new result was written", err=True)
    return EXIT_SIGTERM if terminated else EXIT_SIGINT


def _run(argv: Sequence[str] | None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="xgate", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except GateError as exc:
        click.echo(f"xgate: error: {exc.one_line()}", err=True)
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and our SIGTERM) into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted(exc.__cause__)
        click.echo("xgate: aborted", err=True)
        return EXIT_SIGINT
    except click.ClickException as exc:  # usage errors too: one line, naming the option, as for bad input
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        click.echo(f"xgate: error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:  # an internal error: one line unless debugging
        if os.environ.get("XGATE_DEBUG"):
            traceback.print_exc()
        click.echo(f"xgate: internal error: {type(exc).__name__}: {exc} (set XGATE_DEBUG=1 for a traceback)",
                   err=True)
        return 3
    return 0
