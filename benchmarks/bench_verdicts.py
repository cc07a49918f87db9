"""Verdicts that hold up: what the sanity probe and the score intervals cost, and how stable the sanity score is.

Run by hand (`python benchmarks/bench_verdicts.py [--stability]`); write the printed tables into
benchmarks/RESULTS.md with the machine and date.

- Sanity cost: the engine on the shipped review set (600 samples) without probes, with the sanity probe at one
  randomised copy and at ``sanity.SANITY_COPIES``: each copy is one more explained forward per batch.
- Bootstrap cost: one rule's interval (2000 resamples) on synthetic records of 600 and 10,000 samples, for a
  share (Wilson), the vectorised forms (a mean, ECE's bins, per-class accuracy, the rank forms of ``aurc`` and
  ``selective_accuracy@0.8``) and, for those two, the per-resample fallback they used before (the score
  function on every resample). Each vectorised form is held to ``INTERVAL_GOALS``, and a comparison's
  accuracy-difference interval to ``COMPARISON_GOAL`` (once wall-clock asserts in the fast suite).

Every timing is :func:`bench_gradcam.best_of`: the median of ``--repeats`` calls after one warm-up call.
- ``--stability``: every shipped candidate's sanity score for --seed 0..4, their range, and the score of a
  checkpoint whose classes (and head rows) are listed in another order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from bench_gradcam import best_of  # run as a script: benchmarks/ is on sys.path

from gate.decide import intervals, stats
from gate.engine import core as engine
from gate.engine import sanity
from gate.inputs import candidate as candidate_io
from gate.inputs.review_set import open_review_set
from gate.metrics.registry import compute_scores
from gate.records import Records

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SET = REPO / "review_sets" / "shapes-v1"
CANDIDATES = ("cheater", "bgmix", "baseline", "cutmix", "baseline-biased", "cutmix-biased")
SANITY = frozenset({"sanity"})


def sanity_cost(repeats: int) -> None:
    """Engine seconds on the shipped set: no probes, sanity with one copy, sanity with SANITY_COPIES."""
    review_set = open_review_set(SHIPPED_SET)
    cand = candidate_io.load(REPO / "candidates" / "cheater.pt")

    def run(enabled: frozenset[str]) -> float:
        return best_of(repeats, lambda: engine.run([cand], review_set, engine.EngineOptions(probes=enabled)))

    plain = run(frozenset())
    default = sanity.SANITY_COPIES
    sanity.SANITY_COPIES = 1
    try:
        one = run(SANITY)
    finally:
        sanity.SANITY_COPIES = default
    many = run(SANITY)
    print(f"\nSanity cost, {review_set.size} samples, batch 32, median of {repeats} after a warm-up")
    print("| run | seconds | × engine without probes |\n|---|---|---|")
    print(f"| engine, no probes | {plain:.3f} | 1.00 |")
    print(f"| + sanity, 1 randomised copy | {one:.3f} | {one / plain:.2f} |")
    print(f"| + sanity, {default} randomised copies (default) | {many:.3f} | {many / plain:.2f} |")
    print(f"per copy: {(many - plain) / default:.3f} s (one explained forward per batch)")


def synthetic(n: int, seed: int = 0) -> Records:
    """``n`` calibrated samples with alignment values (the scores the bootstrap reads)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    conf = rng.uniform(0.6, 0.999, size=n)
    preds = np.where(rng.random(n) < conf, labels, (labels + 1) % 4)
    probs = np.tile(((1 - conf) / 3)[:, None], (1, 4))
    probs[np.arange(n), preds] = conf
    area = np.full(n, 0.2)
    energy = np.clip(rng.normal(2.4, 1.0, size=n), 0.05, 4.95) * area
    return Records(classes=("a", "b", "c", "d"), ids=tuple(map(str, range(n))), labels=labels.astype(np.int64),
                   probs=probs.astype(np.float32), energy=energy, mask_area=area,
                   pointing_hit=(rng.random(n) < 0.7).astype(np.float64), rank_accuracy=rng.random(n))


# Speed goals, formerly wall-clock asserts in the fast suite: they catch a fall back to the per-resample loop
# (2.6 s and 52 s for aurc on the loaded 2-core machine), not a slow day. Seconds, by review-set size.
INTERVAL_GOALS = {600: 1.5, 10_000: 20.0}
COMPARISON_GOAL = 0.2  # the accuracy difference's interval of a baseline comparison, 600 samples


def goal(seconds: float, limit: float) -> str:
    return "met" if seconds < limit else f"MISSED (goal {limit:g} s)"


def comparison_cost(repeats: int) -> None:
    """Seconds for the accuracy difference's interval (2000 paired resamples) that every comparison reports."""
    from gate.decide.compare import compare

    registry = partial(compute_scores, probes=frozenset())
    base = synthetic(600)
    flipped = base.probs.copy()
    flipped[:10] = np.roll(flipped[:10], 1, axis=1)  # ten samples change their prediction
    cand = Records(**{**vars(base), "probs": flipped})
    seconds = best_of(repeats, lambda: compare(cand, base, registry).interval_for("accuracy", confidence=0.95))
    print(f"\nComparison, accuracy difference at 0.95, 600 samples: {seconds:.3f} s, "
          f"{goal(seconds, COMPARISON_GOAL)}")


