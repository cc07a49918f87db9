"""The gate at the cost of what it must compute: sanity copies sharing the trunk vs the old full-forward copies.

Run by hand (`python benchmarks/bench_trunk.py`); copy the printed tables into benchmarks/RESULTS.md.

1. Whole gate (``run_gate``, the strict policy's probes and rules, pinned to a generated set of 224² JPEG
   shapes) on randomly initialised resnet50, vit_b_16 and swin_t, with the copies sharing the trunk
   (``EngineOptions.shared_trunk``, the default) and with the old path (each copy runs the whole network),
   against one plain evaluation (decode + preprocess + a no-grad forward). The three runs of a model are
   taken in turn, ``--repeats`` rounds after a warm-up, each row the median: the machine is shared.
   P is the count of plain forwards the probes inherently need: 1 explained + 4 background variants + 5
   copies = 10 on the old path; with the shared trunk each copy needs only its tail, so P = 5 + 5·f, with f
   the tail's share of a forward's multiply-adds (torch.utils.flop_counter, one 224² image).
2. Peak RSS of the engine (tiny_cnn, 32² shapes, background + sanity probes) at 1k and 10k images, shared
   trunk vs old path, each run in a fresh process.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from bench_engine import (  # run as a script: benchmarks/ is on sys.path
    make_set,
    memory_child_result,
    peak_rss_during,
    rss_mib,
)
from bench_gradcam import interleaved
from bench_pipeline import header, make_jpeg_set, plain_evaluation
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gate.engine import core as engine
from gate.engine import sanity, trunk
from gate.inputs import archs, shapes
from gate.inputs import candidate as candidate_io
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet, open_review_set
from gate.run import GateRequest, run_gate

STRICT = Path(__file__).resolve().parents[1] / "policies" / "strict.yaml"
SWAPS = ("border", "corners", "lighting")
# The two policies the table prices: strict as issue 25 was filed (background + sanity probes) and strict
# today (plus the three mask-free swap probes, one forward each).
POLICIES = {"strict without swaps": ("background", "sanity"), "strict": ("background", "sanity") + SWAPS}


def make_model(arch: str) -> nn.Module:
    """Random weights for the 4 shapes classes (ViT's zero-initialised head drawn, so its maps are not zero)."""
    torch.manual_seed(0)
    model = archs.build_model(arch, {"num_classes": len(shapes.CLASSES)}).eval()
    if arch == "vit_b_16":
        nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def strict_policy(root: Path, review_set: ReviewSet, probes: tuple[str, ...]) -> Path:
    """policies/strict.yaml pinned to ``review_set`` with only ``probes`` (and their rules); any size is judged."""
    doc = yaml.safe_load(STRICT.read_text())
    doc["review_set"] = {"path": str(review_set.root), "digest": review_set.digest}
    doc["min_samples"] = {"overall": 1, "per_class": 1}
    doc["probes"] = list(probes)
    dropped = tuple(probe + "." for probe in SWAPS if probe not in probes)
    doc["rules"] = [rule for rule in doc["rules"] if not str(rule["score"]).startswith(dropped)]
    path = root / f"strict-{len(probes)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tail_share(model: nn.Module, layer: str, size: int) -> tuple[float, str]:
    """The copies' tail's share of a forward's FLOPs (one image at ``size``²), and where the tail starts."""
    split, words = sanity.shared_trunk(model, layer)
    if split is None:
        return 1.0, words
    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), trunk.kept_entry(model, split.block) as entry, FlopCounterMode(display=False) as whole:
        model(x)
    kept = entry.get()
    assert kept is not None
    with torch.no_grad(), FlopCounterMode(display=False) as part:
        trunk.tail(split, model)(kept)
    return part.get_total_flops() / whole.get_total_flops(), words


def inherent_forwards(probes: tuple[str, ...], share: float) -> float:
    """P: plain forwards the probes need per batch (1 explained, 4 background variants, 1 per swap, copies)."""
    copies = sanity.SANITY_COPIES * share if "sanity" in probes else 0.0
    return 1 + 4 * ("background" in probes) + sum(probe in probes for probe in SWAPS) + copies


