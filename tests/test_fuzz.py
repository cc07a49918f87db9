"""Fuzzing the loaders of untrusted input: only typed input errors (exit 2) may come out, never another exception.

Bounded (a few dozen examples each, no deadline) so the suite stays fast on two cores.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.decide import policy
from gate.errors import InputError
from gate.inputs import candidate, importers, safe_import, safetensors_io
from gate.inputs.review_set import open_review_set

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Plain data of the shapes a YAML policy or a checkpoint's fields can hold.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
names = st.sampled_from(["name", "review_set", "rules", "score", "min", "max", "confidence", "vs_baseline",
                         "max_drop", "min_gain", "probes", "explain", "select", "rank_by", "candidate",
                         "allow_modules", "path", "digest", "method", "target_layer", "description", "x"])
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(names, inner, max_size=5)), max_leaves=20)
scores = st.sampled_from(["accuracy", "ece", "nll", "brier", "alignment.lift", "background.bg_gap",
                          "class_accuracy.circle", "delta.accuracy", "nope", ""])
rules = st.fixed_dictionaries({"score": scores}, optional={
    "min": scalars, "max": scalars, "confidence": scalars,
    "vs_baseline": st.dictionaries(st.sampled_from(["max_drop", "min_gain", "confidence"]), scalars, max_size=3)})
policies = st.fixed_dictionaries({"name": st.text(max_size=5), "review_set": st.just({"path": "x", "digest": "00"}),
                                  "rules": st.lists(rules, max_size=3)},
                                 optional={"probes": st.lists(st.sampled_from(["background", "sanity", "x"])),
                                           "candidate": st.dictionaries(st.just("allow_modules"),
                                                                        st.lists(st.text(max_size=8)))})
yaml_noise = st.text(alphabet=string.printable + "&*!<>|{}[]:-#'\"\u00e9\u2028", max_size=200)


def _expect_input_error(call: Any, check: Any = None) -> None:
    """``call`` raises a one-line InputError, or returns a value ``check`` accepts (a call that returns checks too)."""
    try:
        value = call()
    except InputError as error:
        assert error.exit_code == 2
        assert "\n" not in error.one_line()
        return
    if check is not None:
        check(value)


def _sane_policy(loaded: Any) -> None:
    for rule in loaded.model.rules:
        for bound in (rule.min, rule.max):
            assert bound is None or (type(bound) in (int, float) and math.isfinite(bound)), rule
    assert all(safe_import.valid_prefix(name) for name in loaded.model.candidate.allow_modules)


def _sane_candidate(loaded: Any) -> None:
    json.dumps(loaded.meta, allow_nan=False)  # plain JSON data, or load refused it
    assert loaded.classes and len(set(loaded.classes)) == len(loaded.classes)
    assert all(0 <= side <= candidate.DEFAULT_MAX_INPUT_SIDE for side in loaded.input.size)


@FUZZ
@given(document=st.one_of(documents, policies))
def test_policy_loader_on_generated_documents(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    _expect_input_error(lambda: policy.load(path), _sane_policy)


@FUZZ
@given(text=yaml_noise)
def test_policy_loader_on_generated_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    _expect_input_error(lambda: policy.load(path), _sane_policy)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pinned 4-sample set of 8×8 images to corrupt."""
    from gate.inputs import shapes
    from gate.inputs.review_set import build

    root = tmp_path_factory.mktemp("fuzzset")
    plain = shapes.write_plain(shapes.generate(4, bias=0.5, seed=1, size=16), root / "plain")
    return build(plain, root / "set", name="fuzz").root


def _repin(root: Path) -> None:
    sums = root / "SHA256SUMS"
    names = [line.split("  ", 1)[1] for line in sums.read_text().splitlines() if line.strip()]
    sums.write_text("".join(f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}\n"
                            for n in names if (root / n).is_file()))


csv_cells = st.one_of(st.sampled_from(["", "images", "../x.png", "/etc/passwd", "Thumbs.db", "circle", "cross",
                                       "images/circle/s1-000000.png", "a,b", '"q"', "\x00"]), st.text(max_size=8))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.one_of(documents, yaml_noise), rows=st.lists(st.lists(csv_cells, min_size=0, max_size=6), max_size=4),
       header=st.sampled_from(["id,image,mask,label", "id,image,mask,label,slice,void", "id,image", ""]),
       keep_meta=st.booleans())
