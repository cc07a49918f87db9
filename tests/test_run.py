"""run_gate wiring: baselines that do not fit, select's deterministic ranking, candidate names."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from gate.errors import CandidateError, PolicyError, UsageError
from gate.inputs import archs, candidate
from gate.inputs.review_set import ReviewSet
from gate.run import GateRequest, run_gate
from tests.conftest import pinned_policy, save_tiny, train_tiny


def request(policy: Path, *candidates: Path, baseline: Path | None = None, command: str = "select") -> GateRequest:
    return GateRequest(command=command, candidates=candidates, policy=policy, baseline=baseline)


ANY_ACCURACY = [{"score": "accuracy", "min": 0.0}]


def test_ties_are_broken_by_name_whatever_the_argument_order(
    tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path
) -> None:
    for name in ("b.pt", "a.pt", "c.pt"):
        shutil.copy(untrained_checkpoint, tmp_path / name)
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    forward = run_gate(request(policy, tmp_path / "b.pt", tmp_path / "a.pt", tmp_path / "c.pt"))
    backward = run_gate(request(policy, tmp_path / "c.pt", tmp_path / "a.pt", tmp_path / "b.pt"))
    # Same weights: every score ties, so the name decides, the same way both times.
    assert {c.scores["accuracy"] for c in forward.candidates} == {forward.candidates[0].scores["accuracy"]}
    assert forward.selected == backward.selected == "a.pt"
    assert forward.ranking == backward.ranking == ("a.pt", "b.pt", "c.pt")
    assert forward.rank_by == ("accuracy", "ece")


def test_better_candidate_wins_over_name_order(tmp_path: Path, small_set: ReviewSet,
                                               untrained_checkpoint: Path) -> None:
    other = save_tiny(train_tiny(0.0, seed=2, n=400, epochs=3, size=32), tmp_path / "z.pt", size=32)
    shutil.copy(untrained_checkpoint, tmp_path / "a.pt")
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    result = run_gate(request(policy, tmp_path / "a.pt", other))
    by_name = {c.candidate.name: c.scores["accuracy"] for c in result.candidates}
    assert by_name["z.pt"] > by_name["a.pt"] == 0.25  # trained beats untrained (which predicts one class)
    assert result.selected == "z.pt" and result.ranking == ("z.pt", "a.pt")


def test_rejected_candidates_rank_after_passing_ones(tmp_path: Path, small_set: ReviewSet,
                                                     untrained_checkpoint: Path) -> None:
    shutil.copy(untrained_checkpoint, tmp_path / "a.pt")
    shutil.copy(untrained_checkpoint, tmp_path / "b.pt")
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 1.0}])
    result = run_gate(request(policy, tmp_path / "a.pt", tmp_path / "b.pt"))
    assert not result.passed and result.selected is None
    assert result.ranking == ("a.pt", "b.pt")
    assert all(c.failed_rules[0].rule_id == "accuracy >= 1" for c in result.candidates)


def test_colliding_file_names_are_shown_by_path(tmp_path: Path, small_set: ReviewSet,
                                                untrained_checkpoint: Path) -> None:
    for run in ("run1", "run2"):
        (tmp_path / run).mkdir()
        shutil.copy(untrained_checkpoint, tmp_path / run / "model.pt")
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    result = run_gate(request(policy, tmp_path / "run2" / "model.pt", tmp_path / "run1" / "model.pt"))
    names = [c.candidate.name for c in result.candidates]
    assert names == [str(tmp_path / "run2" / "model.pt"), str(tmp_path / "run1" / "model.pt")]
    assert result.selected == str(tmp_path / "run1" / "model.pt")  # tie: the smaller name


def test_the_same_file_twice_is_a_usage_error(tmp_path: Path, small_set: ReviewSet,
                                              untrained_checkpoint: Path) -> None:
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    with pytest.raises(UsageError) as info:
        run_gate(request(policy, untrained_checkpoint, untrained_checkpoint))
    assert info.value.exit_code == 2 and "given twice" in info.value.one_line()


def test_baseline_with_another_input_size_is_refused(tmp_path: Path, small_set: ReviewSet,
                                                     untrained_checkpoint: Path) -> None:
    torch.manual_seed(0)
    bigger = save_tiny(archs.tiny_cnn(4, width=12), tmp_path / "prod48.pt", size=48)
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    with pytest.raises(CandidateError) as info:
        run_gate(request(policy, untrained_checkpoint, baseline=bigger, command="check"))
    assert info.value.exit_code == 2
    assert info.value.path == str(bigger) and info.value.field == "input.size"
    assert "[48, 48]" in info.value.message and "[32, 32]" in info.value.message


def test_baseline_with_other_classes_is_refused(tmp_path: Path, small_set: ReviewSet,
                                                untrained_checkpoint: Path) -> None:
    torch.manual_seed(0)
    other = candidate.save(tmp_path / "prod.pt", archs.tiny_cnn(4, width=12), arch="tiny_cnn",
                           arch_kwargs={"num_classes": 4, "width": 12},
                           classes=("circle", "square", "triangle", "star"), input_size=(32, 32))
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    with pytest.raises(CandidateError) as info:
        run_gate(request(policy, untrained_checkpoint, baseline=other, command="check"))
    assert info.value.path == str(other) and info.value.field == "classes"
    assert "'cross'" in info.value.message  # the review-set class the baseline lacks


def test_vs_baseline_rule_without_a_baseline_is_refused_before_running(
    tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}}])

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine ran before the usage error")

    monkeypatch.setattr("gate.engine.core.run", no_engine)
    with pytest.raises(PolicyError) as info:
        run_gate(request(policy, untrained_checkpoint, command="check"))
    assert info.value.exit_code == 2 and info.value.path == str(policy) and info.value.field == "rules"
    assert "--baseline" in info.value.message


def test_identical_baseline_gives_zero_deltas_and_passes_non_inferiority(
    tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path
) -> None:
    prod = tmp_path / "prod.pt"
    shutil.copy(untrained_checkpoint, prod)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}},
                                                {"score": "ece", "vs_baseline": {"max_drop": 0.0}}])
    result = run_gate(request(policy, untrained_checkpoint, baseline=prod, command="check"))
    (cand,) = result.candidates
    assert cand.passed
    assert cand.comparison is not None
    deltas = cand.comparison.deltas
    assert deltas and all(value == 0.0 for value in deltas.values() if not math.isnan(value))
    assert cand.scores["delta.accuracy"] == 0.0
    assert all(rule.interval == (0.0, 0.0) for rule in cand.rules)
    assert result.baseline is not None and result.baseline.candidate.name == "prod.pt"


def test_comparison_reports_the_accuracy_interval_the_rule_used(
    tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path
) -> None:
    trained = save_tiny(train_tiny(0.0, seed=2, n=400, epochs=3, size=32), tmp_path / "new.pt", size=32)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.0}},
                                                {"score": "ece", "vs_baseline": {"max_drop": 0.05,
                                                                                 "confidence": 0.9}}])
    result = run_gate(request(policy, trained, baseline=untrained_checkpoint, command="check"))
    (cand,) = result.candidates
    assert cand.comparison is not None
    intervals = {interval.key: (interval.low, interval.high) for interval in cand.comparison.intervals}
    # The rules' intervals, and one per watched score no rule gates (the policy enables no background probe).
    from gate.decide.watch import WATCHED

    watched = {f"delta.{s}@0.95" for s in WATCHED if s not in ("accuracy", "ece") and not s.startswith("background.")}
    assert set(intervals) == {"delta.accuracy@0.95", "delta.ece@0.9"} | watched
    accuracy_rule, ece_rule = cand.rules
    assert accuracy_rule.interval == intervals["delta.accuracy@0.95"]
    assert ece_rule.interval == intervals["delta.ece@0.9"]
    assert cand.scores["delta.accuracy"] == cand.scores["accuracy"] - 0.25 > 0  # untrained: one class of four
    moved = cand.comparison.migration
    assert moved.corrected - moved.regressed == round(cand.scores["delta.accuracy"] * small_set.size)


def test_bare_state_dict_takes_arch_classes_and_input_size_from_the_options(
    tmp_path: Path, small_set: ReviewSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate.inputs import shapes
    from gate.run import LoadOptions

    bare = tmp_path / "bare.pt"
    torch.save(archs.tiny_cnn(4).state_dict(), bare)
    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY)
    seen: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def capture(candidates: list[candidate.Candidate], *args: object, **kwargs: object) -> None:
        seen.extend(c.input.size for c in candidates)
        raise Stop

    monkeypatch.setattr("gate.engine.core.run", capture)
    load = LoadOptions(arch="tiny_cnn", classes=shapes.CLASSES, input_size=(24, 40))
    with pytest.raises(Stop):
        run_gate(GateRequest(command="check", candidates=(bare,), policy=policy, load=load))
    assert seen == [(24, 40)]


def test_sharded_blocks_join_in_rank_order(tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ranks simulated in one process: the gather hands rank 0 both blocks in rank order. The joined result
    # must be the single-process one sample for sample (scores alone would not notice blocks joined reversed).
    from gate.engine import distributed
    from gate.engine.distributed import Shard
    from gate.run import run_gate_sharded

    policy = pinned_policy(tmp_path, small_set, ANY_ACCURACY, probes=("background",))
    req = request(policy, untrained_checkpoint, command="check")
    single = run_gate(req).candidates[0]
    blocks: dict[int, object] = {}

    def gather(shard: Shard, value: object) -> list[object] | None:
        blocks[shard.rank] = value
        return [blocks[0], blocks[1]] if shard.is_main else None

    monkeypatch.setattr(distributed, "gather", gather)
    assert run_gate_sharded(req, Shard(rank=1, world_size=2)) is None
    sharded = run_gate_sharded(req, Shard(rank=0, world_size=2))
    assert sharded is not None
    joined = sharded.candidates[0]
    assert joined.records.ids == single.records.ids
    assert list(joined.records.preds) == list(single.records.preds)
    assert joined.gallery == single.gallery
    for name, value in single.scores.items():
        assert joined.scores[name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
