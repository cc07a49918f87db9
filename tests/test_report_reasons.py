"""The report says only true things and leads with the diagnosis: every rule row of the demo's cheater, bgmix and
release reports against sentences written out by hand, the headline and families, closest calls, the comparison
box with its warnings, and the galleries' order (gate/outputs/report/reasons.py and the templates)."""

from __future__ import annotations

import numpy as np
import pytest
from bs4 import BeautifulSoup, Tag
from report_fixtures import demo_result

from gate.outputs.report import render_report
from gate.outputs.report.reasons import diagnose, family
from gate.result import RuleResult


def soup_of(name: str) -> BeautifulSoup:
    return BeautifulSoup(render_report(demo_result(name)), "html.parser")


def rule_rows(soup: BeautifulSoup) -> list[tuple[str, str, str]]:
    """(rule id, result, meaning and deciding number) for every row of the rules table."""
    rows = []
    for row in soup.select("section#rules tr.rule"):
        cells = row.find_all("td")
        rows.append((str(row["data-rule-id"]), cells[4].get_text(strip=True), cells[5].get_text(" ", strip=True)))
    return rows


SIZES = [
    ("samples >= 300", "✓ pass", "600 scored samples, the policy needs at least 300 600 ≥ 300: passed"),
    ("samples per class >= 30", "✓ pass",
     "Class 'circle' has 150 scored samples, the policy needs at least 30 per class 150 ≥ 30: passed"),
]
CHEATER = [*SIZES,
    ("accuracy >= 0.9 @95%", "? undecided", "The model answers right on 91.3% of samples 91.3% ≥ 90%, but the 95% "
     "lower bound is 89.3%: undecided; more samples would settle it"),
    ("worst_class_accuracy >= 0.8 @95%", "✓ pass", "The worst class is answered right on 86% of its samples 86% ≥ "
     "80%, and the 95% lower bound 82% ≥ 80%: passed"),
    ("ece <= 0.15 @95%", "✓ pass", "Stated confidence and real accuracy differ by 4.1% on average 4.1% ≤ 15%, and "
     "the 95% upper bound 5.5% ≤ 15%: passed"),
    ("overconfidence_error <= 0.03 @95%", "✓ pass", "The model claims 1.2% more confidence than it earns on average "
     "1.2% ≤ 3%, and the 95% upper bound 1.9% ≤ 3%: passed"),
    ("confident_wrong_rate@0.99 <= 0.01 @95%", "✓ pass", "No sample is wrong with 99% confidence or more 0% ≤ 1%, "
     "and the 95% upper bound 0.45% ≤ 1%: passed"),
    ("alignment.lift >= 2 @95%", "✗ FAIL", "The map puts 0.58× the mass on the object that a uniform map would "
     "0.58× < 2.00×, and even the 95% upper bound 0.64× < 2.00×: failed"),
    ("alignment.off_object_rate <= 0.2 @95%", "✗ FAIL", "The map lands off the object on 97.7% of samples 97.7% > "
     "20%, and even the 95% lower bound 96.3% > 20%: failed"),
    ("alignment.coverage >= 0.95 @95%", "✓ pass", "100% of samples could be scored for alignment 100% ≥ 95%, and "
     "the 95% lower bound 99.6% ≥ 95%: passed"),
    ("background.only_bg_accuracy <= 0.4 @95%", "✗ FAIL", "The scene alone gives the right answer 91.3% of the "
     "time: the scene alone carries part of the answer 91.3% > 40%, and even the 95% lower bound 89.4% > 40%: "
     "failed"),
    ("background.bg_gap <= 0.1 @95%", "✗ FAIL", "A matching scene adds 62% to accuracy: the scene, not only the "
     "object, carries the answer 62% > 10%, and even the 95% lower bound 57% > 10%: failed"),
    ("background.flip_rate <= 0.2 @95%", "✗ FAIL", "The answer changes on 71% of samples when the object moves to "
     "another scene: the answer often follows the scene 71% > 20%, and even the 95% lower bound 68% > 20%: failed"),
    ("sanity.randomization_similarity <= 0.5 @95%", "✓ pass", "Maps keep a Spearman similarity of 0.12 when the top "
     "layers are randomised 0.12 ≤ 0.5, and the 95% upper bound 0.15 ≤ 0.5: passed"),
]
BGMIX = [*SIZES,
    ("accuracy >= 0.9 @95%", "✓ pass", "The model answers right on 95.5% of samples 95.5% ≥ 90%, and the 95% lower "
     "bound 94% ≥ 90%: passed"),
    ("worst_class_accuracy >= 0.8 @95%", "✓ pass", "The worst class is answered right on 91% of its samples 91% ≥ "
     "80%, and the 95% lower bound 88% ≥ 80%: passed"),
    ("ece <= 0.15 @95%", "✓ pass", "Stated confidence and real accuracy differ by 0.75% on average 0.75% ≤ 15%, "
     "and the 95% upper bound 0.91% ≤ 15%: passed"),
    ("overconfidence_error <= 0.03 @95%", "✓ pass", "The model claims 0.40% more confidence than it earns on "
     "average 0.40% ≤ 3%, and the 95% upper bound 0.60% ≤ 3%: passed"),
    ("confident_wrong_rate@0.99 <= 0.01 @95%", "✓ pass", "No sample is wrong with 99% confidence or more 0% ≤ 1%, "
     "and the 95% upper bound 0.45% ≤ 1%: passed"),
    ("alignment.lift >= 2 @95%", "✓ pass", "The map puts 2.50× the mass on the object that a uniform map would "
     "2.50× ≥ 2.00×, and the 95% lower bound 2.30× ≥ 2.00×: passed"),
    ("alignment.off_object_rate <= 0.2 @95%", "✓ pass", "The map lands off the object on 5% of samples 5% ≤ 20%, "
     "and the 95% upper bound 6.7% ≤ 20%: passed"),
    ("alignment.coverage >= 0.95 @95%", "✓ pass", "100% of samples could be scored for alignment 100% ≥ 95%, and "
     "the 95% lower bound 99.6% ≥ 95%: passed"),
    ("background.only_bg_accuracy <= 0.4 @95%", "✓ pass", "The scene alone gives the right answer 27% of the time "
     "27% ≤ 40%, and the 95% upper bound 29.7% ≤ 40%: passed"),
    # The false sentence was "a matching scene adds 0% to accuracy: the scene, not the object, carries it".
    ("background.bg_gap <= 0.1 @95%", "✓ pass", "A matching scene adds nothing to accuracy 0% ≤ 10%, and the 95% "
     "upper bound 3% ≤ 10%: passed"),
    ("background.flip_rate <= 0.2 @95%", "✓ pass", "The answer changes on 4% of samples when the object moves to "
     "another scene 4% ≤ 20%, and the 95% upper bound 5.5% ≤ 20%: passed"),
    ("sanity.randomization_similarity <= 0.5 @95%", "✓ pass", "Maps keep a Spearman similarity of 0.1 when the top "
     "layers are randomised 0.1 ≤ 0.5, and the 95% upper bound 0.13 ≤ 0.5: passed"),
]
RELEASE = [*SIZES,
    ("accuracy >= 0.9 @95%", "✓ pass", "The model answers right on 96% of samples 96% ≥ 90%, and the 95% lower "
     "bound 94.5% ≥ 90%: passed"),
    ("worst_class_accuracy >= 0.8 @95%", "✓ pass", "The worst class is answered right on 93% of its samples 93% ≥ "
     "80%, and the 95% lower bound 90% ≥ 80%: passed"),
    ("ece <= 0.15 @95%", "✓ pass", "Stated confidence and real accuracy differ by 11% on average 11% ≤ 15%, and the "
     "95% upper bound 12% ≤ 15%: passed"),
    ("overconfidence_error <= 0.03 @95%", "✓ pass", "The model claims 0.20% more confidence than it earns on "
     "average 0.20% ≤ 3%, and the 95% upper bound 0.40% ≤ 3%: passed"),
    ("confident_wrong_rate@0.99 <= 0.01 @95%", "✓ pass", "No sample is wrong with 99% confidence or more 0% ≤ 1%, "
     "and the 95% upper bound 0.45% ≤ 1%: passed"),
    ("alignment.lift >= 2 @95%", "✓ pass", "The map puts 2.90× the mass on the object that a uniform map would "
     "2.90× ≥ 2.00×, and the 95% lower bound 2.70× ≥ 2.00×: passed"),
    ("alignment.off_object_rate <= 0.2 @95%", "✓ pass", "The map lands off the object on 3% of samples 3% ≤ 20%, "
     "and the 95% upper bound 4.5% ≤ 20%: passed"),
    ("alignment.coverage >= 0.95 @95%", "✓ pass", "100% of samples could be scored for alignment 100% ≥ 95%, and "
     "the 95% lower bound 99.6% ≥ 95%: passed"),
    ("background.only_bg_accuracy <= 0.4 @95%", "✓ pass", "The scene alone gives the right answer 25% of the time "
     "25% ≤ 40%, and the 95% upper bound 27.7% ≤ 40%: passed"),
    ("background.bg_gap <= 0.1 @95%", "✓ pass", "A matching scene adds nothing to accuracy 0% ≤ 10%, and the 95% "
     "upper bound 2% ≤ 10%: passed"),
    ("background.flip_rate <= 0.2 @95%", "✓ pass", "The answer changes on 3% of samples when the object moves to "
     "another scene 3% ≤ 20%, and the 95% upper bound 4.3% ≤ 20%: passed"),
    ("sanity.randomization_similarity <= 0.5 @95%", "✓ pass", "Maps keep a Spearman similarity of 0.1 when the top "
     "layers are randomised 0.1 ≤ 0.5, and the 95% upper bound 0.13 ≤ 0.5: passed"),
    # The false sentence was "the model answers right on 0% of samples" (the delta read as the score).
    ("accuracy vs baseline: non_inferior 0.01 @95%", "✓ pass", "Accuracy equals the baseline's; it may drop at "
     "most 1.0 points change +0.0 pts ≥ -1.0 pts, and the 95% lower bound -0.6 pts ≥ -1.0 pts: passed"),
    ("overconfidence_error vs baseline: non_inferior 0.01 @95%", "✓ pass", "Over-confidence is 3.0 points below "
     "the baseline's (better); it may rise at most 1.0 points change -3.0 pts ≤ +1.0 pts, and the 95% upper bound "
     "-2.0 pts ≤ +1.0 pts: passed"),
]


