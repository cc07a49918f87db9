"""xgate inspect: what the gate will use from a candidate (format, arch, classes, input pipeline, target layer)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gate.cli import _run
from gate.inputs import candidate, safetensors_io
from gate.inputs.archs import tiny_cnn
from tests.conftest import REPO


def xgate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_candidate(path: Path, n_classes: int, *, input_spec: dict[str, object], target_layer: str | None = None,
                    meta: dict[str, object] | None = None) -> Path:
    torch.manual_seed(0)
    model = tiny_cnn(num_classes=n_classes, width=4)
    payload: dict[str, object] = {
        "format": candidate.FORMAT, "arch": "tiny_cnn", "arch_kwargs": {"num_classes": n_classes, "width": 4},
        "state_dict": model.state_dict(), "classes": [f"class_{i:04d}" for i in range(n_classes)],
        "input": input_spec, "meta": meta or {},
    }
    if target_layer:
        payload["target_layer"] = target_layer
    if path.suffix == ".safetensors":
        safetensors_io.save(path, payload)
    else:
        torch.save(payload, path)
    return path


def test_text_shows_what_the_gate_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_candidate(tmp_path / "cand.pt", 1000, input_spec={
        "size": [56, 56], "resize": 64, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.25] * 3},
        meta={"recipe": "cutmix"})
    code, out, err = xgate(capsys, "inspect", str(path))
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    assert lines["format"].strip() == "xgate.candidate/v1 (torch, read with weights_only)"
    assert lines["sha256"].strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lines["arch"].strip().startswith("tiny_cnn (")
    assert lines["classes"].strip().startswith("1000: class_0000, class_0001,")
    assert lines["classes"].strip().endswith("class_0009, ... (990 more)")
    assert lines["input"].strip() == "Resize(64, bicubic, antialias) -> CenterCrop(56x56)"
    assert "mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25]" in out
    assert lines["target layer"].strip() == "features (default for this model)"
    assert lines["meta"].strip() == '{"recipe": "cutmix"}'
    assert len(out) < 2000  # 1000 class names are not printed in text


def test_json_for_a_safetensors_candidate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_candidate(tmp_path / "cand.safetensors", 3, input_spec={"size": [32, 48]}, target_layer="features.4")
    code, out, err = xgate(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["format"] == "xgate.candidate/v1 (safetensors)"
    assert info["classes"] == ["class_0000", "class_0001", "class_0002"] and info["num_classes"] == 3
    assert info["input"]["size"] == [32, 48] and info["input"]["resize"] is None
    assert info["input"]["pipeline"].startswith("Resize((32, 48), bilinear, antialias) (squash")
    assert info["target_layer"] == "features.4" and info["target_layer_source"] == "checkpoint"
    assert info["parameters"] == sum(p.numel() for p in tiny_cnn(num_classes=3, width=4).parameters())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_corrupt_candidate_exits_2_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    result = subprocess.run([sys.executable, "-m", "gate", "inspect", str(path)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "CI": "true",
                                                                   "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"xgate: error: {path}: corrupt or unreadable checkpoint")
    assert "Traceback" not in result.stderr


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = xgate(capsys, "inspect", "--help")
    assert code == 0 and "Examples:" in out and "--json" in out


def test_a_bare_state_dict_points_to_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.pt"
    torch.save(tiny_cnn(num_classes=3, width=4).state_dict(), path)
    code, _, err = xgate(capsys, "inspect", str(path))
    assert code == 2 and "xgate pack" in err and str(path) in err and len(err.strip().splitlines()) == 1
