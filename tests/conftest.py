"""Shared fixtures: a small pinned review set and tiny models trained in seconds."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from gate.engine import core as engine
from gate.inputs import archs, candidate, shapes
from gate.inputs.review_set import ReviewSet, build

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SET = REPO / "review_sets" / "shapes-v1"
STRICT = REPO / "policies" / "strict.yaml"


# The environment a CLI run sees: CI's log lines, and nothing of GitHub, MLflow or the frame cache from this shell.
CLI_ENV: dict[str, str | None] = {"CI": "true", "GITHUB_ACTIONS": None, "GITHUB_STEP_SUMMARY": None,
                                  "GITHUB_OUTPUT": None, "MLFLOW_TRACKING_URI": None, "XGATE_FRAME_CACHE": None,
                                  "XGATE_DEBUG": None}


@dataclass(frozen=True)
class Ran:
    """What a CLI run gave: its exit code and what it printed (as subprocess.CompletedProcess names them)."""

    returncode: int
    stdout: str
    stderr: str


def xgate(*args: str, cwd: Path, env: Mapping[str, str | None] | None = None) -> Ran:
    """Run ``xgate ARGS`` in this process, as ``python -m gate`` would: same error lines, same exit code.

    click's CliRunner isolation swaps the streams and the environment; ``gate.cli._run`` is what ``main``
    runs (signals and torchrun's agreed exit code are left to the subprocess smoke tests).
    """
    from click.testing import CliRunner

    from gate.cli import _run

    runner = CliRunner()
    with contextlib.chdir(cwd), runner.isolation(env={**CLI_ENV, **(env or {})}) as (out, err, _):
        code = _run(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
    return Ran(code, out.getvalue().decode(), err.getvalue().decode())


def train_tiny(bias: float, *, seed: int = 1, n: int = 1200, epochs: int = 4, size: int = 64) -> nn.Module:
    """A tiny_cnn trained with Adam on generated shapes: seconds on 2 cores, deterministic for a seed."""
    torch.manual_seed(seed)
    samples = shapes.generate(n, bias=bias, seed=seed + 1000, size=size)
    x = torch.tensor(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)
    y = torch.tensor([s.label for s in samples])
    model = archs.tiny_cnn(len(shapes.CLASSES), width=12)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def save_tiny(model: nn.Module, path: Path, size: int = 64) -> Path:
    """Write a tiny_cnn as an xgate.candidate/v1 checkpoint in the generator's class order."""
    return candidate.save(path, model, arch="tiny_cnn", arch_kwargs={"num_classes": 4, "width": 12},
                          classes=shapes.CLASSES, input_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3)


def pinned_policy(tmp_path: Path, review_set: ReviewSet, rules: list[dict[str, object]], name: str = "p",
                  probes: tuple[str, ...] = ()) -> Path:
    """A policy pinned to ``review_set`` with ``rules`` and ``probes``, ranking by accuracy then ECE."""
    doc = {"name": name, "review_set": {"path": str(review_set.root), "digest": review_set.digest},
           "probes": list(probes), "rules": rules, "select": {"rank_by": ["accuracy", "ece"]}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    """A pinned 48-sample shapes review set (bias 0.9, 32×32)."""
    root = tmp_path_factory.mktemp("small_set")
    plain = shapes.write_plain(shapes.generate(48, bias=0.9, seed=4242, size=32), root / "plain")
    return build(plain, root / "set", name="small")


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny_cnn checkpoint for 32×32 inputs (fast plumbing tests)."""
    torch.manual_seed(0)
    model = archs.tiny_cnn(4, width=12)
    return save_tiny(model, tmp_path_factory.mktemp("cand") / "untrained.pt", size=32)


@pytest.fixture(scope="session")
def cheater_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_cnn trained where the scene gives the class away (bias 1.0)."""
    return save_tiny(train_tiny(1.0, seed=3, epochs=3), tmp_path_factory.mktemp("cand") / "cheater.pt")


@pytest.fixture(scope="session")
def honest_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_cnn trained where the scene is independent of the class (bias 0.0)."""
    return save_tiny(train_tiny(0.0, seed=5, epochs=5), tmp_path_factory.mktemp("cand") / "honest.pt")


def without_masks(small_set: ReviewSet, root: Path, every: int) -> list[dict[str, str]]:
    """small_set copied to ``root`` with the mask of every ``every``-th sample removed (rows not yet written)."""
    import csv
    import shutil

    shutil.copytree(small_set.root, root)
    with open(root / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        row["void"] = ""
        if i % every == 0:
            row["mask"] = ""
    return rows


def write_rows(root: Path, rows: list[dict[str, str]]) -> ReviewSet:
    import csv

    from gate.inputs.review_set import open_review_set, write_sums

    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "mask", "label", "void"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_sums(root)
    return open_review_set(root)


@pytest.fixture(scope="module")
def partly_masked(small_set: ReviewSet, tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    """small_set with the masks of every third sample removed and a void band on sample 1."""
    from PIL import Image

    root = tmp_path_factory.mktemp("partly") / "set"
    rows = without_masks(small_set, root, 3)
    void = np.zeros((32, 32), dtype=np.uint8)
    void[:, :8] = 255
    Image.fromarray(void).save(root / "void1.png")
    rows[1]["void"] = "void1.png"
    return write_rows(root, rows)


def assert_same_runs(a: engine.ModelRun, b: engine.ModelRun) -> None:
    """Two engine runs with equal records, probe predictions, gallery and kept pictures (exactly)."""
    ra, rb = a.records, b.records
    assert ra.ids == rb.ids
    for name in ("probs", "energy", "mask_area", "pointing_hit", "rank_accuracy", "pred", "top_prob",
                 "second_prob", "has_mask", "sanity_similarity"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name), err_msg=name)
    assert ra.probe_preds.keys() == rb.probe_preds.keys() and ra.probe_preds
    for name in ra.probe_preds:
        np.testing.assert_array_equal(ra.probe_preds[name], rb.probe_preds[name], err_msg=name)
    assert a.gallery == b.gallery and ra.kept.keys() == rb.kept.keys() and ra.kept
    for key, kept in ra.kept.items():
        np.testing.assert_array_equal(kept.image, rb.kept[key].image, err_msg=key)
        np.testing.assert_array_equal(kept.mask, rb.kept[key].mask, err_msg=key)
        np.testing.assert_array_equal(kept.cam, rb.kept[key].cam, err_msg=key)