def gate_table(models: list[str], count: int, size: int, batch: int, repeats: int, warmups: int) -> None:
    """Table 1: whole gate per policy, shared trunk vs old path, in plain evaluations (a row per model and policy)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        review_set = make_jpeg_set(root, count, size)
        policies = {name: strict_policy(root, review_set, probes) for name, probes in POLICIES.items()}
        print(f"\n{header()}")
        print(f"\n{count} JPEG images {size}², batch {batch}, CPU, {torch.get_num_threads()} threads; policies: "
              + "; ".join(f"{name} ({' + '.join(probes)})" for name, probes in POLICIES.items())
              + f"; median of {repeats} rounds (plain, then old and shared per policy, in turn) after {warmups} "
              "warm-up rounds")
        print("| model | policy | copies run | f = tail / forward (FLOPs) | P old | P shared | plain evaluation (s) | "
              "whole gate, old path (s) | × plain | whole gate, shared trunk (s) | × plain | shared / old |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for arch in models:
            ckpt = candidate_io.save(root / f"{arch}.pt", make_model(arch), arch=arch,
                                     arch_kwargs={"num_classes": 4}, classes=shapes.CLASSES, input_size=(size, size),
                                     resize=size * 8 // 7)
            cand = candidate_io.load(ckpt)
            share, words = tail_share(cand.model, cand.target_layer, size)

            def gate(shared: bool, policy: Path, path: Path = ckpt) -> object:
                options = engine.EngineOptions(device="cpu", batch_size=batch, shared_trunk=shared)
                return run_gate(GateRequest(command="check", candidates=(path,), policy=policy, engine=options))

            calls: dict[str, Callable[[], object]] = {
                "plain": lambda c=cand: plain_evaluation(review_set, c, batch, torch.device("cpu"))}
            for name, policy in policies.items():
                calls[f"old {name}"] = lambda p=policy: gate(False, p)
                calls[f"shared {name}"] = lambda p=policy: gate(True, p)
            s = interleaved(repeats, calls, warmups=warmups)
            for name, probes in POLICIES.items():
                old, shared = s[f"old {name}"], s[f"shared {name}"]
                print(f"| {arch} | {name} | {words} | {share:.3f} | {inherent_forwards(probes, 1.0):.0f} | "
                      f"{inherent_forwards(probes, share):.2f} | {s['plain']:.2f} | {old:.2f} | "
                      f"{old / s['plain']:.2f} | {shared:.2f} | {shared / s['plain']:.2f} | {shared / old:.2f} |",
                      flush=True)
        print(f"(load average after: {os.getloadavg()[0]:.1f})")


def memory_child(root: str, shared: bool) -> None:
    """In a fresh process: RSS before, and the highest RSS sampled every 5 ms while the engine runs."""
    review_set = open_review_set(Path(root))
    torch.manual_seed(0)
    cand = Candidate(path="tiny.pt", sha256="0" * 64, arch="tiny_cnn", model=archs.tiny_cnn(4).eval(),
                     classes=shapes.CLASSES, input=InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3),
                     target_layer="features")
    options = engine.EngineOptions(device="cpu", batch_size=64, probes=frozenset({"background", "sanity"}),
                                   shared_trunk=shared)
    warm = review_set.samples[:: max(1, review_set.size // 128)]
    engine.run([cand], replace(review_set, samples=warm), options)  # warm-up
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_mib()
    runs, peak = peak_rss_during(lambda: engine.run([cand], review_set, options))
    print(json.dumps({"before_mib": before, "peak_mib": peak, "trunk": runs[0].sanity_trunk}))


def memory(sizes: list[int]) -> None:
    """Table 2: peak RSS per review-set size, shared trunk vs old path, each in its own process."""
    print(f"\n{header()}")
    print("\n| review set (32² PNG, tiny_cnn, background + sanity) | path | RSS before (MiB) | peak (MiB) | "
          "peak − before (MiB) |\n|---|---|---|---|---|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            review_set = make_set(Path(tmp), size, side=32)
            for shared in (False, True):
                got = memory_child_result(__file__, review_set.root, "--shared", str(int(shared)))
                print(f"| {size} samples | {got['trunk']} | {got['before_mib']:.0f} | {got['peak_mib']:.0f} | "
                      f"{got['peak_mib'] - got['before_mib']:.0f} |")


def main() -> None:
    """Print the tables asked for (both by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet50,vit_b_16,swin_t")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1, help="Untimed rounds first.")
    parser.add_argument("--memory-sizes", default="1000,10000")
    parser.add_argument("--only", choices=["gate", "memory"])
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--shared", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, bool(args.shared))
        return
    if args.only in (None, "gate"):
        gate_table(args.models.split(","), args.count, args.size, args.batch_size, args.repeats, args.warmups)
    if args.only in (None, "memory"):
        memory([int(s) for s in args.memory_sizes.split(",")])


if __name__ == "__main__":
    main()
