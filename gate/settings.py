"""Every gate setting, declared once: name, default, type and help (datasette's ``SETTINGS``).

``Settings`` is the table. Its fields are the keyword arguments of ``gate.check``/``gate.select`` (scope
``run`` and ``load``) and, with ``outputs`` and ``tracking``, the options of ``xgate check``/``select``:
``gate.cli.options`` builds each click option from a field here, and the library's defaults
(``EngineOptions``, ``TrackingConfig``, the checkpoint size limit) read ``DEFAULTS``. Standard library
only: ``xgate --help`` reads this table, and must not pay for torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from gate.errors import UsageError

SCOPES = ("run", "load", "outputs", "tracking")  # outputs and tracking: the CLI's, after the gate
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # in the working directory; $MLFLOW_TRACKING_URI comes first
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PRECISIONS = ("fp32", "bf16")


def _setting(default: Any, help: str, *, scope: str, flag: str | None = None, choices: tuple[str, ...] = (),
             minimum: float | None = None, above: bool = False, metavar: str | None = None,
             env: str | None = None, shown: str | None = None) -> Any:
    """A field of ``Settings`` with its help and how the command line spells and checks it.

    ``minimum`` with ``above`` excludes the minimum itself; ``shown`` is the default as the help prints it
    when the value is worked out at run time (``None`` in the table).
    """
    meta = {"help": help, "scope": scope, "flag": flag, "choices": choices, "minimum": minimum, "above": above,
            "metavar": metavar, "env": env, "shown": shown}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """How a gate runs, reads candidates, writes and logs; every field has the default ``xgate check`` uses."""

    device: str = _setting("auto", "auto, cpu or cuda[:N].", scope="run")
    batch_size: int = _setting(32, "Images per forward.", scope="run", minimum=1)
    workers: int | None = _setting(
        None, "Threads decoding and framing the next batches during the forwards (0: none).", scope="run",
        minimum=0, shown="min(4, CPUs - 1)")
    precision: str = _setting("fp32", "Forwards in float32 or under bf16 autocast (maps and scores stay float32).",
                              scope="run", choices=PRECISIONS)
    frame_cache: Path | None = _setting(
        None, "Folder keeping the framed review set between gates on this runner (read when there, written by a "
        "gate over the whole set or by a torchrun launch's ranks together; checked by sha256). "
        "Env: XGATE_FRAME_CACHE.", scope="run", env="XGATE_FRAME_CACHE")
    seed: int = _setting(0, "Seed for pairings and bootstrap.", scope="run")
    allow_unpinned: bool = _setting(False, "Accept a review set whose digest is not pinned.", scope="run")
    arch: str | None = _setting(None, "Architecture for a bare state_dict.", scope="load")
    classes: tuple[str, ...] | None = _setting(
        None, "Comma-separated names of every model output, in output order (for a bare state_dict; the review "
        "set may use a subset).", scope="load")
    input_size: tuple[int, int] | None = _setting(
        None, "Model input size, e.g. 224,224 (default: the checkpoint's, else the review set's).", scope="load",
        metavar="H,W")
    resize: int | None = _setting(
        None, "Model preprocessing: shorter side to N, then a centre crop to --input-size (torchvision's eval "
        "transform; default: the checkpoint's, else squash to the size).", scope="load", minimum=1, metavar="N")
    interpolation: str | None = _setting(
        None, "Resize interpolation, antialiased as torchvision does (default: checkpoint's, else bilinear).",
        scope="load", choices=INTERPOLATIONS)
    mean: tuple[float, float, float] | None = _setting(
        None, "Per-channel mean of [0,1] pixels (default: checkpoint's, else ImageNet's).", scope="load",
        metavar="R,G,B")
    std: tuple[float, float, float] | None = _setting(
        None, "Per-channel std of [0,1] pixels (default: checkpoint's, else ImageNet's).", scope="load",
        metavar="R,G,B")
    target_layer: str | None = _setting(
        None, "Layer to explain (default: checkpoint, family default, last Conv2d).", scope="load")
    trust_pickle: bool = _setting(False, "Allow a pickled nn.Module (runs code from the file).", scope="load")
    allow_arch_modules: tuple[str, ...] = _setting(
        (), "Also allow import-path archs (pkg.mod:factory) from this module prefix (repeatable); default: only "
        "modules in the working tree.", scope="load", flag="--allow-arch-module", metavar="PREFIX")
    max_checkpoint_mb: float = _setting(
        4096.0, "Refuse checkpoint files larger than this.", scope="load", minimum=0, above=True)
    out: Path = _setting(Path("xgate-out"), "Folder for report.html, result.json and junit.xml.", scope="outputs")
    report: Path | None = _setting(None, "Place report.html elsewhere.", scope="outputs")
    json: Path | None = _setting(None, "Place result.json elsewhere.", scope="outputs")
    junit: Path | None = _setting(None, "Place junit.xml elsewhere.", scope="outputs")
    no_mlflow: bool = _setting(False, "Do not log to MLflow.", scope="tracking")
    tracking_uri: str | None = _setting(
        None, f"MLflow tracking URI (default $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI} in the working "
        "directory).", scope="tracking")
    experiment: str | None = _setting(None, "MLflow experiment (default xgate/<review set>/<policy>).",
                                      scope="tracking")
    register: str | None = _setting(None, "Register a passing candidate as this model name.", scope="tracking")
    alias: str = _setting("champion", "Alias moved to a registered winner.", scope="tracking")
    require_tracking: bool = _setting(False, "Exit 2 when MLflow logging fails.", scope="tracking")

    def checked(self) -> Settings:
        """Self, once every value has its type and lies in its range; else a UsageError naming the setting."""
        for item in SETTINGS:
            _check(item, getattr(self, item.name))
        return self

    def of_scope(self, *scopes: str) -> dict[str, Any]:
        """The values of the settings in ``scopes``, by name."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if s.scope in scopes}