@pytest.mark.parametrize(("name", "expected"), [("cheater.pt", CHEATER), ("bgmix.pt", BGMIX), ("release", RELEASE)])
def test_every_rule_row_of_the_demo_reports_says_true_things(name: str, expected: list[tuple[str, str, str]]) -> None:
    assert rule_rows(soup_of(name)) == expected


def test_the_cheater_leads_with_the_shortcut_then_the_undecided_accuracy() -> None:
    soup = soup_of("cheater.pt")
    headline = " ".join(soup.select_one("#verdict p.headline").get_text(" ", strip=True).split())  # type: ignore[union-attr]
    assert headline == ("cheater.pt : Shortcut: the model reads the scene, not the object, and its attention lands "
                        "off the object. Also failed: accuracy (6 of 14 rules failed)")
    families = [(str(f["data-family"]), [str(li["data-rule-id"]) for li in f.select("li")])
                for f in soup.select("#diagnosis div.family")]
    # Furthest beyond the threshold (relative to it) first: bg_gap 57% vs 10%, off-object 96.3% vs 20%, ...
    assert families == [
        ("shortcut", ["background.bg_gap <= 0.1 @95%", "alignment.off_object_rate <= 0.2 @95%",
                      "background.flip_rate <= 0.2 @95%", "background.only_bg_accuracy <= 0.4 @95%",
                      "alignment.lift >= 2 @95%"]),
        ("accuracy", ["accuracy >= 0.9 @95%"]),
    ]
    accuracy = soup.select_one('#diagnosis li[data-rule-id="accuracy >= 0.9 @95%"]')
    assert isinstance(accuracy, Tag) and accuracy["data-state"] == "undecided"
    assert "but the 95% lower bound is 89.3%: undecided" in accuracy.get_text()
    # The evidence: failures first; the map's failures link to the right-for-the-wrong-reason gallery.
    kinds = [str(g["data-kind"]) for g in soup.select("section#galleries div.gallery")]
    assert kinds == ["failures", "wrong_reason", "borderline", "easy"]
    lift = soup.select_one('#diagnosis li[data-rule-id="alignment.lift >= 2 @95%"] a')
    assert isinstance(lift, Tag) and lift["href"] == "#c0-gallery-wrong_reason"
    assert soup.find(id="c0-gallery-wrong_reason") is not None


