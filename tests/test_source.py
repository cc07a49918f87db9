"""Which commit was gated: CI variables first, else the candidate's git repository (real git, tiny repos)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gate.errors import InputError
from gate.inputs.source import read_source, repository_source
from gate.result import SourceInfo

SHA = "0123456789abcdef0123456789abcdef01234567"


def git(folder: Path, *args: str) -> str:
    """Run git as a person would (the reference: what git itself says)."""
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(folder), "PATH": "/usr/bin:/bin"})
    return done.stdout.strip()


def repository(folder: Path, branch: str = "main") -> Path:
    """A repository with one commit holding ``model.pt``; returns the checkpoint."""
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", branch)
    (folder / "model.pt").write_bytes(b"weights")
    git(folder, "add", "model.pt")
    git(folder, "commit", "-q", "-m", "one")
    return folder / "model.pt"


def test_the_candidates_repository_gives_its_head_and_branch(tmp_path: Path) -> None:
    checkpoint = repository(tmp_path / "repo", branch="feature/x")
    source = read_source(checkpoint, {})
    assert source == SourceInfo(commit=git(tmp_path / "repo", "rev-parse", "HEAD"), branch="feature/x", origin="git")
    assert source.short == source.commit[:7] and source.label == f"{source.commit[:7]} on feature/x"


def test_a_detached_checkout_has_no_branch(tmp_path: Path) -> None:
    checkpoint = repository(tmp_path / "repo")
    head = git(tmp_path / "repo", "rev-parse", "HEAD")
    git(tmp_path / "repo", "checkout", "-q", "--detach")
    source = read_source(checkpoint, {})
    assert source is not None and (source.commit, source.branch, source.label) == (head, "", head[:7])


@pytest.mark.parametrize("name", ["with space", "-C", "$(touch pwned)", "naïve;'\"", "a\nb"])
def test_odd_folder_names_are_read_and_nothing_runs(tmp_path: Path, name: str) -> None:
    checkpoint = repository(tmp_path / name)
    source = read_source(checkpoint, {})
    assert source is not None and source.commit == git(tmp_path / name, "rev-parse", "HEAD")
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_outside_a_repository_or_before_the_first_commit_there_is_none(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "m.pt").write_bytes(b"x")
    assert read_source(tmp_path / "plain" / "m.pt", {}) is None
    assert read_source(tmp_path / "missing" / "m.pt", {}) is None
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    assert repository_source(tmp_path / "empty") is None
    assert read_source(None, {}) is None


def test_the_repositorys_config_runs_nothing_and_git_dir_in_the_environment_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = repository(tmp_path / "repo")
    marker = tmp_path / "fsmonitor-ran"
    git(tmp_path / "repo", "config", "core.fsmonitor", f"touch {marker}")
    other = repository(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(other.parent / ".git"))
    source = read_source(checkpoint, {})
    assert source is not None and source.commit == git(tmp_path / "repo", "rev-parse", "HEAD")
    assert not marker.exists()


def test_ci_variables_win_over_the_repository(tmp_path: Path) -> None:
    checkpoint = repository(tmp_path / "repo")
    env = {"GITHUB_SHA": SHA.upper(), "GITHUB_REF_NAME": "12/merge", "GITHUB_HEAD_REF": "fix-it"}
    assert read_source(checkpoint, env) == SourceInfo(commit=SHA, branch="fix-it", origin="GITHUB_SHA")
    assert read_source(checkpoint, {"GITHUB_SHA": SHA, "GITHUB_REF_NAME": "main", "GITHUB_HEAD_REF": ""}) == \
        SourceInfo(commit=SHA, branch="main", origin="GITHUB_SHA")
    gitlab = {"CI_COMMIT_SHA": "f" * 64, "CI_COMMIT_REF_NAME": "dev"}
    assert read_source(None, gitlab) == SourceInfo(commit="f" * 64, branch="dev", origin="CI_COMMIT_SHA")
    assert read_source(None, {"GITHUB_SHA": SHA}) == SourceInfo(commit=SHA, branch="", origin="GITHUB_SHA")


@pytest.mark.parametrize(("env", "field"), [
    ({"GITHUB_SHA": "main"}, "GITHUB_SHA"),
    ({"GITHUB_SHA": SHA + "\n"}, "GITHUB_SHA"),
    ({"GITHUB_SHA": SHA[:39]}, "GITHUB_SHA"),
    ({"GITHUB_SHA": SHA[:-1] + "g"}, "GITHUB_SHA"),
    ({"CI_COMMIT_SHA": "$(id)"}, "CI_COMMIT_SHA"),
    ({"GITHUB_SHA": SHA, "GITHUB_REF_NAME": "main\n::error::x"}, "GITHUB_REF_NAME"),
    ({"GITHUB_SHA": SHA, "GITHUB_HEAD_REF": "b" * 256}, "GITHUB_HEAD_REF"),
    ({"GITHUB_SHA": SHA, "GITHUB_HEAD_REF": "ok", "GITHUB_REF_NAME": "7/merge\r"}, "GITHUB_REF_NAME"),
], ids=["word", "newline", "short", "not-hex", "shell", "branch-newline", "branch-long", "unused-branch-bad"])
def test_malformed_ci_variables_are_bad_input_naming_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as info:
        read_source(None, env)
    assert info.value.exit_code == 2 and info.value.field == field
    assert "\n" not in info.value.one_line()


def test_result_json_carries_the_source() -> None:
    source = SourceInfo(commit=SHA, branch="main", origin="GITHUB_SHA")
    assert source.to_json() == {"commit": SHA, "short": "0123456", "branch": "main", "from": "GITHUB_SHA"}


def test_a_gate_of_a_committed_candidate_carries_its_commit_in_result_json_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_set: Any, untrained_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bs4 import BeautifulSoup

    from gate.cli import main
    from tests.conftest import pinned_policy

    for variable in ("GITHUB_SHA", "CI_COMMIT_SHA"):
        monkeypatch.delenv(variable, raising=False)
    checkpoint = repository(tmp_path / "models", branch="release")
    shutil.copyfile(untrained_checkpoint, checkpoint)
    git(tmp_path / "models", "commit", "-q", "-am", "the trained weights")
    head = git(tmp_path / "models", "rev-parse", "HEAD")
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["check", str(checkpoint), "--policy", str(policy), "--no-mlflow", "--device", "cpu", "--out", "out"])
    assert done.value.code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["source"] == {"commit": head, "short": head[:7], "branch": "release", "from": "git"}
    soup = BeautifulSoup((tmp_path / "out" / "report.html").read_text(), "html.parser")
    assert soup.select_one("#source-commit").get_text() == f"{head[:7]} on release"
