"""The command line end to end: exit codes, one-line errors, and the cheater story on the shipped set."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gate.inputs import archs, candidate
from gate.inputs.review_set import ReviewSet
from tests.conftest import REPO, SHIPPED_SET, STRICT, Ran, pinned_policy, save_tiny, xgate


def xgate_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as a user would (the smoke tests: the real entry point and exit code)."""
    return subprocess.run([sys.executable, "-m", "gate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "CI": "true", **python_path()})


def python_path() -> dict[str, str]:
    """PYTHONPATH passed on, so that the subprocess imports the package under test."""
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def assert_one_line_error(result: Ran | subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_has_examples(tmp_path: Path) -> None:
    result = xgate("check", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "--policy" in result.stdout


def test_tampered_review_set_exits_2_naming_the_file(tmp_path: Path, untrained_checkpoint: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(SHIPPED_SET, copy)
    image = next((copy / "images" / "circle").glob("*.png"))
    data = bytearray(image.read_bytes())
    data[-20] ^= 0x01  # one byte changed
    image.write_bytes(bytes(data))
    result = xgate("check", str(untrained_checkpoint), "--policy", str(STRICT), "--review-set", str(copy),
                   "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, image.name)


def test_pickled_module_without_trust_exits_2(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save(archs.tiny_cnn(4), pickled)
    result = xgate("check", str(pickled), "--policy", str(STRICT), "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "pickled.pt", "--trust-pickle")


def test_policy_with_unknown_score_exits_2_naming_file_and_rule(tmp_path: Path, untrained_checkpoint: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(STRICT.read_text().replace("score: alignment.lift,", "score: alignment.lifts,"))
    result = xgate("check", str(untrained_checkpoint), "--policy", str(policy), "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "bad.yaml", "rules[5].score", "alignment.lifts")


def test_missing_candidate_exits_2(tmp_path: Path) -> None:
    result = xgate("check", str(tmp_path / "nope.pt"), "--policy", str(STRICT), "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "nope.pt")


def test_a_real_process_exits_2_with_one_line_and_0_for_help(tmp_path: Path) -> None:
    """Smoke test of the entry point itself (python -m gate): the in-process runs above share its _run."""
    result = xgate_process("check", str(tmp_path / "nope.pt"), "--policy", str(STRICT), "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "nope.pt")
    assert xgate_process("--help", cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_cheater_fails_on_alignment_and_background_honest_passes(
    tmp_path: Path, cheater_checkpoint: Path, honest_checkpoint: Path
) -> None:
    """The story: high accuracy from the scene is rejected; the honest model looks at the object."""
    cheat = xgate("check", str(cheater_checkpoint), "--policy", str(STRICT), "--no-mlflow", "--out", "cheat",
                  cwd=tmp_path)
    honest = xgate("check", str(honest_checkpoint), "--policy", str(STRICT), "--no-mlflow", "--out", "honest",
                   cwd=tmp_path)
    assert cheat.returncode == 1, cheat.stderr
    assert honest.returncode in (0, 1), honest.stderr
    cheat_result = json.loads((tmp_path / "cheat" / "result.json").read_text())["candidates"][0]
    honest_result = json.loads((tmp_path / "honest" / "result.json").read_text())["candidates"][0]
    cheat_scores, honest_scores = cheat_result["scores"], honest_result["scores"]
    assert cheat_scores["accuracy"] >= 0.85
    assert cheat_scores["alignment.lift"] < 1.2
    assert honest_scores["alignment.lift"] > 2 * cheat_scores["alignment.lift"]
    failed = set(cheat_result["failed_rules"])
    assert "alignment.lift >= 2 @95%" in failed
    assert {"background.only_bg_accuracy <= 0.4 @95%", "background.flip_rate <= 0.2 @95%"} <= failed
    assert cheat_scores["background.only_bg_accuracy"] >= 0.8
    assert cheat_scores["background.bg_gap"] >= 0.5 and cheat_scores["background.flip_rate"] >= 0.5
    assert abs(honest_scores["background.only_bg_accuracy"] - 0.25) < 0.15  # near chance
    assert honest_scores["background.only_fg_accuracy"] >= 0.6
    assert (tmp_path / "cheat" / "report.html").stat().st_size > 10_000
    assert "FAILED" in cheat.stdout and "report" in cheat.stdout


def test_baseline_with_another_input_size_exits_2(tmp_path: Path, small_set: ReviewSet,
                                                  untrained_checkpoint: Path) -> None:
    torch.manual_seed(0)
    prod = save_tiny(archs.tiny_cnn(4, width=12), tmp_path / "prod48.pt", size=48)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    result = xgate("check", str(untrained_checkpoint), "--policy", str(policy), "--baseline", str(prod),
                   "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "prod48.pt", "input.size", "[48, 48]")


def test_baseline_with_other_classes_exits_2(tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    torch.manual_seed(0)
    prod = candidate.save(tmp_path / "prod.pt", archs.tiny_cnn(3, width=12), arch="tiny_cnn",
                          arch_kwargs={"num_classes": 3, "width": 12}, classes=("circle", "square", "triangle"),
                          input_size=(32, 32))
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    result = xgate("check", str(untrained_checkpoint), "--policy", str(policy), "--baseline", str(prod),
                   "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "prod.pt", "classes", "missing ['cross']")


def test_vs_baseline_rule_without_baseline_exits_2(tmp_path: Path, small_set: ReviewSet,
                                                   untrained_checkpoint: Path) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}}],
                           name="relative")
    result = xgate("check", str(untrained_checkpoint), "--policy", str(policy), "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "relative.yaml", "rules", "--baseline")
    assert not (tmp_path / "xgate-out").exists()  # refused before any work or output


SHIPPED = REPO / "candidates"
HONEST = ("baseline.pt", "cutmix.pt", "bgmix.pt")
SHORTCUT = ("cheater.pt", "baseline-biased.pt", "cutmix-biased.pt")


@pytest.mark.slow
def test_select_on_the_shipped_candidates_tells_the_story(tmp_path: Path) -> None:
    """README's table: cheaters fail on the explanation checks, honest candidates pass, CutMix is less
    confidently wrong than the baseline on the same data, and select picks an honest one, saying why."""
    names = sorted(p.name for p in SHIPPED.glob("*.pt"))
    assert names == sorted(HONEST + SHORTCUT)
    result = xgate("select", *(str(SHIPPED / n) for n in names), "--policy", str(STRICT), "--no-mlflow",
                   "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((tmp_path / "out" / "result.json").read_text())
    by_name = {c["candidate"]["name"]: c for c in document["candidates"]}
    scores = {name: c["scores"] for name, c in by_name.items()}
    for name in HONEST:
        assert by_name[name]["verdict"] == "passed", (name, by_name[name]["failed_rules"])
    for name in SHORTCUT:
        assert by_name[name]["verdict"] == "failed"
        assert {"alignment.lift >= 2 @95%", "background.only_bg_accuracy <= 0.4 @95%",
                "background.flip_rate <= 0.2 @95%"} <= set(by_name[name]["failed_rules"])
    assert scores["cheater.pt"]["accuracy"] >= 0.9  # accurate, and still rejected
    assert scores["cutmix-biased.pt"]["confident_wrong_rate@0.9"] < scores["baseline-biased.pt"][
        "confident_wrong_rate@0.9"]
    assert document["selected"] in HONEST
    assert set(document["ranking"][:3]) == set(HONEST)  # passing candidates rank first
    assert set(document["ranking"][3:]) == set(SHORTCUT)
    rejected = result.stdout[result.stdout.index("rejected:"):]
    for name, candidate_result in by_name.items():
        if name in SHORTCUT:
            rules = candidate_result["rules"]
            assert f"  {name}: {len(candidate_result['failed_rules'])} of {len(rules)} rules failed" in rejected
    assert "FAIL  alignment.lift >= 2" in rejected
    assert result.stdout.splitlines()[-4] == f"selected: {document['selected']}"


def test_shipped_candidates_record_the_command_that_made_them() -> None:
    script = (REPO / "scripts" / "train_candidates.sh").read_text()
    sources = dict(re.findall(r"^(\w+)='(synth:[^']+)'", script, flags=re.MULTILINE))
    for path in sorted(SHIPPED.glob("*.pt")):
        meta = candidate.load(path).meta
        (line,) = [line for line in script.splitlines() if f'"$out/{path.name}"' in line]
        assert f"--recipe {meta['recipe']} " in line and f"--epochs {meta['epochs']} " in line, path.name
        variable = re.search(r'--data "\$(\w+)"', line)
        assert variable is not None and sources[variable.group(1)] == meta["data"], path.name
        assert meta["seed"] == 1
        assert path.stat().st_size < 5_000_000  # "a few MB"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--recipe", "mixup", "--data", "synth:shapes?bias=0&n=64&seed=1"], ["recipe", "mixup"]),
        (["--recipe", "baseline", "--data", "synth:shapes?bias=0&n=64&seed=1", "--arch", "nonet"], ["nonet"]),
        (["--recipe", "bgmix", "--data", "plain"], ["plain", "bgmix needs masks"]),
        (["--recipe", "baseline", "--data", "one"], ["one", "single class"]),
        (["--recipe", "baseline", "--data", "empty"], ["empty", "no images found"]),
        (["--recipe", "baseline", "--data", str(SHIPPED_SET)], ["shapes-v1", "shipped review set"]),
    ],
    ids=["unknown-recipe", "unknown-arch", "bgmix-without-masks", "single-class", "empty-folder", "review-set"],
)
def test_train_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    from PIL import Image

    image = Image.new("RGB", (16, 16), (200, 30, 30))
    for folder, classes in (("plain", ("a", "b")), ("one", ("a",))):
        for name in classes:
            (tmp_path / folder / name).mkdir(parents=True)
            image.save(tmp_path / folder / name / "0.png")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    result = xgate("train", *args, "--epochs", "1", "-o", "out.pt", cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("value", ["224", "0,10", "a,b", "1,2,3"])
def test_bad_input_size_exits_2(tmp_path: Path, untrained_checkpoint: Path, value: str) -> None:
    result = xgate("check", str(untrained_checkpoint), "--policy", str(STRICT), "--input-size", value,
                   "--no-mlflow", cwd=tmp_path)
    assert_one_line_error(result, "Invalid value for '--input-size'", repr(value), "xgate check --help")


def test_usage_errors_are_one_line_too(tmp_path: Path) -> None:
    assert_one_line_error(xgate("check", "--policy", "p.yaml", cwd=tmp_path), "Missing argument 'CANDIDATE'")
    assert_one_line_error(xgate("select", "a.pt", "--policy", "p.yaml", "--no-such-option", cwd=tmp_path),
                          "--no-such-option", "xgate select --help")


@pytest.mark.slow
def test_the_readme_demo_command_passes(tmp_path: Path) -> None:
    """`make demo` runs scripts/demo.sh: every step's exit code as the README says, every gate in MLflow."""
    import os

    store = tmp_path / "mlflow.db"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "CI": "true", "HOME": str(tmp_path),
           "XGATE_DEMO_OUT": str(tmp_path / "out"), "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
           "PYTHONPATH": str(REPO)}  # the code under test, not whatever copy the venv has installed
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ("cheater=1 (want 1), bgmix=0 (want 0), cutmix-biased=1 (want 1), release=0 (want 0), "
            "select=0 (want 0)") in done.stdout
    for step in ("cheater", "bgmix", "cutmix-vs-baseline", "release", "select"):
        assert (tmp_path / "out" / step / "report.html").is_file(), step
    assert done.stdout.count("MLflow: logged") == 5
    history = xgate("history", "--tracking-uri", f"sqlite:///{store}", cwd=tmp_path)
    # Names wider than the candidate column end in "…" (the commit column took the room).
    assert history.returncode == 0 and "cheater.pt" in history.stdout and "cutmix-biase…" in history.stdout


@pytest.mark.parametrize(("uri", "line"), [
    ("http://ml.example.com:5000/", "MLflow: http://ml.example.com:5000/#/experiments/3/runs/r1"),
    ("sqlite:////tmp/m.db", "MLflow: run r1: mlflow ui --backend-store-uri sqlite:////tmp/m.db and open "
                            "http://127.0.0.1:5000/#/experiments/3/runs/r1"),
], ids=["server", "local-sqlite"])
def test_check_prints_where_the_mlflow_run_is(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                              uri: str, line: str) -> None:
    from types import SimpleNamespace

    import gate.tracking.delivery
    from gate.cli import gating
    from gate.tracking import TrackingOutcome
    from gate.tracking.plan import TrackingConfig

    done = TrackingOutcome(logged=True, run_ids=("r1", "r2"), registered_version=None, outboxed=None, warning=None,
                           experiment_id="3")
    monkeypatch.setattr(gate.tracking.delivery, "deliver_staged", lambda *args: done)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    gating._track(SimpleNamespace(), TrackingConfig(uri=uri))
    assert capsys.readouterr().out.splitlines() == [f"MLflow: logged 2 run(s) to {uri}", line]


def test_a_closed_output_pipe_ends_quietly() -> None:
    """``xgate history | head``: the reader leaves early; click's main ends it with exit 1 and not a word
    (no traceback, no "internal error", no "Exception ignored" at shutdown)."""
    script = ("import sys, click\nfrom gate.cli import app\n"
              "@app.cli.command()\ndef spam() -> None:\n    for _ in range(20000):\n        click.echo('x' * 80)\n"
              "sys.exit(app._run(['spam']))\n")
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={"PATH": "/usr/bin:/bin", **python_path()}) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.read(100) == b"x" * 80 + b"\n" + b"x" * 19
        process.stdout.close()  # what head does once it has its lines
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1, stderr
    assert stderr == ""


@pytest.mark.parametrize(("candidate", "code"), [("bgmix.pt", 0), ("cheater.pt", 1)])
def test_a_reader_that_leaves_early_does_not_change_the_verdict(tmp_path: Path, candidate: str, code: int) -> None:
    """``xgate check ... | head -1``: stdout's reader is gone before the summary is printed. The exit code is
    still the verdict (click alone would exit 1, "failed", for a pass), nothing is said on stderr, and the
    outputs are written."""
    import os

    lenient = REPO / "policies" / "lenient.yaml"
    argv = [sys.executable, "-m", "gate", "check", str(SHIPPED / candidate), "--policy", str(lenient), "--no-mlflow",
            "--out", "out"]
    env = {"PATH": "/usr/bin:/bin", **python_path()}
    with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # the reader leaves before the first line (importing torch alone takes longer)
        stderr = child.stderr.read().decode()
        assert child.wait(timeout=300) == code, stderr
    assert "Error" not in stderr and "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    assert os.path.getsize(tmp_path / "out" / "result.json") > 0


def test_layers_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "gate", "layers", str(SHIPPED / "baseline.pt")]
    with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={"PATH": "/usr/bin:/bin", **python_path()}) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()
        stderr = child.stderr.read().decode()
        assert child.wait(timeout=120) == 0, stderr
    assert stderr == ""


@pytest.mark.parametrize("kind", ["sigint", "sigterm"])
def test_a_signal_landing_in_a_finaliser_is_delivered_again_not_printed(kind: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A signal raised inside a finaliser or weakref callback (MLflow's teardown makes many) would be printed as
    "Exception ignored" with a traceback and lost; the entry point delivers it again to the main thread."""
    from gate.cli.app import _sigterm_as_interrupt
    from gate.errors import Terminated

    raised: type[KeyboardInterrupt] = Terminated if kind == "sigterm" else KeyboardInterrupt

    class Finalised:
        def __del__(self) -> None:
            raise raised

    with pytest.raises(raised), _sigterm_as_interrupt():  # noqa: PT012 - the interrupt comes after the finaliser
        Finalised()  # collected at once: its exception cannot propagate from __del__
        for _ in range(10_000_000):  # the delivered signal is handled at the next check between bytecodes
            pass
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_queued_signal_is_dropped_once_an_interrupt_was_handled(capsys: pytest.CaptureFixture[str]) -> None:
    # The command already stopped for this interrupt: a copy still queued must not hit the exit (exit -2).
    from gate.cli import app

    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    with app._sigterm_as_interrupt():
        Finalised()  # queues a delivery 10 ms from now
        assert app._interrupted(KeyboardInterrupt()) == app.EXIT_SIGINT
        for _ in range(10_000_000):  # ~0.3 s: long past the queued delivery
            pass
    assert "interrupted (SIGINT)" in capsys.readouterr().err
