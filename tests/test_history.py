"""History: the console table (120 columns), the HTML page (a trend line per candidate per policy with the
policies' thresholds, the fixed samples' maps across versions), and what a real MLflow store gives back."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bs4 import BeautifulSoup
from test_tracking import MlflowServer, server  # noqa: F401 - the server fixture
from tracking_fixtures import candidate, gate_result, kept_sample, make_records, write_outputs

from gate.metrics.atlas import hot_spot
from gate.outputs.report.history import (
    jpeg_thumbnail,
    lineages_of,
    render_history,
    spread,
    tick_label,
    trend_figure,
    write_history_html,
)
from gate.records import Atlas
from gate.result import (
    CandidateResult,
    Comparison,
    DeltaInterval,
    GateResult,
    Migration,
    PolicyInfo,
    RuleResult,
    SourceInfo,
)
from gate.tracking import (
    RunAtlas,
    fetch_atlases,
    fetch_maps,
    history,
    history_table,
    history_with_maps,
    log_gate,
)
from gate.tracking.outbox import map_png, write_atlas
from gate.tracking.plan import TrackingConfig, plan_entry, read_thresholds, run_url, threshold_params, where_to_see
from gate.tracking.reading import ATLAS_JSON_MAX_BYTES, _history_row, _shared_map_ids, hot_spot_words
from gate.tracking.rows import KEY_SCORES, MAP_RUNS, HistoryRow, format_history, map_rows, rule_count

THRESHOLDS = {"strict": 0.9, "lenient": 0.75}


def row(run: str, hour: int, cand: str, policy: str, accuracy: float, **extra: object) -> HistoryRow:
    values: dict[str, object] = {
        "run_id": run, "start_time": datetime(2026, 1, 1, hour, tzinfo=UTC), "candidate": cand,
        "verdict": "passed" if accuracy >= THRESHOLDS[policy] else "failed",
        "scores": {"accuracy": accuracy, "alignment.lift": 2.0 + accuracy},
        "failed_rules": () if accuracy >= THRESHOLDS[policy] else (f"accuracy >= {THRESHOLDS[policy]}",),
        "experiment": f"xgate/shapes-v1/{policy}", "policy": policy,
        "thresholds": {"accuracy": ((">=", THRESHOLDS[policy]),)}, "rules_total": 12,
        "rules_failed": 0 if accuracy >= THRESHOLDS[policy] else 1,
    }
    values.update(extra)
    return HistoryRow(**values)  # type: ignore[arg-type]


def demo_rows() -> list[HistoryRow]:
    """Two candidates x two policies, two versions each, and a select parent: newest first."""
    oldest_first = [
        row("a1", 1, "cutmix.pt", "strict", 0.88), row("b1", 2, "cheater.pt", "strict", 0.95),
        row("a2", 3, "cutmix.pt", "lenient", 0.88), row("b2", 4, "cheater.pt", "lenient", 0.95),
        row("a3", 5, "cutmix.pt", "strict", 0.92), row("b3", 6, "cheater.pt", "strict", 0.96),
        row("a4", 7, "cutmix.pt", "lenient", 0.93), row("b4", 8, "cheater.pt", "lenient", 0.70),
        row("sel", 9, "select (2 candidates)", "strict", 0.0, kind="select", scores={}, thresholds={},
            rules_total=None, rules_failed=None, verdict="passed", failed_rules=()),
    ]
    return oldest_first[::-1]


# --- console table ----------------------------------------------------------------------------------


def test_history_table_fits_120_columns_with_policy_experiment_run_commit_and_select() -> None:
    rows = [replace(r, run_id=r.run_id + "0123456789abcdef", experiment="xgate/a-very-long-review-set-name-v12/"
                    + r.policy, candidate=r.candidate.replace(".pt", "-with-a-long-lineage-name.pt"), commit="1a2b3c4")
            for r in demo_rows()]
    lines = format_history(rows).splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[0].split()[:9] == ["started", "(UTC)", "kind", "run", "commit", "experiment", "policy", "candidate",
                                    "verdict"] or lines[0].split()[5].endswith("…")
    select, newest = lines[1].split(), lines[2].split()
    assert select[:5] == ["2026-01-01", "09:00", "select", "sel01234", "1a2b3c4"]
    assert newest[2:5] == ["candidate", "b4012345", "1a2b3c4"]  # run ids cut to 8 characters
    assert newest[5].startswith("xgate/") and newest[5].endswith("…") and newest[6] == "lenient"
    assert newest[7].startswith("cheater-with") and newest[7].endswith("…")  # the lineage's start is kept
    assert " ".join(newest[-7:]) == "failed 0.700 2.700 - 1 of 12"


def test_history_table_short_rows_are_not_cut() -> None:
    lines = format_history([replace(demo_rows()[-1], commit="1a2b3c4", experiment="xgate/s1/strict")]).splitlines()
    assert lines[1].split() == ["2026-01-01", "01:00", "candidate", "a1", "1a2b3c4", "xgate/s1/strict",
                                "strict", "cutmix.pt", "failed", "0.880", "2.880", "-", "1", "of", "12"]
    assert format_history(demo_rows()[-1:]).splitlines()[1].split()[4] == "-"  # a run without a commit
    assert format_history([]) == "no gate runs found"


def test_rule_count_has_one_wording() -> None:
    assert rule_count(7, 12) == "7 of 12 rules failed"
    assert rule_count(0, 3) == "0 of 3 rules failed"
    assert rule_count(None, 3) == "-"


# --- HTML page ---------------------------------------------------------------------------------------


def test_history_page_draws_one_trend_line_per_candidate_per_policy_with_thresholds() -> None:
    png = map_png(kept_sample("s0", 0, 0, seed=1))
    candidate_runs = [r.run_id for r in demo_rows() if r.kind == "candidate"]
    soup = BeautifulSoup(render_history(demo_rows(), {"s0": dict.fromkeys(candidate_runs, png),
                                                      "s_3": {"a1": png}}), "html.parser")
    assert soup.find("script") is None
    lineages = [(li["data-candidate"], li["data-policy"]) for li in soup.select("ul.lineages li")]
    assert lineages == [("cutmix.pt", "strict"), ("cheater.pt", "strict"), ("cutmix.pt", "lenient"),
                        ("cheater.pt", "lenient")]
    figures = {f["data-score"]: f for f in soup.select("figure.trend")}
    assert list(figures) == ["accuracy", "alignment.lift"]
    accuracy = figures["accuracy"]
    lines = accuracy.select("svg g[id^=t0-line]")
    assert sorted(g["id"] for g in lines) == ["t0-line0", "t0-line1", "t0-line2", "t0-line3"]
    # Each lineage: one polyline through its own two versions (not through the other policy's runs).
    assert [len(re.findall(r"[ML]\s", g.path["d"])) for g in lines] == [2, 2, 2, 2]
    assert len(accuracy.select("svg g[id^=t0-threshold]")) == 2
    caption = accuracy.figcaption.get_text(" ", strip=True)
    assert "strict: >= 0.9" in caption and "lenient: >= 0.75" in caption
    assert not figures["alignment.lift"].select("svg g[id^=t1-threshold]")  # no policy gates lift here
    # Threshold labels are drawn as text in the SVG, readable by a person and by this test.
    texts = {t.get_text(strip=True) for t in accuracy.select("svg text")}
    assert {"strict: >= 0.9", "lenient: >= 0.75"} <= texts
    assert {"01-01 01:00", "01-01 08:00"} <= texts  # runs without a commit are named by their date

    ids = [tag["id"] for tag in soup.find_all(id=True)]
    assert len(ids) == len(set(ids))  # several inline SVGs, no id twice
    refs = re.findall(r'(?:url\(#|href="#)([^")]+)', str(soup.select_one("#trends")))
    assert refs and set(refs) <= set(ids)  # clip paths and markers still point at their own definitions

    runs = soup.select("table.runs tbody tr")
    assert [r["data-kind"] for r in runs] == ["select", *["candidate"] * 8]
    first = [td.get_text(" ", strip=True) for td in runs[1].find_all("td")]
    assert first[:10] == ["8", "2026-01-01 08:00", "–", "candidate", "b4", "xgate/shapes-v1/lenient", "lenient",
                          "cheater.pt", "", "failed"]
    assert runs[0].find("td").get_text(strip=True) == ""  # a select parent is not on the trend plots
    assert first[-2] == "1 of 12 rules failed accuracy >= 0.75"
    headers = [th["data-run-id"] for th in soup.select("table.maps thead th[data-run-id]")]
    assert headers == ["a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]  # candidate runs, oldest first
    maps = {r["data-sample-id"]: r for r in soup.select("table.maps tbody tr")}
    assert len(maps["s0"].find_all("img")) == 8
    assert len(maps["s_3"].find_all("img")) == 1
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in soup.select("table.maps img"))


def test_scores_outside_the_key_ones_get_a_trend_when_a_policy_gates_them() -> None:
    rows = [replace(r, scores={**r.scores, "background.flip_rate": 0.1 * i},
                    thresholds={**r.thresholds, "background.flip_rate": (("<=", 0.2),)} if r.policy == "strict" else
                    r.thresholds) for i, r in enumerate(demo_rows())]
    soup = BeautifulSoup(render_history(rows, {}), "html.parser")
    assert [f["data-score"] for f in soup.select("figure.trend")] == ["accuracy", "alignment.lift",
                                                                      "background.flip_rate"]
    flip = soup.select_one("figure.trend[data-score='background.flip_rate']")
    assert len(flip.select("svg g[id^=t2-line]")) == 4 and len(flip.select("svg g[id^=t2-threshold]")) == 1
    assert "strict: <= 0.2" in flip.figcaption.get_text()
    assert "background.flip_rate" not in [th.get_text() for th in soup.select("table.runs th")]  # trends only


def test_a_run_read_back_keeps_key_scores_and_the_gated_ones() -> None:
    run = SimpleNamespace(
        info=SimpleNamespace(run_id="r1", start_time=1_767_261_600_000, run_name="v1.pt", experiment_id="1"),
        data=SimpleNamespace(
            metrics={"accuracy": 0.9, "confident_wrong_rate_at_0.99": 0.01, "background.flip_rate": 0.3,
                     "nll": 0.2, "rules.total": 3.0, "rules.failed": 2.0},
            params={"policy": "strict", "candidate.sha256": "ab" * 32, "threshold.accuracy.min": "0.95",
                    "threshold.confident_wrong_rate_at_0.99.max": "0.02", "threshold.background.flip_rate.max": "0.2"},
            tags={"xgate.kind": "candidate", "xgate.candidate": "v1.pt", "xgate.verdict": "failed",
                  "xgate.failed.2": "background.flip_rate <= 0.2: too many flips", "xgate.failed.1": "accuracy >= 0.95",
                  "xgate.failed_rules": "old,string", "xgate.maps.fixed": "s0,s_3"}))
    got = _history_row(run, "xgate/shapes-v1/strict")
    assert got.scores == {"accuracy": 0.9, "confident_wrong_rate@0.99": 0.01, "background.flip_rate": 0.3}
    assert got.thresholds == {"accuracy": ((">=", 0.95),), "confident_wrong_rate@0.99": (("<=", 0.02),),
                              "background.flip_rate": (("<=", 0.2),)}
    assert got.failed_rules == ("accuracy >= 0.95", "background.flip_rate <= 0.2")  # one tag each, in order
    assert (got.rules_failed, got.rules_total, got.policy, got.fixed_maps) == (2, 3, "strict", ("s0", "s_3"))
    assert got.start_time == datetime(2026, 1, 1, 10, tzinfo=UTC) and got.kind == "candidate"


def test_history_page_without_a_second_run_has_no_trends() -> None:
    soup = BeautifulSoup(render_history(demo_rows()[-2:], {}), "html.parser")  # two lineages, one run each
    assert soup.select("figure.trend") == [] and soup.find(id="trends") is None


# --- the attention atlas: the maps table's first row ----------------------------------------------------------


def atlas_at(top: int, left: int, side: int = 32) -> Atlas:
    """An atlas on the engine's 32 × 32 grid with 90% of its mass in the 4 × 4 patch at (top, left)."""
    mean = np.full((side, side), 0.1 / side**2)
    mean[top:top + 4, left:left + 4] += 0.9 / 16
    return Atlas(total=mean * 5, count=5, by_class=np.zeros((1, side, side)), class_count=np.zeros(1, dtype=np.int64),
                 mask_sum=np.zeros((side, side)), mask_count=0)


