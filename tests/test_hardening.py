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

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
    env: tuple[tuple[str, str], ...] = ()  # environment variables set for the case ("ROOT": the working tree)
    after: Callable[[Workspace], None] | None = None  # more checks once the run is over (an input kept, ...)
    quiet: bool = False  # exit 2: the error line is all of stderr (no warnings before it)
    out_needles: tuple[str, ...] = ()  # in stdout or stderr, whatever the exit code (a note, a warning)


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
    Case("hf-processor-huge-size", "checkpoint", "Hugging Face image processor asking for 5000x5000 inputs",
         _hf_folder("huge", _json_edit("preprocessor_config.json", size={"height": 5000, "width": 5000})), 2,
         ("preprocessor_config.json", "size", "--max-input-side")),
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


# --- round two (issue 21): arguments, outputs, the frame cache, allowed modules ---------------------------------


def _copy_named(name: str) -> Callable[[Workspace], list[str]]:
    # A good checkpoint under a hostile name, after `--`: a candidate, never an option.
    def build(ws: Workspace) -> list[str]:
        shutil.copyfile(ws.checkpoint, ws.root / name)
        argv = ws.check(None)
        return [*argv[:1], *argv[2:], "--", name]
    return build


def _output_on_input(option: str, which: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        target = "good.pt" if which == "candidate" else "policy.yaml"
        return ws.check(None, option, target)
    return build


def _inputs_kept(ws: Workspace) -> None:
    assert (ws.root / "good.pt").is_file() and (ws.root / "policy.yaml").is_file(), "an input was deleted"


FOREIGN = (".tmp-unrelated-folder", ".tmp-" + "0" * 32 + "-1-abcdef12", "0" * 32)


def _foreign_cache_folders(ws: Workspace) -> list[str]:
    # Folders the frame cache did not make, two days old: one named as its own are, but without its marker.
    for name in FOREIGN:
        folder = ws.root / "cache" / name
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("not the cache's")
        old = folder.stat().st_mtime - 2 * 86400
        for path in (folder / "keep.txt", folder):
            os.utime(path, (old, old))
    return ws.check(None, "--frame-cache", "cache")


def _foreign_kept(ws: Workspace) -> None:
    for name in FOREIGN:
        assert (ws.root / "cache" / name / "keep.txt").is_file(), f"the frame cache removed {name}"


def _near_prefix(ws: Workspace) -> list[str]:
    # Allowed prefix `xg_<uid>_` must not admit module `xg_<uid>_N`: prefixes match whole path components.
    name = ws.module(GOOD_FACTORY + SIDE_EFFECT, inside=False)
    cand = ws.v1("mod.pt", arch=f"{name}:make", arch_kwargs={"num_classes": 4})
    return ws.check(cand, "--allow-arch-module", name.rstrip("0123456789"))


def _meta(value: Any) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        import torch

        meta = value(torch) if callable(value) else value
        return ws.check(ws.v1("m.pt", meta=meta))
    return build


def _huge_input(command: str) -> Callable[[Workspace], list[str]]:
    # An `input` of 8192x8192 would allocate ~26 GB per batch: refused before any tensor of that size exists.
    def build(ws: Workspace) -> list[str]:
        cand = ws.v1("big.pt", input={"size": [8192, 8192]})
        return ws.check(cand) if command == "check" else [command, str(cand)]
    return build


def _inspect_meta_list(ws: Workspace) -> list[str]:
    return ["inspect", str(ws.v1("m.pt", meta=[1, 2]))]


def _pack_meta_nan(ws: Workspace) -> list[str]:
    import torch

    torch.save(ws.payload()["state_dict"], ws.root / "weights.pt")
    (ws.root / "classes.txt").write_text("circle\ncross\nsquare\ntriangle\n")
    return ["pack", str(ws.root / "weights.pt"), "--arch", "tiny_cnn", "--arch-kwargs", '{"width": 12}',
            "--classes", str(ws.root / "classes.txt"), "--size", "32", "--meta", "lr=NaN", "-o",
            str(ws.root / "packed.pt")]


def _no_packed_file(ws: Workspace) -> None:
    assert not (ws.root / "packed.pt").exists(), "pack wrote a file that would not load"


# A pickle that names os.system (protocol 0: GLOBAL, then REDUCE): torch's weights-only reader refuses it.
SYSTEM_PICKLE = b"cos\nsystem\n(S'touch /tmp/never'\ntR."


def _no_gradient(ws: Workspace) -> list[str]:
    argv = _fault_model("return self.fc(h).detach()")(ws)
    return [*argv[:3], str(ws.policy("  - {score: alignment.zero_maps, max: 0}\n")), *argv[4:]]


ROUND_TWO: tuple[Case, ...] = (
    Case("cli-option-like-name", "cli", "a candidate named -h.pt after --", _copy_named("-h.pt"), 0),
    Case("cli-frame-cache-like-name", "cli", "a candidate named --frame-cache=.pt after --",
         _copy_named("--frame-cache=.pt"), 0, after=lambda ws: _no_folder(ws, ".pt")),
    Case("cli-newline-name", "cli", "a missing candidate whose name holds a newline and ::warning",
         lambda ws: ws.check(ws.root / "x\n::warning title=pwned::y.pt"), 2, ("x\\n::warning",)),
    Case("frame-cache-in-checkout", "environment", "--frame-cache inside the GitHub checkout (not the action input)",
         _args("--frame-cache=.pt"), 2, ("--frame-cache", "checkout"), stale_ok=True,
         env=(("GITHUB_ACTIONS", "true"), ("GITHUB_WORKSPACE", "ROOT"))),
    Case("frame-cache-foreign-folders", "environment", "2-day-old folders in the cache folder that it did not make",
         _foreign_cache_folders, 0, after=_foreign_kept),
    Case("json-is-candidate", "environment", "--json naming the candidate", _output_on_input("--json", "candidate"),
         2, ("good.pt", "json", "input"), stale_ok=True, before_engine=True, after=_inputs_kept),
    Case("report-is-policy", "environment", "--report naming the policy", _output_on_input("--report", "policy"), 2,
         ("policy.yaml", "report", "input"), stale_ok=True, before_engine=True, after=_inputs_kept),
    Case("policy-allow-stdlib", "policy", "candidate.allow_modules: [subprocess]",
         _policy_extra("candidate: {allow_modules: [subprocess]}\n"), 2,
         ("policy.yaml", "allow_modules", "standard library")),
    Case("policy-allow-installed", "policy", "candidate.allow_modules: [torch] (an installed package)",
         _policy_extra("candidate: {allow_modules: [torch.hub]}\n"), 2,
         ("policy.yaml", "allow_modules", "installed package")),
    Case("cli-allow-stdlib", "cli", "--allow-arch-module os", _args("--allow-arch-module", "os"), 2,
         ("--allow-arch-module", "standard library")),
    Case("meta-nan", "checkpoint", "meta holding NaN", _meta({"lr": float("nan")}), 2, ("m.pt", "meta.lr", "finite"),
         before_engine=True),
    Case("meta-tensor", "checkpoint", "meta holding a tensor", _meta(lambda torch: {"w": torch.ones(2)}), 2,
         ("m.pt", "meta.w", "Tensor"), before_engine=True),
    Case("meta-bytes", "checkpoint", "meta holding bytes", _meta({"b": b"x"}), 2, ("m.pt", "meta.b", "bytes"),
         before_engine=True),
    Case("meta-tuple-key", "checkpoint", "meta with a tuple key", _meta({(1, 2): "x"}), 2, ("m.pt", "meta", "key"),
         before_engine=True),
    Case("meta-not-mapping", "checkpoint", "meta that is a list", _meta([1, 2]), 2, ("m.pt", "meta", "JSON object"),
         before_engine=True),
    Case("inspect-meta-not-mapping", "checkpoint", "inspect of a checkpoint whose meta is a list", _inspect_meta_list,
         2, ("m.pt", "meta"), stale_ok=True),
    Case("pack-meta-nan", "checkpoint", "pack --meta lr=NaN (would not load)", _pack_meta_nan, 2,
         ("--meta", "meta.lr", "finite"), stale_ok=True, after=_no_packed_file),
    Case("input-8192", "checkpoint", "input 8192x8192 (26 GB a batch)", _huge_input("check"), 2,
         ("big.pt", "input.size", "--max-input-side", "4096"), before_engine=True),
    Case("layers-input-8192", "checkpoint", "layers on an input of 8192x8192", _huge_input("layers"), 2,
         ("big.pt", "input.size", "--max-input-side"), stale_ok=True),
    Case("pickle-os-system", "checkpoint", "a pickle naming os.system (no torch warnings before the line)",
         _bytes("evil.pt", SYSTEM_PICKLE), 2, ("evil.pt", "pickled"), quiet=True),
    Case("bad-target-layer", "checkpoint", "target_layer naming no layer", lambda ws: ws.check(ws.v1(
         "l.pt", target_layer="nope")), 2, ("l.pt", "target_layer")),
    Case("no-gradient-path", "checkpoint", "forward detaches its logits: zero maps, the alignment rule fails",
         _no_gradient, 1),
    Case("arch-prefix-not-a-component", "checkpoint", "allowed prefix xg_N_ and a module xg_N_0 outside the tree",
         _near_prefix, 2, ("mod.pt", "arch", "outside the working tree")),
)


def _no_folder(ws: Workspace, name: str) -> None:
    assert not (ws.root / name).exists(), f"{name} was used as a frame cache"

CASES = CASES + ROUND_TWO


# --- round two: importers and the one reader ---------------------------------------------------------------------


def _photos(ws: Workspace) -> Path:
    """Two 32x32 PNGs, src/photos/a.png and b.png."""
    from PIL import Image

    folder = ws.root / "src" / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name, shade in (("a.png", 60), ("b.png", 180)):
        Image.new("RGB", (32, 32), (shade, shade, shade)).save(folder / name)
    return folder


def _coco_doc() -> dict[str, Any]:
    square = [4, 4, 20, 4, 20, 20, 4, 20]
    return {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32},
                       {"id": 2, "file_name": "b.png", "width": 32, "height": 32}],
            "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "cross"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square]},
                            {"id": 2, "image_id": 2, "category_id": 2, "segmentation": [square]}]}