@dataclass(frozen=True)
class Setting:
    """One row of the table, as ``gate.cli.options`` and the docs test read it."""

    name: str
    default: Any
    type: str  # the annotation as written, e.g. "int | None"
    help: str
    scope: str
    flag: str
    choices: tuple[str, ...]
    minimum: float | None
    above: bool
    metavar: str | None
    env: str | None
    shown: str | None


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, default=f.default, type=str(f.type), help=f.metadata["help"], scope=f.metadata["scope"],
            flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"), choices=f.metadata["choices"],
            minimum=f.metadata["minimum"], above=f.metadata["above"], metavar=f.metadata["metavar"],
            env=f.metadata["env"], shown=f.metadata["shown"])
    for f in fields(Settings)
)
DEFAULTS = Settings()
BY_NAME = {s.name: s for s in SETTINGS}


def default_tracking_uri() -> str:
    """The tracking store when neither ``tracking_uri`` nor $MLFLOW_TRACKING_URI names one, made absolute."""
    return f"sqlite:///{Path.cwd() / DEFAULT_TRACKING_URI.removeprefix('sqlite:///')}"


def auto_workers() -> int:
    """The ``workers`` default: a few decode threads, leaving one CPU to the forwards."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


# What each annotation accepts (a bool is not a number here, though Python says it is an int).
_ACCEPTS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                         "Path": (str, Path)}


def _check(item: Setting, value: Any) -> None:
    kinds = [part.strip() for part in item.type.split("|")]
    if value is None and "None" in kinds:
        return
    base = kinds[0]
    if base.startswith("tuple["):
        _check_tuple(item, base, value)
        return
    numeric = base in ("int", "float")
    if isinstance(value, bool) and base != "bool" or not isinstance(value, _ACCEPTS[base]):
        raise UsageError(f"expected {base}, got {value!r}"[:200], field=item.name)
    if item.choices and value not in item.choices:
        raise UsageError(f"expected one of {list(item.choices)}, got {value!r}"[:200], field=item.name)
    if numeric and item.minimum is not None and _below(cast(float, value), item.minimum, item.above):
        bound = f"above {item.minimum:g}" if item.above else f"at least {item.minimum:g}"
        raise UsageError(f"expected a number {bound}, got {value!r}", field=item.name)


def _below(value: float, minimum: float, above: bool) -> bool:
    """True when ``value`` is under ``minimum`` (or equal to it where ``above``), or NaN."""
    return not (value > minimum if above else value >= minimum)


def _check_tuple(item: Setting, base: str, value: Any) -> None:
    element = base.removeprefix("tuple[").split(",")[0].strip().rstrip("]")
    count = None if base.endswith("...]") else base.count(",") + 1
    ok = isinstance(value, tuple) and (count is None or len(value) == count) and all(
        isinstance(v, _ACCEPTS[element]) and not isinstance(v, bool) for v in value)
    if not ok:
        raise UsageError(f"expected {base}, got {value!r}"[:200], field=item.name)
