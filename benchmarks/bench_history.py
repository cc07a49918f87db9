"""The history page's size for 50 runs: JPEG thumbnails of the newest MAP_RUNS runs (now) against every run's
map PNGs inline (before), in one run. Maps are built from the shipped review set's 64 px images like the engine's.

    python benchmarks/bench_history.py [--runs 50] [--samples 8]
"""

from __future__ import annotations

import argparse
import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from gate.outputs.report import history as page
from gate.records import KeptSample
from gate.tracking.outbox import map_png
from gate.tracking.rows import KEY_SCORES, MAP_RUNS, HistoryRow, map_rows

REPO = Path(__file__).resolve().parents[1]


def rows_of(count: int) -> list[HistoryRow]:
    """``count`` runs, newest first: two candidates under two policies, every key score and a threshold each."""
    rows = []
    for n in range(count):
        policy, threshold = (("strict", 0.9), ("lenient", 0.75))[n % 2]
        scores = {name: 0.5 + 0.01 * ((n * 7 + k) % 40) for k, name in enumerate(KEY_SCORES)}
        rows.append(HistoryRow(
            run_id=f"run{n:02d}" + "0" * 24, start_time=datetime(2026, 1, 1 + n // 24, n % 24, tzinfo=UTC),
            candidate=("cutmix.pt", "cheater.pt")[n // 2 % 2], verdict="passed", scores=scores, failed_rules=(),
            policy=policy, thresholds={s: ((">=", threshold),) for s in KEY_SCORES}, rules_total=12, rules_failed=0,
            commit=f"{n * 2654435761 % 16**7:07x}", branch="main"))
    return rows[::-1]


def a_map(run: int, sample: int, files: list[Path]) -> bytes:
    image = np.asarray(Image.open(files[sample % len(files)]).convert("RGB").resize((64, 64)))
    yy, xx = np.mgrid[0:64, 0:64]
    cam = np.exp(-((yy - 20 - run % 20) ** 2 + (xx - 30) ** 2) / 60.0).astype(np.float32)
    mask = np.zeros((64, 64), dtype=bool)
    mask[18:44, 20:46] = True
    return map_png(KeptSample(sample_id=f"s{sample}", image=image, mask=mask, cam=cam, label=0, pred=0,
                              confidence=0.9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    files = sorted((REPO / "review_sets" / "shapes-v1" / "images").rglob("*.png"))
    rows = rows_of(args.runs)
    every = [r.run_id for r in rows]
    maps = {f"s{k}": {run: a_map(n, k, files) for n, run in enumerate(every)} for k in range(args.samples)}
    shown = {r.run_id for r in map_rows(rows)}
    started = time.perf_counter()
    now = page.render_history(rows, {s: {r: m for r, m in by.items() if r in shown} for s, by in maps.items()})
    seconds = time.perf_counter() - started
    png_bytes = sum(len(base64.b64encode(m)) for by in maps.values() for m in by.values())
    thumbs = [page.jpeg_thumbnail(m) or b"" for by in maps.values() for r, m in by.items() if r in shown]
    print(f"{args.runs} runs, {args.samples} samples: page {len(now.encode()):,} bytes (maps of the newest "
          f"{MAP_RUNS} runs as JPEG, mean {sum(map(len, thumbs)) / max(1, len(thumbs)):,.0f} bytes each), "
          f"rendered in {seconds:.1f} s; every run's map PNGs inline would add {png_bytes:,} bytes of base64")


if __name__ == "__main__":
    main()