def logged_atlas(atlas: Atlas, folder: Path) -> RunAtlas:
    """What the history reads back for a run that logged ``atlas``: write_atlas's PNG, and the JSON's hot spot."""
    png, summary = write_atlas(replace(make_records(), atlas=atlas), folder)
    return RunAtlas(png=png.read_bytes(), hot_spot=hot_spot_words(summary.read_bytes()))


def test_the_atlas_is_the_first_row_of_the_maps_table_with_its_hot_spot(tmp_path: Path) -> None:
    corner = logged_atlas(atlas_at(28, 28), tmp_path / "corner")
    centre = logged_atlas(atlas_at(14, 14), tmp_path / "centre")
    assert corner.hot_spot == hot_spot(atlas_at(28, 28).mean).words == "bottom-right corner, 1% of the image"
    assert centre.hot_spot == "centre, 1% of the image"
    atlases = {"a1": corner, "a3": replace(centre, hot_spot=None), "b4": RunAtlas(b"garbage", "top edge, 3% of it"),
               "sel": centre, "gone": centre}  # a select parent and a run not on the page: no column
    png = map_png(kept_sample("s0", 0, 0, seed=1))
    soup = BeautifulSoup(render_history(demo_rows(), {"s0": {"a1": png, "b1": png}}, atlases=atlases),
                         "html.parser")
    body = soup.select("table.maps tbody tr")
    assert [r.get("data-row") or r["data-sample-id"] for r in body] == ["atlas", "s0"]
    assert body[0].th.get_text(" ", strip=True) == "atlas mean map of the review set"
    headers = [th["data-run-id"] for th in soup.select("table.maps thead th[data-run-id]")]
    cells = dict(zip(headers, body[0].find_all("td"), strict=True))
    assert [run for run, td in cells.items() if td.img] == ["a1", "a3"]
    assert cells["a1"].get_text(strip=True) == "bottom-right corner, 1% of the image"
    assert cells["a3"].get_text(strip=True) == ""  # an atlas without words
    assert {run: td.get_text(strip=True) for run, td in cells.items() if not td.img} == {
        "b1": "–", "a2": "–", "b2": "–", "b3": "–", "a4": "–", "b4": "–"}  # b4: a damaged PNG, its words not shown
    # The thumbnail is the atlas itself (inferno: the hot corner bright), not a sample's map.
    from PIL import Image

    src = cells["a1"].img["src"]
    assert src.startswith("data:image/jpeg;base64,")
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"), dtype=float)
    assert thumb.shape == (128, 128)  # the 32-cell grid upscaled to 128 px, under the 160 px thumbnail width
    assert thumb[116:124, 116:124].mean() > 200 > 60 > thumb[:64, :64].mean()
    assert "atlas/atlas.png" in soup.select_one("#maps p").get_text() and "maps/" in soup.select_one("#maps p").text
    assert cells["a1"].img["alt"] == "attention atlas of cutmix.pt"


