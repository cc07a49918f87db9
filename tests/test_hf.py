"""Hugging Face save_pretrained folders: checked, loaded offline, gated like the image processor + model evaluate.

ViT, ConvNeXt and Swin, each built with a tiny config and random weights and saved as users save them
(``model.save_pretrained(folder)``, ``processor.save_pretrained(folder)``); the gate's probabilities must equal
the folder's own image processor + model on JPEG photos of several sizes, and its maps pytorch-grad-cam's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from gate.engine import layers
from gate.errors import CandidateError, UsageError
from gate.inputs.candidate import load
from gate.inputs.pack import PackRequest, Preprocessing, describe, pack
from gate.inputs.review_set import ReviewSet
from tests.source_fixtures import CLASSES, assert_same_as_library, gate_run, reference_inputs, write_photos

transformers = pytest.importorskip("transformers")
LABELS = {"id2label": dict(enumerate(CLASSES)), "label2id": {name: i for i, name in enumerate(CLASSES)}}


def _vit() -> tuple[Any, Any]:
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, **LABELS)
    return transformers.ViTForImageClassification(config), transformers.ViTImageProcessor(
        size={"height": 32, "width": 32})


def _convnext() -> tuple[Any, Any]:
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], **LABELS)
    # shorter side to int(64 / 0.875) = 73, centre crop 64, bicubic: the processor's crop_pct rule
    return transformers.ConvNextForImageClassification(config), transformers.ConvNextImageProcessor(
        size={"shortest_edge": 64})


def _swin() -> tuple[Any, Any]:
    config = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                     window_size=4, **LABELS)
    return transformers.SwinForImageClassification(config), transformers.ViTImageProcessor(
        size={"height": 64, "width": 64}, resample=3)


# builder, default layer, layout kind, prefix tokens, token grid
FAMILIES = {
    "vit": (_vit, "vit.layers.1.layernorm_before", layers.TOKENS, 1, (4, 4)),
    "convnext": (_convnext, "convnext.encoder.stages.3", layers.SPATIAL, 0, (0, 0)),
    "swin": (_swin, "swin.layernorm", layers.TOKENS, 0, (8, 8)),  # 64 px / patch 4 / one merge
}


def save_folder(root: Path, family: str) -> tuple[Path, Any]:
    """The family's model with random weights, saved with save_pretrained next to its image processor."""
    torch.manual_seed(0)
    model, processor = FAMILIES[family][0]()
    folder = root / family
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> ReviewSet:
    return write_photos(tmp_path_factory.mktemp("hf-photos"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-folders")
    return {family: save_folder(root, family)[0] for family in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_folder_gates_like_its_image_processor_and_model(family: str, folders: dict[str, Path],
                                                           photos: ReviewSet) -> None:
    folder = folders[family]
    _, layer, kind, prefix, grid = FAMILIES[family]
    cand = load(folder)
    assert (cand.source, cand.classes, cand.target_layer) == ("transformers", CLASSES, layer)
    assert cand.input.pipeline == "transformers" and cand.input_origin.startswith("preprocessor_config.json")
    records = gate_run(cand, photos)
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    reference = transformers.AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()

    class Logits(torch.nn.Module):  # the library's model as its users call it: .logits of the output
        def __init__(self) -> None:
            super().__init__()
            self.inner = reference

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=x).logits

    inputs = reference_inputs(photos, records, lambda photo: processor(photo, return_tensors="pt")["pixel_values"][0])
    assert_same_as_library(Logits(), f"inner.{layer}", layers.Layout(kind, prefix=prefix, grid=grid), inputs, records)


def test_packing_a_folder_gives_one_file_that_gates_the_same(folders: dict[str, Path], tmp_path: Path) -> None:
    result = pack(PackRequest(weights=folders["convnext"], arch=None, classes_file=None,
                              output=tmp_path / "convnext.safetensors"))
    packed, direct = result.candidate, load(folders["convnext"])
    assert packed.arch == direct.arch == "transformers:ConvNextForImageClassification"
    assert (packed.classes, packed.input, packed.target_layer) == (direct.classes, direct.input, direct.target_layer)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(packed.model(x), direct.model(x), atol=0, rtol=0)
    info = describe(tmp_path / "convnext.safetensors")
    assert info["source"] == "transformers" and info["input"]["resize"] == 73
    assert "transformers" in info["meta"]
    with pytest.raises(UsageError, match="drop --arch"):
        pack(PackRequest(weights=folders["vit"], arch="resnet18", classes_file=None, output=tmp_path / "x.pt"))


def test_options_override_the_image_processor(folders: dict[str, Path]) -> None:
    cand = load(folders["convnext"], resize=80, interpolation="bilinear")
    assert (cand.input.size, cand.input.resize, cand.input.interpolation) == ((64, 64), 80, "bilinear")
    assert cand.input_origin.endswith("overridden on the command line")
    over = pack(PackRequest(weights=folders["vit"], arch=None, classes_file=None, output=folders["vit"].parent / "v.pt",
                            preprocessing=Preprocessing(mean=(0.1, 0.2, 0.3))))
    assert over.candidate.input.mean == pytest.approx((0.1, 0.2, 0.3)) and over.candidate.input.size == (32, 32)


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / name))


