"""Candidate checkpoints: xgate.candidate/v1 round trip, refused pickles, bare state_dicts, class matching."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from gate.errors import CandidateError
from gate.inputs import candidate, safe_import
from gate.inputs.archs import tiny_cnn
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from gate.inputs.review_set import ReviewSet
from tests.conftest import REPO, pinned_policy

CLASSES = ("circle", "square", "triangle")
KWARGS = {"num_classes": 3, "width": 4}


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return tiny_cnn(**KWARGS).eval()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def outputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(x)


def save_v1(path: Path, model: nn.Module, **overrides: object) -> Path:
    kwargs: dict[str, object] = {"arch": "tiny_cnn", "classes": CLASSES, "input_size": (16, 16),
                                 "arch_kwargs": KWARGS}
    kwargs.update(overrides)
    return candidate.save(path, model, **kwargs)  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path: Path, model: nn.Module, batch: torch.Tensor) -> None:
    path = save_v1(tmp_path / "sub" / "cand.pt", model, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                   meta={"recipe": "cutmix", "epochs": 3})
    loaded = candidate.load(path)
    assert torch.equal(outputs(loaded.model, batch), outputs(model, batch))
    assert loaded.classes == CLASSES
    assert loaded.input == InputSpec(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert loaded.arch == "tiny_cnn"
    assert loaded.target_layer == "features"
    assert dict(loaded.meta) == {"recipe": "cutmix", "epochs": 3}
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == candidate.sha256_file(path)
    assert loaded.name == "cand.pt"
    assert loaded.logit_order is None
    assert not loaded.model.training


def test_saved_checkpoint_loads_with_weights_only(tmp_path: Path, model: nn.Module) -> None:
    raw = torch.load(save_v1(tmp_path / "c.pt", model, target_layer="features.3"), weights_only=True)
    assert raw["format"] == "xgate.candidate/v1"
    assert raw["classes"] == list(CLASSES)
    assert raw["target_layer"] == "features.3"
    assert candidate.load(tmp_path / "c.pt").target_layer == "features.3"


def test_load_overrides(tmp_path: Path, model: nn.Module) -> None:
    path = save_v1(tmp_path / "c.pt", model)
    loaded = candidate.load(path, input_size=(32, 24), target_layer="features.0")
    assert loaded.input.size == (32, 24)
    assert loaded.target_layer == "features.0"


def test_unknown_target_layer_names_the_file_and_close_matches(tmp_path: Path, model: nn.Module) -> None:
    path = save_v1(tmp_path / "c.pt", model)
    with pytest.raises(CandidateError) as caught:
        candidate.load(path, target_layer="featurs")
    assert caught.value.field == "target_layer" and str(path) in str(caught.value)
    assert "close matches: features" in caught.value.message


def test_pickled_module_is_refused_without_trust(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(model, path)
    with pytest.raises(CandidateError) as info:
        candidate.load(path, classes=CLASSES)
    line = info.value.one_line()
    assert str(path) in line
    assert "--trust-pickle" in line
    assert "\n" not in line
    assert info.value.exit_code == 2


def test_pickled_module_loads_with_trust_and_classes(tmp_path: Path, model: nn.Module, batch: torch.Tensor) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(model, path)
    loaded = candidate.load(path, classes=CLASSES, input_size=(16, 16), trust_pickle=True)
    assert torch.equal(outputs(loaded.model, batch), outputs(model, batch))
    assert loaded.classes == CLASSES
    assert loaded.arch == "Sequential"
    assert loaded.target_layer == "features"


def test_pickled_module_without_classes_is_an_error(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(model, path)
    with pytest.raises(CandidateError) as info:
        candidate.load(path, trust_pickle=True)
    assert info.value.field == "classes"


@pytest.mark.parametrize("damage", ["random", "truncated", "missing"])
def test_corrupt_or_missing_checkpoint(tmp_path: Path, model: nn.Module, damage: str) -> None:
    path = save_v1(tmp_path / "c.pt", model)
    if damage == "random":
        path.write_bytes(bytes(range(256)) * 4)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:400])
    else:
        path.unlink()
    for trust in (False, True):
        with pytest.raises(CandidateError) as info:
            candidate.load(path, trust_pickle=trust)
        assert info.value.path == str(path)
        assert ("cannot read" if damage == "missing" else "corrupt") in info.value.message


def test_bare_state_dict_needs_arch_and_classes(tmp_path: Path, model: nn.Module, batch: torch.Tensor) -> None:
    path = tmp_path / "state.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == "state_dict" and "--arch" in info.value.message
    with pytest.raises(CandidateError):
        candidate.load(path, arch="tiny_cnn")  # classes still missing
    # tiny_cnn's default width is 16, this model's is 4: the arch must fit the weights.
    with pytest.raises(CandidateError) as info:
        candidate.load(path, arch="tiny_cnn", classes=CLASSES)
    assert info.value.field == "state_dict"


def test_bare_state_dict_loads_with_arch_and_classes(tmp_path: Path, batch: torch.Tensor) -> None:
    torch.manual_seed(3)
    model = tiny_cnn(3).eval()
    path = tmp_path / "state.pt"
    torch.save(model.state_dict(), path)
    loaded = candidate.load(path, arch="tiny_cnn", classes=list(CLASSES), input_size=(16, 16))
    assert torch.equal(outputs(loaded.model, batch), outputs(model, batch))
    assert loaded.classes == CLASSES and loaded.arch == "tiny_cnn"


@pytest.mark.parametrize("wrap", ["compile", "compile-over-ddp"])
def test_bare_state_dict_of_a_compiled_or_ddp_model_loads(tmp_path: Path, batch: torch.Tensor, wrap: str) -> None:
    torch.manual_seed(3)
    model = tiny_cnn(3).eval()
    # What a team saves from its training script: the wrapper's own state_dict (keys "_orig_mod.[module.]...").
    wrapped = torch.compile(model if wrap == "compile" else torch.nn.DataParallel(model))
    path = tmp_path / "state.pt"
    torch.save(wrapped.state_dict(), path)
    assert all(k.startswith("_orig_mod.") for k in torch.load(path, weights_only=True))
    loaded = candidate.load(path, arch="tiny_cnn", classes=list(CLASSES), input_size=(16, 16))
    assert torch.equal(outputs(loaded.model, batch), outputs(model, batch))


def test_unwrapped_state_strips_only_prefixes_every_key_carries() -> None:
    weight = torch.zeros(1)
    state, notes = candidate.unwrapped_state({"_orig_mod.module.a": weight, "_orig_mod.module.b.c": weight})
    assert list(state) == ["a", "b.c"]
    assert notes == ("removed the '_orig_mod.' prefix (torch.compile)",
                     "removed the 'module.' prefix (DataParallel/DDP)")
    mixed = {"module.a": weight, "head.b": weight}  # not every key: a real module named "module", left alone
    assert candidate.unwrapped_state(mixed) == (mixed, ())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"arch": "no_such_net"}, "arch"),
        ({"classes": ("circle", "circle", "square")}, "classes"),
        ({"target_layer": "features.99"}, "target_layer"),
        ({"arch_kwargs": {"num_classes": 4, "width": 4}}, "state_dict"),
    ],
    ids=["unknown-arch", "duplicate-classes", "missing-layer", "wrong-shape"],
)
def test_bad_v1_fields_name_file_and_field(
    tmp_path: Path, model: nn.Module, overrides: dict[str, object], field: str
) -> None:
    path = save_v1(tmp_path / "c.pt", model, **overrides)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.path == str(path)
    assert info.value.field == field


def test_other_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "something/v9", "weights": [1, 2]}, path)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == "format" and "something/v9" in info.value.message


@pytest.fixture
def loaded(tmp_path: Path, model: nn.Module) -> Candidate:
    return candidate.load(save_v1(tmp_path / "c.pt", model))


def test_class_permutation_reorders_logits(loaded: Candidate, batch: torch.Tensor) -> None:
    review_classes = ("triangle", "circle", "square")
    aligned = loaded.aligned_to(review_classes)
    assert aligned.classes == review_classes
    assert aligned.logit_order == (2, 0, 1)
    raw = outputs(loaded.model, batch)
    reordered = raw[:, list(aligned.logit_order)]
    for j, name in enumerate(review_classes):
        assert torch.equal(reordered[:, j], raw[:, CLASSES.index(name)])


def test_aligned_to_twice_keeps_the_order(loaded: Candidate) -> None:
    review_classes = ("triangle", "circle", "square")
    once = loaded.aligned_to(review_classes)
    twice = once.aligned_to(review_classes)
    assert twice.logit_order == (2, 0, 1)
    # A second, different permutation composes with the first: indices always point at the model's logits.
    other = once.aligned_to(("square", "triangle", "circle"))
    assert other.logit_order == (1, 2, 0)
    assert once.aligned_to(CLASSES).logit_order == (0, 1, 2)


def test_same_order_needs_no_remapping(loaded: Candidate) -> None:
    assert loaded.aligned_to(list(CLASSES)) is loaded


@pytest.mark.parametrize(
    "classes", [("circle", "square", "star"), ("circle", "square", "triangle", "cross"), ("cirkle", "square")]
)
def test_other_class_names_are_an_error(loaded: Candidate, classes: tuple[str, ...]) -> None:
    with pytest.raises(CandidateError) as info:
        loaded.aligned_to(classes)
    assert info.value.field == "classes"
    assert info.value.path == loaded.path
    assert "1 review-set class(es) not among the model's 3 outputs: missing [" in info.value.message


def test_a_subset_of_the_model_classes_keeps_every_output(loaded: Candidate) -> None:
    aligned = loaded.aligned_to(("square", "circle"))
    assert aligned.classes == ("square", "circle")
    assert aligned.logit_order == (1, 0)
    assert aligned.outputs == CLASSES  # the model's full width stays known (argmax and softmax use it all)
    again = aligned.aligned_to(("triangle",))
    assert again.logit_order == (2,) and again.outputs == CLASSES


def test_missing_class_message_is_bounded_with_close_matches(tmp_path: Path) -> None:
    names = tuple(f"class_{i:04d}" for i in range(1000))
    cand = Candidate(path="m.pt", sha256="", arch="x", model=nn.Identity(), classes=names,
                     input=InputSpec(size=(8, 8)), target_layer="")
    review = ("class_0001", "clas_0002", *(f"zebra{i}" for i in range(40)))
    with pytest.raises(CandidateError) as info:
        cand.aligned_to(review)
    message = info.value.one_line()
    assert message.startswith("m.pt: classes: 41 review-set class(es) not among the model's 1000 outputs: "
                              "missing ['clas_0002', 'zebra0', 'zebra1', 'zebra2', 'zebra3'] and 36 more; ")
    assert "; close names: 'clas_0002' ~ 'class_0002'" in message
    assert "'zebra4'" not in message
    assert len(message) < 400


USER_ARCH = '''
from torch import nn


def make(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, num_classes))
'''


@pytest.fixture
def user_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"xgate_cand_arch_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / "src"
    package.mkdir()
    (package / f"{name}.py").write_text(USER_ARCH)
    monkeypatch.syspath_prepend(str(package))
    yield f"{name}:make"
    sys.modules.pop(name, None)


def test_import_path_arch_round_trip(tmp_path: Path, user_arch: str, batch: torch.Tensor) -> None:
    torch.manual_seed(5)
    model = importlib.import_module(user_arch.partition(":")[0]).make(3)
    path = candidate.save(tmp_path / "u.pt", model, arch=user_arch, classes=CLASSES, input_size=(16, 16),
                          arch_kwargs={"num_classes": 3})
    with safe_import.allowing([user_arch.partition(":")[0]]):  # trusted side: the user allows the module
        loaded = candidate.load(path)
    assert loaded.arch == user_arch
    assert loaded.target_layer == "2"  # the last Conv2d: no known family layer
    assert torch.equal(outputs(loaded.model, batch), outputs(model, batch))


def _xgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "CI": "true", "PYTHONPATH": str(REPO)})


def _six_outputs(tmp_path: Path, names: tuple[str, ...]) -> Path:
    torch.manual_seed(2)
    return candidate.save(tmp_path / "six.pt", tiny_cnn(6, width=4), arch="tiny_cnn",
                          arch_kwargs={"num_classes": 6, "width": 4}, classes=names, input_size=(32, 32))


SHAPES = ("circle", "cross", "square", "triangle")


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("classes_fewer_than_outputs", ("six.pt: classes: --classes names 4 classes but the model has 6 outputs",)),
        ("bare_state_dict_wider", ("bare.pt: state_dict:", "with 4 outputs, one per --classes name",
                                   "size mismatch for fc.weight")),
        ("checkpoint_names_fewer", ("six.pt: classes: model gives 6 outputs but 5 class names",
                                    "never truncated")),
        ("not_a_subset", ("six.pt: classes: 1 review-set class(es) not among the model's 6 outputs: missing "
                          "['cross']; close names: 'cross' ~ 'crosss'",)),
    ],
)
def test_class_width_faults_exit_2_with_one_line(tmp_path: Path, small_set: ReviewSet, case: str,
                                                 needles: tuple[str, ...]) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    args: list[str] = []
    if case == "classes_fewer_than_outputs":
        path = _six_outputs(tmp_path, ("a", *SHAPES, "b"))
        args = ["--classes", ",".join(SHAPES)]
    elif case == "bare_state_dict_wider":
        path = tmp_path / "bare.pt"
        torch.save(tiny_cnn(6).state_dict(), path)
        args = ["--arch", "tiny_cnn", "--classes", ",".join(SHAPES)]
    elif case == "checkpoint_names_fewer":
        path = _six_outputs(tmp_path, ("a", *SHAPES))  # an inconsistent file: five names for six outputs
    else:
        path = _six_outputs(tmp_path, ("a", "circle", "crosss", "square", "triangle", "b"))
    result = _xgate("check", str(path), "--policy", str(policy), "--no-mlflow", "--out", str(tmp_path / "o"),
                    *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_review_set_of_some_of_the_model_classes_is_gated(tmp_path: Path, small_set: ReviewSet) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    path = _six_outputs(tmp_path, ("a", *SHAPES, "b"))
    result = _xgate("check", str(path), "--policy", str(policy), "--no-mlflow", "--out", str(tmp_path / "o"),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "o" / "result.json").read_text())["candidates"][0]["scores"]
    assert {k for k in scores if k.startswith("class_accuracy.")} == {f"class_accuracy.{c}" for c in SHAPES}


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        ({"size": [16, 16], "resize": 0}, "input.resize", "positive integer"),
        ({"size": [16, 16], "resize": 18.5}, "input.resize", "positive integer"),
        ({"size": [16, 16], "resize": 10**9}, "input.resize", "up to 8192"),
        ({"size": [16, 100_000]}, "input.size", "in 1..8192"),
        ({"size": [16, 16], "interpolation": "lanczos"}, "input.interpolation", "'bicubic', 'bilinear', 'nearest'"),
        ({"size": [16], "mean": [0.5] * 3}, "input.size", "list of 2 ints"),
        ({"size": [16, 16], "std": [0.2, 0.0, 0.2]}, "input.std", "std positive"),
        ({"size": [16, 16], "mean": [0.5, float("nan"), 0.5]}, "input.std", "finite"),
        ({"size": [16, 16], "crop": 14}, "input", "unknown key(s) ['crop']"),
        ([16, 16], "input", "must be a mapping"),
    ],
)
def test_bad_input_fields_are_refused_naming_the_field(tmp_path: Path, model: nn.Module, raw: object, field: str,
                                                        needle: str) -> None:
    path = save_v1(tmp_path / "c.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["input"] = raw
    torch.save(payload, path)
    with pytest.raises(CandidateError) as info:
        candidate.load(path)
    assert info.value.field == field and needle in info.value.message, info.value.one_line()


def test_input_round_trip_and_command_line_overrides(tmp_path: Path, model: nn.Module) -> None:
    path = save_v1(tmp_path / "c.pt", model, input_size=(14, 12), resize=16, interpolation="bicubic")
    payload = torch.load(path, weights_only=True)
    assert payload["input"] == {"size": [14, 12], "resize": 16, "interpolation": "bicubic",
                                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    loaded = candidate.load(path)
    assert loaded.input == InputSpec(size=(14, 12), resize=16, interpolation="bicubic")
    overridden = candidate.load(path, resize=20, interpolation="nearest", mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert overridden.input == InputSpec(size=(14, 12), resize=20, interpolation="nearest", mean=(0.1, 0.2, 0.3),
                                         std=(1.0, 1.0, 1.0))
    old_style = {k: v for k, v in payload["input"].items() if k in ("size", "mean", "std")}
    torch.save({**payload, "input": old_style}, path)  # a checkpoint from before resize/interpolation
    assert candidate.load(path).input == InputSpec(size=(14, 12))


def test_resize_without_a_size_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.pt"
    torch.save(tiny_cnn(len(CLASSES)).state_dict(), bare)
    with pytest.raises(CandidateError) as info:
        candidate.load(bare, arch="tiny_cnn", classes=CLASSES, resize=20)
    assert info.value.field == "input.resize" and "--input-size" in info.value.message


def test_classes_option_must_name_every_output_of_the_checkpoint(tmp_path: Path) -> None:
    path = _six_outputs(tmp_path, ("a", *SHAPES, "b"))
    with pytest.raises(CandidateError) as info:
        candidate.load(path, classes=SHAPES)
    assert info.value.field == "classes"
    assert "--classes names 4 classes but the model has 6 outputs" in info.value.message
    assert candidate.load(path, classes=("p", "q", "r", "s", "t", "u")).classes == ("p", "q", "r", "s", "t", "u")
