"""Options shared by ``check`` and ``select``, and the parsers of option values."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gate.settings import SETTINGS, Setting


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


def gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``check`` and ``select``: the inputs, then one option per row of ``gate.settings``."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--policy", "policy", required=True, type=click.Path(path_type=Path),
                     help="Policy YAML (rules, pinned review set, probes)."),
        click.option("--baseline", help="Model in production: a checkpoint or models:/NAME@ALIAS."),
        click.option("--review-set", type=click.Path(path_type=Path), help="Override the policy's review set."),
        *(setting_option(item) for item in SETTINGS),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def setting_option(item: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one setting: its flag, default, help and checks all read from the table."""
    kwargs: dict[str, Any] = {"help": item.help, "envvar": item.env, "metavar": item.metavar}
    kind = item.type.split("|")[0].strip()
    if kind == "bool":
        return click.option(item.flag, item.name, is_flag=True, **kwargs)
    if item.shown is not None:
        kwargs["show_default"] = item.shown
    elif item.default is not None and item.default != ():
        kwargs.update(default=item.default, show_default=True)
    if item.type in _CALLBACKS:
        kwargs["callback"] = _CALLBACKS[item.type]
    elif item.type == "tuple[str, ...]":
        kwargs["multiple"] = True
    else:
        kwargs["type"] = _click_type(item, kind)
    return click.option(item.flag, item.name, **kwargs)


def _click_type(item: Setting, kind: str) -> Any:
    if item.choices:
        return click.Choice(list(item.choices))
    if kind in ("int", "float") and item.minimum is None:
        return int if kind == "int" else float
    if kind == "int":
        return click.IntRange(None if item.minimum is None else int(item.minimum), min_open=item.above)
    if kind == "float":
        return click.FloatRange(item.minimum, min_open=item.above)
    if kind == "Path":
        return click.Path(path_type=Path, file_okay=item.name != "frame_cache")  # a cache is only ever a folder
    return str


def parse_names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """Comma-separated names (``--classes a,b,c``)."""
    return tuple(name.strip() for name in value.split(",")) if value else None


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


# The settings whose command-line form is text parsed by a callback, by their type in the table.
_CALLBACKS: dict[str, Callable[..., Any]] = {
    "tuple[int, int] | None": parse_size, "tuple[float, float, float] | None": parse_channels,
    "tuple[str, ...] | None": parse_names}
