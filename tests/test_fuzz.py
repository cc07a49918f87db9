"""Fuzzing the loaders of untrusted input: only typed input errors (exit 2) may come out, never another exception.

Bounded (a few dozen examples each, no deadline) so the suite stays fast on two cores.
"""

from __future__ import annotations

import hashlib
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
from gate.inputs import candidate
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


def _expect_input_error(call: Any) -> None:
    try:
        call()
    except InputError as error:
        assert error.exit_code == 2
        assert "\n" not in error.one_line()


@FUZZ
@given(document=st.one_of(documents, policies))
def test_policy_loader_on_generated_documents(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    _expect_input_error(lambda: policy.load(path))


@FUZZ
@given(text=yaml_noise)
def test_policy_loader_on_generated_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    _expect_input_error(lambda: policy.load(path))


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

    def read() -> None:
        opened = open_review_set(root)
        for index in range(min(opened.size, 2)):
            opened.load_image(index)
            opened.load_mask(index)

    _expect_input_error(read)


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
    _expect_input_error(lambda: candidate.load(path))


@FUZZ
@given(data=st.binary(max_size=512), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"{", b"\x08\x00"]))
def test_candidate_loader_on_generated_bytes(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    path = tmp_path / "cand.pt"
    path.write_bytes(prefix + data)
    _expect_input_error(lambda: candidate.load(path))


# Found by test_candidate_loader_on_generated_payloads: `arch_kwargs or {}` took a tensor's truth value (exit 3).
@pytest.mark.parametrize("shape", [[0], [2]], ids=["empty", "two"])
def test_tensor_arch_kwargs_are_input_errors(tmp_path: Path, shape: list[int]) -> None:
    payload = {"format": "xgate.candidate/v1", "arch": "tiny_cnn", "classes": ["a", "b"], "input": {"size": [8, 8]},
               "arch_kwargs": torch.zeros(shape), "state_dict": {}}
    path = tmp_path / "cand.pt"
    torch.save(payload, path)
    with pytest.raises(InputError):
        candidate.load(path)
