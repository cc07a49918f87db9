"""gate.settings: every gate setting declared once, and everything that reads the table agrees with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from gate.errors import UsageError
from gate.settings import DEFAULTS, SETTINGS, Settings, default_tracking_uri
from tests.conftest import REPO


def test_every_setting_is_documented() -> None:
    python_md = (REPO / "docs" / "python.md").read_text()
    design_md = (REPO / "docs" / "design.md").read_text()
    for item in SETTINGS:
        assert f"`{item.name}`" in python_md, item.name
        assert item.flag in design_md, item.flag
        assert item.help.endswith(".") and len(item.help) > 10, item.name


def check_options() -> dict[str, click.Parameter]:
    from gate.cli import cli

    command = cli.commands["check"]
    return {param.name or "": param for param in command.params}


def test_the_cli_options_are_the_table() -> None:
    options = check_options()
    for item in SETTINGS:
        option = options[item.name]
        assert isinstance(option, click.Option) and item.flag in option.opts, item.name
        assert option.help == item.help, item.name
        if item.default not in (None, ()) and not option.is_flag:
            assert option.default == item.default, item.name
        assert option.envvar == item.env, item.name
    assert set(options) - {s.name for s in SETTINGS} == {"candidate", "policy", "baseline", "review_set"}


@pytest.mark.parametrize(("args", "name", "value"), [
    (["--batch-size", "7"], "batch_size", 7),
    (["--classes", "a, b,c"], "classes", ("a", "b", "c")),
    (["--input-size", "24,32"], "input_size", (24, 32)),
    (["--mean", "0.1,0.2,0.3"], "mean", (0.1, 0.2, 0.3)),
    (["--allow-arch-module", "x", "--allow-arch-module", "y.z"], "allow_arch_modules", ("x", "y.z")),
    (["--max-checkpoint-mb", "1.5"], "max_checkpoint_mb", 1.5),
    (["--trust-pickle"], "trust_pickle", True),
    (["--frame-cache", "frames"], "frame_cache", Path("frames")),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_parsed_options_make_settings_of_the_declared_types(args: list[str], name: str, value: Any) -> None:
    """What click hands gating.py is a valid Settings, value for value."""
    from gate.cli import cli

    command = cli.commands["check"]
    context = command.make_context("check", ["c.pt", "--policy", "p.yaml", *args])
    settings = Settings(**{item.name: context.params[item.name] for item in SETTINGS}).checked()
    assert getattr(settings, name) == value
    assert settings.seed == DEFAULTS.seed and settings.workers is None  # untouched ones keep the table's default


def test_library_defaults_come_from_the_table() -> None:
    from gate.engine.runs import EngineOptions
    from gate.inputs.preprocess import INTERPOLATIONS
    from gate.run import DEFAULT_MAX_CHECKPOINT_MB
    from gate.settings import INTERPOLATIONS as NAMES
    from gate.tracking.plan import TrackingConfig

    engine = EngineOptions()
    assert (engine.device, engine.batch_size, engine.seed, engine.precision) == (
        DEFAULTS.device, DEFAULTS.batch_size, DEFAULTS.seed, DEFAULTS.precision) == ("auto", 32, 0, "fp32")
    assert TrackingConfig().alias == DEFAULTS.alias == "champion"
    assert DEFAULT_MAX_CHECKPOINT_MB == DEFAULTS.max_checkpoint_mb == 4096.0
    assert set(NAMES) == set(INTERPOLATIONS)


def test_one_default_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gate.tracking.plan import TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert TrackingConfig().resolved_uri() == default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert TrackingConfig().resolved_uri() == "http://mlflow:5000"
    assert TrackingConfig(uri="sqlite:////x.db").resolved_uri() == "sqlite:////x.db"


@pytest.mark.parametrize(("change", "needle"), [
    ({"batch_size": 0}, "batch_size: expected a number at least 1, got 0"),
    ({"batch_size": 2.5}, "batch_size: expected int, got 2.5"),
    ({"batch_size": True}, "batch_size: expected int, got True"),
    ({"workers": -1}, "workers: expected a number at least 0"),
    ({"max_checkpoint_mb": 0.0}, "max_checkpoint_mb: expected a number above 0"),
    ({"max_checkpoint_mb": float("nan")}, "max_checkpoint_mb: expected a number above 0"),
    ({"precision": "fp16"}, "precision: expected one of ['fp32', 'bf16']"),
    ({"interpolation": "lanczos"}, "interpolation: expected one of"),
    ({"device": 0}, "device: expected str, got 0"),
    ({"input_size": (32,)}, "input_size: expected tuple[int, int]"),
    ({"input_size": [32, 32]}, "input_size: expected tuple[int, int]"),
    ({"mean": (0.5, 0.5, "x")}, "mean: expected tuple[float, float, float]"),
    ({"classes": "a,b"}, "classes: expected tuple[str, ...]"),
    ({"allow_arch_modules": ("ok", 3)}, "allow_arch_modules: expected tuple[str, ...]"),
    ({"frame_cache": 3}, "frame_cache: expected Path, got 3"),
    ({"trust_pickle": "yes"}, "trust_pickle: expected bool, got 'yes'"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_bad_values_are_usage_errors_naming_the_setting(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        Settings(**change).checked()
    assert needle in caught.value.one_line() and caught.value.exit_code == 2


def test_the_defaults_are_valid() -> None:
    assert DEFAULTS.checked() is DEFAULTS
    assert Settings(input_size=(3, 4), mean=(0, 1, 2.5), classes=("a",), frame_cache="f").checked()
    assert Settings(batch_size=1, workers=0, resize=1, max_checkpoint_mb=1e-9).checked()  # the boundaries themselves
