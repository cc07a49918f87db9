"""xgate pack: weights + class list + preprocessing -> a candidate that loads, fits and gives one output per class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.transforms import InterpolationMode

from gate.cli import _run
from gate.errors import CandidateError, UsageError
from gate.inputs import candidate
from gate.inputs import pack as pack_module
from gate.inputs.archs import tiny_cnn
from gate.inputs.pack import PackRequest, Preprocessing, pack, read_classes, read_state_dict

CLASSES = ("cat", "dog", "bird")


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_cnn(num_classes=3, width=4).eval()


@pytest.fixture
def files(tmp_path: Path, model: nn.Module) -> dict[str, Path]:
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return {"weights": weights, "classes": classes}


def xgate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = _run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def pack_args(files: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return ["pack", str(files["weights"]), "--arch", "tiny_cnn", "--arch-kwargs", '{"width": 4}',
            "--classes", str(files["classes"]), "--size", "32,32", "-o", str(output), *extra]


# --- class lists ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("cat\ndog\n\nbird\n", CLASSES),
    ("\ufeffcat\r\n dog \r\nbird", CLASSES),  # BOM, CRLF and spaces from a spreadsheet export
    ('["cat", "dog", "bird"]', CLASSES),
    ('{"1": "dog", "0": "cat", "2": "bird"}', CLASSES),  # id2label, keys out of order
    ("great white shark\ntiger shark\n", ("great white shark", "tiger shark")),
], ids=["lines", "bom-crlf", "json-list", "id2label", "spaces-inside"])
def test_class_lists(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    path = tmp_path / "classes"
    path.write_text(text, encoding="utf-8")
    assert read_classes(path) == expected


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"),
    ("cat\ndog\ncat\n", "duplicate"),
    ('["cat", 3]', "non-empty strings"),
    ('["cat", "dog"', "not valid JSON"),
    ('{"0": "cat", "2": "dog"}', "0..N-1"),
], ids=["empty", "duplicate", "not-strings", "bad-json", "gap-in-indices"])
def test_bad_class_lists_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "classes"
    path.write_text(text)
    with pytest.raises(CandidateError) as info:
        read_classes(path)
    assert info.value.field == "classes" and info.value.path == str(path) and needle in info.value.message


# --- preprocessing ------------------------------------------------------------------


def test_imagenet_preset_is_torchvisions_eval_transform() -> None:
    reference = ResNet50_Weights.IMAGENET1K_V1.transforms()  # torchvision's own ImageClassification
    spec = Preprocessing(preset="imagenet").to_json()
    assert spec["size"] == [reference.crop_size[0]] * 2  # CenterCrop(224): square
    assert [spec["resize"]] == list(reference.resize_size)
    assert InterpolationMode(spec["interpolation"]) == reference.interpolation
    assert spec["mean"] == list(reference.mean) and spec["std"] == list(reference.std)


def test_options_override_the_preset() -> None:
    spec = Preprocessing(preset="imagenet", resize=232, interpolation="bicubic", std=(1.0, 1.0, 1.0)).to_json()
    assert spec == {"size": [224, 224], "resize": 232, "interpolation": "bicubic",
                    "mean": [0.485, 0.456, 0.406], "std": [1.0, 1.0, 1.0]}


def test_without_size_or_preset_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        Preprocessing(resize=256).to_json()
    assert info.value.field == "--size" and info.value.exit_code == 2


# --- state dicts ------------------------------------------------------------------------


def test_training_checkpoints_and_ddp_prefixes_are_unwrapped(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "ckpt.pth"
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 12, "model": wrapped, "optimizer": {"lr": 0.1}}, path)
    state, notes = read_state_dict(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert any("'model'" in n for n in notes) and any("module." in n for n in notes)


def test_a_compiled_models_state_dict_is_unwrapped(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "compiled.pt"
    torch.save({"model": torch.compile(model).state_dict()}, path)  # keys "_orig_mod.<name>"
    state, notes = read_state_dict(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert notes == ("weights taken from the file's 'model' entry", "removed the '_orig_mod.' prefix (torch.compile)")


def test_a_pickled_model_is_refused_without_running_it(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(CandidateError) as info:
        read_state_dict(path)
    assert info.value.field == "weights" and "state_dict()" in info.value.message


def test_a_mapping_without_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CandidateError) as info:
        read_state_dict(path)
    assert info.value.field == "weights" and "epoch" in info.value.message


# --- pack ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_packed_candidate_gives_the_models_outputs(tmp_path: Path, files: dict[str, Path], model: nn.Module,
                                                   suffix: str) -> None:
    output = tmp_path / f"out/cand{suffix}"
    result = pack(PackRequest(weights=files["weights"], arch="tiny_cnn", classes_file=files["classes"],
                              output=output, preprocessing=Preprocessing(size=(32, 32), resize=40),
                              arch_kwargs={"width": 4}, target_layer="features.4", meta={"recipe": "ft"}))
    assert result.path == output and output.exists()
    loaded = candidate.load(output)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.classes == CLASSES
    assert loaded.target_layer == "features.4"
    assert loaded.input.size == (32, 32) and loaded.input.resize == 40
    assert dict(loaded.meta) == {"recipe": "ft"}
    assert output.read_bytes()[:2] != b"PK" if suffix == ".safetensors" else output.read_bytes()[:2] == b"PK"
    assert list(output.parent.iterdir()) == [output]  # no temporary file left


def test_cli_pack_writes_and_describes(tmp_path: Path, files: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "cand.pt"
    code, out, err = xgate(capsys, *pack_args(files, output, "--meta", "epochs=3", "--meta", "recipe=cutmix",
                                              "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"))
    assert code == 0, err
    assert f"wrote {output}" in out and "classes:      3: cat, dog, bird" in out
    loaded = candidate.load(output)
    assert dict(loaded.meta) == {"epochs": 3, "recipe": "cutmix"}
    assert loaded.input.mean == (0.5, 0.5, 0.5) and loaded.input.std == (0.25, 0.25, 0.25)


def test_a_state_dict_for_another_class_count_exits_2(tmp_path: Path, files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    files["classes"].write_text("cat\ndog\nbird\nfish\n")
    output = tmp_path / "cand.pt"
    code, _, err = xgate(capsys, *pack_args(files, output))
    assert code == 2
    assert str(files["weights"]) in err and "state_dict" in err and "num_classes=4" in err
    assert len(err.strip().splitlines()) == 1 and not output.exists()
    assert not list(tmp_path.glob(".*partial"))


def test_an_output_width_other_than_the_class_count_exits_2(tmp_path: Path, model: nn.Module,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # The weights fit a 5-output model, but the class list names 3: never truncated, never padded.
    five = tiny_cnn(num_classes=5, width=4)
    weights = tmp_path / "five.pt"
    torch.save(five.state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES))
    output = tmp_path / "cand.pt"
    code, _, err = xgate(capsys, "pack", str(weights), "--arch", "tiny_cnn", "--arch-kwargs",
                         '{"width": 4, "num_classes": 5}', "--classes", str(classes), "--size", "32",
                         "-o", str(output))
    assert code == 2 and str(classes) in err and "(1, 5)" in err and "3 classes" in err
    assert not output.exists()


@pytest.mark.parametrize(("extra", "needle"), [
    (("--target-layer", "nope"), "target_layer"),
    (("--interpolation", "lanczos"), "--interpolation"),
    (("--mean", "0.5,0.5"), "--mean"),
    (("--arch-kwargs", "[1]"), "--arch-kwargs"),
    (("--meta", "novalue"), "--meta"),
], ids=["target-layer", "interpolation", "mean", "arch-kwargs", "meta"])
def test_bad_options_exit_2_in_one_line(tmp_path: Path, files: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
                                        needle: str) -> None:
    code, _, err = xgate(capsys, *pack_args(files, tmp_path / "cand.pt", *extra))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cand.pt").exists()


def test_unknown_arch_exits_2(tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = xgate(capsys, "pack", str(files["weights"]), "--arch", "resnet_nope", "--classes",
                         str(files["classes"]), "--size", "32", "-o", str(tmp_path / "c.pt"))
    assert code == 2 and "resnet_nope" in err


def test_torchvision_model_with_the_imagenet_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    net = mobilenet_v3_small(weights=None, num_classes=3).eval()
    weights = tmp_path / "mnv3.safetensors"
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(weights))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(list(CLASSES)))
    output = tmp_path / "cand.pt"
    code, out, err = xgate(capsys, "pack", str(weights), "--arch", "mobilenet_v3_small", "--classes", str(classes),
                           "--preset", "imagenet", "-o", str(output))
    assert code == 0, err
    assert "Resize(256, bilinear, antialias) -> CenterCrop(224x224)" in out
    loaded = candidate.load(output)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = xgate(capsys, "pack", "--help")
    assert code == 0 and "Examples:" in out and "--preset imagenet" in out
    assert pack_module.PRESETS["imagenet"]["resize"] == 256


def test_an_output_that_cannot_be_written_exits_2(tmp_path: Path, files: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cand.pt"
    folder.mkdir()
    code, _, err = xgate(capsys, *pack_args(files, folder))
    assert code == 2 and "--output" in err and str(folder) in err
    assert folder.is_dir() and not list(tmp_path.glob(".*partial"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, _, err = xgate(capsys, *pack_args(files, blocked / "sub" / "cand.pt"))
    assert code == 2 and "--output" in err
