"""Options shared by ``check`` and ``select``, and the parsers of option values."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
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


def parse_channels(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
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


# A checkpoint's `input` is untrusted: its sides are bounded before any batch of that size is made.
MAX_INPUT_SIDE = click.option(
    "--max-input-side", default=4096, show_default=True, type=click.IntRange(1), metavar="PIXELS",
    help="Refuse a model input (or resize) with a side above this many pixels, before any allocation.")


def check_frame_cache(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """In GitHub Actions a frame cache inside the checkout comes only from the action's ``frame-cache`` input.

    The checkout holds files anyone with a pull request can name; a cache folder there could be theirs (a
    crafted entry reads as the review set's frames). XGATE_FRAME_CACHE is what the action sets from its input,
    which only the workflow's author writes (docs/security.md, "The frame cache").
    """
    workspace = os.environ.get("GITHUB_WORKSPACE", "")
    if value is None or os.environ.get("GITHUB_ACTIONS") != "true" or not workspace:
        return value
    if ctx.get_parameter_source(param.name or "") is click.core.ParameterSource.ENVIRONMENT:
        return value
    if value.resolve().is_relative_to(Path(workspace).resolve()):
        raise click.BadParameter(f"{str(value)!r} is inside the checkout ({workspace}); a frame cache there is "
                                 "taken only from the action's frame-cache input (XGATE_FRAME_CACHE)")
    return value


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
                     callback=check_frame_cache,
                     help="Folder keeping the framed review set between gates on this runner (read when there, "
                          "written by a gate over the whole set or by a torchrun launch's ranks together; checked "
                          "by sha256). Env: XGATE_FRAME_CACHE."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for pairings and bootstrap."),
        click.option("--arch", help="Architecture for a bare state_dict."),
        click.option("--classes", help="Comma-separated names of every model output, in output order (for a "
                                       "bare state_dict; the review set may use a subset)."),
        click.option("--input-size", callback=parse_size, metavar="H,W",
                     help="Model input size, e.g. 224,224 (default: the checkpoint's, else the review set's)."),
        click.option("--resize", type=click.IntRange(1), metavar="N",
                     help="Model preprocessing: shorter side to N, then a centre crop to --input-size "
                          "(torchvision's eval transform; default: the checkpoint's, else squash to the size)."),
        click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]),
                     help="Resize interpolation, antialiased as torchvision does (default: checkpoint's, "
                          "else bilinear)."),
        click.option("--mean", callback=parse_channels, metavar="R,G,B",
                     help="Per-channel mean of [0,1] pixels (default: checkpoint's, else ImageNet's)."),
        click.option("--std", callback=parse_channels, metavar="R,G,B",
                     help="Per-channel std of [0,1] pixels (default: checkpoint's, else ImageNet's)."),
        click.option("--target-layer", help="Layer to explain (default: checkpoint, family default, last Conv2d)."),
        click.option("--trust-pickle", is_flag=True, help="Allow a pickled nn.Module (runs code from the file)."),
        click.option("--allow-arch-module", "allow_arch_module", multiple=True, metavar="PREFIX",
                     help="Also allow import-path archs (pkg.mod:factory) from this module prefix (repeatable); "
                          "default: only modules in the working tree."),
        click.option("--max-checkpoint-mb", default=4096.0, show_default=True, type=click.FloatRange(0, min_open=True),
                     help="Refuse checkpoint files larger than this."),
        MAX_INPUT_SIDE,
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


def parse_pack_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    # One number means a square input (--size 224), as torchvision's CenterCrop(224).
    if value is not None and value.strip().isdigit():
        value = f"{value.strip()},{value.strip()}"
    return parse_size(ctx, param, value)


def parse_meta(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
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


def parse_json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
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
