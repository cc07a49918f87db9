"""Tracking plans: MLflow keys and metrics, and the runs (params, metrics, tags, aliases) of a gate call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from tracking_fixtures import MODEL, candidate, gate_result, rule

from gate.inputs.review_set import ReviewSet
from gate.result import Comparison, DeltaInterval, Migration
from gate.tracking.plan import TrackingConfig, metric_key, metrics_of, plan_entry


def comparison_of(mcnemar_p: float, *intervals: DeltaInterval) -> Comparison:
    """A comparison with only what tracking logs from it: McNemar's p and the intervals."""
    return Comparison(deltas={}, candidate_scores={}, baseline_scores={}, migration=Migration(0, 0, 0, 0, float("nan")),
                      class_deltas={}, mcnemar_p=mcnemar_p, intervals=intervals)

# --- planning --------------------------------------------------------------------------------


@pytest.mark.parametrize(("score", "key"), [
    ("accuracy", "accuracy"),
    ("confident_wrong_rate@0.99", "confident_wrong_rate_at_0.99"),
    ("class_accuracy.pick-up truck", "class_accuracy.pick-up truck"),
    ("class_accuracy.a/../b", "class_accuracy.a_.._b"),
    ("class_accuracy.ç:$", "class_accuracy.ç__"),
], ids=["plain", "at-sign", "space-dash", "path-escape", "odd-chars"])
def test_metric_key_is_a_valid_mlflow_key(score: str, key: str) -> None:
    from mlflow.utils.validation import _validate_metric_name

    assert metric_key(score) == key
    _validate_metric_name(metric_key(score))  # MLflow's own check raises on a bad key


def test_metrics_skip_nan_inf_and_none() -> None:
    assert metrics_of({"a": 0.5, "b": float("nan"), "c": float("inf"), "d": None, "e@0.9": 1}) == {
        "a": 0.5, "e_at_0.9": 1.0}


def test_plan_of_a_check_has_params_metrics_tags_and_registers_only_a_pass() -> None:
    config = TrackingConfig(register=MODEL)
    passed = plan_entry(gate_result(candidate("cands/v1.pt", True)), config, now_ms=1_800_000_000_000)
    assert passed.experiment == "xgate/shapes-v1/strict"
    assert passed.start_ms == 1_767_261_600_000  # 2026-01-01T10:00:00Z
    assert passed.end_ms == 1_800_000_000_000
    (run,) = passed.runs
    assert run.parent is None and run.name == "passed · v1.pt"
    assert run.params["candidate"] == "cands/v1.pt"
    assert run.params["candidate.sha256"] == "ab" * 32
    assert run.params["arch"] == "tiny_cnn" and "target_layout" not in run.params  # empty: not logged
    assert run.params["policy"] == "strict" and run.params["policy.sha256"] == "cd" * 32
    assert run.params["review_set.digest"] == "sha256:" + "ef" * 32
    assert run.metrics == {"accuracy": 0.75, "ece": 0.04, "confident_wrong_rate_at_0.99": 0.25,
                           "alignment.lift": 2.5, "class_accuracy.star": 1.0,
                           "passed": 1.0, "rules.total": 2.0, "rules.failed": 0.0}
    assert run.tags["xgate.verdict"] == "passed" and run.tags["xgate.failed_rules"] == ""
    assert run.tags["xgate.candidate"] == "v1.pt" and run.tags["xgate.review_set"] == "shapes-v1"
    assert run.tags["xgate.policy"] == "strict" and run.tags["mlflow.source.git.commit"] == "1" * 40
    assert (run.tags["xgate.commit"], run.tags["mlflow.source.git.branch"]) == ("1111111", "main")
    assert (run.tags["mlflow.source.name"], run.tags["mlflow.source.type"]) == ("xgate check @ 1111111", "LOCAL")
    assert (run.params["git.commit"], run.params["git.branch"]) == ("1111111", "main")
    assert run.tags["mlflow.note.content"] == (
        "**passed**: all 2 rules passed · policy strict · review set shapes-v1 · commit 1111111 on main")
    assert run.aliases == ("champion",)

    (failed,) = plan_entry(gate_result(candidate("cands/v2.pt", False)), config).runs
    assert failed.tags["xgate.verdict"] == "failed" and failed.name == "failed · v2.pt"
    assert failed.tags["mlflow.note.content"] == (
        "**failed**: 2 of 3 rules failed · policy strict · review set shapes-v1 · commit 1111111 on main\n\n"
        "- accuracy >= 0.9\n- ece \\<= 0.05")  # "<" escaped: it could open HTML
    assert failed.tags["xgate.failed_rules"] == "accuracy >= 0.9,ece <= 0.05"
    assert failed.tags["xgate.failed.1"] == "accuracy >= 0.9" and failed.tags["xgate.failed.2"] == "ece <= 0.05"
    assert "xgate.failed.3" not in failed.tags and not any(k.startswith("xgate.failed.") for k in run.tags)
    assert (failed.metrics["passed"], failed.metrics["rules.total"], failed.metrics["rules.failed"]) == (0, 3, 2)
    assert failed.aliases == ()
    (unregistered,) = plan_entry(gate_result(candidate("cands/v1.pt", True)), TrackingConfig()).runs
    assert unregistered.aliases == ()