def _coco(change: Callable[[dict[str, Any]], Any] | None = None, *, text: str | None = None,
          fifo: bool = False) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        photos = _photos(ws)
        path = ws.root / "src" / "instances.json"
        if fifo:
            os.mkfifo(path)
        else:
            doc = _coco_doc()
            if change is not None:
                change(doc)
            path.write_text(text if text is not None else json.dumps(doc))
        return ["review-set", "build", "--coco", str(path), "--images", str(photos), "-o", str(ws.root / "built")]
    return build


def _ann(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["annotations"][0][key] = value
    return change


def _boxes(text: bytes | None, *, fifo: bool = False) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        photos = _photos(ws)
        path = ws.root / "src" / "boxes.csv"
        if fifo:
            os.mkfifo(path)
        else:
            path.write_bytes(text or b"")
        return ["review-set", "build", "--boxes", str(path), "--images", str(photos), "-o", str(ws.root / "built")]
    return build


BOXES = b"image,label,x0,y0,x1,y1\na.png,circle,4,4,20,20\nb.png,cross,4,4,20,20\n"


def _voc(classes: bytes | None, *, extra: Callable[[Path], None] | None = None,
         fifo: bool = False) -> Callable[[Workspace], list[str]]:
    # A VOC source: circle (palette index 1) and cross (index 2); --voc-classes names them in that order.
    def build(ws: Workspace) -> list[str]:
        import numpy as np
        from PIL import Image

        source = ws.root / "voc"
        for index, name in ((1, "circle"), (2, "cross")):
            (source / "images" / name).mkdir(parents=True)
            (source / "masks" / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (index * 60,) * 3).save(source / "images" / name / "x.png")
            values = np.zeros((32, 32), dtype=np.uint8)
            values[4:20, 4:20] = index
            mask = Image.fromarray(values, mode="P")
            mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
            mask.save(source / "masks" / name / "x.png")
        if extra is not None:
            extra(source)
        argv = ["review-set", "build", str(source), "--voc", "-o", str(ws.root / "built")]
        if classes is not None or fifo:
            path = ws.root / "classes.txt"
            if fifo:
                os.mkfifo(path)
            else:
                path.write_bytes(classes or b"")
            argv += ["--voc-classes", str(path)]
        return argv
    return build


def _masks_not_empty(ws: Workspace) -> None:
    import numpy as np
    from PIL import Image

    masks = sorted((ws.root / "built" / "masks").rglob("*.png"))
    assert len(masks) == 2 and all(np.asarray(Image.open(m)).any() for m in masks), "a mask came out empty"


def _gif_and_dangling(source: Path) -> None:
    (source / "images" / "circle" / "y.gif").write_bytes(b"GIF89a")
    (source / "images" / "circle" / "z.png").symlink_to(source / "nowhere.png")


def _fifo_arg(command: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        fifo = ws.root / "fifo.pt"
        os.mkfifo(fifo)
        if command == "inspect":
            return ["inspect", str(fifo)]
        (ws.root / "classes.txt").write_text("circle\ncross\nsquare\ntriangle\n")
        weights, classes = (fifo, ws.root / "classes.txt") if command == "pack-weights" else (ws.checkpoint, fifo)
        return ["pack", str(weights), "--arch", "tiny_cnn", "--classes", str(classes), "--size", "32", "-o",
                str(ws.root / "packed.pt")]
    return build


def _pack_to(target: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        import torch

        torch.save(ws.payload()["state_dict"], ws.root / "weights.pt")
        (ws.root / "classes.txt").write_text("circle\ncross\nsquare\ntriangle\n")
        return ["pack", str(ws.root / "weights.pt"), "--arch", "tiny_cnn", "--arch-kwargs", '{"width": 12}',
                "--classes", str(ws.root / "classes.txt"), "--size", "32", "-o", target]
    return build


SQUARE_1E12 = [-1e12, -1e12, 1e12, -1e12, 1e12, 1e12, -1e12, 1e12]

IMPORTERS: tuple[Case, ...] = (
    Case("coco-rle-empty-counts", "importer", "COCO RLE with counts '' (was uninitialised memory)",
         _coco(_ann("segmentation", {"size": [32, 32], "counts": ""})), 2,
         ("instances.json", "annotations[0].segmentation.counts"), stale_ok=True),
    Case("coco-rle-short-string", "importer", "COCO compressed RLE covering fewer pixels than the image",
         _coco(_ann("segmentation", {"size": [32, 32], "counts": "0c0"})), 2,
         ("instances.json", "segmentation.counts", "1024"), stale_ok=True),
    Case("coco-duplicate-category", "importer", "COCO category id 1 listed twice (circle, then cross)",
         _coco(lambda d: d["categories"].__setitem__(1, {"id": 1, "name": "cross"})), 2,
         ("instances.json", "categories[1].id", "twice"), stale_ok=True),
    Case("coco-coordinate-1e9", "importer", "COCO polygon with a coordinate of 1e9 (segfaulted pycocotools)",
         _coco(_ann("segmentation", [[4, 4, 1e9, 4, 20, 20]])), 2,
         ("instances.json", "annotations[0].segmentation[0]", "outside"), stale_ok=True),
    Case("coco-polygon-1e12", "importer", "COCO polygon of +-1e12 covering the image",
         _coco(_ann("segmentation", [SQUARE_1E12])), 2, ("instances.json", "segmentation[0]", "outside"),
         stale_ok=True),
    Case("coco-bbox-1e10", "importer", "COCO box of 1e10 pixels",
         _coco(lambda d: d["annotations"][0].update(segmentation=[], bbox=[0, 0, 1e10, 1e10])), 2,
         ("instances.json", "annotations[0].bbox", "outside"), stale_ok=True),
    Case("coco-nan", "importer", "COCO file with a NaN coordinate",
         _coco(text=json.dumps(_coco_doc()).replace("[4, 4, 20", "[NaN, 4, 20", 1)), 2,
         ("instances.json", "NaN"), stale_ok=True),
    Case("coco-deep", "importer", "COCO file nested 100,000 deep (RecursionError)",
         _coco(text='{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"), 2, ("instances.json", "nested"),
         stale_ok=True),
    Case("coco-fifo", "importer", "--coco naming a FIFO (blocked forever)", _coco(fifo=True), 2,
         ("instances.json", "regular file", "FIFO"), stale_ok=True),
    Case("boxes-bom", "importer", "boxes CSV starting with a UTF-8 BOM", _boxes(b"\xef\xbb\xbf" + BOXES), 0,
         stale_ok=True, after=_masks_not_empty),
    Case("boxes-not-utf8", "importer", "boxes CSV in Latin-1", _boxes(BOXES.replace(b"circle", b"cercl\xe9")), 2,
         ("boxes.csv", "UTF-8"), stale_ok=True),
    Case("boxes-huge-field", "importer", "boxes CSV with a 1 MB field", _boxes(BOXES + b"a.png," + b"x" * 2**20), 2,
         ("boxes.csv", "field larger"), stale_ok=True),
    Case("boxes-fifo", "importer", "--boxes naming a FIFO", _boxes(None, fifo=True), 2, ("boxes.csv", "FIFO"),
         stale_ok=True),
    Case("voc-classes-bom", "importer", "VOC class list with a UTF-8 BOM (shifted every index)",
         _voc(b"\xef\xbb\xbfcircle\ncross\n"), 0, stale_ok=True, after=_masks_not_empty),
    Case("voc-classes-fifo", "importer", "--voc-classes naming a FIFO", _voc(None, fifo=True), 2,
         ("classes.txt", "FIFO"), stale_ok=True),
    Case("plain-gif-and-dangling-link", "importer", "a .gif and a dangling symlink among the images",
         _voc(None, extra=_gif_and_dangling), 0, stale_ok=True,
         out_needles=("y.gif: .gif is not an image format", "z.png: a symlink to nothing")),
    Case("inspect-fifo", "importer", "inspect of a FIFO", _fifo_arg("inspect"), 2, ("fifo.pt", "FIFO"),
         stale_ok=True),
    Case("inspect-dev-zero", "importer", "inspect /dev/zero (read until MemoryError)",
         lambda ws: ["inspect", "/dev/zero"], 2, ("/dev/zero", "device"), stale_ok=True),
    Case("pack-fifo-weights", "importer", "pack with a FIFO as weights", _fifo_arg("pack-weights"), 2,
         ("fifo.pt", "weights", "FIFO"), stale_ok=True),
    Case("pack-fifo-classes", "importer", "pack with a FIFO as --classes", _fifo_arg("pack-classes"), 2,
         ("fifo.pt", "classes", "FIFO"), stale_ok=True),
    Case("pack-to-proc", "importer", "pack -o /proc/out.pt", _pack_to("/proc/out.pt"), 2, ("/proc", "--output"),
         stale_ok=True),
)

CASES = CASES + IMPORTERS


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


CASE_TIMEOUT_S = 120  # a case that blocks (a FIFO read) fails here instead of hanging the suite


class Hung(Exception):
    """The CLI did not return within CASE_TIMEOUT_S."""


def _hung(signum: int, frame: object) -> None:
    raise Hung(f"the CLI did not return within {CASE_TIMEOUT_S} s")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``xgate argv`` in-process (failing after CASE_TIMEOUT_S); returns (exit code, stdout, stderr)."""
    from gate.cli import main

    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with pytest.raises(SystemExit) as info:
            main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
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
        assert not case.quiet or err.strip() == lines[0], err
        if not case.stale_ok:
            assert not any((folder / name).is_file() for name in case.stale_files), "an earlier result survived"
    else:
        assert all((folder / name).is_file() for name in OUTPUTS)
        verdict = json.loads((folder / "result.json").read_text())["verdict"]
        assert verdict == ("passed" if code == 0 else "failed")
    for needle in case.out_needles:
        assert needle in out + err, f"{needle!r} not in the output"


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_corpus_case(case: Case, workspace: Workspace, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in case.env:
        monkeypatch.setenv(key, str(workspace.root) if value == "ROOT" else value)
    argv = case.build(workspace)
    code, out, err = run_cli(argv, capsys)
    check_outcome(case, workspace, code, out, err)
    if case.after is not None:
        case.after(workspace)


# --- properties beyond one case ---------------------------------------------------------------------------------


def test_the_corpus_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} == {"checkpoint", "review_set", "policy", "environment", "cli", "importer"}
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


def _gate_process(workspace: Workspace, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gate", *[a for a in workspace.check(None, *extra) if a != "--no-mlflow"]]
    env = {"PATH": "/usr/bin:/bin", "CI": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "HOME": str(workspace.root)}
    # A background job's children inherit SIGINT ignored: give the gate the default disposition.
    return subprocess.Popen(argv, cwd=workspace.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _kept_records(root: Path) -> int:
    """Outbox entries plus finished MLflow runs in root/mlflow.db."""
    import sqlite3

    outbox = root / ".xgate" / "outbox"
    entries = [p for p in outbox.iterdir() if not p.name.startswith(".")] if outbox.is_dir() else []
    runs = 0
    if (root / "mlflow.db").is_file():
        with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
            runs = db.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0]
    return len(entries) + runs


AFTER_LINES = [("report:", 0.0, signal.SIGINT), ("json:", 0.1, signal.SIGTERM), ("junit:", 0.5, signal.SIGINT)]


@pytest.mark.parametrize(("prefix", "delay", "signum"), AFTER_LINES, ids=["report-0", "json-0.1", "junit-0.5"])
def test_a_signal_after_the_verdict_keeps_the_mlflow_record(workspace: Workspace, prefix: str, delay: float,
                                                            signum: int) -> None:
    # The record is staged before the first output line: a signal at any moment after it keeps the record
    # (in the outbox, or uploaded), and the message says the result was written.
    proc = _gate_process(workspace, "--tracking-uri", f"sqlite:///{workspace.root / 'mlflow.db'}")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            time.sleep(delay)
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=300)
    assert seen and seen[-1].startswith(prefix), "".join(seen) + out + err
    assert proc.returncode in (0, 130, 143), err  # 0: the signal came after the gate had finished
    assert "Traceback" not in err and "no new result was written" not in err, err
    assert (workspace.root / "out" / "result.json").is_file()
    assert _kept_records(workspace.root) >= 1, err


@pytest.mark.skipif(not os.access(Path(sys.executable).parent / "xgate", os.X_OK), reason="xgate not installed")
def test_a_working_tree_arch_works_from_the_console_script(workspace: Workspace) -> None:
    # The `xgate` console script has its own folder on sys.path, not the current one (python -m gate has it):
    # a factory in the working tree must import all the same, as documented.
    name = workspace.module(GOOD_FACTORY)
    cand = workspace.v1("mod.pt", arch=f"{name}:make", arch_kwargs={"num_classes": 4})
    done = subprocess.run([str(Path(sys.executable).parent / "xgate"), "inspect", str(cand)], cwd=workspace.root,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"arch:         {name}:make" in done.stdout


def test_a_candidate_name_with_a_newline_cannot_start_a_line(workspace: Workspace, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # In GitHub Actions every line of the log is read for workflow commands: the summary, the progress and the
    # annotations must keep a file name on its line (escaped), whatever it holds.
    name = "x\n::warning title=pwned::y.pt"
    shutil.copyfile(workspace.checkpoint, workspace.root / name)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(workspace.root / "gh-output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(workspace.root / "gh-summary"))
    argv = workspace.check(None, policy=workspace.policy("  - {score: accuracy, min: 0.99}\n"))
    code, out, err = run_cli([*argv[:1], *argv[2:], "--", name], capsys)
    assert code == 1, err
    commands = [line for line in (out + err).splitlines() if line.startswith("::")]
    assert commands and all(line.startswith("::error title=xgate: x%0A%3A%3Awarning") for line in commands)
    assert "x\\n::warning title=pwned::y.pt" in out  # the summary names it, escaped


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


# --- the faults the suite let through (issue 21, item 9): each test kills one, and scripts/mutate.py runs it -----


def test_strict_yaml_compares_keys_after_resolution() -> None:
    # `1` and `0x1` are the same integer, `true` and `yes` the same boolean (YAML 1.1): duplicates, not two keys.
    from gate.inputs.strict_yaml import StrictYamlError, loads

    for text in (b"{1: a, 0x1: b}", b"{true: a, yes: b}"):
        with pytest.raises(StrictYamlError, match="duplicate key"):
            loads(text)
    assert loads(b"{1: a, '1': b}") == {1: "a", "1": "b"}  # an int and a string are two keys


def _cache_entry(root: Path, geometry: Any, masks: Any) -> None:
    """Write and commit a frame-cache entry of len(masks) samples framed in ``geometry``."""
    import numpy as np
    import torch

    from gate.inputs import frame_cache

    count, (height, width) = len(masks), geometry.size
    writer = frame_cache.start_writer(root, "sha256:" + "a" * 64, geometry, count)
    pixels = torch.arange(count * 3 * height * width, dtype=torch.int64).remainder(251).to(torch.uint8)
    writer.write(np.arange(count), pixels.reshape(count, 3, height, width), masks, ~masks)
    assert writer.commit()


def test_the_frame_cache_reads_back_masks_of_odd_sizes(tmp_path: Path) -> None:
    # 33x33 masks are 1089 bits: rows rounded down to whole bytes would lose a bit and never read back.
    import torch

    from gate.inputs import frame_cache
    from gate.inputs.preprocess import Geometry

    geometry = Geometry(size=(33, 33))
    masks = torch.rand(3, 33, 33, generator=torch.Generator().manual_seed(0)) > 0.5
    _cache_entry(tmp_path, geometry, masks)
    store = frame_cache.open_store(tmp_path, "sha256:" + "a" * 64, geometry, 3)
    assert store is not None, "the entry written was not read back"
    try:
        _, read, void = store.frame(torch.arange(3).numpy())
    finally:
        store.close()
    assert torch.equal(read, masks) and torch.equal(void, ~masks)


def test_the_frame_cache_key_holds_the_resize(tmp_path: Path) -> None:
    # A resize+crop model must never read the frames of a squash model of the same size.
    import torch

    from gate.inputs import frame_cache
    from gate.inputs.preprocess import Geometry

    _cache_entry(tmp_path, Geometry(size=(16, 16)), torch.zeros(2, 16, 16, dtype=torch.bool))
    assert frame_cache.open_store(tmp_path, "sha256:" + "a" * 64, Geometry(size=(16, 16), resize=20), 2) is None
    squash = frame_cache.open_store(tmp_path, "sha256:" + "a" * 64, Geometry(size=(16, 16)), 2)
    assert squash is not None
    squash.close()


def _records(labels: list[int], correct: list[bool], classes: tuple[str, ...]) -> Any:
    import numpy as np

    from gate.records import Records

    n, k = len(labels), len(classes)
    truth = np.asarray(labels, dtype=np.int64)
    preds = np.where(correct, truth, (truth + 1) % k)
    probs = np.full((n, k), 0.1 / max(k - 1, 1), dtype=np.float32)
    probs[np.arange(n), preds] = 0.9 - np.arange(n) * (0.4 / max(n, 1))  # confidence falls with the index
    nan = np.full(n, np.nan)
    return Records(classes=classes, ids=tuple(f"s{i}" for i in range(n)), labels=truth, probs=probs, energy=nan,
                   mask_area=np.full(n, 0.25), pointing_hit=nan, rank_accuracy=nan)


def test_min_samples_is_at_least_not_more_than() -> None:
    from gate.decide.policy import MinSamples, _sample_size_rules

    records = _records([i % 2 for i in range(300)], [True] * 300, ("a", "b"))
    (rule,) = _sample_size_rules(MinSamples(overall=300), records)
    assert rule.passed and rule.value == 300.0  # 300 samples meet "at least 300"
    (rule,) = _sample_size_rules(MinSamples(overall=301), records)
    assert not rule.passed and rule.note == "failed: review set too small"


def test_min_samples_per_class_sees_an_empty_last_class() -> None:
    from gate.decide.policy import MinSamples, _sample_size_rules

    records = _records([0, 1, 2] * 4, [True] * 12, ("a", "b", "c", "d"))  # no sample of "d"
    (rule,) = _sample_size_rules(MinSamples(per_class=1), records)
    assert not rule.passed and rule.value == 0.0 and "'d'" in rule.message


def test_too_small_is_decided_at_exactly_the_needed_count() -> None:
    # One-sided 95%: z² = 1.6449² = 2.7055; a floor of 0.9 needs n/(n + z²) >= 0.9, n >= 24.35: 25 samples.
    from gate.decide.intervals import Bounds, decidability, needed_trials
    from gate.decide.stats import wilson_interval

    assert needed_trials(">=", 0.9, 0.95) == 25
    interval = wilson_interval(25, 25, 0.95)
    assert interval.low == pytest.approx(25 / (25 + 1.6448536269514722 ** 2), abs=1e-9)
    assert decidability(">=", 0.9, Bounds(interval, "wilson", trials=25)) == (True, "")
    decided, note = decidability(">=", 0.9, Bounds(wilson_interval(24, 24, 0.95), "wilson", trials=24))
    assert not decided and "too small" in note


def test_selective_accuracy_rounds_the_kept_count() -> None:
    # 60% of 6 samples is 3.6: 4 kept (3 right of 4: 0.75), not 3 (1.0).
    import numpy as np

    from gate.metrics.classification import _selective_accuracy, selective_accuracy_form

    records = _records([0, 1, 0, 1, 0, 1], [True, True, True, False, False, False], ("a", "b"))
    assert selective_accuracy_form(0.6, records).full == 0.75
    correct = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert _selective_accuracy(correct, 0.6, np.ones((1, 6)))[0] == 0.75


# A model from the tree with a fifth output the review set does not have ("other"): a flat corner (the
# only-FG variant's grey fill) says "circle", anything else says "other".
FLAT_SAYS_CIRCLE = ("out = self.fc(h) * 0\n        flat = (x[:, :, :4, :4].flatten(1).std(1) < 1e-6).float()[:, None]\n"
                    "        return out + 5 * flat * torch.eye(5)[0] + 5 * (1 - flat) * torch.eye(5)[4]")


def test_probe_variants_take_the_argmax_over_every_output_and_are_not_swapped(
        workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    # With the argmax over the review set's classes only, "other" could never win and the scene alone
    # would say "circle"; with only_fg and only_bg swapped, the two accuracies trade places.
    argv = _fault_model(FLAT_SAYS_CIRCLE, outputs=5, probes="background")(workspace)
    workspace.v1("fault.pt", **{k: v for k, v in _fault_payload(workspace).items()})
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    scores = json.loads((workspace.root / "out" / "result.json").read_text())["candidates"][0]["scores"]
    assert scores["accuracy"] == 0.0  # the originals say "other", never a review-set class
    assert scores["background.only_bg_accuracy"] == 0.0
    assert scores["background.only_fg_accuracy"] == pytest.approx(0.25, abs=0.1)  # the circles


def _fault_payload(ws: Workspace) -> dict[str, Any]:
    import torch

    payload = dict(torch.load(ws.root / "fault.pt", weights_only=True))
    return {"classes": ["circle", "cross", "square", "triangle", "other"], "state_dict": payload["state_dict"],
            "arch": payload["arch"], "arch_kwargs": payload["arch_kwargs"], "target_layer": "conv"}