def test_review_set_manifest_reader(tiny_set: Path, tmp_path: Path, meta: Any, rows: list[list[str]], header: str,
                                    keep_meta: bool) -> None:
    root = tmp_path / "set"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(tiny_set, root)
    if not keep_meta:
        (root / "review.yaml").write_text(meta if isinstance(meta, str) else yaml.safe_dump(meta), encoding="utf-8")
    (root / "samples.csv").write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    _repin(root)

    def read() -> list[tuple[Any, Any]]:
        opened = open_review_set(root)
        return [(opened.load_image(index), opened.load_mask(index)) for index in range(min(opened.size, 2))]

    def sane(loaded: list[tuple[Any, Any]]) -> None:
        for image, mask in loaded:
            assert image.ndim == 3 and image.shape[2] == 3
            assert mask is None or mask.shape == image.shape[:2]

    _expect_input_error(read, sane)


tensors = st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 3), max_size=3))
field_values = st.one_of(scalars, tensors, st.lists(st.one_of(scalars, tensors), max_size=3),
                         st.dictionaries(st.text(max_size=6), st.one_of(scalars, tensors), max_size=3))
archs = st.sampled_from(["tiny_cnn", "nope", "os:system", "subprocess:run", "builtins:exec", "a:b:c", "x:__init__",
                         "torch.hub:load", "gate.cli:main", ""])


# Tensors are generated inside lists and mappings; a bare tensor has its own test below.
kwargs_values = st.one_of(scalars, st.lists(st.one_of(scalars, tensors), max_size=3),
                          st.dictionaries(st.text(max_size=6), st.one_of(scalars, tensors), max_size=3))


@FUZZ
@given(arch=st.one_of(archs, scalars), kwargs=st.one_of(kwargs_values, st.just({"num_classes": 4, "width": 4})),
       classes=st.one_of(field_values, st.just(["circle", "cross", "square", "triangle"])),
       spec=st.one_of(field_values, st.just({"size": [16, 16]})), layer=st.one_of(st.none(), scalars),
       state=st.one_of(field_values, st.just({})), fmt=st.sampled_from(["xgate.candidate/v1", "other", None]),
       drop=st.lists(st.sampled_from(["arch", "classes", "input", "state_dict", "arch_kwargs"]), max_size=2))
def test_candidate_loader_on_generated_payloads(tmp_path: Path, arch: Any, kwargs: Any, classes: Any, spec: Any,
                                               layer: Any, state: Any, fmt: Any, drop: list[str]) -> None:
    payload: dict[str, Any] = {"format": fmt, "arch": arch, "arch_kwargs": kwargs, "classes": classes,
                               "input": spec, "state_dict": state}
    if layer is not None:
        payload["target_layer"] = layer
    for key in drop:
        payload.pop(key, None)
    path = tmp_path / "cand.pt"
    torch.save(payload, path)
    _expect_input_error(lambda: candidate.load(path), _sane_candidate)