def test_a_pass_lists_its_closest_calls() -> None:
    soup = soup_of("bgmix.pt")
    assert not soup.select("#diagnosis div.family")
    closest = [str(li["data-rule-id"]) for li in soup.select("#diagnosis div.closest li")]
    # Lower bounds over their floors, relative to the floor: 94% vs 90% (0.044), 99.55% vs 95% (0.048), 88% vs 80%.
    assert closest == ["accuracy >= 0.9 @95%", "alignment.coverage >= 0.95 @95%", "worst_class_accuracy >= 0.8 @95%"]


def test_the_release_report_shows_the_comparison_box_with_its_warnings() -> None:
    soup = soup_of("release")
    box = soup.select_one("#diagnosis div.comparison-box")
    assert isinstance(box, Tag) and box["id"] == "c0-comparison"
    rows = [[td.get_text(" ", strip=True) for td in tr.find_all("td")] for tr in box.select("table.gated tbody tr")]
    assert rows == [
        ["accuracy", "96%", "96%", "+0.0 pts [-0.6 pts, +0.6 pts] at 95%", "✓ passed"],
        ["overconfidence_error", "0.20%", "3.2%", "-3.0 pts [-4.0 pts, -2.0 pts] at 95%", "✓ passed"],
    ]
    text = " ".join(box.get_text(" ", strip=True).split())
    assert "Samples: 9 corrected, 9 regressed; McNemar p = 1 ." in text
    warnings = [li.get_text(" ", strip=True) for li in box.select("ul.warnings li")]
    assert warnings == [
        "⚠ warning The pointing game is 30.0 points below the baseline's (worse): change -30.0 pts, 95% interval "
        "[-34.0 pts, -26.0 pts]; no rule gates it",
        "⚠ warning ECE is 10.0 points above the baseline's (worse): change +10.0 pts, 95% interval [+8.5 pts, "
        "+11.5 pts]; no rule gates it",
    ]
    # The full table: both values and the interval, the largest change first; warnings are marked there too.
    table = [[td.get_text(" ", strip=True) for td in tr.find_all("td")]
             for tr in soup.select("section#baseline table.deltas tbody tr")]
    assert table == [
        ["alignment.pointing_game ⚠ warning", "62%", "92%", "▼ worse -30.0 pts", "[-34.0 pts, -26.0 pts] at 95%"],
        ["ece ⚠ warning", "11%", "1%", "▼ worse +10.0 pts", "[+8.5 pts, +11.5 pts] at 95%"],
        ["overconfidence_error", "0.20%", "3.2%", "▲ better -3.0 pts", "[-4.0 pts, -2.0 pts] at 95%"],
        ["accuracy", "96%", "96%", "+0.0 pts", "[-0.6 pts, +0.6 pts] at 95%"],
    ]


