"""Gate cost: the engine with and without probes vs a plain forward pass, `select` vs separate checks, memory.

Run by hand (`make benchmarks`); write the printed tables into benchmarks/RESULTS.md with the machine and
date. A generated review set (64×64 shapes) and randomly initialised tiny_cnn models: the cost does not
depend on what the weights learned. Ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from bench_gradcam import best_of  # run as a script: benchmarks/ is on sys.path

from gate.api import from_module
from gate.engine import core as engine
from gate.inputs import archs, shapes
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet, build, open_review_set

T = TypeVar("T")


def make_set(root: Path, size: int, side: int = 64) -> ReviewSet:
    """A pinned shapes review set of ``size`` samples at ``side``² (training seed, not the shipped one)."""
    plain = shapes.write_plain(shapes.iter_generate(size, bias=0.9, seed=77, size=side), root / "plain")
    return build(plain, root / "set", name=f"bench-{size}")


def memory_child_result(script: str, review_root: Path, *extra: str) -> dict[str, Any]:
    """Run ``script --memory-child REVIEW_ROOT EXTRA...`` in a fresh process: the JSON of its last line.

    Each memory measurement gets its own process, so one run's freed-but-kept pages cannot hide the next's.
    """
    done = subprocess.run([sys.executable, script, "--memory-child", str(review_root), *extra],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise SystemExit(f"memory run failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def make_candidate(seed: int) -> Candidate:
    """A randomly initialised tiny_cnn as the engine sees it."""
    torch.manual_seed(seed)
    model = archs.tiny_cnn(len(shapes.CLASSES)).eval()
    return from_module(model, classes=shapes.CLASSES, input=InputSpec(size=(64, 64), mean=(0.5,) * 3, std=(0.25,) * 3),
                       name=f"bench{seed}", target_layer="features")


def plain_forward(review_set: ReviewSet, cand: Candidate, batch_size: int) -> None:
    """Decode every batch and run one no-grad forward: the floor any gate pays."""
    mean = torch.tensor(cand.input.mean)[None, :, None, None]
    std = torch.tensor(cand.input.std)[None, :, None, None]
    with torch.no_grad():
        for start in range(0, review_set.size, batch_size):
            rows = range(start, min(start + batch_size, review_set.size))
            images = [torch.from_numpy(review_set.load_image(i).copy()).permute(2, 0, 1) for i in rows]
            x = torch.stack(images).float() / 255
            cand.model((x - mean) / std)


def speed(size: int, batch_size: int, repeats: int) -> None:
    """Engine cost per probe setting, and select over 3 candidates vs 3 separate runs."""
    with tempfile.TemporaryDirectory() as tmp:
        review_set = make_set(Path(tmp), size)
        cand = make_candidate(0)
        base = best_of(repeats, lambda: plain_forward(review_set, cand, batch_size))
        print(f"\n{size} samples, batch {batch_size}, median of {repeats}")
        print("| run | seconds | × plain forward |\n|---|---|---|")
        print(f"| decode + plain forward | {base:.3f} | 1.00 |")
        settings = {"engine, no probes (logits + Grad-CAM + localisation)": frozenset(),
                    "engine + background (4 variants)": frozenset({"background"}),
                    "engine + background + sanity": frozenset({"background", "sanity"})}
        for label, probes in settings.items():
            options = engine.EngineOptions(device="cpu", batch_size=batch_size, probes=probes)
            seconds = best_of(repeats, lambda o=options: engine.run([cand], review_set, o))
            print(f"| {label} | {seconds:.3f} | {seconds / base:.2f} |")
        three = [make_candidate(s) for s in (0, 1, 2)]
        options = engine.EngineOptions(device="cpu", batch_size=batch_size, probes=frozenset({"background", "sanity"}))
        together = best_of(repeats, lambda: engine.run(three, review_set, options))
        apart = best_of(repeats, lambda: [engine.run([c], review_set, options) for c in three])
        print(f"| select: 3 candidates, one decode | {together:.3f} | {together / base:.2f} |")
        print(f"| 3 separate runs | {apart:.3f} | {apart / base:.2f} |")


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_during(call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and the highest RSS (MiB) sampled every 5 ms while it ran (and at its end)."""
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.005)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        result = call()
    finally:
        done.set()
        watcher.join()
    return result, max(peak[0], rss_mib())


def memory_child(root: str) -> None:
    """In a fresh process: RSS before, and the highest RSS sampled every 5 ms while the engine runs."""
    review_set = open_review_set(Path(root))
    options = engine.EngineOptions(device="cpu", batch_size=32, probes=frozenset({"background", "sanity"}))
    cand = make_candidate(0)
    engine.run([cand], make_small_view(review_set), options)  # warm up allocators and kernels first
    before = rss_mib()
    runs, peak = peak_rss_during(lambda: engine.run([cand], review_set, options))
    # glibc keeps freed pages for reuse; trimming returns them, so what is left is what the run still holds.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(json.dumps({"before_mib": before, "peak_mib": peak, "held_mib": rss_mib(),
                      "records": runs[0].records.size}))


def make_small_view(review_set: ReviewSet) -> ReviewSet:
    """About 64 samples spread over ``review_set`` (every class present), for a warm-up run."""
    from dataclasses import replace

    return replace(review_set, samples=review_set.samples[:: max(1, review_set.size // 64)])


def memory(sizes: list[int]) -> None:
    """Peak RSS of one engine run per review-set size, each in its own process."""
    print("\n| review set | RSS before (MiB) | peak RSS during the run (MiB) | RSS held after, trimmed (MiB) |")
    print("|---|---|---|---|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            got = memory_child_result(__file__, make_set(Path(tmp), size).root)
            peak, held = got["peak_mib"] - got["before_mib"], got["held_mib"] - got["before_mib"]
            print(f"| {size} samples | {got['before_mib']:.0f} | +{peak:.0f} | {held:+.0f} |")


def main() -> None:
    """Print the speed and memory tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", default="600,2400")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    speed(args.size, args.batch_size, args.repeats)
    memory([int(s) for s in args.memory_sizes.split(",")])


if __name__ == "__main__":
    main()