def test_an_atlas_row_without_sample_maps_still_renders_and_no_atlas_means_no_row(tmp_path: Path) -> None:
    corner = logged_atlas(atlas_at(28, 28), tmp_path / "corner")
    soup = BeautifulSoup(render_history(demo_rows(), {}, atlases={"b4": corner}), "html.parser")
    (only,) = soup.select("#maps table.maps tbody tr")
    assert only["data-row"] == "atlas" and len(only.find_all("td")) == 8 and len(only.find_all("img")) == 1
    assert "maps/" not in soup.select_one("#maps p").get_text()  # no sample maps to point at
    # No atlas for any column (a select parent's never is one): the table has no atlas row, as before.
    png = map_png(kept_sample("s0", 0, 0, seed=1))
    for atlases in (None, {}, {"sel": corner}):
        soup = BeautifulSoup(render_history(demo_rows(), {"s0": {"a1": png}}, atlases=atlases), "html.parser")
        assert [r.get("data-sample-id") for r in soup.select("table.maps tbody tr")] == ["s0"]
        assert "atlas" not in soup.select_one("#maps p").get_text()
    assert BeautifulSoup(render_history(demo_rows(), {}, atlases={}), "html.parser").find(id="maps") is None
    # Every atlas damaged: a row of dashes, and the page still renders.
    soup = BeautifulSoup(render_history(demo_rows(), {}, atlases={"a1": RunAtlas(b"\x89PNG broken")}), "html.parser")
    assert [td.get_text(strip=True) for td in soup.select("tr[data-row=atlas] td")] == ["–"] * 8