def _rule(score: str, op: str, note: str = "") -> RuleResult:
    return RuleResult(f"{score} {op}", score, op, 0.5, 0.4, False, "", True, note=note)


@pytest.mark.parametrize(("rule", "kind"), [
    (_rule("samples", ">="), "samples"),
    (_rule("accuracy", ">=", note="review set too small: cannot pass at 95% with 40 samples (needs at least 268)"),
     "samples"),
    (_rule("accuracy", "non_inferior"), "regression"),
    (_rule("background.flip_rate", ">="), "shortcut"),
    (_rule("alignment.lift", ">="), "shortcut"),
    (_rule("lighting.flip_rate", "<="), "shortcut"),
    (_rule("corners.accuracy_drop", "<="), "shortcut"),
    (_rule("ece", ">="), "calibration"),
    (_rule("sanity.randomization_similarity", ">="), "sanity"),
    (_rule("worst_class_accuracy", ">="), "accuracy"),
], ids=["samples", "too-small", "baseline", "scene", "map", "lighting", "corners", "calibration", "sanity",
        "accuracy"])
def test_family(rule: RuleResult, kind: str) -> None:
    assert family(rule) == kind


def test_a_mask_free_probe_headline_says_what_the_answer_follows() -> None:
    lighting = RuleResult("lighting.flip_rate <= 0.4", "lighting.flip_rate", "<=", 0.4, 0.83, False, "", False)
    border = RuleResult("border.flip_rate <= 0.4", "border.flip_rate", "<=", 0.4, 0.9, False, "", False)
    scene = RuleResult("background.bg_gap <= 0.1", "background.bg_gap", "<=", 0.1, 0.88, False, "", False)
    assert diagnose((lighting,)).headline == "Shortcut: its answer follows the image's lighting"
    assert diagnose((scene, border, lighting)).headline == (
        "Shortcut: the model reads the scene, not the object, and its answer follows the image's border and lighting")


