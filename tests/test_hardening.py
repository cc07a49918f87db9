"""The hardening corpus: checkpoints, review sets, policies, environment and CLI, each with its expected outcome.

Every case runs the real CLI in-process (``gate.cli.main``) in a fresh working tree whose output folder holds
an earlier run's "passed" outputs, and checks: the exit code; for exit 2 one line on stderr that names the file
and field, no traceback, and no output left in the folder (the earlier "passed" is gone); for exit 0/1 all
three outputs present and agreeing with the exit code; no temporary files; and for the cases whose checkpoint
names code to run, that the marker file the code would create does not exist.

docs/reliability.md carries the table of these cases; ``test_reliability_doc_lists_the_corpus`` keeps the two
equal (regenerate with ``python tests/test_hardening.py > /tmp/table.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RELIABILITY_DOC = REPO / "docs" / "reliability.md"
OUTPUTS = ("result.json", "report.html", "junit.xml")


# --- the workspace each case builds its inputs in ------------------------------------------------------------


@dataclass
class Workspace:
    """A working tree (cwd) with a pinned review set, a good candidate and a policy; files made on demand."""

    root: Path
    outside: Path  # a folder on sys.path but outside the working tree
    set_root: Path
    digest: str
    checkpoint: Path
    uid: str
    modules: list[str] = field(default_factory=list)

    @property
    def marker(self) -> Path:
        """The file code from a checkpoint would create: it must never exist."""
        return self.root.parent / f"pwned-{self.uid}"

    def payload(self) -> dict[str, Any]:
        """The good checkpoint's dict, to alter."""
        import torch

        return dict(torch.load(self.checkpoint, weights_only=True))

    def v1(self, name: str = "cand.pt", **changes: Any) -> Path:
        """A v1 checkpoint: the good one with ``changes`` applied (None removes a field)."""
        import torch

        payload = self.payload()
        for key, value in changes.items():
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        path = self.root / name
        torch.save(payload, path)
        return path

    def module(self, source: str, *, inside: bool = True, package: bool = False) -> str:
        """Write a module (or package) in the tree or outside it; returns its (unique) name."""
        name = f"xg_{self.uid}_{len(self.modules)}"
        folder = self.root if inside else self.outside
        if package:
            (folder / name).mkdir()
            (folder / name / "__init__.py").write_text(source)
            (folder / name / "sub.py").write_text("def make(**kwargs):\n    return None\n")
        else:
            (folder / f"{name}.py").write_text(source)
        self.modules.append(name)
        return name

    def policy(self, rules: str = "  - {score: accuracy, min: 0.0}\n", extra: str = "", *,
               set_path: Path | None = None, digest: str | None = "pinned", name: str = "policy.yaml") -> Path:
        """A policy pinned to the review set (``digest=None``: unpinned)."""
        pin = self.digest if digest == "pinned" else digest
        ref = f"{{path: {set_path or self.set_root}" + (f", digest: '{pin}'}}" if pin else "}")
        path = self.root / name
        path.write_text(f"name: p\nreview_set: {ref}\n{extra}rules:\n{rules}")
        return path

    def copy_set(self) -> Path:
        """A copy of the review set inside the working tree, to alter."""
        target = self.root / "set"
        shutil.copytree(self.set_root, target)
        return target

    def check(self, cand: Path | str | None = None, *extra: str, policy: Path | None = None) -> list[str]:
        """argv for ``xgate check``."""
        return ["check", str(cand or self.checkpoint), "--policy", str(policy or self.policy()),
                "--no-mlflow", "--device", "cpu", "--out", "out", *extra]


def repin(root: Path) -> str:
    """Rewrite SHA256SUMS for the files it lists (plus any new ones named) and return the new digest."""
    sums = root / "SHA256SUMS"
    names = [line.split("  ", 1)[1] for line in sums.read_text().splitlines() if line.strip()]
    lines = [f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}" for n in names if (root / n).is_file()]
    sums.write_text("\n".join(lines) + "\n")
    return "sha256:" + hashlib.sha256(sums.read_bytes()).hexdigest()


def altered_set(ws: Workspace, change: Callable[[Path], None], *, pin: bool = True) -> Path:
    """A copy of the review set changed by ``change``, re-pinned (``pin``) or not; returns a policy for it."""
    root = ws.copy_set()
    change(root)
    digest = repin(root) if pin else ws.digest
    return ws.policy(set_path=root, digest=digest)


# --- the corpus ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hardening case and its expected outcome."""

    id: str
    category: str
    what: str  # one line for docs/reliability.md
    build: Callable[[Workspace], list[str]]
    exit_code: int
    needles: tuple[str, ...] = ()  # in the stderr line (exit 2): the file and the field
    stale_ok: bool = False  # the error comes before any output path is known (click's option parser)
    code_ran_if_allowed: bool = False  # the marker may exist (an allowed module ran its code)
    stale_files: tuple[str, ...] = OUTPUTS  # the files in out/ that are this run's outputs
    before_engine: bool = False  # refused before the evaluation starts (no progress line)
    xfail: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the case


def _hf_folder(name: str, edit: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    """A tiny Hugging Face ViT folder (the review set's 4 classes, random weights), altered by ``edit``."""

    def build(ws: Workspace) -> list[str]:
        import transformers

        from gate.inputs import shapes

        labels = dict(enumerate(shapes.CLASSES))
        config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1,
                                        num_attention_heads=1, intermediate_size=8, id2label=labels,
                                        label2id={v: k for k, v in labels.items()})
        folder = ws.root / name
        transformers.ViTForImageClassification(config).save_pretrained(folder)
        transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
        edit(folder)
        return ws.check(folder)

    return build