@pytest.mark.parametrize(("summary", "words"), [
    (json.dumps({"samples": 4, "hot_spot": "bottom-right corner, 4% of the image"}).encode(),
     "bottom-right corner, 4% of the image"),
    (json.dumps(["bottom-right corner, 4% of the image"]).encode(), None),  # not an object
    (json.dumps("centre, 9% of the image").encode(), None),
    (b"null", None),
    (json.dumps({"hot_spot": 3}).encode(), None),  # not a string
    (json.dumps({"hot_spot": None}).encode(), None),  # what write_atlas logs for an atlas without a spot
    (json.dumps({"hot_spot": ["centre"]}).encode(), None),
    (json.dumps({"hot_spot": "x" * 900_000}).encode(), None),  # under the size cap, but no short line of words
    (json.dumps({"hot_spot": "centre", "pad": "x" * ATLAS_JSON_MAX_BYTES}).encode(), None),  # over the size cap
    (json.dumps({"hot_spot": "centre\x1b[2J"}).encode(), None),  # a terminal escape
    (json.dumps({"hot_spot": "   "}).encode(), None),
    (b"[" * 200_000, None),  # nested too deep for the parser
    (b"\xff\xfe\x00garbage", None),  # not JSON text
    (b"", None),
    (b'{"hot_spot": NaN}', None),
], ids=["words", "list", "string", "null", "number", "none", "nested", "huge-string", "over-cap", "escape", "blank",
        "deep", "binary", "empty", "nan"])
def test_a_hostile_atlas_json_gives_no_words(summary: bytes, words: str | None) -> None:
    assert hot_spot_words(summary) == words


class FakeArtifacts:
    """What ``list_artifacts(run, "maps")`` answers, per run."""

    def __init__(self, maps: dict[str, list[str]]) -> None:
        self.maps = maps

    def list_artifacts(self, run_id: str, path: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(path=f"{path}/{name}") for name in self.maps[run_id]]


def test_maps_followed_are_those_every_run_kept_before_any_runs_own_gallery_picks() -> None:
    # s0 and s_3 are fixed (kept by every run); g1..g3 are gallery picks of one run each; z9 is kept by two.
    client = FakeArtifacts({"a1": ["g1.png", "s0.png", "s_3.png", "z9.png"], "a2": ["s0.png", "g2.png", "s_3.png"],
                            "a3": ["s_3.png", "g3.png", "s0.png", "z9.png", "notes.txt"]})
    rows = [row(r, 1, "cutmix.pt", "strict", 0.9) for r in ("a3", "a2", "a1")]
    assert _shared_map_ids(client, rows, 3) == ["s0", "s_3", "z9"]  # type: ignore[arg-type]
    assert _shared_map_ids(client, rows, 8) == ["s0", "s_3", "z9", "g1", "g2", "g3"]  # type: ignore[arg-type]
    # Shared by chance: a gallery pick every run made sorts after the fixed samples the runs name.
    client.maps["a2"].append("a0.png")
    client.maps["a1"].append("a0.png")
    client.maps["a3"].append("a0.png")
    assert _shared_map_ids(client, rows, 3) == ["a0", "s0", "s_3"]  # type: ignore[arg-type]
    tagged = [replace(r, fixed_maps=("s_3", "s0")) for r in rows]
    assert _shared_map_ids(client, tagged, 3) == ["s_3", "s0", "a0"]  # type: ignore[arg-type]


# --- planning: thresholds and run links --------------------------------------------------------------