def test_a_regression_headline_names_what_got_worse() -> None:
    rule = RuleResult("accuracy vs baseline", "accuracy", "non_inferior", 0.01, -0.03, False, "", True,
                      (-0.05, -0.012), confidence=0.95)
    calibration = RuleResult("ece <= 0.1", "ece", "<=", 0.1, 0.2, False, "", False)
    assert diagnose((calibration, rule)).headline == ("Regression against the baseline: accuracy worse than allowed. "
                                                      "Also failed: calibration")


def test_the_plots_a_reason_links_to_draw_the_policy() -> None:
    from report_fixtures import svg_texts_of

    from gate.outputs.report import plots

    result = demo_result("release")
    cand = result.candidates[0]
    records, rules = cand.records, cand.rules  # confident_wrong_rate@0.99 <= 1%, worst class >= 80%, ece <= 15%
    assert "policy ≤ 1% at ≥ 0.99" in svg_texts_of(plots.wrong_by_threshold_plot(records, rules))
    assert "policy floor 80%" in svg_texts_of(plots.class_accuracy_plot(records, None, rules))
    title = " ".join(svg_texts_of(plots.reliability_plot(records, rules)))
    assert "policy: ece ≤ 15%; policy: overconfidence_error ≤ 3%" in title
    # Without rules nothing claims to be the policy.
    assert not any("policy" in t for t in svg_texts_of(plots.wrong_by_threshold_plot(records)))
    # The confidence axis starts a tenth below where 98% of the samples are.
    assert plots._zoom(np.array([0.95] * 97 + [0.31, 0.5, 0.6])) == 0.5  # the 2% quantile is 0.598
    assert plots._zoom(np.array([0.95] * 98 + [0.31, 0.5])) == 0.9  # 98% are at 0.95
    assert plots._zoom(np.array([0.999] * 100)) == 0.9


@pytest.mark.slow
def test_select_over_six_candidates_is_a_ranking_under_1_5_mb() -> None:
    from report_fixtures import six_select

    html = render_report(six_select())  # 24 kept samples of 64 px per candidate, as the demo keeps
    assert len(html.encode("utf-8")) <= 1_500_000
    soup = BeautifulSoup(html, "html.parser")
    ranking = soup.select("table.ranking tr[data-candidate]")
    rows = {str(r["data-candidate"]): r.get_text(" ", strip=True) for r in ranking}
    assert list(rows) == ["bgmix.pt", "baseline.pt", "baseline-biased.pt", "cheater.pt", "cutmix-biased.pt",
                          "cutmix.pt"]
    # Equal accuracy; ECE 10.2% vs 10.5%, with overlapping intervals: the demo's tie.
    assert "tied within noise with bgmix.pt on ece (95% intervals overlap)" in rows["baseline.pt"]
    assert all("✗ failed" in rows[name] for name in list(rows)[2:])
    assert len(soup.select("section#galleries div.gallery")) == 4  # the winner's galleries only
