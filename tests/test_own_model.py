"""Bringing a model, end to end: the README's "Gate your own model" commands as written, and issue 11's
acceptance test (a COCO export of JPEG photos gated on a torchvision model with resize+crop and more classes
than the review set), whose numbers are recomputed independently with torchvision, pycocotools and captum.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.models import resnet18
from torchvision.transforms import v2

from gate.cli import _run
from gate.engine.core import EngineOptions
from gate.inputs.pack import PackRequest, Preprocessing, pack
from gate.inputs.review_set import open_review_set
from gate.run import GateRequest, run_gate

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_model_example", REPO / "scripts" / "own_model_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_walkthrough() -> str:
    """The sh block under '## Gate your own model', exactly as written."""
    text = README.read_text()
    section = text.split("## Gate your own model", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the walkthrough is one sh block"
    return blocks[0]


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "scripts").symlink_to(REPO / "scripts")  # the commands run from a repository root
    venv_bin = Path(sys.executable).parent
    env = {"PATH": f"{venv_bin}:/usr/bin:/bin", "CI": "true", "HOME": str(tmp_path)}
    # The timm and Hugging Face variants build on the walkthrough's review set and policy: one run for both
    # (tests/test_hf.py checks what they print and gate).
    from tests.test_hf import assert_readme_variants_ran, readme_variants

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # a worktree's own gate, where one is set
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", readme_walkthrough() + "\n" + readme_variants()],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "target layer: layer4 (default for this model)" in result.stdout
    assert "Resize(256, bilinear, antialias) -> CenterCrop(224x224)" in result.stdout
    gate = json.loads((tmp_path / "my-model" / "gate" / "result.json").read_text())
    assert gate["verdict"] == "passed"
    (candidate,) = gate["candidates"]
    # What the README says about these numbers.
    assert candidate["scores"]["accuracy"] == 0.0
    assert candidate["scores"]["alignment.coverage"] == pytest.approx(10 / 12)
    assert gate["review_set"]["size"] == 12 and gate["review_set"].get("pinned", True) is not False
    assert (tmp_path / "my-model" / "gate" / "report.html").stat().st_size < 3_000_000
    assert_readme_variants_ran(tmp_path, result.stdout)


# --- issue 11 acceptance ------------------------------------------------------------------


def reference_masks(instances: Path) -> dict[str, np.ndarray]:
    """file_name -> union of its annotations' masks: pycocotools for segmentations, numpy for box-only ones."""
    coco = COCO(str(instances))
    masks = {}
    for image_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        if not anns:
            continue
        union = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in anns:
            if ann.get("segmentation"):
                union |= coco.annToMask(ann) > 0
            else:
                x, y, w, h = (int(v) for v in ann["bbox"])
                union[y : y + h, x : x + w] = True
        masks[info["file_name"]] = union
    return masks


def independent_numbers(folder: Path, classes: list[str], size: int, resize: int
                        ) -> dict[str, tuple[np.ndarray, int, float]]:
    """file_name -> (full softmax, argmax over all outputs, Grad-CAM energy in the mask or NaN)."""
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=len(classes))
    model.load_state_dict(torch.load(folder / "finetuned.pt", weights_only=True))
    model.eval()
    pixels = v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(size),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    geometry = v2.Compose([v2.Resize(resize, interpolation=v2.InterpolationMode.NEAREST), v2.CenterCrop(size)])
    masks = reference_masks(folder / "instances.json")
    gradcam = LayerGradCam(model, model.layer4)
    out = {}
    for photo in sorted((folder / "photos").rglob("*.jpg")):
        name = photo.relative_to(folder / "photos").as_posix()
        x = pixels(Image.open(photo).convert("RGB"))[None]
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0]
        pred = int(probs.argmax())
        energy = float("nan")
        if name in masks:
            cam = gradcam.attribute(x, target=pred, relu_attributions=True).detach()
            cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[0, 0].double()
            mask = geometry(tv_tensors.Mask(torch.from_numpy(masks[name].astype(np.uint8))[None]))[0].bool()
            energy = float((cam * mask).sum() / cam.sum()) if cam.sum() > 0 and mask.any() else float("nan")
        out[name] = (probs.numpy(), pred, energy)
    return out


@pytest.mark.slow
def test_coco_export_gated_with_resize_crop_equals_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = example_module()
    folder = tmp_path / "team"
    example.write_example(folder)
    classes = list(example.MODEL_CLASSES)
    code = _run(["review-set", "build", "--coco", str(folder / "instances.json"), "--images",
                 str(folder / "photos"), "--unlabelled", "folder", "-o", str(tmp_path / "set")])
    assert code == 0, capsys.readouterr().err
    size, resize = 96, 112  # resize+crop, as the ImageNet preset but smaller to keep the test fast
    packed = pack(PackRequest(weights=folder / "finetuned.pt", arch="resnet18", classes_file=folder / "classes.txt",
                              output=tmp_path / "cand.pt",
                              preprocessing=Preprocessing(size=(size, size), resize=resize)))
    assert packed.candidate.classes == tuple(classes)
    pinned = open_review_set(tmp_path / "set")
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"name": "p", "review_set": {"path": "set", "digest": pinned.digest},
                                  "rules": [{"score": "accuracy", "min": 0.0}]}))
    result = run_gate(GateRequest(command="check", candidates=(packed.path,), policy=policy,
                                  engine=EngineOptions(device="cpu", batch_size=5)))
    (cand,) = result.candidates
    records = cand.records
    assert records.classes == ("cat", "dog") and len(classes) == 3  # more classes in the model than in the set

    expected = independent_numbers(folder, classes, size, resize)
    # Pinned images are the export's JPEGs byte for byte: match samples to photos by their bytes.
    by_bytes = {(folder / "photos" / name).read_bytes(): name for name in expected}
    names = [by_bytes[(pinned.root / sample.image).read_bytes()] for sample in pinned.samples]
    assert len(set(names)) == 12
    labels = np.array([classes.index(records.classes[s.label]) for s in pinned.samples])
    preds = np.array([expected[n][1] for n in names])
    assert cand.scores["accuracy"] == pytest.approx(float(np.mean(preds == labels)), abs=1e-12)
    full = np.stack([expected[n][0] for n in names])
    columns = [classes.index(c) for c in records.classes]
    np.testing.assert_allclose(records.probs, full[:, columns], atol=1e-5)  # the FULL softmax's columns
    review_preds = [records.classes.index(classes[p]) if classes[p] in records.classes else -1 for p in preds]
    assert records.preds.tolist() == review_preds
    assert cand.scores["nll"] == pytest.approx(float(-np.mean(np.log(full[np.arange(12), labels]))), rel=1e-5)
    energies = np.array([expected[n][2] for n in names])
    assert np.isnan(energies).sum() == 2 and np.isnan(records.energy).sum() >= 2  # the two unannotated photos
    scored = ~np.isnan(records.energy)
    np.testing.assert_allclose(records.energy[scored], energies[scored], rtol=1e-4, atol=1e-6)
    assert scored.sum() >= 6  # a few alignment energies, compared one by one
    assert cand.scores["alignment.energy"] == pytest.approx(float(np.mean(energies[scored])), rel=1e-4)
    assert cand.scores["alignment.coverage"] == pytest.approx(scored.sum() / 12)