def bootstrap_cost(repeats: int) -> None:
    """Seconds for one rule's interval at 0.95 (2000 resamples), per score kind and review-set size."""
    scores = [("accuracy", "Wilson (share of samples)"), ("alignment.lift", "vectorised mean"),
              ("ece", "vectorised, per-bin sums"), ("worst_class_accuracy", "vectorised, per class"),
              ("aurc", "vectorised, rank form"), ("selective_accuracy@0.8", "vectorised, rank form"),
              ("alignment.lift.correct", "vectorised, mean over the right answers (its spec's form)")]
    print(f"\nInterval of one rule, confidence 0.95, {intervals.DEFAULT_REPS} resamples, "
          f"median of {repeats} after a warm-up")
    print("| score | method | 600 samples (s) | 10,000 samples (s) | goal |\n|---|---|---|---|---|")
    records = {n: synthetic(n) for n in (600, 10_000)}
    for score, method in scores:
        times = [best_of(repeats, lambda r=records[n], s=score: intervals.score_interval(r, s, confidence=0.95))
                 for n in (600, 10_000)]
        met = [goal(t, INTERVAL_GOALS[n]) for t, n in zip(times, (600, 10_000), strict=True)]
        print(f"| {score} | {method} | {times[0]:.3f} | {times[1]:.3f} | {', '.join(met)} |")
    for score in ("aurc", "selective_accuracy@0.8", "alignment.lift.correct"):
        times = [best_of(repeats, lambda r=records[n], s=score: per_resample_interval(r, s)) for n in (600, 10_000)]
        print(f"| {score} | score function on every resample (before) | {times[0]:.3f} | {times[1]:.3f} | - |")


def per_resample_interval(records: Records, score: str) -> stats.Interval:
    """What ``intervals.score_interval`` did before the rank forms: the registry on every (index-sorted) resample."""
    def statistic(index: np.ndarray) -> float:
        return compute_scores(records.take(np.sort(index)), frozenset(), only=(score,))[score]

    return stats.paired_bootstrap(statistic, records.size, reps=intervals.DEFAULT_REPS, confidence=0.95)


def permuted_copy(path: Path, out: Path, order: list[int]) -> Path:
    """``path`` with its classes listed in ``order`` and the head's rows permuted to match."""
    payload = torch.load(path, weights_only=True)
    state = dict(payload["state_dict"])
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][order], state["fc.bias"][order]
    payload = {**payload, "state_dict": state, "classes": [payload["classes"][i] for i in order]}
    torch.save(payload, out)
    return out


def stability(batch_size: int) -> None:
    """Each shipped candidate's sanity score for --seed 0..4, and with its classes in another order."""
    review_set = open_review_set(SHIPPED_SET)
    cands = [candidate_io.load(REPO / "candidates" / f"{name}.pt") for name in CANDIDATES]
    values: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    spreads: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for seed in range(5):
        options = engine.EngineOptions(probes=SANITY, seed=seed, batch_size=batch_size)
        for name, model_run in zip(CANDIDATES, engine.run(cands, review_set, options), strict=True):
            scores = compute_scores(model_run.records, SANITY)
            values[name].append(scores["sanity.randomization_similarity"])
            spreads[name].append(scores["sanity.randomization_similarity.spread"])
    with tempfile.TemporaryDirectory() as tmp:
        permuted = [candidate_io.load(permuted_copy(REPO / "candidates" / f"{name}.pt", Path(tmp) / f"{name}.pt",
                                                    [2, 0, 3, 1])) for name in CANDIDATES]
        options = engine.EngineOptions(probes=SANITY, seed=0, batch_size=batch_size)
        permuted_scores = [compute_scores(r.records, SANITY)["sanity.randomization_similarity"]
                           for r in engine.run(permuted, review_set, options)]
    print(f"\nsanity.randomization_similarity, {sanity.SANITY_COPIES} copies, --seed 0..4 "
          "(spread = std across the copies within one run)")
    print("| candidate | seeds 0..4 | range | spread (mean) | classes permuted, seed 0: difference |")
    print("|---|---|---|---|---|")
    for name, other in zip(CANDIDATES, permuted_scores, strict=True):
        v = values[name]
        print(f"| {name} | {', '.join(f'{x:.3f}' for x in v)} | {max(v) - min(v):.3f} | "
              f"{np.mean(spreads[name]):.3f} | {abs(other - v[0]):.1e} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stability", action="store_true", help="also the 5-seed and class-order table (minutes)")
    parser.add_argument("--intervals-only", action="store_true", help="only the interval table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bootstrap_cost(args.repeats)
    comparison_cost(args.repeats)
    if args.intervals_only:
        return
    sanity_cost(args.repeats)
    if args.stability:
        stability(batch_size=200)


if __name__ == "__main__":
    main(sys.argv[1:])