def test_plan_of_a_select_nests_candidates_under_a_parent() -> None:
    result = replace(gate_result(candidate("a.pt", True), candidate("b.pt", False), candidate("c.pt", True),
                                 command="select", selected="c.pt"), ranking=("c.pt", "a.pt", "b.pt"))
    config = TrackingConfig(experiment="team/gates", register=MODEL, challenger_alias="challenger")
    plan = plan_entry(result, config)
    assert plan.experiment == "team/gates"
    assert [(r.key, r.name, r.parent) for r in plan.runs] == [
        ("parent", "passed · select: c.pt of 3", None), ("c0", "passed · a.pt", "parent"),
        ("c1", "failed · b.pt", "parent"), ("c2", "passed · c.pt", "parent")]
    parent = plan.runs[0]
    assert parent.tags["xgate.kind"] == "select" and parent.tags["xgate.selected"] == "c.pt"
    assert parent.tags["xgate.failed_candidates"] == "b.pt"
    assert parent.metrics == {"passed": 1.0, "candidates.total": 3.0, "candidates.passed": 2.0}
    assert parent.tags["mlflow.note.content"] == (
        "**passed**: c.pt selected of 3 · policy strict · review set shapes-v1 · commit 1111111 on main\n\n"
        "- c.pt: passed\n- a.pt: passed\n- b.pt: failed (accuracy >= 0.9, ece \\<= 0.05)")
    assert {r.tags["xgate.candidate"]: r.aliases for r in plan.runs[1:]} == {
        "a.pt": ("challenger",), "b.pt": (), "c.pt": ("champion",)}
    assert [r.tags["xgate.selected"] for r in plan.runs[1:]] == ["false", "false", "true"]
    assert [r.tags["xgate.rank"] for r in plan.runs[1:]] == ["2", "3", "1"]


def test_plan_logs_the_bounds_a_decision_rests_on_and_how_the_gate_ran() -> None:
    bounded = replace(rule("accuracy >= 0.9", "accuracy", 0.93, True), interval=(0.91, 0.95))
    vs_baseline = replace(rule("accuracy vs baseline", "accuracy", -0.004, True), op="non_inferior",
                          interval=(-0.009, 0.001))
    comparison = comparison_of(0.0312, DeltaInterval("accuracy", 0.95, -0.009, 0.001),
                               DeltaInterval("ece", 0.9, float("nan"), 0.02))
    cand = replace(candidate("v1.pt", True), rules=(bounded, vs_baseline), comparison=comparison)
    result = replace(gate_result(cand), environment={"device": "cuda:0", "batch_size": "64",
                                                     "seed": "7", "device_name": ""})
    (run,) = plan_entry(result, TrackingConfig()).runs
    assert run.metrics["bound.accuracy.low"] == 0.91 and run.metrics["bound.accuracy.high"] == 0.95
    assert not any(k.startswith("bound.") and "vs" in k for k in run.metrics)  # vs_baseline bounds come below
    assert run.metrics["delta.accuracy_at_0.95.low"] == -0.009 and run.metrics["delta.accuracy_at_0.95.high"] == 0.001
    assert "delta.ece_at_0.9.low" not in run.metrics and run.metrics["delta.ece_at_0.9.high"] == 0.02
    assert run.metrics["mcnemar_p"] == 0.0312
    assert (run.params["device"], run.params["batch_size"], run.params["seed"]) == ("cuda:0", "64", "7")
    assert "device_name" not in run.params  # empty values are not params
    tokens = replace(cand, candidate=replace(cand.candidate, target_layout="tokens"))
    (token_run,) = plan_entry(replace(result, candidates=(tokens,)), TrackingConfig()).runs
    assert token_run.params["target_layout"] == "tokens"