def test_threshold_params_round_trip_min_and_max_rules_only() -> None:
    def rule(score: str, op: str, threshold: float) -> RuleResult:
        return RuleResult(rule_id=f"{score} {op} {threshold}", score=score, op=op, threshold=threshold, value=0.5,
                          passed=True, message="", higher_is_better=op == ">=")

    cand = replace(candidate("v1.pt", True), rules=(
        rule("accuracy", ">=", 0.9), rule("confident_wrong_rate@0.99", "<=", 0.01),
        rule("ece", ">=", 0.01), rule("ece", "<=", 0.2), rule("accuracy", "non_inferior", 0.01)))
    params = threshold_params(cand)
    assert params == {"threshold.accuracy.min": "0.9", "threshold.confident_wrong_rate_at_0.99.max": "0.01",
                      "threshold.ece.min": "0.01", "threshold.ece.max": "0.2"}
    assert read_thresholds({**params, "threshold.alignment.lift.min": "oops"},
                           ["accuracy", "confident_wrong_rate@0.99", "ece", "alignment.lift"]) == {
        "accuracy": ((">=", 0.9),), "confident_wrong_rate@0.99": (("<=", 0.01),),
        "ece": ((">=", 0.01), ("<=", 0.2))}
    (run,) = plan_entry(gate_result(cand), TrackingConfig()).runs
    assert run.params["threshold.accuracy.min"] == "0.9"


def test_where_to_see_a_run() -> None:
    assert run_url("http://ml:5000/", "3", "abc") == "http://ml:5000/#/experiments/3/runs/abc"
    assert where_to_see("https://ml.example.com", "3", "abc") == "https://ml.example.com/#/experiments/3/runs/abc"
    assert where_to_see("sqlite:////tmp/m.db", "1", "abc") == (
        "run abc: mlflow ui --backend-store-uri sqlite:////tmp/m.db and open "
        "http://127.0.0.1:5000/#/experiments/1/runs/abc")


# --- a real store ----------------------------------------------------------------------------------------


def gate(path: str, policy: str, accuracy: float, created: str, extra_kept: str,
         atlas: Atlas | None = None) -> GateResult:
    """A check of ``path`` under ``policy``: two fixed samples in every run, one gallery sample of its own."""
    threshold = THRESHOLDS[policy]
    rules = (RuleResult(rule_id=f"accuracy >= {threshold}", score="accuracy", op=">=", threshold=threshold,
                        value=accuracy, passed=accuracy >= threshold, message="", higher_is_better=True),)
    records = make_records()
    kept = {**records.kept, extra_kept: kept_sample(extra_kept, 1, 1, seed=3)}
    base = candidate(path, accuracy >= threshold)
    cand = CandidateResult(candidate=base.candidate, scores={**base.scores, "accuracy": accuracy}, rules=rules,
                           records=replace(records, kept=kept, atlas=atlas))
    result = gate_result(cand, created=created)
    return replace(result, policy=PolicyInfo(name=policy, path=f"policies/{policy}.yaml", sha256="cd" * 32))


