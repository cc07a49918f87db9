"""gate.check / gate.select / gate.explain: the CLI's gate from Python, and the alignment functions over tensors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gate
from gate.inputs import archs, shapes
from gate.inputs.images import read_mask, read_rgb
from gate.inputs.review_set import ReviewSet
from tests.conftest import pinned_policy, save_tiny, xgate

RULES: list[dict[str, object]] = [{"score": "accuracy", "min": 0.2}, {"score": "ece", "max": 0.5},
                                  {"score": "alignment.lift", "min": 0.5, "confidence": 0.9}]
SPEC = gate.InputSpec(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # what save_tiny writes


def tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return archs.tiny_cnn(4, width=12).eval()


def same_scores(ours: dict[str, Any], document: dict[str, Any]) -> None:
    """Scores equal to result.json's, where JSON writes NaN as null."""
    assert ours.keys() == document.keys()
    for name, value in ours.items():
        if value is None or not math.isfinite(value):
            assert document[name] is None, name
        else:
            assert document[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_check_with_an_in_memory_model_equals_the_cli_result_json(tmp_path: Path, small_set: ReviewSet) -> None:
    model = tiny(7)
    checkpoint = save_tiny(model, tmp_path / "tiny.pt", size=32)
    policy = pinned_policy(tmp_path, small_set, RULES, probes=("background",))
    ran = xgate("check", str(checkpoint), "--policy", str(policy), "--no-mlflow", "--device", "cpu",
                "--workers", "0", "--out", "out", cwd=tmp_path)
    assert ran.returncode in (0, 1), ran.stderr
    document = json.loads((tmp_path / "out" / "result.json").read_text())["candidates"][0]

    result = gate.check(model, policy, small_set, classes=shapes.CLASSES, input=SPEC, device="cpu", workers=0)
    (ours,) = result.candidates
    same_scores(dict(ours.scores), document["scores"])
    assert [r.rule_id for r in ours.rules] == [r["id"] for r in document["rules"]]
    assert ours.passed == (document["verdict"] == "passed") and result.passed == (ran.returncode == 0)
    assert ours.candidate.name == "model" and len(ours.candidate.sha256) == 64

    as_dict = gate.check(model, {"review_set": {"path": str(small_set.root), "digest": small_set.digest},
                                 "rules": RULES, "probes": ["background"]},
                         classes=shapes.CLASSES, input=SPEC, device="cpu", workers=0)
    same_scores(dict(as_dict.candidates[0].scores), document["scores"])


def test_check_gives_the_model_back_in_its_training_mode(small_set: ReviewSet, tmp_path: Path) -> None:
    model = tiny(1).train()
    policy = {"review_set": {"path": str(small_set.root), "digest": small_set.digest},
              "rules": [{"score": "accuracy", "min": 0.0}]}
    result = gate.check(model, policy, classes=shapes.CLASSES, input=SPEC, device="cpu", workers=0)
    assert model.training and result.passed


def test_select_takes_names_and_picks_the_better_model(small_set: ReviewSet, tmp_path: Path) -> None:
    from tests.conftest import train_tiny

    trained = train_tiny(0.0, seed=5, epochs=2, n=400, size=32)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    result = gate.select({"untrained": tiny(3), "trained": trained}, policy, classes=shapes.CLASSES, input=SPEC,
                         device="cpu", workers=0)
    accuracy = {c.candidate.name: c.scores["accuracy"] for c in result.candidates}
    assert accuracy["trained"] > accuracy["untrained"]
    assert result.selected == "trained" and result.ranking == ("trained", "untrained")


def test_weights_sha256_follows_the_weights() -> None:
    from gate.api import weights_sha256

    a, b = tiny(0), tiny(0)
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert weights_sha256(a) != weights_sha256(b)


@pytest.mark.parametrize(("kwargs", "error", "needles"), [
    ({"input": SPEC}, gate.CandidateError, ["model: classes", "output names"]),
    ({"classes": shapes.CLASSES}, gate.CandidateError, ["model: input", "InputSpec"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "target_layer": "nope"}, gate.CandidateError,
     ["model: target_layer", "nope"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "batch_size": 0}, gate.UsageError, ["batch_size", "at least 1"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "batch_size": True}, gate.UsageError, ["batch_size", "int"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "precision": "fp16"}, gate.UsageError, ["precision", "fp16"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "no_mlflow": True}, gate.UsageError, ["unknown setting", "no_mlflow"]),
    ({"classes": shapes.CLASSES, "input": SPEC, "device": "tpu"}, gate.UsageError, ["--device", "tpu"]),
], ids=["no-classes", "no-input", "unknown-layer", "batch-size-0", "batch-size-bool", "precision", "cli-only",
        "device"])
def test_bad_api_arguments_raise_typed_errors(small_set: ReviewSet, kwargs: dict[str, Any],
                                              error: type[gate.GateError], needles: list[str]) -> None:
    policy = {"review_set": {"path": str(small_set.root), "digest": small_set.digest},
              "rules": [{"score": "accuracy", "min": 0.0}]}
    with pytest.raises(error) as caught:
        gate.check(tiny(0), policy, **kwargs)
    assert caught.value.exit_code == 2
    for needle in needles:
        assert needle in caught.value.one_line()


def test_a_dict_policy_is_validated_and_named_in_errors(small_set: ReviewSet) -> None:
    with pytest.raises(gate.PolicyError, match=r"<policy>: rules\[0\]\.score"):
        gate.check(tiny(0), {"rules": [{"score": "accuracy.typo", "min": 0.5}]}, small_set,
                   classes=shapes.CLASSES, input=SPEC)
    # No digest pins the review set given: refused as on the command line, unless allow_unpinned.
    with pytest.raises(gate.PolicyError, match="review_set.digest"):
        gate.check(tiny(0), {"rules": [{"score": "accuracy", "min": 0.0}]}, small_set, classes=shapes.CLASSES,
                   input=SPEC)
    result = gate.check(tiny(0), {"rules": [{"score": "accuracy", "min": 0.0}]}, small_set, classes=shapes.CLASSES,
                        input=SPEC, allow_unpinned=True, device="cpu", workers=0)
    assert result.passed and not result.review_set.pinned


def test_an_opened_review_set_that_changed_is_refused(small_set: ReviewSet, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(small_set.root, copy)
    opened = gate.open_review_set(copy)
    image = copy / opened.samples[0].image
    image.write_bytes(image.read_bytes()[:-8] + b"changed!")
    policy = {"review_set": {"path": str(copy), "digest": small_set.digest}, "rules": [{"score": "accuracy", "min": 0}]}
    with pytest.raises(gate.ReviewSetError, match=opened.samples[0].image.split("/")[-1]):
        gate.check(tiny(0), policy, opened, classes=shapes.CLASSES, input=SPEC)


def test_explain_and_alignment_functions_give_the_engine_numbers(small_set: ReviewSet) -> None:
    """gate.explain + energy_in_mask / lift / pointing_game on the framed images = the engine's records."""
    model = tiny(2)
    policy = {"review_set": {"path": str(small_set.root), "digest": small_set.digest},
              "rules": [{"score": "accuracy", "min": 0.0}]}
    (ours,) = gate.check(model, policy, classes=shapes.CLASSES, input=SPEC, device="cpu", workers=0,
                         batch_size=7).candidates
    records = ours.records
    by_id = {s.sample_id: s for s in small_set.samples}
    samples = [by_id[sample_id] for sample_id in records.ids[:10]]
    pixels = np.stack([read_rgb(small_set.root / s.image) for s in samples])
    images = (torch.tensor(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    masks = torch.tensor(np.stack([read_mask(small_set.root / s.mask) for s in samples]))
    cam = gate.explain(model, ours.candidate.target_layer, images)
    assert cam.shape == (10, 32, 32) and bool((cam >= 0).all())
    assert np.isfinite(records.energy[:10]).sum() >= 5  # most samples are scored, so the comparison bites
    np.testing.assert_allclose(gate.energy_in_mask(cam, masks).numpy(), records.energy[:10], rtol=1e-5)
    np.testing.assert_allclose(gate.lift(cam, masks).numpy(), records.lift[:10], rtol=1e-5)
    np.testing.assert_array_equal(gate.pointing_game(cam, masks).numpy(), records.pointing_hit[:10])


def test_alignment_functions_on_hand_computed_maps() -> None:
    cam = torch.zeros(3, 4, 4)
    cam[0, 0, 0], cam[0, 3, 3] = 3.0, 1.0  # 3/4 of the mass in a mask of 4 of 16 pixels
    cam[1, 3, 3] = 2.0  # all of it outside
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    energy = gate.energy_in_mask(cam, mask)
    assert energy[:2].tolist() == [0.75, 0.0] and math.isnan(energy[2])  # all-zero map: excluded
    assert gate.lift(cam, mask)[:2].tolist() == [3.0, 0.0]
    assert gate.pointing_game(cam, mask)[:2].tolist() == [1.0, 0.0]


def test_import_gate_and_help_import_no_heavy_module(tmp_path: Path) -> None:
    """``xgate --help`` (and ``import gate``) pay for neither torch, numpy, matplotlib nor mlflow."""
    import os

    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ
                                       else {})}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gate", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "check" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "gate" in imported and "click" in imported  # the parse below reads the import lines
    assert not imported & {"torch", "numpy", "matplotlib", "mlflow", "torchvision", "scipy"}


def test_public_names_are_exported_explicitly() -> None:
    for name in gate.__all__:
        assert getattr(gate, name) is not None, name
    assert set(gate.__all__) >= {"check", "select", "explain", "energy_in_mask", "lift", "pointing_game",
                                 "InputSpec", "GateResult", "GateError", "Settings"}
    with pytest.raises(AttributeError):
        gate.no_such_name  # noqa: B018


PYTHON_MD = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PYTHON_MD.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_python_md_blocks_compile() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 6
    for block in blocks:
        compile(block, str(PYTHON_MD), "exec")


@pytest.mark.slow
def test_python_md_examples_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/python.md runs as written, block after block in one namespace, from the repository's root."""
    monkeypatch.chdir(PYTHON_MD.parents[1])
    namespace: dict[str, Any] = {}
    for block in python_blocks():
        exec(compile(block, str(PYTHON_MD), "exec"), namespace)  # the page's own examples
    printed = capsys.readouterr().out
    assert "batch_size: expected a number at least 1, got 0" in printed
    assert "bgmix.pt" in printed and "epoch 2: " in printed
