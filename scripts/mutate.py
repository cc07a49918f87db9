#!/usr/bin/env python3
"""Mutation testing of the fast suite (not run by CI): apply realistic one-line mutations, report the survivors.

Each mutation replaces one exact line fragment in one module of a private copy of the working tree (the
tree itself is never touched, so people can keep working in it), runs the fast tests that cover it, and
counts it killed when they fail. A mutation whose fragment is no longer in the code is reported as stale.

    .venv/bin/python scripts/mutate.py                 # every mutation
    .venv/bin/python scripts/mutate.py policy-        # those whose id starts with a prefix
    .venv/bin/python scripts/mutate.py --list

Exit code: 0 when every applicable mutation was killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """One realistic one-line bug: replace ``old`` by ``new`` in ``path``; ``tests`` should notice."""

    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


H = "tests/test_hardening.py"
MUTATIONS: tuple[Mutation, ...] = (
    # the ones that once survived every fast test (issue 16)
    Mutation("run-ignores-pinned-digest", "gate/run.py",
             "expected_digest=None if request.allow_unpinned else pinned", "expected_digest=None",
             (f"{H}::test_the_policy_digest_is_enforced",)),
    Mutation("review-set-digest-prefix", "gate/review_set.py",
             "if expected_digest is not None and _normal_digest(expected_digest) != digest:",
             "if expected_digest is not None and not digest.startswith(_normal_digest(expected_digest)):",
             (f"{H}::test_a_digest_prefix_is_not_a_match",)),
    Mutation("finite-check-lets-inf-through", "gate/model_faults.py",
             "bad = ~torch.isfinite(logits).all(1)", "bad = torch.isnan(logits).any(1)",
             (f"{H}::test_corpus_case[output-inf]",)),
    Mutation("probe-variants-not-checked", "gate/engine.py",
             "logits = self.check.check_finite(logits, [batch.sample_ids[i] for i in rows], variant)",
             "logits = logits",
             (f"{H}::test_corpus_case[output-nan-on-probe-variant]",)),
    Mutation("seed-not-reaching-engine", "gate/cli.py",
             'batch_size=options["batch_size"], seed=options["seed"]', 'batch_size=options["batch_size"], seed=0',
             (f"{H}::test_the_seed_reaches_the_engine",)),
    Mutation("ranks-joined-reversed", "gate/run.py",
             "for parts in distributed.transpose(gathered)]", "for parts in distributed.transpose(gathered[::-1])]",
             ("tests/test_run.py::test_sharded_blocks_join_in_rank_order",)),
    Mutation("class-wilson-over-all-samples", "gate/intervals.py",
             "return ratio_form((correct & in_class).astype(np.float64), in_class.astype(np.float64))",
             "return ratio_form((correct & in_class).astype(np.float64), np.ones(in_class.shape))",
             ("tests/test_policy.py",)),
    Mutation("bootstrap-bounds-two-sided", "gate/intervals.py",
             'return Bounds(stats.percentile_interval(values, confidence), "bootstrap")',
             'return Bounds(stats.percentile_interval(values, (1 + confidence) / 2), "bootstrap")',
             ("tests/test_policy.py",)),
    # policy
    Mutation("policy-min-strict", "gate/policy.py",
             'passed = tested >= threshold if op == ">=" else tested <= threshold',
             'passed = tested > threshold if op == ">=" else tested <= threshold', ("tests/test_policy.py",)),
    Mutation("policy-range-unchecked", "gate/policy.py", "if not low <= value <= high:", "if False:",
             ("tests/test_policy.py",)),
    Mutation("policy-nan-accepted", "gate/policy.py", "if not math.isfinite(value):", "if False:",
             ("tests/test_policy.py",)),
    Mutation("policy-nan-score-passes", "gate/policy.py",
             "return RuleResult(rule_id, rule.score, op, threshold, None, False,",
             "return RuleResult(rule_id, rule.score, op, threshold, None, True,", ("tests/test_policy.py",)),
    # strict YAML
    Mutation("yaml-duplicates-allowed", "gate/inputs/strict_yaml.py", "if first is not None:", "if False:",
             ("tests/test_policy.py",)),
    Mutation("yaml-aliases-allowed", "gate/inputs/strict_yaml.py",
             "if isinstance(event, AliasEvent):", "if False:", ("tests/test_policy.py",)),
    Mutation("yaml-depth-unbounded", "gate/inputs/strict_yaml.py",
             "if len(self._path) > self.max_depth:", "if False:", ("tests/test_policy.py",)),
    # import paths
    Mutation("import-stdlib-allowed", "gate/inputs/safe_import.py",
             "if top in sys.stdlib_module_names or top in sys.builtin_module_names:", "if False:",
             (f"{H}::test_corpus_case[arch-os-system]",)),
    Mutation("import-installed-allowed", "gate/inputs/safe_import.py",
             "if not resolved.is_relative_to(tree) or _installed(resolved):",
             "if not resolved.is_relative_to(Path('/')) or _installed(resolved):",
             (f"{H}::test_corpus_case[arch-outside-module]",)),
    Mutation("import-reexport-allowed", "gate/inputs/safe_import.py",
             "if not isinstance(defined_in, str) or not _defined_in_allowed(defined_in, rule):", "if False:",
             (f"{H}::test_corpus_case[arch-reexported-system]",)),
    Mutation("kwargs-unchecked", "gate/archs.py", "    check_plain_kwargs(kwargs)\n", "\n",
             (f"{H}::test_corpus_case[kwargs-tensor]",)),
    Mutation("checkpoint-size-unchecked", "gate/run.py", "if info.st_size > max_mb * 1024 * 1024:",
             "if info.st_size > max_mb * 1024 * 1024 * 1024:", (f"{H}::test_corpus_case[over-size-limit]",)),
    Mutation("unpinned-not-marked", "gate/run.py",
             'return pinned is not None and digest.removeprefix("sha256:") == pinned.removeprefix("sha256:")',
             "return True", (f"{H}::test_an_unpinned_run_is_marked_in_result_json_and_console",)),
    # outputs and signals
    Mutation("outputs-stale-kept", "gate/outputs.py",
             "            path.unlink(missing_ok=True)\n        except OSError",
             "            pass\n        except OSError", ("tests/test_outputs.py",)),
    Mutation("paths-checked-after-the-engine", "gate/cli.py", "        outputs.check_paths(paths)\n", "        pass\n",
             (f"{H}::test_corpus_case[report-under-a-file]",)),
    Mutation("outputs-json-first", "gate/outputs.py",
             'contents = [("report", paths.report, render_report(result).encode("utf-8")),',
             'contents = [("json", paths.json, result_json(result).encode("utf-8")), '
             '("report", paths.report, render_report(result).encode("utf-8")),', ("tests/test_outputs.py",)),
    Mutation("outputs-nan-in-json", "gate/outputs.py", "indent=2, allow_nan=False)", "indent=2, allow_nan=True)",
             ("tests/test_outputs.py",)),
    Mutation("sigterm-exit-130", "gate/cli.py", "return EXIT_SIGTERM if terminated else EXIT_SIGINT",
             "return EXIT_SIGINT", (f"{H}::test_a_signal_mid_evaluation_exits_cleanly_and_leaves_no_result",)),
    Mutation("outbox-interrupt-drops-entry", "gate/tracking.py",
             "                move_to_outbox(staging, plan.entry_id, config.outbox)\n        raise",
             "                pass\n        raise", ("tests/test_outbox.py",)),
    # metrics and statistics
    Mutation("wilson-two-sided-z", "gate/stats.py", "return float(sps.norm.ppf(confidence))",
             "return float(sps.norm.ppf((1 + confidence) / 2))", ("tests/test_stats.py", "tests/test_policy.py")),
    Mutation("ece-ten-bins", "gate/metrics/classification.py", "ECE_BINS = 15", "ECE_BINS = 10",
             ("tests/test_metrics.py",)),
    Mutation("candidate-pickles-allowed", "gate/candidate.py",
             'map_location="cpu", weights_only=True)', 'map_location="cpu", weights_only=False)',
             (f"{H}::test_corpus_case[pickled-module]",)),
    Mutation("review-set-ignore-list-reads", "gate/review_set.py",
             'return rel.split("/")[-1] in {".DS_Store", "Thumbs.db"}',
             'return rel.split("/")[-1] in {".DS_Store", "Thumbs.db"} or rel.endswith(".db")',
             (f"{H}::test_corpus_case[set-thumbs-db]",)),
)


def copy_tree(target: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files (what the tests see), without .git."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, float]:
    """True when the tests pass (the mutation survived), and the seconds they took."""
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    try:
        done = subprocess.run(command, cwd=tree, capture_output=True, timeout=timeout,
                              env={"PATH": "/usr/bin:/bin", "CI": "true", "PYTHONPATH": str(tree)})
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - started  # a hang counts as noticed
    return done.returncode == 0, time.monotonic() - started


def main() -> int:
    """Apply each selected mutation in a private copy of the tree and report which survive."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="only mutations whose id starts with one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutation's tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.prefixes or any(m.id.startswith(p) for p in args.prefixes)]
    if args.list:
        for mutation in chosen:
            print(f"{mutation.id:34} {mutation.path}")
        return 0
    survived, stale, killed = [], [], []
    with tempfile.TemporaryDirectory(prefix="xgate-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        baseline_ok, _ = run_tests(tree, tuple(sorted({t for m in chosen for t in m.tests})), args.timeout * 3)
        if not baseline_ok:
            print("the selected tests fail without any mutation; fix them first", file=sys.stderr)
            return 2
        for mutation in chosen:
            path = tree / mutation.path
            original = path.read_text(encoding="utf-8")
            if original.count(mutation.old) != 1:
                stale.append(mutation.id)
                print(f"stale     {mutation.id} (fragment not found once in {mutation.path})", flush=True)
                continue
            path.write_text(original.replace(mutation.old, mutation.new), encoding="utf-8")
            try:
                alive, seconds = run_tests(tree, mutation.tests, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            (survived if alive else killed).append(mutation.id)
            print(f"{'SURVIVED' if alive else 'killed  '}  {mutation.id} ({seconds:.0f} s)", flush=True)
    applied = len(survived) + len(killed)
    print(f"\n{len(killed)}/{applied} mutations killed" + (f"; {len(stale)} stale" if stale else ""))
    if survived:
        print("survivors: " + ", ".join(survived))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