def _edit_json(path: Path, **changes: Any) -> None:
    value = json.loads(path.read_text())
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    path.write_text(json.dumps(value))


def _refused(path: Path) -> CandidateError:
    with pytest.raises(CandidateError) as caught:
        load(path)
    return caught.value


def test_bad_folders_are_input_errors_naming_file_and_field(folders: dict[str, Path], tmp_path: Path) -> None:
    custom = _copy(folders["vit"], tmp_path, "custom")
    _edit_json(custom / "config.json", auto_map={"AutoModelForImageClassification": "modeling_x.Evil"})
    error = _refused(custom)
    assert (Path(str(error.path)).name, error.field) == ("config.json", "auto_map")

    pickled = _copy(folders["vit"], tmp_path, "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    error = _refused(pickled)
    assert (Path(str(error.path)).name, error.field) == ("pytorch_model.bin", "weights")

    bare = _copy(folders["vit"], tmp_path, "bare")
    (bare / "preprocessor_config.json").unlink()
    error = _refused(bare)
    assert (Path(str(error.path)).name, error.field) == ("preprocessor_config.json", "preprocessor_config.json")

    wider = _copy(folders["vit"], tmp_path, "wider")
    _edit_json(wider / "config.json", id2label={str(i): f"c{i}" for i in range(5)},
               label2id={f"c{i}": i for i in range(5)})
    error = _refused(wider)
    assert (Path(str(error.path)).name, error.field) == ("config.json", "id2label")
    assert "names 5 classes but the head (classifier.weight in model.safetensors) has 3 outputs" in error.message

    error = _refused(Path("google/vit-base-patch16-224"))
    assert error.field == "path" and "download" in error.message and "hub id" in error.message


def test_a_folder_over_max_input_side_is_refused_before_its_model_is_built(folders: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    big = _copy(folders["vit"], tmp_path, "big")
    _edit_json(big / "preprocessor_config.json", size={"height": 5000, "width": 5000})
    with pytest.raises(CandidateError) as caught:
        load(big)  # the default limit, 4096
    error = caught.value
    assert (Path(str(error.path)).name, error.field) == ("preprocessor_config.json", "size")
    assert "over the --max-input-side limit of 4096" in error.message
    assert load(folders["vit"], max_input_side=32).input.size == (32, 32)  # at the limit: loads
    with pytest.raises(CandidateError) as caught:
        load(folders["vit"], max_input_side=31)
    assert caught.value.field == "size"
    with pytest.raises(CandidateError) as caught:
        load(folders["vit"], resize=64, max_input_side=48)  # an option that makes the frame too big names itself
    assert caught.value.field == "--resize"


def test_bad_processor_fields_are_input_errors(folders: dict[str, Path], tmp_path: Path) -> None:
    cases = {"flip": ({"do_flip_channel_order": True}, "do_flip_channel_order"),
             "resample": ({"resample": 4}, "resample"),
             "size": ({"size": {"longest_edge": 10}}, "size"),
             "rescale": ({"rescale_factor": 0.5}, "rescale_factor"),
             "mean": ({"image_mean": [0.5, 0.5]}, "image_mean")}
    for name, (changes, field) in cases.items():
        folder = _copy(folders["vit"], tmp_path, name)
        _edit_json(folder / "preprocessor_config.json", **changes)
        error = _refused(folder)
        assert (Path(str(error.path)).name, error.field) == ("preprocessor_config.json", field), name


def test_default_layers_for_the_listed_transformers_families() -> None:
    tiny = {"num_labels": 3}
    expected = {
        "deit": (transformers.DeiTForImageClassification(transformers.DeiTConfig(
            image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
            intermediate_size=16, **tiny)), "deit.layers.0.layernorm_before", 2),
        "resnet": (transformers.ResNetForImageClassification(transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1], **tiny)), "resnet.encoder.stages.1", None),
    }
    for name, (model, layer, prefix) in expected.items():
        names = dict(model.named_modules())
        default = layers.default_layer(model)
        assert default == layer or (name == "deit" and default.endswith("layernorm_before")), name
        assert default in names
        if prefix is not None:
            from gate.engine import layers_sources

            assert layers_sources.prefix_tokens(model) == prefix


