"""Swap probes' cost: the gate in plain-forward equivalents with and without border/corners/lighting.

Run by hand (`PYTHONPATH=. python benchmarks/bench_swaps.py`); write the printed table into
benchmarks/RESULTS.md with the machine and date. Same set-up as bench_engine.py (a generated 64×64 shapes
review set, a randomly initialised tiny_cnn, batch 32); ratios are measured in one run. The forward column
counts the model's forward calls per batch (explained forward = 1, each probe variant = 1).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_engine import make_candidate, make_set, plain_forward  # run as a script: benchmarks/ is on sys.path
from bench_gradcam import best_of

from gate.engine import core as engine

SETTINGS: dict[str, frozenset[str]] = {
    "engine, no probes": frozenset(),
    "engine + border, corners, lighting": frozenset({"border", "corners", "lighting"}),
    "engine + background (4 variants)": frozenset({"background"}),
    "engine + background + the three swaps": frozenset({"background", "border", "corners", "lighting"}),
    "engine + background + sanity": frozenset({"background", "sanity"}),
    "engine + background + sanity + the three swaps": frozenset({"background", "sanity", "border", "corners",
                                                                 "lighting"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        review_set = make_set(Path(tmp), args.size)
        cand = make_candidate(0)
        calls = [0]
        cand.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        base = best_of(args.repeats, lambda: plain_forward(review_set, cand, args.batch_size))
        batches = -(-args.size // args.batch_size)
        print(f"\n{args.size} samples, batch {args.batch_size}, median of {args.repeats}")
        print("| run | forwards per batch | seconds | × plain forward |\n|---|---|---|---|")
        print(f"| decode + plain forward | 1 | {base:.3f} | 1.00 |")
        for label, probes in SETTINGS.items():
            options = engine.EngineOptions(device="cpu", batch_size=args.batch_size, probes=probes)
            calls[0] = 0
            engine.run([cand], review_set, options)
            per_batch = calls[0] / batches
            seconds = best_of(args.repeats, lambda o=options: engine.run([cand], review_set, o))
            print(f"| {label} | {per_batch:g} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
