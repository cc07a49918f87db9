"""The project's workflows: actionlint passes, CI runs .ci/run, and the example gate does what it says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent
ACTIONLINT = BIN / "actionlint"
SHELLCHECK = BIN / "shellcheck"
needs_actionlint = pytest.mark.skipif(not os.access(ACTIONLINT, os.X_OK), reason="actionlint not installed")


def workflow(name: str) -> dict[object, object]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def jobs(name: str) -> dict[str, dict[str, object]]:
    return workflow(name)["jobs"]  # type: ignore[return-value]


def gate_steps(job: dict[str, object]) -> list[dict[str, object]]:
    return [s for s in job["steps"] if s.get("uses") == "./"]  # type: ignore[attr-defined,union-attr]


def actionlint(root: Path, *files: str) -> subprocess.CompletedProcess[str]:
    args = [str(ACTIONLINT), "-no-color"]
    if os.access(SHELLCHECK, os.X_OK):
        args += ["-shellcheck", str(SHELLCHECK)]
    return subprocess.run([*args, *files], cwd=root, capture_output=True, text=True, timeout=120)


@needs_actionlint
def test_actionlint_passes_on_every_workflow() -> None:
    files = sorted(str(p.relative_to(REPO)) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} == {"ci.yml", "gate-example.yml"}
    done = actionlint(REPO, *files)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_actionlint
def test_actionlint_catches_a_wrong_input_an_unknown_label_and_a_shell_bug(tmp_path: Path) -> None:
    # The same files with one mistake each must fail: the check above is not vacuous.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    shutil.copy(REPO / "action.yml", tmp_path / "action.yml")
    example = tmp_path / ".github" / "workflows" / "gate-example.yml"
    text = example.read_text()
    example.write_text(text.replace("torch-build: cpu", "torch-bild: cpu", 1))
    assert 'input "torch-bild" is not defined in action "xgate"' in actionlint(tmp_path, str(example)).stdout
    ci = tmp_path / ".github" / "workflows" / "ci.yml"
    ci.write_text(ci.read_text().replace("run: .ci/run", "run: cd $RUNNER_TEMP && .ci/run"))
    if os.access(SHELLCHECK, os.X_OK):
        assert "SC2086" in actionlint(tmp_path, str(ci)).stdout
    example.write_text(text)
    (tmp_path / ".github" / "actionlint.yaml").unlink()
    assert 'label "gpu" is unknown' in actionlint(tmp_path, str(example)).stdout


def test_ci_runs_dot_ci_run_with_a_pip_cache_keyed_on_the_pins() -> None:
    (test,) = jobs("ci.yml").values()
    steps = test["steps"]
    assert isinstance(steps, list)
    setup = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert setup["uses"] == "actions/setup-python@v7"
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "constraints.txt"
    assert steps[-1]["run"] == ".ci/run"
    script = (REPO / ".ci" / "run").read_text()
    assert script.index("make venv") < script.index(".venv/bin/actionlint") < script.index("make test")
    assert ".venv/bin/shellcheck scripts/*.sh" in script and "make test" in (REPO / "README.md").read_text()
    triggers = workflow("ci.yml")[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)  # type: ignore[arg-type]


def test_example_gates_a_pull_request_on_a_gpu_runner_and_a_cpu_variant() -> None:
    assert "pull_request" in workflow("gate-example.yml")[True]  # type: ignore[operator]
    gpu, cpu = jobs("gate-example.yml")["gate-gpu"], jobs("gate-example.yml")["gate-cpu"]
    assert gpu["runs-on"] == ["self-hosted", "linux", "x64", "gpu"]
    # skipped (not queued forever) without such a runner; a fork's code never runs on the self-hosted machine
    assert str(gpu["if"]).startswith("vars.XGATE_GPU_RUNNER == 'true' && ")
    assert "github.event.pull_request.head.repo.full_name == github.repository" in str(gpu["if"])
    check, select = (s["with"] for s in gate_steps(gpu))
    assert check["baseline"] == "models:/shapes-classifier@champion"  # type: ignore[index]
    assert select["command"] == "select" and select["candidate"] == "candidates/*.pt"  # type: ignore[index]
    assert cpu["runs-on"] == "ubuntu-latest"
    assert all(s["with"]["torch-build"] == "cpu" for s in gate_steps(cpu))  # type: ignore[index]
    # every gate step uploads its report under its own artifact name (the action uploads `out`)
    names = [s["with"]["artifact-name"] for job in (gpu, cpu) for s in gate_steps(job)]  # type: ignore[index]
    assert len(set(names)) == len(names) == 4


def _run_gate_step(inputs: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """One `uses: ./` step of a workflow, run as the action's gate step would run it, from the repository root."""
    output = tmp_path / "output.txt"
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "CI": "true", "GITHUB_ACTIONS": "true",
           "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    names = {"candidate": "CANDIDATES", "tracking-uri": "TRACKING_URI", "fail-on": "FAIL_ON"}
    for key, value in inputs.items():
        if key not in ("torch-build", "artifact-name", "python-version"):  # install and upload: not the gate step
            env[f"XGATE_{names.get(key, key.upper())}"] = value
    env["XGATE_OUT"] = str(tmp_path / inputs.get("out", "xgate-out"))
    done = subprocess.run(["bash", str(REPO / "scripts" / "action_gate.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    written = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line) \
        if output.exists() else {}
    return done, written


@pytest.mark.slow
def test_the_cpu_example_exits_as_the_workflow_expects(tmp_path: Path) -> None:
    # The CPU job's gate steps, as written in the workflow, on this machine's CPU: the check passes (with
    # fail-on: fail the job would stop otherwise); the advisory step succeeds although the cheater fails.
    check, advisory = gate_steps(jobs("gate-example.yml")["gate-cpu"])
    inputs = {k: str(v) for k, v in check["with"].items()}  # type: ignore[union-attr]
    assert not any("${{" in v for v in inputs.values())
    done, outputs = _run_gate_step(inputs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs["verdict"] == "passed" and outputs["exit-code"] == "0"
    assert Path(outputs["junit"]).is_file() and Path(outputs["report"]).is_file()
    advisory_inputs = {k: str(v) for k, v in advisory["with"].items()}  # type: ignore[union-attr]
    assert advisory_inputs["fail-on"] == "never"
    done, outputs = _run_gate_step(advisory_inputs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs["verdict"] == "failed" and outputs["exit-code"] == "1"  # cheater.pt reads the scene


@needs_actionlint
def test_the_readme_workflows_pass_actionlint(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    workflows = [b for b in blocks if b.startswith("name: ") and "\njobs:\n" in b]
    assert len(workflows) == 2  # one for a GPU runner, one for a CPU runner
    assert "[self-hosted, linux, x64, gpu]" in workflows[0] and "torch-build: cpu" in workflows[1]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(REPO / ".github" / "actionlint.yaml", tmp_path / ".github" / "actionlint.yaml")
    files = []
    for index, text in enumerate(workflows):
        path = tmp_path / ".github" / "workflows" / f"readme{index}.yml"
        path.write_text(text)
        files.append(str(path))
    done = actionlint(tmp_path, *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_points_only_inside_the_repository() -> None:
    text = (REPO / "README.md").read_text()
    assert "../" not in text
    for doc in (REPO / "README.md", REPO / "docs" / "design.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), (doc.name, target)
    assert "docs/design.md" in text and (REPO / "docs" / "design.md").is_file()
    assert "580.65.06" in text  # the driver the CUDA 13.0 torch build needs