def test_docs_mlflow_md_names_every_param_metric_and_tag_a_plan_logs() -> None:
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "mlflow.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([^`]+)`", doc))
    bounded = replace(rule("accuracy >= 0.9", "accuracy", 0.93, True), interval=(0.91, 0.95))
    comparison = comparison_of(0.03, DeltaInterval("accuracy", 0.95, -0.01, 0.0))
    failing = replace(candidate("b.pt", False), comparison=comparison)
    passing = replace(candidate("a.pt", True), rules=(bounded,))
    result = replace(gate_result(passing, failing, command="select", selected="a.pt"),
                     environment={"device": "cpu", "device_name": "x86", "batch_size": "8",
                                  "seed": "0", "torch": "2", "torchvision": "0", "xgate": "0.1"})
    plan = plan_entry(result, TrackingConfig(register=MODEL))
    patterns = [(r"^threshold\..+\.(min|max)$", "threshold.<key>.min"), (r"^bound\..+\.(low|high)$", "bound.<key>.low"),
                (r"^delta\..+_at_[0-9.]+\.(low|high)$", "delta.<key>_at_<confidence>.low/.high"),
                (r"^xgate\.failed\.\d+$", "xgate.failed.<n>")]
    scores = {metric_key(s) for run in plan.runs[1:] for s in (*passing.scores, *failing.scores)}
    for run in plan.runs:
        for key in (*run.params, *run.metrics, *run.tags):
            named = next((name for pattern, name in patterns if re.match(pattern, key)), key)
            assert named in documented or key in scores, f"docs/mlflow.md does not name {key!r}"


@pytest.mark.parametrize(("labels", "kept", "names"), [
    ([0, 0, 1, 1], {"a", "b", "d"}, ["a", "b"]),  # class 1's first sample was not kept: none of it is fixed
    ([0, 1, 0, 1], {"a", "b", "c"}, ["a", "b", "c"]),  # round-robin: first of each class, then the second
    ([1, 0, 0, 1], {"a", "b", "c", "d"}, ["b", "a", "c", "d"]),  # classes in index order
    ([0, 0, 0, 0], set(), []),
], ids=["prefix-stops", "round-robin", "class-order", "nothing-kept"])
def test_fixed_map_names_are_each_class_kept_prefix(labels: list[int], kept: set[str], names: list[str]) -> None:
    import numpy as np
    from tracking_fixtures import kept_sample, make_records

    from gate.tracking.plan import fixed_map_names

    records = replace(make_records(), ids=("a", "b", "c", "d"), labels=np.array(labels, dtype=np.int64),
                      kept={i: kept_sample(i, 0, 0, seed=1) for i in sorted(kept)})
    assert fixed_map_names(records) == names


def test_fixed_maps_tag_names_the_engines_fixed_samples(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    from gate.engine import core as engine
    from gate.inputs import candidate as candidate_io
    from gate.tracking.plan import FIXED_MAPS_TAG, fixed_map_names, safe_file_name

    cand = candidate_io.load(untrained_checkpoint)
    (run,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=16, gallery_size=2, fixed_per_class=2))
    fixed = engine.fixed_ids(small_set, 2)
    named = fixed_map_names(run.records)
    assert {safe_file_name(i) for i in fixed} <= set(named)  # every fixed sample, whatever the gallery picked
    assert set(named) <= {safe_file_name(i) for i in run.records.kept}  # and only samples whose map is logged
    result = replace(candidate("v1.pt", True), records=run.records)
    (planned,) = plan_entry(gate_result(result), TrackingConfig()).runs
    assert planned.tags[FIXED_MAPS_TAG].split(",") == named


def test_run_names_and_notes_escape_markdown_and_cap_the_reasons() -> None:
    many = tuple(replace(rule(f"rule {n}", "accuracy", 0.1, False), message=f"**bold** <b>{n}</b> [x](y)")
                 for n in range(25))
    cand = replace(candidate("we*ird_[name].pt", False), rules=many)
    result = replace(gate_result(cand), source=None)
    (run,) = plan_entry(result, TrackingConfig()).runs
    note = run.tags["mlflow.note.content"].splitlines()
    assert note[0] == "**failed**: 25 of 25 rules failed · policy strict · review set shapes-v1"
    assert note[2] == r"- rule 0: \*\*bold\*\* \<b>0\</b> \[x\](y)"
    assert len(note) == 2 + 20 + 1 and note[-1] == "- … and 5 more"
    assert run.name == "failed · we*ird_[name].pt"  # a name is plain text in the runs table
    assert not any(k.startswith(("mlflow.source", "xgate.commit")) for k in run.tags)
    assert "git.commit" not in run.params
    select = replace(gate_result(cand, command="select"), source=None)
    assert plan_entry(select, TrackingConfig()).runs[0].name == "failed · select: none of 1 passed"
