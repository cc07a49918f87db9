"""The input pipeline at real sizes: the whole gate vs the plain evaluations it needs, decode vs forward, memory.

Run by hand (`make benchmarks`), one process per table; copy the printed tables into benchmarks/RESULTS.md.

1. A generated review set of 224×224 JPEG shapes (PNG masks) and a randomly initialised resnet18 (4 classes,
   ImageNet eval transform: resize 256, crop 224). The whole gate (``gate.check``: load, engine with
   background + sanity probes, scores, verdict) with 0, 2 and 4 worker threads, against P plain evaluations
   (decode + preprocess + a no-grad forward, in the calling thread), P = the forwards the probes inherently
   need: 1 explained + 4 background variants + ``sanity.SANITY_COPIES`` randomised copies.
2. Decode + preprocess throughput (``gate.inputs.batches.load``) in the calling thread, in 2 and 4 threads and
   in 2 and 4 spawned processes, against the forward throughput (plain and explained).
3. Peak RSS of the engine (tiny_cnn, 32² shapes, background probes, 2 workers) at 1k and 10k images, each
   in a fresh process.
4. The whole gate on a timm ViT (``timm:vit_tiny_patch16_224``, packed with timm's preprocessing) and on a
   Hugging Face ViT folder of the same size, at 224², against P of the library's own evaluations (PIL open,
   timm's ``create_transform`` or the image processor, a no-grad forward).

On CUDA (when present) the same code runs on the GPU: pinned frames, non-blocking copies, channels_last, and
a bf16 row (``--precision bf16``). The machine's load average is printed: on a shared machine, read the ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
import yaml
from bench_engine import (  # run as a script: benchmarks/ is on sys.path
    make_set,
    memory_child_result,
    peak_rss_during,
    rss_mib,
)
from bench_gradcam import timed
from PIL import Image

import gate
from gate.engine import core as engine
from gate.engine import sanity
from gate.engine.gradcam import explain
from gate.inputs import archs, frame_cache, shapes
from gate.inputs import candidate as candidate_io
from gate.inputs.batches import load
from gate.inputs.preprocess import Geometry
from gate.inputs.review_set import ReviewSet, build, open_review_set
from gate.settings import Settings

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def header() -> str:
    """Machine, date, versions and the load average now."""
    load1, load5, _ = os.getloadavg()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{device}, torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}, "
            f"load average {load1:.1f} (1 min) {load5:.1f} (5 min)")


def make_jpeg_set(root: Path, count: int, size: int) -> ReviewSet:
    """``count`` shapes at ``size``², images re-encoded as JPEG (quality 90), pinned as a review set."""
    plain = shapes.write_plain(shapes.iter_generate(count, bias=0.9, seed=77, size=size), root / "plain")
    for png in sorted((plain / "images").rglob("*.png")):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
        png.unlink()
    return build(plain, root / "set", name=f"bench-jpeg-{count}")


def make_checkpoint(root: Path, size: int) -> Path:
    """A randomly initialised resnet18 for the 4 shapes classes with the ImageNet eval transform."""
    torch.manual_seed(0)
    model = archs.build_model("resnet18", {"num_classes": len(shapes.CLASSES)})
    return candidate_io.save(root / "resnet18.pt", model, arch="resnet18", arch_kwargs={"num_classes": 4},
                             classes=shapes.CLASSES, input_size=(size, size), resize=size * 8 // 7)


def make_policy(root: Path, review_set: ReviewSet) -> Path:
    """A policy pinned to the set with every probe and one rule (the cost does not depend on the rules)."""
    doc = {"name": "bench", "review_set": {"path": str(review_set.root), "digest": review_set.digest},
           "probes": ["background", "sanity"], "rules": [{"score": "accuracy", "min": 0.0}]}
    path = root / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def plain_evaluation(review_set: ReviewSet, cand: candidate_io.Candidate, batch: int, device: torch.device) -> None:
    """Decode, preprocess and one no-grad forward per batch, in the calling thread: what any evaluation pays."""
    geometry = cand.input.geometry
    mean = torch.tensor(cand.input.mean, device=device)[None, :, None, None]
    std = torch.tensor(cand.input.std, device=device)[None, :, None, None]
    model = cand.model.to(device).eval()
    with torch.no_grad():
        for start in range(0, review_set.size, batch):
            rows = np.arange(start, min(start + batch, review_set.size))
            frame = load(review_set, rows, {}, [geometry]).framed[("", geometry)]
            model((frame.images.to(device) - mean) / std)


def gate_vs_plain(count: int, size: int, batch: int, workers: list[int], device: str, repeats: int) -> None:
    """Table 1: the whole gate (all probes) with 0/2/4 workers (and a frame cache) vs P plain evaluations.

    The runs are taken in turn, ``repeats`` rounds (plain, each gate, plain, each gate, ..., plain), and
    each row is the median of its runs: on a shared machine one timing of the plain evaluation alone swung
    by 25% between runs, and every ratio of the table is divided by it.
    """
    forwards = 1 + 4 + sanity.SANITY_COPIES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        review_set = make_jpeg_set(root, count, size)
        ckpt = make_checkpoint(root, size)
        policy = make_policy(root, review_set)
        cand = candidate_io.load(ckpt)
        dev = engine.resolve_device(device)
        runs: dict[str, Settings] = {}
        precisions = ["fp32", "bf16"] if dev.type == "cuda" else ["fp32"]
        for precision in precisions:
            for count_workers in dict.fromkeys(workers):
                runs[f"{count_workers} workers, {precision}"] = Settings(
                    device=device, batch_size=batch, workers=count_workers, precision=precision)
        runs[f"{max(workers)} workers, frames from --frame-cache"] = Settings(
            device=device, batch_size=batch, workers=max(workers), frame_cache=root / "frames")
        plain_evaluation(review_set, cand, batch, dev)  # warm-up: kernels, allocator, page cache
        for settings in runs.values():
            gate.check(ckpt, policy, settings=settings)  # warm-up: autograd, copies; writes the frame cache entry
        plain_times: list[float] = []
        gate_times: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(repeats):
            plain_times.append(timed(lambda: plain_evaluation(review_set, cand, batch, dev)))
            for label, settings in runs.items():
                gate_times[label].append(timed(lambda s=settings: gate.check(ckpt, policy, settings=s)))
        plain_times.append(timed(lambda: plain_evaluation(review_set, cand, batch, dev)))
        plain = statistics.median(plain_times)
        print(f"\n{header()}")
        print(f"\n{count} JPEG images {size}², resnet18 (random), batch {batch}, {device}; P = {forwards} forwards; "
              f"median of {repeats} rounds taken in turn (plain evaluation: {len(plain_times)} runs, "
              f"{min(plain_times):.2f}–{max(plain_times):.2f} s)")
        print("| run | seconds | × one plain evaluation | × P plain evaluations |\n|---|---|---|---|")
        print(f"| one plain evaluation (decode + preprocess + forward) | {plain:.2f} | 1.00 | {1 / forwards:.2f} |")
        for label, times in gate_times.items():
            seconds = statistics.median(times)
            print(f"| whole gate, all probes, {label} | {seconds:.2f} | {seconds / plain:.2f} | "
                  f"{seconds / (forwards * plain):.2f} |")
        print(f"(load average after: {os.getloadavg()[0]:.1f})")


def library_evaluation(review_set: ReviewSet, model: torch.nn.Module, transform: Any, batch: int) -> None:
    """A team's own evaluation: PIL open, the library's eval transform, one no-grad forward per batch."""
    with torch.no_grad():
        for start in range(0, review_set.size, batch):
            rows = range(start, min(start + batch, review_set.size))
            images = [Image.open(review_set.root / review_set.samples[i].image).convert("RGB") for i in rows]
            model(torch.stack([transform(image) for image in images]))


def sources_vs_plain(count: int, batch: int, device: str, repeats: int) -> None:
    """Table 4: the whole gate on a timm ViT and a Hugging Face ViT at 224² vs P of their library's evaluations."""
    import timm
    import transformers

    from gate.inputs.pack import PackRequest, pack

    forwards = 1 + 4 + sanity.SANITY_COPIES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        review_set = make_jpeg_set(root, count, 224)
        policy = make_policy(root, review_set)
        (root / "classes.txt").write_text("\n".join(shapes.CLASSES))
        torch.manual_seed(0)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4).eval()
        torch.save(vit.state_dict(), root / "vit.pth")
        timm_file = pack(PackRequest(weights=root / "vit.pth", arch="timm:vit_tiny_patch16_224",
                                     classes_file=root / "classes.txt", output=root / "timm-vit.safetensors")).path
        labels = dict(enumerate(shapes.CLASSES))
        config = transformers.ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                                        intermediate_size=768, id2label=labels,
                                        label2id={v: k for k, v in labels.items()})
        hf = transformers.ViTForImageClassification(config).eval()
        hf.save_pretrained(root / "hf-vit")
        processor = transformers.ViTImageProcessor(size={"height": 224, "width": 224})
        processor.save_pretrained(root / "hf-vit")
        cases = {
            "timm vit_tiny_patch16_224": (timm_file, vit, timm.data.create_transform(
                **timm.data.resolve_data_config({}, model=vit))),
            "transformers ViT (vit_tiny's size)": (root / "hf-vit", lambda x: hf(pixel_values=x).logits,
                                                   lambda image: processor(image, return_tensors="pt")[
                                                       "pixel_values"][0]),
        }
        print(f"\n{header()}")
        print(f"\n{count} JPEG images 224², random weights, batch {batch}, {device}; P = {forwards} forwards; "
              f"median of {repeats} rounds taken in turn")
        print("| model | library evaluation (s) | whole gate, all probes (s) | × P library evaluations |\n"
              "|---|---|---|---|")
        for label, (path, model, transform) in cases.items():
            settings = Settings(device=device, batch_size=batch)
            library_evaluation(review_set, model, transform, batch)  # warm-up
            gate.check(Path(path), policy, settings=settings)
            plain_times, gate_times = [], []
            for _ in range(repeats):
                plain_times.append(timed(lambda m=model, t=transform: library_evaluation(review_set, m, t, batch)))
                gate_times.append(timed(lambda p=Path(path), s=settings: gate.check(p, policy, settings=s)))
            plain, whole = statistics.median(plain_times), statistics.median(gate_times)
            print(f"| {label} | {plain:.2f} | {whole:.2f} | {whole / (forwards * plain):.2f} |")
        print(f"(load average after: {os.getloadavg()[0]:.1f})")


