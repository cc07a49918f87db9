"""Safetensors candidates: round trip through candidate.load, bare weights, and bad headers as input errors."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from torch import nn

from gate.errors import CandidateError
from gate.inputs import candidate, safetensors_io
from gate.inputs.archs import tiny_cnn

CLASSES = ["circle", "square", "triangle"]
KWARGS = {"num_classes": 3, "width": 4}


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_cnn(**KWARGS).eval()


def payload(model: nn.Module, **overrides: object) -> dict[str, object]:
    out: dict[str, object] = {
        "format": candidate.FORMAT, "arch": "tiny_cnn", "arch_kwargs": KWARGS, "state_dict": model.state_dict(),
        "classes": CLASSES, "input": {"size": [16, 16], "resize": 20, "interpolation": "bicubic",
                                      "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "target_layer": "features.0", "meta": {"recipe": "cutmix", "epochs": 3},
    }
    out.update(overrides)
    return out


def raw_file(path: Path, header: bytes, body: bytes = b"") -> Path:
    """A safetensors-shaped file with a hand-written header (length prefix + header + body)."""
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return path


def test_round_trip_gives_the_same_model_and_fields(tmp_path: Path, model: nn.Module) -> None:
    path = safetensors_io.save(tmp_path / "c.safetensors", payload(model))
    loaded = candidate.load(path)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.classes == tuple(CLASSES)
    assert loaded.arch == "tiny_cnn"
    assert loaded.input.size == (16, 16) and loaded.input.resize == 20 and loaded.input.interpolation == "bicubic"
    assert loaded.input.mean == (0.5, 0.5, 0.5)
    assert loaded.target_layer == "features.0"
    assert dict(loaded.meta) == {"recipe": "cutmix", "epochs": 3}


def test_the_file_holds_no_pickle_and_plain_json_metadata(tmp_path: Path, model: nn.Module) -> None:
    path = safetensors_io.save(tmp_path / "c.safetensors", payload(model))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header["__metadata__"]
    assert metadata["format"] == "xgate.candidate/v1"
    assert metadata["arch"] == "tiny_cnn"
    assert json.loads(metadata["classes"]) == CLASSES
    assert json.loads(metadata["arch_kwargs"]) == KWARGS
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert b"\x80\x02" not in data[: 8 + length] and b"\x80\x04" not in data[: 8 + length]  # no pickle header


def test_torch_files_are_not_mistaken_for_safetensors(model: nn.Module) -> None:
    for legacy in (False, True):
        buffer = io.BytesIO()
        torch.save(payload(model), buffer, _use_new_zipfile_serialization=not legacy)
        assert not safetensors_io.is_safetensors(buffer.getvalue())
    assert safetensors_io.is_safetensors(st_save({"w": torch.zeros(2)}))


def test_plain_safetensors_weights_are_a_bare_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    bare = tiny_cnn(num_classes=3)  # a bare state_dict is built with the arch's default kwargs
    save_file(bare.state_dict(), str(path), metadata={"format": "pt"})  # what other tools write
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == "state_dict" and "--arch" in info.value.message
    loaded = candidate.load(path, arch="tiny_cnn", classes=CLASSES, input_size=(16, 16))
    assert loaded.classes == tuple(CLASSES)


def test_a_state_dict_that_does_not_fit_is_named(tmp_path: Path, model: nn.Module) -> None:
    state = dict(model.state_dict())
    state.pop(next(iter(state)))
    path = safetensors_io.save(tmp_path / "c.safetensors", payload(model, state_dict=state))
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == "state_dict" and info.value.exit_code == 2


@pytest.mark.parametrize(("header", "field"), [
    (b"{not json", "header"),
    (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}', "header"),
    (json.dumps({"__metadata__": {"format": 1}}).encode(), "__metadata__"),
    (json.dumps({"__metadata__": ["format"]}).encode(), "__metadata__"),
], ids=["not-json", "cut-json", "non-string-value", "metadata-not-mapping"])
def test_bad_headers_name_the_file_and_field(tmp_path: Path, header: bytes, field: str) -> None:
    path = raw_file(tmp_path / "bad.safetensors", header)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == field
    assert info.value.path == str(path)
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"classes": "[circle"}, "__metadata__.classes"),
    ({"input": "{size: 16}"}, "__metadata__.input"),
    ({"arch_kwargs": ""}, "__metadata__.arch_kwargs"),
    ({"target_layr": "features"}, "__metadata__.target_layr"),
], ids=["classes", "input", "arch_kwargs", "unknown-key"])
def test_bad_metadata_fields_are_named(tmp_path: Path, model: nn.Module, overrides: dict[str, str],
                                       field: str) -> None:
    metadata = {"format": candidate.FORMAT, "arch": "tiny_cnn", "classes": json.dumps(CLASSES),
                "arch_kwargs": json.dumps(KWARGS), "input": json.dumps({"size": [16, 16]})}
    metadata.update(overrides)
    path = tmp_path / "bad.safetensors"
    save_file(model.state_dict(), str(path), metadata=metadata)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == field
    assert info.value.path == str(path)


def test_metadata_the_v1_reader_refuses_is_named(tmp_path: Path, model: nn.Module) -> None:
    cases = {"classes": json.dumps({"a": 1}), "input": json.dumps({"size": [16]})}
    for name, text in cases.items():
        metadata = {"format": candidate.FORMAT, "arch": "tiny_cnn", "classes": json.dumps(CLASSES),
                    "arch_kwargs": json.dumps(KWARGS), "input": json.dumps({"size": [16, 16]}), name: text}
        path = tmp_path / f"{name}.safetensors"
        save_file(model.state_dict(), str(path), metadata=metadata)
        with pytest.raises(CandidateError) as info:
            candidate.load(path)
        assert (info.value.field or "").startswith(name)  # the v1 reader may name a sub-field


def test_truncated_and_empty_files_are_input_errors(tmp_path: Path, model: nn.Module) -> None:
    data = safetensors_io.encode(payload(model))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(CandidateError) as info:
        candidate.load(truncated)
    assert info.value.field == "state_dict" and "corrupt" in info.value.message
    empty = raw_file(tmp_path / "empty.safetensors", json.dumps({"__metadata__": {"format": "pt"}}).encode())
    with pytest.raises(CandidateError) as info:
        candidate.load(empty)
    assert "no tensors" in info.value.message


def test_another_xgate_format_is_refused(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "v2.safetensors"
    save_file(model.state_dict(), str(path), metadata={"format": "xgate.candidate/v2", "arch": "tiny_cnn"})
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == "format"


def test_damaged_files_are_input_errors_or_load(tmp_path: Path, model: nn.Module) -> None:
    """Flipped, cut and overwritten bytes anywhere in the file: a CandidateError or a clean load, nothing else."""
    data = safetensors_io.encode(payload(model))
    (length,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.safetensors"
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(120):
        damaged = bytearray(data)
        where = int(rng.integers(0, 8 + length + 64))  # mostly the length prefix and the JSON header
        if trial % 3 == 0:
            damaged[where] ^= 1 << int(rng.integers(0, 8))
        elif trial % 3 == 1:
            damaged[where] = int(rng.integers(0, 256))
        else:
            damaged = damaged[:where]
        path.write_bytes(bytes(damaged))
        try:
            candidate.load(path)
        except CandidateError as exc:
            assert exc.exit_code == 2 and "\n" not in exc.one_line()
            outcomes["error"] += 1
        else:
            outcomes["loaded"] += 1
    assert outcomes["error"] > 60