@FUZZ
@given(data=st.binary(max_size=512), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"{", b"\x08\x00"]))
def test_candidate_loader_on_generated_bytes(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    path = tmp_path / "cand.pt"
    path.write_bytes(prefix + data)
    _expect_input_error(lambda: candidate.load(path), _sane_candidate)


# Found by test_candidate_loader_on_generated_payloads: `arch_kwargs or {}` took a tensor's truth value (exit 3).
@pytest.mark.parametrize("shape", [[0], [2]], ids=["empty", "two"])
def test_tensor_arch_kwargs_are_input_errors(tmp_path: Path, shape: list[int]) -> None:
    payload = {"format": "xgate.candidate/v1", "arch": "tiny_cnn", "classes": ["a", "b"], "input": {"size": [8, 8]},
               "arch_kwargs": torch.zeros(shape), "state_dict": {}}
    path = tmp_path / "cand.pt"
    torch.save(payload, path)
    with pytest.raises(InputError):
        candidate.load(path)


# --- issue 21: the boxes CSV, VOC class lists, safetensors headers and checkpoint meta ---------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small photos to point boxes at: a.png 20x10, b.png 8x8."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    Image.new("RGB", (20, 10), (90, 90, 90)).save(folder / "a.png")
    Image.new("RGB", (8, 8), (200, 200, 200)).save(folder / "b.png")
    return folder


box_cells = st.one_of(st.sampled_from(["a.png", "b.png", "../a.png", "/etc/passwd", "car", "", " ", "0", "4",
                                       "20", "1e9", "nan", "-1", "inf", "2.5", "\x00", "\ufeff", '"x,y"']),
                      st.text(max_size=6))
box_headers = st.sampled_from(["image,label,x0,y0,x1,y1", "\ufeffimage,label,x0,y0,x1,y1", "image,label",
                               " image , label ,x0,y0,x1,y1", ""])


@FUZZ
@given(header=box_headers, rows=st.lists(st.lists(box_cells, min_size=0, max_size=7), max_size=5),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_boxes_csv_on_generated_rows(photos: Path, tmp_path: Path, header: str, rows: list[list[str]],
                                     encoding: str) -> None:
    path = tmp_path / "boxes.csv"
    text = "\n".join([header, *(",".join(r) for r in rows)]) + "\n"
    path.write_bytes(text.encode(encoding, errors="replace"))

    def read() -> list[Any]:
        found = importers.boxes(path, photos, multi_class="split")
        return [(entry, entry.draw() if entry.draw else None) for entry in found.entries]

    def sane(drawn: list[Any]) -> None:
        for entry, masks in drawn:
            assert entry.label.strip() and entry.image.resolve().is_relative_to(photos.resolve())
            if masks is not None:
                from gate.inputs import images

                assert masks.mask.shape == images.display_size(entry.image) and masks.mask.any()

    _expect_input_error(read, sane)


@FUZZ
@given(lines=st.lists(st.one_of(st.sampled_from(["background", "cat", "dog", "cat", "", " ", "\ufeffcat"]),
                                st.text(max_size=8)), max_size=8),
       bom=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_voc_class_lists_on_generated_text(tmp_path: Path, lines: list[str], bom: bool, encoding: str) -> None:
    path = tmp_path / "classes.txt"
    text = ("\ufeff" if bom else "") + "\n".join(lines)
    path.write_bytes(text.encode(encoding, errors="replace"))

    def sane(names: tuple[str, ...]) -> None:
        assert 1 <= len(names) < 255 and len(set(names)) == len(names)
        assert all(name == name.strip() and name for name in names)
        assert not names[0].startswith("\ufeff")  # a BOM would shift every palette index by one

    _expect_input_error(lambda: importers.read_class_list(path), sane)


header_values = st.recursive(st.one_of(scalars, st.just("F32"), st.just([0, 4]), st.just([1])),
                             lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                             max_leaves=10)
metadata_values = st.one_of(st.sampled_from(['{"lr": 0.1}', "NaN", '{"x": NaN}', "[1, 2]", '{"a": {"b": [1]}}',
                                             "xgate.candidate/v1", "tiny_cnn", "[", '["circle", "cross"]']),
                            st.text(max_size=10))


@FUZZ
@given(tensors=st.dictionaries(st.text(max_size=4), header_values, max_size=3),
       metadata=st.dictionaries(st.sampled_from(["format", "arch", "classes", "input", "meta", "arch_kwargs",
                                                 "target_layer", "x"]), metadata_values, max_size=5),
       length_delta=st.sampled_from([0, 0, 0, -1, 1, 10**9]), tail=st.binary(max_size=16))
def test_safetensors_headers_on_generated_json(tmp_path: Path, tensors: dict[str, Any], metadata: dict[str, str],
                                               length_delta: int, tail: bytes) -> None:
    header = json.dumps({**tensors, "__metadata__": metadata}).encode()
    data = (len(header) + length_delta).to_bytes(8, "little", signed=False) + header + tail
    path = tmp_path / "cand.safetensors"
    path.write_bytes(data)

    def read() -> Any:
        return safetensors_io.read_payload(path, data) if safetensors_io.is_safetensors(data) else None

    def sane(payload: Any) -> None:
        assert payload is None or (isinstance(payload, dict) and payload)

    _expect_input_error(read, sane)
    _expect_input_error(lambda: candidate.load(path), _sane_candidate)


meta_values = st.recursive(
    st.one_of(scalars, st.binary(max_size=3), st.builds(lambda n: torch.zeros(n), st.integers(0, 2)),
              st.tuples(st.integers(0, 3))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3),
                            st.dictionaries(st.integers(0, 3), inner, max_size=2)), max_leaves=12)


@FUZZ
@given(meta=st.one_of(meta_values, st.dictionaries(st.text(max_size=4), meta_values, max_size=4)))
def test_checkpoint_meta_on_generated_values(tmp_path: Path, untrained_checkpoint: Path, meta: Any) -> None:
    payload = dict(torch.load(untrained_checkpoint, weights_only=True))
    payload["meta"] = meta
    path = tmp_path / "cand.pt"
    torch.save(payload, path)

    def sane(loaded: Any) -> None:
        _sane_candidate(loaded)
        assert isinstance(loaded.meta, dict)

    _expect_input_error(lambda: candidate.load(path), sane)