_WORKER_SET: list[ReviewSet] = []


def _open_in_worker(root: str) -> None:
    """Process-pool initializer: open (and verify) the review set once per worker process."""
    _WORKER_SET.append(open_review_set(Path(root)))


def _load_rows(rows: list[int], geometry: Geometry) -> int:
    """Process-pool task: load one batch in the worker (the frames stay there: only the count comes back)."""
    return len(load(_WORKER_SET[0], np.asarray(rows), {}, [geometry]).batch.indices)


def cache_rates(review_set: ReviewSet, geometry: Geometry, chunks: list[list[int]]) -> dict[str, float]:
    """Images/s reading the frames from a --frame-cache entry, and opening (sha256-checking) the entry."""
    count = review_set.size
    with tempfile.TemporaryDirectory() as folder:
        writing = frame_cache.plan(Path(folder), review_set.digest, count, [geometry], write=True)
        for rows in chunks:
            load(review_set, np.asarray(rows), {}, [geometry], cache=writing)
        assert writing.finish(complete=True) == [geometry]
        opened: list[frame_cache.CachePlan] = []
        opening = timed(lambda: opened.append(frame_cache.plan(Path(folder), review_set.digest, count, [geometry],
                                                               write=False)))
        reading = opened[0]
        assert geometry in reading.stores

        def read_all() -> None:
            for rows in chunks:
                load(review_set, np.asarray(rows), {}, [geometry], cache=reading)

        read_all()  # warm-up (page cache)
        reading_rate = count / timed(read_all)
        for plan in opened:
            plan.finish(complete=False)  # closes the entry's files
        return {"frames read from a --frame-cache entry (image + mask), calling thread": reading_rate,
                "opening that entry (sha256 of every frame), per image of the set": count / opening}