@pytest.mark.slow
def test_history_of_a_store_two_candidates_two_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", outbox=tmp_path / "outbox")
    plan = [("cutmix.pt", "strict", 0.88), ("cheater.pt", "strict", 0.95), ("cutmix.pt", "lenient", 0.88),
            ("cheater.pt", "lenient", 0.95), ("cutmix.pt", "strict", 0.92), ("cheater.pt", "strict", 0.96),
            ("cutmix.pt", "lenient", 0.93), ("cheater.pt", "lenient", 0.70)]
    # The four older runs were logged before the atlas existed; the newer four carry one, its patch moving.
    atlases = {4: atlas_at(28, 28), 5: atlas_at(0, 0), 6: atlas_at(0, 28), 7: atlas_at(14, 14)}
    for hour, (path, policy, accuracy) in enumerate(plan):
        result = gate(path, policy, accuracy, f"2026-01-01T{hour:02d}:00:00+00:00", f"g{hour}", atlases.get(hour))
        result = replace(result, source=SourceInfo(commit=f"{hour}abc" * 10, branch=f"b{hour}"))
        assert log_gate(result, write_outputs(result, tmp_path / f"o{hour}"), config, {}).logged
    picked = [gate(p, "strict", a, "2026-01-01T09:00:00+00:00", f"s{a}", atlas) for p, a, atlas in (
        ("cutmix.pt", 0.94, atlas_at(28, 0)), ("cheater.pt", 0.97, None))]
    chosen = replace(picked[0], command="select", candidates=tuple(r.candidates[0] for r in picked),
                     selected="cheater.pt", ranking=("cheater.pt", "cutmix.pt"))
    assert log_gate(chosen, write_outputs(chosen, tmp_path / "o9"), config, {}).logged

    rows = history(config, experiment=None)
    assert [(r.kind, r.candidate) for r in rows[:3]] == [  # the select parent first, then its candidates
        ("select", "select of 2"), ("candidate", "cheater.pt"), ("candidate", "cutmix.pt")]
    assert rows[1].parent_run_id == rows[2].parent_run_id == rows[0].run_id
    assert [(r.candidate, r.policy) for r in rows[3:5]] == [("cheater.pt", "lenient"), ("cutmix.pt", "lenient")]
    lenient = rows[3]
    assert lenient.thresholds == {"accuracy": ((">=", 0.75),)} and lenient.experiment == "xgate/shapes-v1/lenient"
    assert (lenient.rules_failed, lenient.rules_total, lenient.failed_rules) == (1, 1, ("accuracy >= 0.75",))
    maps = fetch_maps(config, rows)
    assert set(maps) >= {"s0", "s_3"} and all(len(maps[i]) == 10 for i in ("s0", "s_3"))  # the fixed samples
    assert list(maps)[:2] == ["s0", "s_3"]  # kept by every run, before any run's own gallery pick

    # Two runs' atlas.json replaced by hostile ones (a list; a valid object over the size cap): no words, no crash.
    by_commit = {r.commit: r.run_id for r in rows}
    from mlflow import MlflowClient

    for hour, hostile in ((5, ["top-left corner"]), (6, {"hot_spot": "top-right", "pad": "x" * ATLAS_JSON_MAX_BYTES})):
        (tmp_path / f"hostile{hour}").mkdir()
        (tmp_path / f"hostile{hour}" / "atlas.json").write_text(json.dumps(hostile), encoding="utf-8")
        MlflowClient(config.resolved_uri()).log_artifact(by_commit[(f"{hour}abc" * 2)[:7]],
                                                         str(tmp_path / f"hostile{hour}" / "atlas.json"), "atlas")
    read = fetch_atlases(config, rows)
    words = {run: (atlas.hot_spot, atlas.png[:4]) for run, atlas in read.items()}
    cutmix_picked = next(r.run_id for r in rows[1:3] if r.candidate == "cutmix.pt")
    assert words == {by_commit["4abc4ab"]: ("bottom-right corner, 1% of the image", b"\x89PNG"),
                     by_commit["5abc5ab"]: (None, b"\x89PNG"), by_commit["6abc6ab"]: (None, b"\x89PNG"),
                     by_commit["7abc7ab"]: ("centre, 1% of the image", b"\x89PNG"),
                     cutmix_picked: ("bottom-left corner, 1% of the image", b"\x89PNG")}

    shown = history_with_maps(config, experiment=None)
    assert shown.atlases == read and shown.rows == rows and shown.maps == maps
    page = write_history_html(shown.rows, shown.maps, tmp_path / "history.html", atlases=shown.atlases)
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    first = soup.select_one("table.maps tbody tr")
    assert first["data-row"] == "atlas"
    headers = [th["data-run-id"] for th in soup.select("table.maps thead th[data-run-id]")]
    cells = {run: (bool(td.img), td.get_text(strip=True)) for run, td in zip(headers, first.find_all("td"),
                                                                            strict=True)}
    assert cells == {row.run_id: (row.run_id in read, (read[row.run_id].hot_spot or "") if row.run_id in read else "–")
                     for row in rows if row.kind == "candidate"}
    assert sum(has for has, _ in cells.values()) == 5 and cells[by_commit["0abc0ab"]] == (False, "–")
    # The command writes the same row: `xgate history --html` passes the atlases on.
    from conftest import xgate

    ran = xgate("history", "--tracking-uri", config.resolved_uri(), "--html", "cli.html", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    by_cli = BeautifulSoup((tmp_path / "cli.html").read_text(encoding="utf-8"), "html.parser")
    assert str(by_cli.select_one("table.maps tbody tr")) == str(first)
    accuracy = soup.select_one("figure.trend[data-score=accuracy]")
    assert len(accuracy.select("svg g[id^=t0-line]")) == 4  # 2 candidates x 2 policies
    assert len(accuracy.select("svg g[id^=t0-threshold]")) == 2
    filled = soup.select("table.maps tbody tr[data-sample-id=s0] img")
    assert len(filled) == 10
    assert soup.select_one("table.runs tbody tr")["data-kind"] == "select"
    table = history_table(config, experiment=None)
    assert max(len(line) for line in table.splitlines()) <= 120 and "lenient" in table
    assert table.splitlines()[1].split()[2:4] == ["select", rows[0].run_id[:8]]
    # By commit: a prefix of the full SHA finds that gate's run, and only it.
    (third,) = history(config, experiment=None, commit="3abc3ab")
    assert (third.commit, third.branch, third.candidate, third.policy) == ("3abc3ab", "b3", "cheater.pt", "lenient")
    assert history(config, experiment=None, commit="3ABC3ABC3ABC")[0].run_id == third.run_id  # case does not matter
    assert history(config, experiment=None, commit="ffff") == []
    lines = history_table(config, experiment=None, commit="3abc").splitlines()
    assert len(lines) == 2 and lines[1].split()[4] == "3abc3ab"
    one = history_with_maps(config, experiment=None, commit="3abc3ab")
    page = write_history_html(one.rows, one.maps, tmp_path / "by-commit.html", atlases=one.atlases)
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    assert [r["data-run-id"] for r in soup.select("table.runs tbody tr")] == [third.run_id]


@pytest.mark.slow
def test_server_has_the_new_metrics_params_and_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   server: MlflowServer) -> None:  # noqa: F811 - the fixture
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    config = TrackingConfig(uri=server.url, outbox=tmp_path / "outbox", timeout_s=5)
    failing = gate("v2.pt", "strict", 0.88, "2026-01-01T10:00:00+00:00", "g0")
    cand = failing.candidates[0]
    rules = (replace(cand.rules[0], interval=(0.85, 0.91), message="0.88 is below 0.9"),)
    comparison = Comparison(deltas={}, candidate_scores={}, baseline_scores={},
                            migration=Migration(0, 0, 0, 0, float("nan")), class_deltas={}, mcnemar_p=0.25,
                            intervals=(DeltaInterval("accuracy", 0.95, -0.03, 0.01),))
    failing = replace(failing, candidates=(replace(cand, rules=rules, comparison=comparison),),
                      environment={**failing.environment, "device": "cpu", "batch_size": "16", "seed": "0"})
    outcome = log_gate(failing, write_outputs(failing, tmp_path / "o"), config, {})
    assert outcome.logged and outcome.experiment_id

    run = MlflowClient(server.url).get_run(outcome.run_ids[0])
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    # What a person browsing the MLflow UI sees: the run name, the description, the Source and Version columns.
    assert run.info.run_name == "failed · v2.pt"
    assert tags["mlflow.note.content"] == (
        "**failed**: 1 of 1 rules failed · policy strict · review set shapes-v1 · commit 1111111 on main\n\n"
        "- accuracy >= 0.9: 0.88 is below 0.9")
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("xgate check @ 1111111", "LOCAL")
    assert (tags["mlflow.source.git.commit"], tags["mlflow.source.git.branch"]) == ("1" * 40, "main")
    assert (tags["xgate.commit"], params["git.commit"], params["git.branch"]) == ("1111111", "1111111", "main")
    found = MlflowClient(server.url).search_runs([outcome.experiment_id],
                                                 filter_string="tags.`xgate.commit` = '1111111'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    assert [r.run_id for r in history(config, experiment=None, commit="11111")] == [run.info.run_id]
    assert (metrics["passed"], metrics["rules.total"], metrics["rules.failed"]) == (0.0, 1.0, 1.0)
    assert (metrics["bound.accuracy.low"], metrics["bound.accuracy.high"]) == (0.85, 0.91)
    assert metrics["delta.accuracy_at_0.95.low"] == -0.03 and metrics["mcnemar_p"] == 0.25
    assert (params["device"], params["batch_size"], params["seed"]) == ("cpu", "16", "0")
    assert params["threshold.accuracy.min"] == "0.9" and params["policy"] == "strict"
    assert tags["xgate.failed.1"] == "accuracy >= 0.9: 0.88 is below 0.9" and tags["xgate.kind"] == "candidate"
    assert tags["xgate.maps.fixed"] == "s0,s_3"  # the first sample of each class (s1, s2 were not kept)
    (back,) = history(config, experiment="xgate/shapes-v1/strict")
    assert back.thresholds == {"accuracy": ((">=", 0.9),)} and back.failed_rules == ("accuracy >= 0.9",)
    assert back.fixed_maps == ("s0", "s_3") and (back.rules_failed, back.rules_total) == (1, 1)
    url = where_to_see(server.url, outcome.experiment_id, outcome.run_ids[0])
    assert url == f"{server.url}/#/experiments/{outcome.experiment_id}/runs/{outcome.run_ids[0]}"
    with urllib.request.urlopen(url.split("#")[0], timeout=5) as response:  # the UI the link opens
        assert response.status == 200
    assert json.loads(Path(MlflowClient(server.url).download_artifacts(
        run.info.run_id, "result.json", str(tmp_path / "dl"))).read_text())["command"] == "check"


# --- history by commit: the x-axis, labels that never overprint, a page that stays small -------------------


def test_spread_moves_close_labels_apart_as_little_as_possible() -> None:
    assert spread([0.3, 0.7], 0.1) == [0.3, 0.7]  # far apart: unmoved
    assert spread([0.5, 0.5, 0.52], 0.1) == pytest.approx([0.5, 0.6, 0.7])
    assert spread([0.52, 0.5], 0.1) == pytest.approx([0.6, 0.5])  # order of the input is kept
    assert spread([0.9, 0.95], 0.1, top=0.92) == pytest.approx([0.82, 0.92])  # the highest stays inside
    assert spread([], 0.1) == []


def test_threshold_labels_of_close_policies_do_not_overlap() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    lines = {"strict": 0.9, "release": 0.9, "lenient": 0.89, "loose": 0.5}
    rows = [replace(row(f"r{n}", n, "m.pt", "strict", 0.85 + 0.01 * n, thresholds={"accuracy": ((">=", value),)}),
                    policy=policy) for n, (policy, value) in enumerate(lines.items())]
    rows += [replace(r, run_id=r.run_id + "b", start_time=r.start_time.replace(day=2)) for r in rows]
    figure, _, labels = trend_figure(0, "accuracy", rows, lineages_of(rows))
    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    texts = [t for t in figure.axes[0].texts if (t.get_gid() or "").startswith("t0-label")]
    assert sorted(t.get_text() for t in texts) == sorted(labels) == sorted(
        ["strict: >= 0.9", "release: >= 0.9", "lenient: >= 0.89", "loose: >= 0.5"])
    boxes = [t.get_window_extent() for t in texts]
    overlapping = [(a.get_text(), b.get_text()) for i, a in enumerate(texts) for j, b in enumerate(texts)
                   if i < j and boxes[i].overlaps(boxes[j])]
    assert overlapping == []
    axes_box = figure.axes[0].get_window_extent()
    assert all(axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1 + 1 for box in boxes)  # inside the plot


def test_the_x_axis_names_runs_by_commit_else_date_and_thins_its_labels() -> None:
    rows = [row(f"r{n}", n % 24, "m.pt", "strict", 0.9, commit=f"{n:07x}" if n % 2 else "",
                start_time=datetime(2026, 1, 1 + n // 24, n % 24, tzinfo=UTC)) for n in range(30)]
    figure, _, _ = trend_figure(0, "accuracy", rows, lineages_of(rows))
    axes = figure.axes[0]
    ticks = [t.get_text() for t in axes.get_xticklabels()]
    assert list(axes.get_xticks()) == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]  # at most MAX_TICKS labels
    assert ticks[:3] == ["01-01 00:00", "0000003", "01-01 06:00"]
    assert tick_label(rows[1]) == "0000001" and axes.get_xlabel().startswith("commit")


def realistic_map(n: int, sample: int) -> bytes:
    """A map panel as the engine stores it, from a shipped review-set image (64 px), its map moving per run."""
    from PIL import Image

    from gate.records import KeptSample

    files = sorted((Path(__file__).resolve().parents[1] / "review_sets" / "shapes-v1" / "images").rglob("*.png"))
    image = np.asarray(Image.open(files[sample % len(files)]).convert("RGB").resize((64, 64)))
    yy, xx = np.mgrid[0:64, 0:64]
    cam = np.exp(-((yy - 20 - n % 20) ** 2 + (xx - 30) ** 2) / 60.0).astype(np.float32)
    mask = np.zeros((64, 64), dtype=bool)
    mask[18:44, 20:46] = True
    return map_png(KeptSample(sample_id=f"s{sample}", image=image, mask=mask, cam=cam, label=0, pred=0,
                              confidence=0.9))


def realistic_atlas(n: int, folder: Path) -> RunAtlas:
    """An atlas as the engine logs it (32 × 32 grid, a smooth blob over a floor), its blob moving per run."""
    yy, xx = np.mgrid[0:32, 0:32]
    mean = np.exp(-((yy - 8 - n % 16) ** 2 + (xx - 20) ** 2) / 20.0) + 0.02
    mean /= mean.sum()
    return logged_atlas(Atlas(total=mean * 50, count=50, by_class=np.zeros((1, 32, 32)),
                              class_count=np.zeros(1, dtype=np.int64), mask_sum=np.zeros((32, 32)), mask_count=0),
                        folder)


def test_the_history_page_of_fifty_runs_stays_under_one_megabyte(tmp_path: Path) -> None:
    policies = ("strict", "lenient")
    rows = []
    for n in range(50):
        policy = policies[n % 2]
        scores = {name: 0.5 + 0.01 * ((n * 7 + k) % 40) for k, name in enumerate(KEY_SCORES)}
        rows.append(row(f"run{n:02d}" + "0" * 24, n % 24, ("cutmix.pt", "cheater.pt")[n // 2 % 2], policy,
                        scores["accuracy"], scores=scores, commit=f"{n * 2654435761 % 16**7:07x}", branch="main",
                        start_time=datetime(2026, 1, 1 + n // 24, n % 24, tzinfo=UTC),
                        thresholds={s: ((">=", THRESHOLDS[policy]),) for s in KEY_SCORES}))
    rows = rows[::-1]  # newest first, as history() returns them
    shown = [r.run_id for r in map_rows(rows)]
    maps = {f"s{k}": {run: realistic_map(n, k) for n, run in enumerate(shown)} for k in range(8)}
    atlases = {run: realistic_atlas(n, tmp_path / run) for n, run in enumerate(shown)}
    html = render_history(rows, maps, atlases=atlases)
    assert len(html.encode("utf-8")) <= 1_000_000, len(html.encode("utf-8"))
    soup = BeautifulSoup(html, "html.parser")
    assert len(soup.select("table.runs tbody tr")) == 50 and len(soup.select("figure.trend")) == len(KEY_SCORES)
    assert len(soup.select("table.maps thead th[data-run-id]")) == MAP_RUNS == len(shown)
    assert len(soup.select("table.maps img")) == 9 * MAP_RUNS  # 8 samples and the atlas
    assert len(soup.select("tr[data-row=atlas] img")) == MAP_RUNS
    assert f"of the {MAP_RUNS} newest of 50 runs" in " ".join(soup.select_one("#maps p").get_text().split())
    # The cells hold whole words: the runs table does not wrap (it scrolls), whatever the shared style says.
    assert re.search(r"table\.runs th, table\.runs td \{[^}]*white-space: nowrap", soup.style.get_text())
    assert soup.select_one("table.runs tbody tr td.commit").get_text() == rows[0].commit


def test_a_damaged_map_artifact_shows_a_dash_and_the_page_still_renders() -> None:
    assert jpeg_thumbnail(b"not a png") is None
    good = jpeg_thumbnail(map_png(kept_sample("s0", 0, 0, seed=1)))
    assert good is not None and good[:3] == b"\xff\xd8\xff"  # a JPEG
    from PIL import Image

    assert Image.open(io.BytesIO(good)).width == 160
    rows = demo_rows()
    soup = BeautifulSoup(render_history(rows, {"s0": {"a1": b"garbage"}}), "html.parser")
    cells = soup.select("table.maps tbody tr[data-sample-id=s0] td")
    assert [c.get_text(strip=True) for c in cells] == ["–"] * 8 and not soup.select("table.maps img")