def test_select_over_torchvision_timm_and_hf_candidates_frames_once_per_geometry(
    folders: dict[str, Path], photos: ReviewSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import timm
    from torchvision.models import resnet18

    from gate.inputs import batches
    from gate.run import GateRequest, run_gate
    from tests.conftest import pinned_policy

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES))
    torch.save(resnet18(num_classes=3).state_dict(), tmp_path / "tv.pt")
    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), tmp_path / "timm.pt")
    tv = pack(PackRequest(weights=tmp_path / "tv.pt", arch="resnet18", classes_file=classes,
                          output=tmp_path / "tv.safetensors", preprocessing=Preprocessing(size=(64, 64)))).path
    overlay = {"pretrained_cfg_overlay": {"input_size": [3, 64, 64]}}
    tm = pack(PackRequest(weights=tmp_path / "timm.pt", arch="timm:resnet10t", classes_file=classes,
                          output=tmp_path / "timm.safetensors", arch_kwargs=overlay)).path
    hf_file = pack(PackRequest(weights=folders["vit"], arch=None, classes_file=None,
                               output=tmp_path / "vit.safetensors")).path
    framed: dict[tuple[object, ...], int] = {}
    decoded: list[int] = []
    real_frame, real_decode = batches.image_to_pixels, batches.decode

    def counting_frame(image: Any, geometry: Any) -> torch.Tensor:
        key = (geometry.size, geometry.resize, geometry.pipeline)
        framed[key] = framed.get(key, 0) + 1
        return real_frame(image, geometry)

    def counting_decode(review_set: ReviewSet, rows: Any) -> Any:
        decoded.append(len(rows))
        return real_decode(review_set, rows)

    monkeypatch.setattr(batches, "image_to_pixels", counting_frame)
    monkeypatch.setattr(batches, "decode", counting_decode)
    policy = pinned_policy(tmp_path, photos, [{"score": "accuracy", "min": 0.0}])
    # the folder and its packed file share a geometry: 4 candidates, 3 geometries
    result = run_gate(GateRequest(command="select", candidates=(tv, tm, folders["vit"], hf_file), policy=policy))
    assert sorted(c.candidate.model_source for c in result.candidates) == ["timm", "torchvision", "transformers",
                                                                     "transformers"]
    assert result.passed and result.selected is not None
    assert sum(decoded) == photos.size  # each photo decoded once
    assert framed == {((64, 64), None, "torchvision"): photos.size, ((64, 64), 73, "timm"): photos.size,
                      ((32, 32), None, "transformers"): photos.size}


def readme_variants() -> str:
    """The sh block under '### The same with a timm model or a Hugging Face folder', exactly as written."""
    from tests.test_own_model import README

    section = README.read_text().split("### The same with a timm model", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return block



def assert_readme_variants_ran(root: Path, stdout: str) -> None:
    """What the README's variants print and gate (run by test_own_model's walkthrough test, after the walkthrough)."""
    assert "preprocessing from the timm data config: crop_pct 0.875" in stdout
    assert "Resize(256, bicubic, antialias) -> CenterCrop(224x224) (timm resampling)" in stdout
    assert "source:       transformers" in stdout
    assert "from preprocessor_config.json (ViTImageProcessor)" in stdout
    for out, source, layer in (("gate-timm", "timm", "stages"), ("gate-hf", "transformers",
                                                                  "vit.layers.1.layernorm_before")):
        gate = json.loads((root / "my-model" / out / "result.json").read_text())
        (candidate,) = gate["candidates"]
        assert gate["verdict"] == "passed", out
        assert (candidate["candidate"]["model_source"], candidate["candidate"]["target_layer"]) == (source, layer)
        assert candidate["scores"]["alignment.coverage"] == pytest.approx(10 / 12)


def test_a_swin_token_grid_is_the_patch_grid_halved_per_merge() -> None:
    from gate.engine.gradcam import explain

    torch.manual_seed(0)
    model, _ = _swin()
    from gate.inputs.hf_folder import logits_only

    model = logits_only(model)
    out = explain(model, "swin.layernorm", torch.randn(1, 3, 64, 96))  # 16x24 patches, one merge
    assert (out.layout.kind, out.layout.prefix, out.layout.grid) == (layers.TOKENS, 0, (8, 12))
    stage = explain(model, "swin.encoder.layers.0.blocks.0.layernorm_before", torch.randn(1, 3, 64, 96))
    assert stage.layout.grid == (16, 24)


def test_inspect_and_layers_show_source_pipeline_origin_and_default_layer(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    from gate.cli import _run

    assert _run(["inspect", str(folders["convnext"])]) == 0
    text = capsys.readouterr().out
    assert "format:       Hugging Face save_pretrained folder (safetensors)" in text
    assert "source:       transformers" in text
    assert "input:        Resize(73, bicubic, antialias) -> CenterCrop(64x64) (transformers resampling)" in text
    assert "from preprocessor_config.json (ConvNextImageProcessor)" in text
    assert "target layer: convnext.encoder.stages.3 (default for this model)" in text
    assert _run(["layers", str(folders["vit"]), "--maps-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(transformers), sample input [B, 3, 32, 32], default layer "
                             "'vit.layers.1.layernorm_before'")
    assert lines[1] == ("input: Resize((32, 32), bilinear, antialias) (squash, aspect ratio not kept), transformers "
                        "resampling, from preprocessor_config.json (ViTImageProcessor)")
    default = next(line for line in lines if "<- default" in line)
    assert default.startswith("vit.layers.1.layernorm_before") and "tokens (1+4x4)" in default