def throughput(count: int, size: int, batch: int, device: str, photo: int) -> None:
    """Table 2: images/s of decode + preprocess (threads, processes, cache) vs forward (plain, explained)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        review_set = make_jpeg_set(root, count, photo)
        cand = candidate_io.load(make_checkpoint(root, size))
        geometry = cand.input.geometry
        chunks = [list(range(s, min(s + batch, count))) for s in range(0, count, batch)]
        print(f"\n{header()}")
        print(f"\n{count} JPEG images {photo}² (+ PNG masks) framed to {size}², batch {batch}")
        print("| stage | images/s |\n|---|---|")

        def in_thread(rows: list[int]) -> int:
            return len(load(review_set, np.asarray(rows), {}, [geometry]).batch.indices)

        def run_threads(pool: Executor) -> None:
            list(pool.map(in_thread, chunks))

        def run_processes(pool: Executor) -> None:
            # Processes send back only a count: the pickling of frames a real pipeline pays is not included.
            list(pool.map(_load_rows, chunks, [geometry] * len(chunks)))

        decode_rates = {}
        seconds = timed(lambda: [in_thread(rows) for rows in chunks])
        decode_rates["calling thread"] = count / seconds
        for n in (2, 4):
            with ThreadPoolExecutor(n) as pool:
                run_threads(pool)  # warm-up
                decode_rates[f"{n} threads"] = count / timed(lambda p=pool: run_threads(p))
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(n, mp_context=spawn, initializer=_open_in_worker,
                                     initargs=(str(review_set.root),)) as pool:
                for _ in range(2):  # warm-up (every worker): spawn, imports and opening are paid once per gate
                    run_processes(pool)
                decode_rates[f"{n} processes (spawn)"] = count / timed(lambda p=pool: run_processes(p))
        for name, rate in decode_rates.items():
            print(f"| decode + preprocess (image + mask), {name} | {rate:.1f} |")
        for name, rate in cache_rates(review_set, geometry, chunks).items():
            print(f"| {name} | {rate:.1f} |")
        dev = engine.resolve_device(device)
        model = cand.model.to(dev).eval()
        x = torch.randn(batch, 3, size, size, device=dev)
        with torch.no_grad():
            model(x)
            plain = timed(lambda: [model(x) for _ in range(3)]) / 3
        explained = timed(lambda: [explain(model, cand.target_layer, x) for _ in range(3)]) / 3
        print(f"| resnet18 forward, no grad ({dev.type}, fp32) | {batch / plain:.1f} |")
        print(f"| resnet18 explained forward (logits + Grad-CAM) | {batch / explained:.1f} |")
        if dev.type == "cuda":
            model_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model_cl(x_cl)
                bf16 = timed(lambda: [model_cl(x_cl) for _ in range(3)]) / 3
            print(f"| resnet18 forward, no grad, bf16 + channels_last | {batch / bf16:.1f} |")
        print(f"(load average after: {os.getloadavg()[0]:.1f})")


def memory_child(root: str) -> None:
    """In a fresh process: RSS before, and the highest RSS sampled every 5 ms while the engine runs."""
    from dataclasses import replace

    from gate.api import from_module
    from gate.inputs.model_input import InputSpec

    review_set = open_review_set(Path(root))
    torch.manual_seed(0)
    cand = from_module(archs.tiny_cnn(4).eval(), classes=shapes.CLASSES, name="tiny",
                       input=InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3), target_layer="features")
    options = engine.EngineOptions(device="cpu", batch_size=64, probes=frozenset({"background"}), workers=2)
    warm = review_set.samples[:: max(1, review_set.size // 128)]  # every class: background probes pair classes
    engine.run([cand], replace(review_set, samples=warm), options)  # warm-up
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_mib()
    started = time.perf_counter()
    runs, peak = peak_rss_during(lambda: engine.run([cand], review_set, options))
    seconds = time.perf_counter() - started
    print(json.dumps({"before_mib": before, "peak_mib": peak, "seconds": seconds,
                      "kept": len(runs[0].records.kept), "records": runs[0].records.size}))


def memory(sizes: list[int]) -> None:
    """Table 3: peak RSS of one engine run per review-set size, each in its own process."""
    print(f"\n{header()}")
    print("\n| review set (32² PNG, tiny_cnn, background probes, 2 workers) | RSS before (MiB) | peak (MiB) | "
          "peak − before (MiB) | kept samples | seconds |\n|---|---|---|---|---|---|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            got = memory_child_result(__file__, make_set(Path(tmp), size, side=32).root)
            print(f"| {size} samples | {got['before_mib']:.0f} | {got['peak_mib']:.0f} | "
                  f"{got['peak_mib'] - got['before_mib']:.0f} | {got['kept']} | {got['seconds']:.1f} |")


def main() -> None:
    """Print the tables asked for (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--photo-size", type=int, help="Side of the generated photos in table 2 (default: --size).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,2,4")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds of table 1 (each row: the median).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-sizes", default="1000,10000")
    parser.add_argument("--only", choices=["gate", "throughput", "memory", "sources"])
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.only in (None, "gate"):
        gate_vs_plain(args.count, args.size, args.batch_size, [int(w) for w in args.workers.split(",")], args.device,
                      args.repeats)
    if args.only in (None, "throughput"):
        throughput(args.count, args.size, args.batch_size, args.device, args.photo_size or args.size)
    if args.only in (None, "memory"):
        memory([int(s) for s in args.memory_sizes.split(",")])
    if args.only in (None, "sources"):
        sources_vs_plain(args.count, args.batch_size, args.device, args.repeats)


if __name__ == "__main__":
    main()