def _json_edit(file: str, **changes: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        value = json.loads((folder / file).read_text())
        value.update(changes)
        (folder / file).write_text(json.dumps(value))

    return edit


def _pickled_weights(folder: Path) -> None:
    import torch

    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")


def _pwn_kwargs(ws: Workspace, arch: str) -> dict[str, Any]:
    # What an attacker would pass: each would create the marker if the callable ran.
    marker = str(ws.marker)
    return {
        "os:system": {"command": f"touch {marker}"},
        "subprocess:run": {"args": ["touch", marker]},
        "subprocess:Popen": {"args": ["touch", marker]},
        "builtins:exec": {"source": f"open({marker!r}, 'w')"},
        "runpy:run_path": {"path_name": str(ws.outside / "evil.py")},
        "importlib:import_module": {"name": "evil"},
        "pty:spawn": {"argv": ["touch", marker]},
        "shutil:copyfile": {"src": __file__, "dst": marker},
        "pathlib:Path": {},
        "torch.hub:load": {"repo_or_dir": str(ws.outside), "model": "evil", "source": "local"},
        "yaml:unsafe_load": {"stream": f"!!python/object/apply:os.system ['touch {marker}']"},
        "numpy:save": {"file": marker, "arr": [1]},
        "gate.cli:main": {"argv": ["review-set", "synth", "--bias", "0", "--n", "2", "--seed", "0", "-o", marker]},
    }.get(arch, {})


def _pwn(arch: str, *, baseline: bool = False) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        (ws.outside / "evil.py").write_text(f"open({str(ws.marker)!r}, 'w').close()\n")
        bad = ws.v1("evil.pt", arch=arch, arch_kwargs=_pwn_kwargs(ws, arch))
        if baseline:
            return [*ws.check(None, "--baseline", str(bad))]
        return ws.check(bad)
    return build


def _module_arch(source: str, attr: str, *, inside: bool, package: bool = False, allow: str = "",
                 policy_allow: bool = False) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        text = source.replace("MARKER", repr(str(ws.marker)))
        name = ws.module(text, inside=inside, package=package)
        arch = f"{name}.sub:{attr}" if package else f"{name}:{attr}"
        cand = ws.v1("mod.pt", arch=arch, arch_kwargs={"num_classes": 4})
        extra = ["--allow-arch-module", name] if allow == "cli" else []
        policy = ws.policy(extra=f"candidate: {{allow_modules: [{name}]}}\n") if policy_allow else None
        return ws.check(cand, *extra, policy=policy)
    return build


SIDE_EFFECT = "open(MARKER, 'w').close()  # runs at import\n"
GOOD_FACTORY = ("from gate.inputs.archs import tiny_cnn\n\n\n"
                "def make(num_classes=4):\n    return tiny_cnn(num_classes, width=12)\n")
REEXPORT = "from os import system  # a trusted module that imports a dangerous name\n"


def _tensor_kwargs(ws: Workspace) -> list[str]:
    import torch

    return ws.check(ws.v1("t.pt", arch_kwargs={"num_classes": torch.tensor(4), "width": 12}))


def _fault_model(forward: str, outputs: int = 4, probes: str = "") -> Callable[[Workspace], list[str]]:
    # A model from the tree whose forward misbehaves: its state_dict is made by running the same source here.
    def build(ws: Workspace) -> list[str]:
        source = ("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
                  "    def __init__(self, num_classes=4):\n        super().__init__()\n"
                  "        self.conv = nn.Conv2d(3, 4, 3, padding=1)\n        self.fc = nn.Linear(4, num_classes)\n\n"
                  "    def forward(self, x):\n        h = self.conv(x).mean((2, 3))\n"
                  f"        {forward}\n\n\ndef make(num_classes=4):\n    return Net(num_classes)\n")
        name = ws.module(source)
        namespace: dict[str, Any] = {}
        exec(compile(source, name, "exec"), namespace)  # the test's own source, to get a matching state_dict
        state = namespace["make"](outputs).state_dict()
        policy = ws.policy(extra=f"probes: [{probes}]\n") if probes else None
        return ws.check(ws.v1("fault.pt", arch=f"{name}:make", arch_kwargs={"num_classes": outputs}, state_dict=state,
                              target_layer="conv"), policy=policy)
    return build


def _more_outputs(ws: Workspace) -> list[str]:
    from gate.inputs import archs

    state = archs.tiny_cnn(5, width=12).state_dict()
    return ws.check(ws.v1("five.pt", arch_kwargs={"num_classes": 5, "width": 12}, state_dict=state))


def _pickled(ws: Workspace) -> list[str]:
    import torch

    from gate.inputs import archs

    torch.save(archs.tiny_cnn(4, width=12), ws.root / "pickled.pt")
    return ws.check(ws.root / "pickled.pt")


def _bytes(name: str, data: bytes) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        (ws.root / name).write_bytes(data)
        return ws.check(ws.root / name)
    return build


def _fifo(ws: Workspace) -> list[str]:
    os.mkfifo(ws.root / "fifo.pt")  # reading it would block forever
    return ws.check(ws.root / "fifo.pt")


def _big(ws: Workspace) -> list[str]:
    with open(ws.root / "big.pt", "wb") as handle:
        handle.truncate(3 * 1024 * 1024)  # sparse: 3 MB on paper, nothing on disk
    return ws.check(ws.root / "big.pt", "--max-checkpoint-mb", "2")


def _samples_row(image: str, mask: str = "") -> Callable[[Path], None]:
    def change(root: Path) -> None:
        lines = (root / "samples.csv").read_text().splitlines()
        first = lines[1].split(",")
        lines[1] = ",".join([first[0], image.replace("ROOT", str(root)), mask or first[2], *first[3:]])
        (root / "samples.csv").write_text("\n".join(lines) + "\n")
    return change


def _first_image(root: Path) -> Path:
    return root / (root / "samples.csv").read_text().splitlines()[1].split(",")[1]


def _tamper_image(root: Path) -> None:
    from PIL import Image

    image = _first_image(root)
    picture = Image.open(image).convert("RGB")
    picture.putpixel((0, 0), (255, 0, 255))  # one pixel changed, still a valid PNG
    picture.save(image)


def _bomb_image(root: Path) -> None:
    from PIL import Image

    Image.new("1", (8200, 8200)).save(_first_image(root))  # 67 MP in a few kilobytes


def _outside_link(root: Path) -> None:
    image = _first_image(root)
    outside = root.parent / "outside.png"
    shutil.copyfile(image, outside)
    image.unlink()
    image.symlink_to(outside)


def _thumbs(root: Path) -> None:
    image = _first_image(root)
    shutil.copyfile(image, root / "Thumbs.db")
    _samples_row("Thumbs.db")(root)


def _review_yaml(text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / "review.yaml").write_text(text)
    return change


REVIEW_HEAD = "format: xgate.review_set/v1\nname: small\nversion: '1'\n"
CLASSES = "classes: [circle, cross, square, triangle]\n"


def _set_case(change: Callable[[Path], None], *, pin: bool = True, extra: tuple[str, ...] = ()) -> Callable[
        [Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return ws.check(None, *extra, policy=altered_set(ws, change, pin=pin))
    return build


def _unpinned_changed(ws: Workspace) -> list[str]:
    # A set consistent with its own SHA256SUMS, but not the one the policy pins.
    root = ws.copy_set()
    _tamper_image(root)
    repin(root)
    return ws.check(None, "--allow-unpinned", policy=ws.policy(set_path=root))


def _policy_text(text: str, *, raw: bool = False) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        path = ws.root / "policy.yaml"
        if raw:
            path.write_text(text)
        else:
            ws.policy(text)
        return ws.check(None, policy=path)
    return build


def _policy_extra(extra: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return ws.check(None, policy=ws.policy(extra=extra))
    return build


def _policy_file(make: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        path = ws.root / "policy.yaml"
        make(path)
        return ws.check(None, policy=path)
    return build


def _deep_policy(path: Path) -> None:
    path.write_text("name: p\nreview_set: {path: x}\nrules: " + "[" * 20000 + "]" * 20000 + "\n")


def _huge_policy(path: Path) -> None:
    path.write_text("name: p\nreview_set: {path: x}\ndescription: '" + "x" * 300_000 + "'\nrules: []\n")


def _policy_rules_probes(rules: str, probes: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return ws.check(None, policy=ws.policy(rules, f"probes: [{probes}]\n"))
    return build


def _swaps_without_masks(ws: Workspace) -> list[str]:
    import csv

    root = ws.copy_set()
    with open(root / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["mask"] = row["void"] = ""
    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    rules = "  - {score: lighting.flip_rate, max: 1.0}\n  - {score: corners.accuracy, min: 0.0}\n"
    return ws.check(None, policy=ws.policy(rules, "probes: [border, corners, lighting]\n", set_path=root,
                                           digest=repin(root)))


def _no_masks_build(make: Callable[[Path], None], *extra: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        source = ws.root / "src"
        source.mkdir()
        make(source)
        return ["review-set", "build", str(source), "--no-masks", *extra, "-o", str(ws.root / "built")]
    return build


def _args(*extra: str, cand: bool = True) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return ws.check(None, *extra) if cand else list(extra)
    return build


def _out_blocked(option: str, where: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        (ws.root / "blocker").write_text("a file where a folder should be")
        return ws.check(None, option, where)
    return build


def _report_is_folder(ws: Workspace) -> list[str]:
    (ws.root / "out" / "report.html").unlink()
    (ws.root / "out" / "report.html").mkdir()
    return ws.check(None)


def _select_twice(ws: Workspace) -> list[str]:
    return ["select", str(ws.checkpoint), str(ws.checkpoint), "--policy", str(ws.policy()), "--no-mlflow",
            "--device", "cpu", "--out", "out"]


def _odd_repository(ws: Workspace) -> list[str]:
    """The candidate in a git repository whose folder name is a shell command (that must never run)."""
    folder = ws.root / f"odd dir; $(cd ..; touch {ws.marker.name}) -C 'x\"y"  # the marker, if a shell ran it
    folder.mkdir()
    shutil.copyfile(ws.checkpoint, folder / "good.pt")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "HOME": str(ws.root), "PATH": os.environ["PATH"]}
    for args in (["init", "-q"], ["add", "good.pt"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", "-C", str(folder), *args], check=True, env=env, capture_output=True)
    return ws.check(folder / "good.pt")


def _history(*extra: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return ["history", "--tracking-uri", f"sqlite:///{ws.root / 'mlflow.db'}", *extra]
    return build


SHA = "0123456789abcdef0123456789abcdef01234567"


def _tracking_down(*extra: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        argv = [a for a in ws.check(None) if a != "--no-mlflow"]
        return [*argv, "--tracking-uri", "http://127.0.0.1:9", *extra]
    return build


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"

CASES: tuple[Case, ...] = (
    # checkpoints: code named by the file never runs
    Case("arch-os-system", "checkpoint", "arch os:system with a shell command", _pwn("os:system"), 2,
         ("evil.pt", "arch", "standard library")),
    Case("arch-subprocess-run", "checkpoint", "arch subprocess:run", _pwn("subprocess:run"), 2, ("evil.pt", "arch")),
    Case("arch-subprocess-popen", "checkpoint", "arch subprocess:Popen", _pwn("subprocess:Popen"), 2,
         ("evil.pt", "arch")),
    Case("arch-builtins-exec", "checkpoint", "arch builtins:exec", _pwn("builtins:exec"), 2, ("evil.pt", "arch")),
    Case("arch-runpy", "checkpoint", "arch runpy:run_path of a script", _pwn("runpy:run_path"), 2,
         ("evil.pt", "arch")),
    Case("arch-import-module", "checkpoint", "arch importlib:import_module", _pwn("importlib:import_module"), 2,
         ("evil.pt", "arch")),
    Case("arch-pty", "checkpoint", "arch pty:spawn", _pwn("pty:spawn"), 2, ("evil.pt", "arch")),
    Case("arch-shutil", "checkpoint", "arch shutil:copyfile (writes a file)", _pwn("shutil:copyfile"), 2,
         ("evil.pt", "arch")),
    Case("arch-torch-hub", "checkpoint", "arch torch.hub:load (an installed package)", _pwn("torch.hub:load"), 2,
         ("evil.pt", "arch", "outside the working tree")),
    Case("arch-yaml-unsafe", "checkpoint", "arch yaml:unsafe_load (an installed package)", _pwn("yaml:unsafe_load"), 2,
         ("evil.pt", "arch")),
    Case("arch-numpy-save", "checkpoint", "arch numpy:save (an installed package)", _pwn("numpy:save"), 2,
         ("evil.pt", "arch")),
    Case("arch-xgate-cli", "checkpoint", "arch gate.cli:main (xgate itself)", _pwn("gate.cli:main"), 2,
         ("evil.pt", "arch", "xgate itself")),
    Case("arch-baseline-os-system", "checkpoint", "--baseline with arch os:system", _pwn("os:system", baseline=True),
         2, ("evil.pt", "arch")),
    Case("arch-outside-module", "checkpoint", "module outside the tree that runs code at import",
         _module_arch(SIDE_EFFECT, "make", inside=False), 2, ("mod.pt", "arch", "outside the working tree")),
    Case("arch-outside-package", "checkpoint", "package outside the tree (its __init__ runs code)",
         _module_arch(SIDE_EFFECT, "make", inside=False, package=True), 2, ("mod.pt", "arch")),
    Case("arch-reexported-system", "checkpoint", "tree module that imports os.system; arch names it",
         _module_arch(REEXPORT, "system", inside=True), 2, ("mod.pt", "arch", "defined in")),
    Case("arch-tree-module-fails", "checkpoint", "tree module that raises at import",
         _module_arch("raise RuntimeError('broken at import')\n", "make", inside=True), 2,
         ("mod.pt", "arch", "RuntimeError")),
    Case("arch-dunder", "checkpoint", "arch naming a dunder attribute", _module_arch(GOOD_FACTORY, "__loader__",
         inside=True), 2, ("mod.pt", "arch", "private")),
    Case("arch-tree-factory", "checkpoint", "factory from the working tree (allowed)",
         _module_arch(GOOD_FACTORY, "make", inside=True), 0),
    Case("arch-allowed-by-cli", "checkpoint", "outside module allowed with --allow-arch-module",
         _module_arch(GOOD_FACTORY + SIDE_EFFECT, "make", inside=False, allow="cli"), 0, code_ran_if_allowed=True),
    Case("arch-allowed-by-policy", "checkpoint", "outside module allowed by candidate.allow_modules",
         _module_arch(GOOD_FACTORY + SIDE_EFFECT, "make", inside=False, policy_allow=True), 0,
         code_ran_if_allowed=True),
    Case("arch-malformed", "checkpoint", "arch 'a:b:c'", lambda ws: ws.check(ws.v1("m.pt", arch="a:b:c")), 2,
         ("m.pt", "arch")),
    Case("kwargs-tensor", "checkpoint", "arch_kwargs holding a tensor", _tensor_kwargs, 2, ("t.pt", "arch_kwargs")),
    Case("kwargs-nan", "checkpoint", "arch_kwargs holding NaN",
         lambda ws: ws.check(ws.v1("n.pt", arch_kwargs={"num_classes": 4, "width": float("nan")})), 2,
         ("n.pt", "arch_kwargs")),
    Case("kwargs-weights-download", "checkpoint", "torchvision arch asking for pretrained weights",
         lambda ws: ws.check(ws.v1("w.pt", arch="resnet18", arch_kwargs={"weights": "IMAGENET1K_V1"})), 2,
         ("w.pt", "arch_kwargs.weights")),
    Case("timm-pretrained", "checkpoint", "timm arch asking for pretrained weights",
         lambda ws: ws.check(ws.v1("t.pt", arch="timm:resnet10t", arch_kwargs={"pretrained": True})), 2,
         ("t.pt", "arch_kwargs.pretrained")),
    Case("timm-checkpoint-path", "checkpoint", "timm arch loading a checkpoint_path of its own",
         lambda ws: ws.check(ws.v1("t.pt", arch="timm:resnet10t", arch_kwargs={"checkpoint_path": "/etc/passwd"})),
         2, ("t.pt", "arch_kwargs.checkpoint_path")),
    Case("timm-unknown-name", "checkpoint", "timm arch with a name timm does not know",
         lambda ws: ws.check(ws.v1("t.pt", arch="timm:no_such_net")), 2, ("t.pt", "arch", "timm has no model")),
    Case("input-pipeline-unknown", "checkpoint", "input.pipeline naming no known pipeline",
         lambda ws: ws.check(ws.v1("p.pt", input={"size": [64, 64], "pipeline": "opencv"})), 2,
         ("p.pt", "input.pipeline")),
    Case("hf-packed-auto-map", "checkpoint", "packed Hugging Face arch whose config names custom code",
         lambda ws: ws.check(ws.v1("h.pt", arch="transformers:ViTForImageClassification", arch_kwargs={
             "config": {"model_type": "vit", "auto_map": {"AutoModel": "evil.Model"}}})), 2, ("h.pt", "auto_map")),
    Case("hf-auto-map", "checkpoint", "Hugging Face folder whose config.json names custom code (auto_map)",
         _hf_folder("custom", _json_edit("config.json", auto_map={"AutoModelForImageClassification": "m.Evil"})),
         2, ("config.json", "auto_map")),
    Case("hf-pickled-weights", "checkpoint", "Hugging Face folder with only pytorch_model.bin",
         _hf_folder("pickled", _pickled_weights), 2, ("pytorch_model.bin", "weights")),
    Case("hf-hub-id", "checkpoint", "a hub id instead of a folder", lambda ws: ws.check("google/vit-base-patch16-224"),
         2, ("google/vit-base-patch16-224", "download")),
    Case("hf-no-processor", "checkpoint", "Hugging Face folder without preprocessor_config.json",
         _hf_folder("noproc", lambda folder: (folder / "preprocessor_config.json").unlink()), 2,
         ("preprocessor_config.json",)),
    Case("hf-id2label-width", "checkpoint", "Hugging Face folder whose id2label disagrees with the head's width",
         _hf_folder("wide", _json_edit("config.json", id2label={str(i): f"c{i}" for i in range(6)})), 2,
         ("config.json", "id2label", "head")),
    Case("hf-processor-bgr", "checkpoint", "Hugging Face image processor flipping channels to BGR",
         _hf_folder("bgr", _json_edit("preprocessor_config.json", do_flip_channel_order=True)), 2,
         ("preprocessor_config.json", "do_flip_channel_order")),
    Case("hf-config-not-json", "checkpoint", "Hugging Face folder whose config.json is not JSON",
         _hf_folder("garbled", lambda folder: (folder / "config.json").write_text("{not json")), 2,
         ("config.json",)),
    Case("hf-folder-allowed", "checkpoint", "a good Hugging Face folder (the review set's classes)",
         _hf_folder("good", lambda folder: None), 0),
    Case("pickled-module", "checkpoint", "pickled nn.Module without --trust-pickle", _pickled, 2,
         ("pickled.pt", "--trust-pickle")),
    Case("garbage-bytes", "checkpoint", "random bytes", _bytes("garbage.pt", os.urandom(4096)), 2, ("garbage.pt",)),
    Case("empty-file", "checkpoint", "empty file", _bytes("empty.pt", b""), 2, ("empty.pt",)),
    Case("fifo", "checkpoint", "a FIFO (would block forever)", _fifo, 2, ("fifo.pt", "regular file")),
    Case("over-size-limit", "checkpoint", "3 MB file with --max-checkpoint-mb 2", _big, 2,
         ("big.pt", "size", "--max-checkpoint-mb")),
    Case("missing-file", "checkpoint", "checkpoint path that does not exist",
         lambda ws: ws.check(ws.root / "nope.pt"), 2, ("nope.pt",)),
    Case("folder", "checkpoint", "checkpoint path is a folder", lambda ws: ws.check(ws.root), 2, ("regular file",)),
    Case("wrong-format", "checkpoint", "format field of another tool",
         lambda ws: ws.check(ws.v1("f.pt", format="other/v9")), 2, ("f.pt", "format")),
    Case("class-mismatch", "checkpoint", "class names not the review set's",
         lambda ws: ws.check(ws.v1("c.pt", classes=["a", "b", "c", "d"])), 2, ("c.pt", "classes")),
    Case("duplicate-classes", "checkpoint", "duplicate class names",
         lambda ws: ws.check(ws.v1("d.pt", classes=["circle", "circle", "square", "triangle"])), 2,
         ("d.pt", "classes")),
    Case("state-dict-mismatch", "checkpoint", "state_dict of another width",
         lambda ws: ws.check(ws.v1("s.pt", arch_kwargs={"num_classes": 4, "width": 8})), 2, ("s.pt", "state_dict")),
    Case("more-outputs-than-classes", "checkpoint", "5 outputs, 4 class names", _more_outputs, 2,
         ("five.pt",)),
    Case("forward-raises", "checkpoint", "forward raises", _fault_model("raise RuntimeError('boom')"), 2,
         ("fault.pt",)),
    Case("output-1d", "checkpoint", "forward returns a 1-D tensor", _fault_model("return self.fc(h).sum(1)"), 2,
         ("fault.pt",)),
    Case("output-tuple", "checkpoint", "forward returns a tuple", _fault_model("return (self.fc(h), h)"), 2,
         ("fault.pt",)),
    Case("output-nan", "checkpoint", "forward returns NaN", _fault_model("return self.fc(h) * float('nan')"), 2,
         ("fault.pt",)),
    Case("output-inf", "checkpoint", "forward returns +inf logits", _fault_model("return self.fc(h) + float('inf')"),
         2, ("fault.pt",)),
    Case("output-nan-on-probe-variant", "checkpoint", "NaN only where the scene is flat (the only-FG probe)",
         _fault_model("out = self.fc(h)\n        flat = x[:, :, :4, :4].flatten(1).std(1) < 1e-6\n"
                      "        return torch.where(flat[:, None], out * float('nan'), out)", probes="background"), 2,
         ("fault.pt", "variant")),
    # review sets: the pin covers everything read
    Case("set-tampered-image", "review_set", "one image byte changed, digest pinned",
         _set_case(_tamper_image, pin=False), 2, ("set",)),
    Case("set-absolute-path", "review_set", "samples.csv row with an absolute path (re-pinned)",
         _set_case(_samples_row("ROOT/images/x.png")), 2, ("samples.csv",)),
    Case("set-dotdot-path", "review_set", "samples.csv row with ../ (re-pinned)",
         _set_case(_samples_row("../outside.png")), 2, ("samples.csv",)),
    Case("set-symlink-outside", "review_set", "image is a symlink to a file outside the folder",
         _set_case(_outside_link, pin=False), 2, ("set",)),
    Case("set-thumbs-db", "review_set", "a sample named Thumbs.db (ignored by the checksum check)",
         _set_case(_thumbs), 2, ("Thumbs.db",)),
    Case("set-decompression-bomb", "review_set", "a 67-megapixel PNG of a few kilobytes (re-pinned)",
         _set_case(_bomb_image), 2, ("png",)),
    Case("set-yaml-duplicate-key", "review_set", "review.yaml with classes twice (re-pinned)",
         _set_case(_review_yaml(REVIEW_HEAD + CLASSES + CLASSES)), 2, ("review.yaml", "classes", "duplicate")),
    Case("set-yaml-alias-bomb", "review_set", "review.yaml alias bomb (re-pinned)",
         _set_case(_review_yaml(REVIEW_HEAD + CLASSES + ALIAS_BOMB)), 2, ("review.yaml", "anchors")),
    Case("set-yaml-deep", "review_set", "review.yaml nested 20,000 deep (re-pinned)",
         _set_case(_review_yaml(REVIEW_HEAD + CLASSES + "x: " + "[" * 20000 + "]" * 20000 + "\n")), 2,
         ("review.yaml", "nested")),
    Case("set-yaml-huge", "review_set", "review.yaml of 300 KB (re-pinned)",
         _set_case(_review_yaml(REVIEW_HEAD + CLASSES + "description: '" + "x" * 300_000 + "'\n")), 2,
         ("review.yaml", "size")),
    Case("set-no-sums", "review_set", "SHA256SUMS removed",
         _set_case(lambda root: (root / "SHA256SUMS").unlink(), pin=False), 2, ("SHA256SUMS",)),
    Case("set-missing", "review_set", "review set folder does not exist",
         lambda ws: ws.check(None, policy=ws.policy(set_path=ws.root / "nowhere")), 2, ("nowhere",)),
    Case("set-unpinned-refused", "review_set", "policy without a digest",
         lambda ws: ws.check(None, policy=ws.policy(digest=None)), 2, ("policy.yaml", "review_set.digest")),
    Case("set-unpinned-allowed", "review_set", "changed set with --allow-unpinned (marked pinned: false)",
         _unpinned_changed, 0),
    # policies: strict data
    Case("policy-duplicate-key", "policy", "rule with min twice",
         _policy_text("  - {score: accuracy, min: 0.99, min: 0.10}\n"), 2,
         ("policy.yaml", "rules[0].min", "duplicate")),
    Case("policy-duplicate-rules", "policy", "a second rules: block",
         _policy_file(lambda p: p.write_text("name: p\nreview_set: {path: x}\nrules: [{score: accuracy, min: 0.9}]\n"
                                             "rules: [{score: accuracy, min: 0.1}]\n")), 2,
         ("policy.yaml", "rules", "duplicate")),
    Case("policy-alias", "policy", "YAML anchors and aliases",
         _policy_file(lambda p: p.write_text("name: p\nreview_set: {path: x}\nr: &r {score: accuracy, min: 0.1}\n"
                                             "rules: [*r]\n")), 2, ("policy.yaml", "anchors")),
    Case("policy-merge-key", "policy", "YAML merge key overriding a threshold",
         _policy_text("  - {<<: {score: accuracy, min: 0.9}, min: 0.1}\n"), 2, ("policy.yaml", "merge")),
    Case("policy-deep", "policy", "policy nested 20,000 deep", _policy_file(_deep_policy), 2,
         ("policy.yaml", "nested")),
    Case("policy-huge", "policy", "policy of 300 KB", _policy_file(_huge_policy), 2, ("policy.yaml", "size")),
    Case("policy-nan", "policy", "min: .nan", _policy_text("  - {score: accuracy, min: .nan}\n"), 2,
         ("policy.yaml", "rules[0].min", "finite")),
    Case("policy-inf", "policy", "max: .inf", _policy_text("  - {score: nll, max: .inf}\n"), 2,
         ("policy.yaml", "rules[0].max", "finite")),
    Case("policy-negative-min", "policy", "accuracy min: -5",
         _policy_text("  - {score: accuracy, min: -5}\n"), 2, ("policy.yaml", "rules[0].min", "range")),
    Case("policy-ece-7", "policy", "ece max: 7", _policy_text("  - {score: ece, max: 7}\n"), 2,
         ("policy.yaml", "rules[0].max", "range")),
    Case("policy-max-drop-2", "policy", "vs_baseline max_drop: 2 on accuracy",
         _policy_text("  - {score: accuracy, vs_baseline: {max_drop: 2}}\n"), 2, ("policy.yaml", "rules[0]")),
    Case("policy-unknown-score", "policy", "unknown score name",
         _policy_text("  - {score: acuracy, min: 0.9}\n"), 2, ("policy.yaml", "rules[0].score")),
    Case("policy-unknown-key", "policy", "misspelt key", _policy_text("  - {score: accuracy, mni: 0.9}\n"), 2,
         ("policy.yaml", "rules[0].mni")),
    Case("policy-bool-threshold", "policy", "min: true", _policy_text("  - {score: accuracy, min: true}\n"), 2,
         ("policy.yaml", "rules[0].min")),
    Case("policy-string-threshold", "policy", "min: '0.9'", _policy_text("  - {score: accuracy, min: '0.9'}\n"), 2,
         ("policy.yaml", "rules[0].min")),
    Case("policy-python-tag", "policy", "!!python/object/apply tag",
         _policy_file(lambda p: p.write_text("name: !!python/object/apply:os.system ['true']\n")), 2,
         ("policy.yaml", "YAML")),
    Case("policy-not-mapping", "policy", "a YAML list", _policy_file(lambda p: p.write_text("- a\n- b\n")), 2,
         ("policy.yaml", "mapping")),
    Case("policy-empty", "policy", "empty file", _policy_file(lambda p: p.write_text("")), 2,
         ("policy.yaml", "mapping")),
    Case("policy-binary", "policy", "binary bytes", _policy_file(lambda p: p.write_bytes(b"\x00\xff\xfe" * 100)), 2,
         ("policy.yaml",)),
    Case("policy-folder", "policy", "policy path is a folder", _policy_file(lambda p: p.mkdir()), 2,
         ("policy.yaml", "regular file")),
    Case("policy-bad-allow-module", "policy", "candidate.allow_modules with a non-module name",
         _policy_extra("candidate: {allow_modules: ['os; rm -rf']}\n"), 2, ("policy.yaml", "allow_modules")),
    Case("policy-unknown-swap-probe", "policy", "probes: [borders] (misspelt swap probe)",
         _policy_extra("probes: [borders]\n"), 2, ("policy.yaml", "probes")),
    Case("policy-swap-score-without-probe", "policy", "corners.flip_rate rule with probes: [border] only",
         _policy_rules_probes("  - {score: corners.flip_rate, max: 0.5}\n", "border"), 2, ("policy.yaml", "probes")),
    Case("policy-swap-drop-out-of-range", "policy", "lighting.accuracy_drop max: 2",
         _policy_rules_probes("  - {score: lighting.accuracy_drop, max: 2}\n", "lighting"), 2,
         ("policy.yaml", "lighting.accuracy_drop")),
    Case("policy-swap-probes-on-a-set-without-masks", "policy", "the three swap probes on a set with no mask",
         _swaps_without_masks, 0),
    # environment: outputs and tracking
    Case("out-under-a-file", "environment", "--out inside a file", _out_blocked("--out", "blocker/out"), 2,
         ("blocker", "report"), stale_ok=True, before_engine=True),
    Case("report-under-a-file", "environment", "--report inside a file (the other outputs' old files removed)",
         _out_blocked("--report", "blocker/report.html"), 2, ("blocker", "report"),
         stale_files=("result.json", "junit.xml"), before_engine=True),
    Case("report-is-folder", "environment", "report.html is a folder", _report_is_folder, 2, ("report.html", "report",
         "folder"), before_engine=True),
    Case("json-equals-report", "environment", "--json and --report the same file",
         _args("--json", "same.out", "--report", "same.out"), 2, ("same.out", "same file"),
         stale_files=("junit.xml",), before_engine=True),
    Case("frame-cache-under-a-file", "environment", "--frame-cache inside a file",
         _out_blocked("--frame-cache", "blocker/frames"), 2, ("blocker", "--frame-cache")),
    Case("tracking-unreachable", "environment", "MLflow server unreachable: verdict kept, entry outboxed",
         _tracking_down(), 0),
    Case("tracking-required", "environment", "--require-tracking with the server unreachable",
         _tracking_down("--require-tracking"), 2, ("MLflow", "xgate sync"), stale_ok=True),
    # environment: the commit gated (CI variables, the candidate's repository)
    Case("github-sha-not-hex", "environment", "$GITHUB_SHA is a word, not a commit", _args(), 2, ("GITHUB_SHA",),
         before_engine=True, env=(("GITHUB_SHA", "main"),)),
    Case("github-sha-newline", "environment", "$GITHUB_SHA with a newline after the SHA", _args(), 2,
         ("GITHUB_SHA",), before_engine=True, env=(("GITHUB_SHA", SHA + "\n"),)),
    Case("github-ref-newline", "environment", "$GITHUB_REF_NAME with a newline and a workflow command", _args(), 2,
         ("GITHUB_REF_NAME",), before_engine=True,
         env=(("GITHUB_SHA", SHA), ("GITHUB_REF_NAME", "main\n::error::forged"))),
    Case("repository-odd-path", "environment", "candidate in a git repository whose folder name is a shell "
         "command", _odd_repository, 0),
    # command line
    Case("cli-unknown-option", "cli", "unknown option", _args("--frobnicate"), 2, ("--frobnicate",), stale_ok=True),
    Case("cli-batch-size-0", "cli", "--batch-size 0", _args("--batch-size", "0"), 2, ("--batch-size",),
         stale_ok=True),
    Case("cli-max-checkpoint-0", "cli", "--max-checkpoint-mb 0", _args("--max-checkpoint-mb", "0"), 2,
         ("--max-checkpoint-mb",), stale_ok=True),
    Case("cli-bad-allow-module", "cli", "--allow-arch-module with a non-module name",
         _args("--allow-arch-module", "os;x"), 2, ("allow-arch-module",)),
    Case("cli-bad-input-size", "cli", "--input-size a,b", _args("--input-size", "a,b"), 2, ("--input-size",),
         stale_ok=True),
    Case("cli-select-same-file", "cli", "select with one file given twice", _select_twice, 2, ("given twice",)),
    Case("cli-no-policy", "cli", "check without --policy", _args("check", "x.pt", cand=False), 2, ("--policy",),
         stale_ok=True),
    Case("cli-no-masks-flat-folder", "cli", "review-set build --no-masks of a folder with no class subfolder",
         _no_masks_build(lambda root: (root / "a.png").write_bytes(b"x")), 2, ("src", "no images found"),
         stale_ok=True),
    Case("cli-no-masks-with-voc", "cli", "review-set build --no-masks --voc",
         _no_masks_build(lambda root: None, "--voc"), 2, ("src", "--voc"), stale_ok=True),
    Case("cli-no-masks-without-source", "cli", "review-set build --no-masks with --coco instead of a folder",
         _args("review-set", "build", "--no-masks", "--coco", "x.json", "--images", ".", "-o", "o", cand=False), 2,
         ("--no-masks",), stale_ok=True),
    Case("history-commit-not-hex", "cli", "history --commit with a quote and SQL", _history("--commit", "1a2b' OR 1=1"),
         2, ("--commit",), stale_ok=True),
    Case("history-commit-like", "cli", "history --commit with LIKE wildcards", _history("--commit", "%_"), 2,
         ("--commit",), stale_ok=True),
    Case("history-commit-short", "cli", "history --commit with 3 hex digits", _history("--commit", "abc"), 2,
         ("--commit",), stale_ok=True),
)


# --- running a case ---------------------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, small_set: Any, untrained_checkpoint: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A fresh working tree (cwd) whose out/ holds an earlier run's "passed" outputs."""
    root, outside = tmp_path / "work", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copyfile(untrained_checkpoint, root / "good.pt")
    ws = Workspace(root=root, outside=outside, set_root=Path(small_set.root), digest=small_set.digest,
                   checkpoint=root / "good.pt", uid=uuid.uuid4().hex[:8])
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(outside))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (root / "out").mkdir()
    for name in OUTPUTS:  # an earlier run that passed
        (root / "out" / name).write_text('{"verdict": "passed"}' if name == "result.json" else "passed")
    yield ws
    for name in ws.modules:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``xgate argv`` in-process; returns (exit code, stdout, stderr)."""
    from gate.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def check_outcome(case: Case, ws: Workspace, code: int, out: str, err: str) -> None:
    """Every property a case must have, whatever its category."""
    assert code == case.exit_code, f"exit {code}, expected {case.exit_code}: {err or out}"
    assert "Traceback" not in err and "Traceback" not in out
    if not case.code_ran_if_allowed:
        assert not ws.marker.exists(), "code named by the checkpoint ran"
    assert not list(ws.root.rglob(".*.tmp")), "temporary output files left behind"
    folder = ws.root / "out"
    if case.before_engine:
        assert "gating" not in err, "the evaluation ran before the error was found"
    if code == 2:
        lines = [line for line in err.strip().splitlines() if line.startswith("xgate: error")]
        assert len(lines) == 1 and err.strip().endswith(lines[0]), err  # progress lines may come before it
        for needle in case.needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        if not case.stale_ok:
            assert not any((folder / name).is_file() for name in case.stale_files), "an earlier result survived"
    else:
        assert all((folder / name).is_file() for name in OUTPUTS)
        verdict = json.loads((folder / "result.json").read_text())["verdict"]
        assert verdict == ("passed" if code == 0 else "failed")


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_corpus_case(case: Case, workspace: Workspace, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    argv = case.build(workspace)
    code, out, err = run_cli(argv, capsys)
    check_outcome(case, workspace, code, out, err)


# --- properties beyond one case ---------------------------------------------------------------------------------


def test_the_corpus_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} == {"checkpoint", "review_set", "policy", "environment", "cli"}
    assert not [c for c in CASES if c.exit_code == 3]  # bad input is never an internal error


def test_an_unpinned_run_is_marked_in_result_json_and_console(workspace: Workspace,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(_unpinned_changed(workspace), capsys)
    assert code == 0
    document = json.loads((workspace.root / "out" / "result.json").read_text())
    assert document["review_set"]["pinned"] is False
    assert "UNPINNED" in out
    code, out, _ = run_cli(workspace.check(None), capsys)
    assert json.loads((workspace.root / "out" / "result.json").read_text())["review_set"]["pinned"] is True
    assert "UNPINNED" not in out


def test_the_policy_digest_is_enforced(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    # Kills the mutation "run.py ignores the policy's pinned digest": a wrong pin must stop the gate.
    wrong = "sha256:" + "0" * 64
    code, _, err = run_cli(workspace.check(None, policy=workspace.policy(digest=wrong)), capsys)
    assert code == 2 and "does not match the pinned" in err


def test_a_digest_prefix_is_not_a_match(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    # Kills "the digest compared on a prefix": the first 16 hex digits of the right digest are not the digest.
    code, _, err = run_cli(workspace.check(None, policy=workspace.policy(digest=workspace.digest[:23])), capsys)
    assert code == 2 and "digest" in err


def test_the_seed_reaches_the_engine(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    # Kills "--seed not reaching the engine": the sanity probe's randomised copies are re-initialised under
    # seeds derived from --seed, so their map similarity moves with the seed and comes back with it.
    policy = workspace.policy("  - {score: accuracy, min: 0.0}\n", "probes: [sanity]\n")
    values = []
    for seed in ("0", "1", "0"):
        code, _, err = run_cli(workspace.check(None, "--seed", seed, policy=policy), capsys)
        assert code == 0, err
        document = json.loads((workspace.root / "out" / "result.json").read_text())
        assert document["environment"]["seed"] == seed
        values.append(document["candidates"][0]["scores"]["sanity.randomization_similarity"])
    assert values[0] == values[2]
    assert values[0] != values[1]


def test_two_identical_runs_give_identical_results_apart_from_times(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    documents = []
    for _ in range(2):
        code, _, err = run_cli(workspace.check(None), capsys)
        assert code == 0, err
        document = json.loads((workspace.root / "out" / "result.json").read_text())
        for key in ("created", "timings"):
            document.pop(key)
        for entry in document["candidates"]:
            entry.pop("timings")
        documents.append(document)
    assert documents[0] == documents[1]


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")],
                         ids=["sigterm", "sigint"])
def test_a_signal_mid_evaluation_exits_cleanly_and_leaves_no_result(
        workspace: Workspace, signum: int, code: int, name: str) -> None:
    policy = workspace.policy("  - {score: accuracy, min: 0.0}\n", "probes: [background, sanity]\n")
    argv = [sys.executable, "-m", "gate", *workspace.check(None, "--batch-size", "4", policy=policy)]
    env = {"PATH": "/usr/bin:/bin", "CI": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # A background job's children inherit SIGINT ignored (and Python then never raises KeyboardInterrupt):
    # give the gate the default disposition a terminal or a CI runner gives it.
    proc = subprocess.Popen(argv, cwd=workspace.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the engine reports progress in CI: signal once it has started
        seen.append(line)
        if "gating" in line:
            proc.send_signal(signum)
            break
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"xgate: interrupted ({name})")
    assert not any((workspace.root / "out" / n).exists() for n in OUTPUTS)  # the earlier "passed" is gone too
    assert not list(workspace.root.rglob(".*.tmp"))


def test_an_internal_error_exits_3_with_one_line(workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from gate.engine import core as engine

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(engine, "run", broken)
    code, _, err = run_cli(workspace.check(None), capsys)
    assert code == 3
    assert err.strip().splitlines()[-1].startswith("xgate: internal error: ZeroDivisionError: a bug")
    assert "Traceback" not in err
    assert not any((workspace.root / "out" / n).exists() for n in OUTPUTS)


def test_review_set_synth_verify_and_a_tampered_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The review-set commands through the CLI: synth pins a set, verify prints the same digest, a changed
    # file is exit 2 naming it.
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["review-set", "synth", "--bias", "0.5", "--n", "4", "--seed", "3", "--size", "16",
                              "-o", "s"], capsys)
    assert code == 0, err
    digest = out.split("digest ")[1].strip()
    code, out, err = run_cli(["review-set", "verify", "s", "--digest", digest], capsys)
    assert code == 0 and f"digest {digest}" in out and "OK" in out
    image = sorted((tmp_path / "s" / "images").rglob("*.png"))[0]
    image.write_bytes(image.read_bytes() + b"\0")
    code, _, err = run_cli(["review-set", "verify", "s"], capsys)
    assert code == 2 and image.name in err and "Traceback" not in err


def test_sync_with_an_empty_outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["sync", "--tracking-uri", "http://127.0.0.1:9"], capsys)
    assert code == 0 and "uploaded 0 run(s)" in out


# --- docs/reliability.md -----------------------------------------------------------------------------------------

TABLE_START, TABLE_END = "<!-- corpus:start -->", "<!-- corpus:end -->"


def corpus_table() -> str:
    """The markdown table of the corpus, as docs/reliability.md carries it."""
    lines = ["| category | case | input | expected |", "|---|---|---|---|"]
    for case in sorted(CASES, key=lambda c: c.category):
        expected = {0: "exit 0, all three outputs", 1: "exit 1, all three outputs"}.get(case.exit_code, "")
        if case.exit_code == 2:
            expected = "exit 2, one line naming " + ", ".join(f"`{n}`" for n in case.needles) if case.needles else (
                "exit 2, one line")
        lines.append(f"| {case.category} | `{case.id}` | {case.what} | {expected} |")
    counts = {}
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return "\n".join([f"{len(CASES)} cases ({summary}).", "", *lines])


def test_reliability_doc_lists_the_corpus() -> None:
    text = RELIABILITY_DOC.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == corpus_table(), "docs/reliability.md is stale: python tests/test_hardening.py prints the table"


if __name__ == "__main__":
    print(corpus_table())
