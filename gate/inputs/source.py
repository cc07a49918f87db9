"""Which commit was gated: the CI's variables, else the git repository that holds the candidate.

Precedence (one source for both fields, never a commit from one and a branch from another):

1. ``GITHUB_SHA`` (branch: ``GITHUB_HEAD_REF`` on a pull request, else ``GITHUB_REF_NAME``): in GitHub
   Actions the job runs for that commit, and the checkout is often detached (no branch) or shallow;
2. ``CI_COMMIT_SHA`` / ``CI_COMMIT_REF_NAME`` (GitLab CI), for the same reason;
3. the git work tree that holds the first candidate (``HEAD`` and its branch; no branch when detached);
4. none: a candidate outside any repository, or git missing.

A CI variable that is set but malformed (not 40 or 64 hex digits, a control character in a branch) is bad
input: a one-line error naming the variable, exit 2. A repository that git cannot read is no repository.
Nothing from the repository is run: git is asked with hooks and fsmonitor off.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from gate.errors import InputError
from gate.result import SourceInfo

_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # SHA-1 or SHA-256 object names
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BRANCH_MAX = 255  # GitHub's limit for a ref name
GIT_TIMEOUT_S = 5
# (commit variable, branch variables in order): the first commit variable that is set wins.
CI_VARIABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GITHUB_SHA", ("GITHUB_HEAD_REF", "GITHUB_REF_NAME")),
    ("CI_COMMIT_SHA", ("CI_COMMIT_REF_NAME",)),
)
# Repository config must not run anything: no fsmonitor hook, no hooks, no pager.
_SAFE_GIT = ("git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "--no-pager")


def read_source(candidate: Path | str | None, env: Mapping[str, str]) -> SourceInfo | None:
    """The commit and branch gated (see the module's precedence), or None when there is none."""
    for commit_var, branch_vars in CI_VARIABLES:
        value = env.get(commit_var, "")
        if value:
            return SourceInfo(commit=_commit(value, commit_var), branch=_ci_branch(env, branch_vars),
                              origin=commit_var)
    if candidate is None:
        return None
    return repository_source(Path(candidate))


def repository_source(path: Path) -> SourceInfo | None:
    """``HEAD`` of the git work tree holding ``path`` (a file or a folder), or None outside one."""
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        return None
    commit = _git(folder, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if commit is None or not _SHA.fullmatch(commit):
        return None  # not a repository, no commit yet, or a repository git refuses to read
    branch = _git(folder, "symbolic-ref", "--quiet", "--short", "HEAD") or ""
    return SourceInfo(commit=commit.lower(), branch=branch if _plain_branch(branch) else "", origin="git")


def _commit(value: str, variable: str) -> str:
    if not _SHA.fullmatch(value):
        shown = value if len(value) <= 80 and not _CONTROL.search(value) else repr(value[:80])
        raise InputError(f"${variable} is not a commit SHA (40 or 64 hex digits): {shown}", field=variable)
    return value.lower()


def _ci_branch(env: Mapping[str, str], variables: tuple[str, ...]) -> str:
    """The first branch variable that is set; every one that is set must be a plain name (checked first)."""
    for variable in variables:
        value = env.get(variable, "")
        if value and not _plain_branch(value):
            raise InputError(f"${variable} is not a branch name (a control character, or over {BRANCH_MAX} "
                             f"characters): {value[:80]!r}", field=variable)
    return next((env[variable] for variable in variables if env.get(variable)), "")


def _plain_branch(name: str) -> bool:
    return len(name) <= BRANCH_MAX and not _CONTROL.search(name)


def _git_env() -> dict[str, str]:
    """The environment without GIT_DIR, GIT_WORK_TREE ...: the candidate's folder alone picks the repository."""
    return {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def _git(folder: Path, *args: str) -> str | None:
    """One git command's trimmed output in ``folder``; None when git is missing, fails or hangs."""
    try:
        done = subprocess.run([*_SAFE_GIT, "-C", str(folder), *args], capture_output=True, timeout=GIT_TIMEOUT_S,
                              check=False, stdin=subprocess.DEVNULL, env=_git_env())
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        return done.stdout.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
