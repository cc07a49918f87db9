from __future__ import annotations

import base64
import io
import warnings
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import pytest
import torch
from bs4 import BeautifulSoup, Tag
from PIL import Image
from report_fixtures import CLASSES, MATH, XSS, check_result, make_records, select_result
from torchmetrics.functional.classification import multiclass_calibration_error

from gate.outputs.report import build_context, render_report
from gate.outputs.report import pictures as Pic
from gate.outputs.report import plots as P
from gate.outputs.report.comparison import migration_rows
from gate.outputs.report.context import fmt, score_group
from gate.records import Records
from gate.result import Comparison, GateResult, Migration

DATA_URI = "data:image/"  # any inline picture
PNG_URI = "data:image/png;base64,"
JPEG_URI = "data:image/jpeg;base64,"
SVG_URI = "data:image/svg+xml,"


def soup_of(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def section(soup: BeautifulSoup, name: str) -> Tag:
    found = soup.find("section", id=name)
    assert isinstance(found, Tag), f"section #{name} missing"
    return found


def attr(tag: Tag | None, name: str) -> str:
    assert isinstance(tag, Tag), f"no element for {name}"
    value = tag.get(name)
    assert isinstance(value, str), f"{name} is not a single value"
    return value


def classes_of(tag: Tag | None) -> list[str]:
    assert isinstance(tag, Tag)
    return list(tag.get("class") or [])


def one(root: Tag, selector: str) -> Tag:
    found = root.select_one(selector)
    assert isinstance(found, Tag), selector
    return found


def cells(row: Tag | None) -> list[str]:
    assert isinstance(row, Tag)
    return [td.get_text(strip=True) for td in row.find_all("td")]


def decode_picture(uri: str) -> Image.Image:
    """A PNG or JPEG data URI as a PIL image; its ``format`` says which."""
    prefix = PNG_URI if uri.startswith(PNG_URI) else JPEG_URI
    assert uri.startswith(prefix), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))
    assert image.format == ("PNG" if prefix == PNG_URI else "JPEG")
    return image


def decode_svg(uri: str) -> ET.Element:
    """An SVG data URI as its parsed root element."""
    assert uri.startswith(SVG_URI), uri[:40]
    root = ET.fromstring(unquote(uri[len(SVG_URI):]))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error)) if error > 0 else float("inf")


@pytest.fixture(scope="module")
def check_with_baseline() -> tuple[GateResult, BeautifulSoup]:
    result = check_result(baseline=True)
    return result, soup_of(render_report(result))


# --- sections --------------------------------------------------------------------


def test_check_report_has_every_section(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    _, soup = check_with_baseline
    for name in ("verdict", "rules", "scores", "plots", "galleries", "showroom", "baseline", "about"):
        section(soup, name)
    assert soup.find("section", id="candidates") is None  # only for select
    assert "failed" in classes_of(section(soup, "verdict"))


def test_baseline_section_only_with_a_baseline() -> None:
    soup = soup_of(render_report(check_result(baseline=False, kept=4)))
    assert soup.find("section", id="baseline") is None
    assert not soup.select("figure.pic.baseline")


def test_rules_table_has_every_rule_with_value_threshold_and_direction(
    check_with_baseline: tuple[GateResult, BeautifulSoup],
) -> None:
    result, soup = check_with_baseline
    candidate = result.candidates[0]
    rows = section(soup, "rules").select("tr.rule")
    assert [attr(r, "data-rule-id") for r in rows] == [rule.rule_id for rule in candidate.rules]
    for row, rule in zip(rows, candidate.rules, strict=True):
        texts = cells(row)  # rule, value, threshold, interval, result, meaning: six columns, nothing repeated
        assert len(texts) == 6
        assert texts[0] == f"{rule.rule_id} {'↑' if rule.higher_is_better else '↓'}"
        assert texts[1] == fmt(rule.value) and texts[2] == f"{rule.op} {fmt(rule.threshold)}"
        assert texts[3] == ("" if rule.interval is None else f"[{fmt(rule.interval[0])}, {fmt(rule.interval[1])}]")
        assert texts[4] == ("✓ pass" if rule.passed else "✗ FAIL")
    failed = [attr(r, "data-rule-id") for r in rows if "rule-fail" in classes_of(r)]
    assert failed == [rule.rule_id for rule in candidate.failed_rules] == ["accuracy >= 0.95"]
    # The meaning in words, then the number that decided the rule, in the score's unit.
    assert cells(rows[0])[5] == "The model answers right on 67.5% of samples67.5% < 95%: failed"
    assert cells(rows[1])[5] == "Stated confidence and real accuracy differ by 8% on average8% ≤ 50%: passed"


def test_scores_are_grouped_with_a_baseline_column(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    result, soup = check_with_baseline
    tables = {attr(t, "data-group"): t for t in section(soup, "scores").select("table.scores")}
    # The deltas are shown once, in the baseline section, not as a score group too.
    assert list(tables) == ["classification", "calibration", "alignment", "background", "sanity"]
    assert not section(soup, "scores").find("tr", attrs={"data-score": "delta.accuracy"})
    assert len(section(soup, "baseline").select('table.deltas tr[data-score="accuracy"]')) == 1
    expected = {"accuracy": "classification", "ece": "calibration", "alignment.lift": "alignment",
                "background.only_bg_accuracy": "background", "sanity.randomization_similarity": "sanity"}
    for score, group in expected.items():
        row = tables[group].find("tr", attrs={"data-score": score})
        assert cells(row)[2] == fmt(result.candidates[0].scores[score]), score
    header = [th.get_text(strip=True) for th in tables["classification"].find_all("th")]
    assert header == ["Score", "Dir", "cand.pt", "baseline: prod.pt"]
    assert cells(tables["classification"].find("tr", attrs={"data-score": "accuracy"}))[1] == "↑"
    assert cells(tables["calibration"].find("tr", attrs={"data-score": "ece"}))[1] == "↓"
    assert cells(tables["calibration"].find("tr", attrs={"data-score": "nll"}))[2] == "n/a"


@pytest.mark.parametrize(
    ("name", "group"),
    [("accuracy", "classification"), ("class_accuracy.cat", "classification"), ("ece", "calibration"),
     ("alignment.lift.class.cat", "alignment"), ("background.bg_gap", "background"),
     ("delta.ece", "versus baseline"), ("sanity.something_new", "sanity"), ("made_up", "classification")],
)
def test_score_group(name: str, group: str) -> None:
    assert score_group(name) == group


def test_plots_are_four_inline_svgs_with_text(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    _, soup = check_with_baseline
    figures = section(soup, "plots").select("figure.plot")
    assert [attr(f, "data-plot") for f in figures] == ["reliability", "confidence", "wrong_by_threshold",
                                                      "class_accuracy"]
    titles = ["Reliability (15 bins)", "Confidence: correct vs wrong", "Wrong predictions by confidence threshold",
              "Accuracy per class vs baseline"]
    for figure, title in zip(figures, titles, strict=True):
        uri = attr(figure.img, "src")
        root = decode_svg(uri)
        assert (root.get("width"), root.get("height")) == ("324pt", "234pt")  # 4.5 x 3.25 in
        assert (attr(figure.img, "width"), attr(figure.img, "height")) == ("432", "312")  # the same, in CSS px
        assert any(t.startswith(title) for t in svg_texts(root))  # text, not glyph outlines
        assert root.find(".//{http://www.w3.org/2000/svg}image") is None  # vector: no raster inside
        assert len(uri) < 30_000  # the 2x PNGs were 32-65 kB (base64)


def test_galleries_have_expected_tiles_with_baseline_overlays(
    check_with_baseline: tuple[GateResult, BeautifulSoup],
) -> None:
    result, soup = check_with_baseline
    gallery = result.candidates[0].gallery
    blocks = {attr(g, "data-kind"): g for g in section(soup, "galleries").select("div.gallery")}
    # In the order that argues the verdict.
    assert list(blocks) == ["failures", "wrong_reason", "borderline", "easy"]
    total = 0
    kept = result.candidates[0].records.kept
    for kind, block in blocks.items():
        tiles = block.select("figure.tile")
        shown = [attr(t, "data-sample") for t in tiles]
        assert sorted(shown) == sorted(getattr(gallery, kind))
        # Classes take turns: the first tiles are one of each class in the gallery.
        labels = [kept[s].label for s in shown]
        distinct = len(set(labels))
        assert len(set(labels[:distinct])) == distinct
        for tile in tiles:
            sources = [attr(img, "src") for img in tile.find_all("img")]
            assert len(sources) == 3  # image + mask, Grad-CAM, baseline Grad-CAM
            assert all(s.startswith(DATA_URI) for s in sources)
            assert decode_picture(sources[0]).size == (16, 16)  # stored at its own size; the page enlarges it
            assert decode_picture(sources[1]).size == (160, 160)  # the overlay: 16 px enlarged 10x
            # The pictures are their own full-size view: a popover the tile's button opens (no script).
            pics = one(tile, "div.pics")
            assert pics.has_attr("popover") and attr(one(tile, "button.open"), "popovertarget") == attr(pics, "id")
        total += len(tiles)
    assert total == 8 + len(gallery.wrong_reason) and len(gallery.failures) > 0


def test_tile_shows_label_prediction_and_confidence(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    result, soup = check_with_baseline
    records = result.candidates[0].records
    sample_id = result.candidates[0].gallery.failures[0]
    kept = records.kept[sample_id]
    tile = one(soup, f'figure.tile[data-sample="{sample_id}"]')
    text = tile.get_text(" ", strip=True)
    assert f"label {CLASSES[kept.label]}" in text
    lift = float(records.lift[records.ids.index(sample_id)])
    assert f"pred ✗ {CLASSES[kept.pred]} confidence {kept.confidence:.2f} · lift {lift:.2f}" in text
    assert (kept.confidence, lift) == (pytest.approx(0.3379, abs=1e-4), pytest.approx(5.1, abs=0.005))
    assert "wrong" in classes_of(tile)
    # The button that opens the full-size view is named by sample, label and prediction.
    assert one(tile, "button.open").get_text(strip=True) == f"full size: {sample_id}, {CLASSES[kept.label]} → " \
        f"{CLASSES[kept.pred]}"


def _scene_tells_by_hand(records: Records) -> list[bool]:
    """Per class: (rate_c - share_c) / (1 - share_c) >= 0.5 over the samples with an only_bg variant."""
    answers, labels = list(records.probe_preds["only_bg"]), list(records.labels)
    n = len(labels)
    out = []
    for c in range(len(records.classes)):
        mine = [a for a, y in zip(answers, labels, strict=True) if y == c]
        share = sum(a == c for a in answers) / n
        rate = sum(a == c for a in mine) / len(mine) if mine else 0.0
        out.append(share < 1 and (rate - share) / (1 - share) >= 0.5)
    return out


def test_showroom_panels_in_order_with_predictions(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    result, soup = check_with_baseline
    records = result.candidates[0].records
    kept = records.kept
    tells = _scene_tells_by_hand(records)
    rows = section(soup, "showroom").select("div.showroom-row")
    assert len(rows) == 6  # SHOWROOM_MAX of the 8 kept samples
    shown = [kept[attr(r, "data-sample")] for r in rows]
    distinct = len({s.label for s in shown})
    assert len({s.label for s in shown[:distinct]}) == distinct  # classes take turns
    for row in rows:
        sample = kept[attr(row, "data-sample")]
        panels = row.select("figure.pic")
        assert [attr(p, "data-variant") for p in panels] == ["original", "only_fg", "mixed_rand", "only_bg"]
        preds = [one(p, "strong").get_text() for p in panels]
        expected = [sample.pred] + [sample.variant_preds[v] for v in ("only_fg", "mixed_rand", "only_bg")]
        assert preds == [CLASSES[i] for i in expected]
        tones = [next(c for c in classes_of(p) if c in ("hit", "changed", "miss")) for p in panels]
        # Object panels: amber when the answer moved with the scene; the empty scene: red only when right
        # AND the scene of that class tells the model the class (not its default answer on empty scenes).
        assert tones[:3] == ["hit" if i == sample.pred else "changed" for i in expected[:3]]
        flagged = expected[3] == sample.label and tells[sample.label]
        assert tones[3] == ("miss" if flagged else "hit")
        assert ("right without the object" in panels[3].get_text()) == flagged


def _with_only_bg(records: Records, answers: np.ndarray) -> Records:
    """``records`` whose empty-scene answers (records and kept samples) are ``answers``."""
    index = {s: i for i, s in enumerate(records.ids)}
    kept = {s: replace(k, variant_preds={**k.variant_preds, "only_bg": int(answers[index[s]])})
            for s, k in records.kept.items()}
    return replace(records, probe_preds={**records.probe_preds, "only_bg": answers}, kept=kept)


def test_showroom_does_not_flag_a_default_answer_but_flags_a_scene_reader() -> None:
    # 4 classes, 10 samples each; every sample kept so each class can be shown.
    labels = np.repeat(np.arange(4), 10)
    base = check_result(kept=0)
    records = make_records(40, seed=3, labels=labels, kept=40)
    cand = base.candidates[0]
    # Model A says "circle" (class 0) to every empty scene: right for every circle, reading nothing.
    default = _with_only_bg(records, np.zeros(40, dtype=np.int64))
    # Model B reads the scene: its empty-scene answer is the label, 9 of 10 times per class.
    reader_answers = labels.copy()
    reader_answers[::10] = (labels[::10] + 1) % 4
    reader = _with_only_bg(records, reader_answers)
    for model, expect_flags in ((default, False), (reader, True)):
        gallery = replace(cand.gallery, easy=tuple(model.kept), borderline=(), failures=())
        view = build_context(replace(base, candidates=(replace(cand, records=model, gallery=gallery),)))
        showroom = view.candidates[0].showroom
        assert len(showroom) == 6 and len({r.label for r in showroom[:4]}) == 4  # one of each class first
        assert any(r.scene_tells for r in showroom) is expect_flags
        assert _scene_tells_by_hand(model) == [expect_flags] * 4
    soup = soup_of(render_report(replace(base, candidates=(replace(
        cand, records=default, gallery=replace(cand.gallery, easy=tuple(default.kept))),))))
    assert not section(soup, "showroom").select(".pic.miss, .flag")
    assert "circle, 100% of empty scenes" in section(soup, "showroom").get_text(" ", strip=True)


def test_showroom_skips_gracefully_without_variants() -> None:
    soup = soup_of(render_report(check_result(probes=False, kept=4)))
    showroom = section(soup, "showroom")
    assert not showroom.select("div.showroom-row")
    assert "No background probes" in showroom.get_text()


def test_baseline_section_shows_migration_mcnemar_and_class_deltas(
    check_with_baseline: tuple[GateResult, BeautifulSoup],
) -> None:
    result, soup = check_with_baseline
    comparison = result.candidates[0].comparison
    assert comparison is not None
    block = section(soup, "baseline")
    cells = [td.get_text() for td in block.select("table.migration td.num")]
    moved = comparison.migration
    assert cells[:4] == [str(getattr(moved, k)) for k in ("corrected", "regressed", "still_wrong", "still_right")]
    assert moved.still_wrong > 0 and moved.still_wrong_confidence_dropped == 0.5
    assert cells[4] == f"{round(moved.still_wrong / 2)} of {moved.still_wrong} (50%)"
    assert one(block, "strong.mcnemar").get_text() == "0.0312"
    rows = block.select("table.class-deltas tr[data-class]")
    assert [attr(r, "data-class") for r in rows] == list(CLASSES)
    for row in rows:
        delta = comparison.class_deltas[attr(row, "data-class")]
        cell = one(row, "td.num")
        arrow = "▲ " if delta > 0 else "▼ " if delta < 0 else " "  # a word or icon with every colour
        assert cell.get_text() == f"{arrow}{delta * 100:+.1f} pts"
        assert ("good" in classes_of(cell)) == (delta > 0) and ("bad" in classes_of(cell)) == (delta < 0)
    ece = block.select('table.deltas tr[data-score="ece"] td.num')
    # Candidate, baseline, change, interval: lower ECE is better. (The fixture has no score values for it.)
    assert [td.get_text(strip=True) for td in ece] == ["n/a", "n/a", "▲ better -2.0 pts", ""]
    assert "good" in classes_of(ece[2])
    assert one(block, "table.intervals").get_text(" ", strip=True).endswith("[-5.0 pts, +11.0 pts] at 95%")


@pytest.mark.parametrize(
    ("migration", "text"),
    [((50, 0.98), "49 of 50 (98%)"), ((0, float("nan")), "n/a (none still wrong)"), ((3, 1 / 3), "1 of 3 (33%)")],
)
def test_still_wrong_confidence_dropped_is_a_share_not_a_count(migration: tuple[int, float], text: str) -> None:
    rows = dict(migration_rows(Migration(1, 2, migration[0], 7, migration[1])))
    assert rows["still wrong, confidence dropped"] == text
    assert rows["still wrong"] == str(migration[0])
    assert rows["corrected (baseline wrong, candidate right)"] == "1"


def test_report_renders_a_comparison_with_nothing_still_wrong() -> None:
    # NaN: no sample is wrong for both models (result.json writes it as null).
    result = check_result(baseline=True)
    cand = result.candidates[0]
    assert cand.comparison is not None
    moved = replace(cand.comparison.migration, still_wrong=0, still_wrong_confidence_dropped=float("nan"))
    changed = replace(result, candidates=(replace(cand, comparison=replace(cand.comparison, migration=moved)),))
    block = section(soup_of(render_report(changed)), "baseline")
    assert block.select("table.migration td.num")[-1].get_text() == "n/a (none still wrong)"


# --- select ------------------------------------------------------------------------


def test_select_report_ranks_with_intervals_ties_and_one_line_per_rejected() -> None:
    result = select_result(kept=3)  # ranking a.pt, c.pt (passed), then b.pt (failed)
    soup = soup_of(render_report(result))
    rows = one(section(soup, "diagnosis"), "table.ranking").select("tr[data-candidate]")
    assert [attr(r, "data-candidate") for r in rows] == ["a.pt", "c.pt", "b.pt"]
    # Accuracy 27, 25 and 31 of 40 right, with Wilson bounds (one-sided 95%, z = 1.645) worked out by hand.
    assert [cells(r)[2] for r in rows] == ["67.5% [54.6%, 78.2%]", "62.5% [49.5%, 73.9%]", "77.5% [65.1%, 86.4%]"]
    assert "(selected)" in rows[0].get_text() and "(selected)" not in rows[2].get_text()
    assert cells(rows[0])[3] == "✓ passed"
    assert cells(rows[1])[3] == "✓ passedtied within noise with a.pt on accuracy (95% intervals overlap)"
    assert cells(rows[2])[3] == "✗ failed: Accuracy: the model is right too rarely (accuracy below the floor)rules"
    # Full sections only for the winner; the others' rules stay in the rules table.
    assert [attr(g, "data-candidate") for g in section(soup, "galleries").select("div.gallery")] == ["a.pt"] * 4
    assert {attr(f, "data-candidate") for f in section(soup, "plots").select("div.figures")} == {"a.pt"}
    assert [attr(t, "data-candidate") for t in section(soup, "rules").select("table.rules")] == ["a.pt", "c.pt", "b.pt"]
    header = [th.get_text() for th in one(section(soup, "scores"), "table.scores thead").find_all("th")]
    assert header == ["Score", "Dir", "a.pt", "c.pt", "b.pt"]
    verdict = " ".join(section(soup, "verdict").get_text(" ", strip=True).split())
    assert "Selected candidate: a.pt" in verdict and "ranked by accuracy, ties broken" in verdict
    assert soup.find("section", id="baseline") is None


# --- escaping ------------------------------------------------------------------------


def test_user_strings_are_escaped(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    _, soup = check_with_baseline
    html = str(soup)
    assert soup.find_all("script") == []
    assert XSS in soup.get_text()  # shown as text, in scores, rules, tiles and class deltas
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_candidate_name_and_policy_are_escaped() -> None:
    result = check_result(kept=2)
    evil = replace(result.candidates[0], candidate=replace(result.candidates[0].candidate, name='"><img src=x>'))
    result = replace(result, candidates=(evil,), policy=replace(result.policy, name="<b>p</b>"))
    soup = soup_of(render_report(result))
    assert all(attr(img, "src").startswith(DATA_URI) for img in soup.find_all("img"))
    assert soup.find("b") is None and "<b>p</b>" in section(soup, "verdict").get_text()


def test_an_unpinned_review_set_is_said_in_the_verdict() -> None:
    result = check_result(baseline=False, kept=0)
    assert soup_of(render_report(result)).find(id="unpinned") is None
    soup = soup_of(render_report(replace(result, review_set=replace(result.review_set, pinned=False))))
    note = soup.select_one("#verdict #unpinned")
    assert note is not None and note.get_text(" ", strip=True).startswith("UNPINNED: run with --allow-unpinned")


def test_report_has_no_external_resources(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    _, soup = check_with_baseline
    for tag in soup.find_all(src=True):
        assert attr(tag, "src").startswith("data:")
    for tag in soup.find_all(href=True):
        assert attr(tag, "href").startswith("#")
    assert "default-src 'none'" in attr(soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"}), "content")


# --- pictures and numbers behind the plots ---------------------------------------------------


def test_reliability_bins_ece_matches_torchmetrics() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (500, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 500)
    bins = P.reliability_bins(probs.max(1), probs.argmax(1) == labels)
    reference = multiclass_calibration_error(torch.tensor(probs), torch.tensor(labels), num_classes=5, n_bins=15)
    assert bins.ece == pytest.approx(float(reference), abs=1e-6)
    assert bins.counts.sum() == 500


def test_reliability_bins_hand_computed() -> None:
    bins = P.reliability_bins(np.array([0.0, 0.5, 0.55, 0.95, 1.0]), np.array([1, 1, 0, 1, 0]), n_bins=2)
    # Bins [lo, hi) as the ece score bins them: [0, 0.5) takes 0; [0.5, 1) the rest; 1.0 is drawn in the top bar.
    assert bins.counts.tolist() == [1, 4]
    assert bins.accuracy.tolist() == pytest.approx([1.0, 2 / 4])
    assert bins.confidence.tolist() == pytest.approx([0.0, 3.0 / 4])
    # The ECE keeps exactly-1.0 in a bin of its own (torchmetrics): 1/5·|1−0| + 3/5·|2/3−2/3| + 1/5·|0−1|.
    assert bins.ece == pytest.approx(0.4)


def test_wrong_rate_by_threshold_hand_computed() -> None:
    conf = np.array([0.3, 0.9, 0.95, 0.99, 0.6])
    correct = np.array([False, False, True, False, True])
    rates = P.wrong_rate_by_threshold(conf, correct, np.array([0.0, 0.9, 0.96, 1.0]))
    assert rates.tolist() == pytest.approx([3 / 5, 2 / 5, 1 / 5, 0.0])


def test_class_accuracy_per_class() -> None:
    result = check_result(kept=0)
    records = result.candidates[0].records
    expected = [records.correct[records.labels == i].mean() for i in range(len(CLASSES))]
    assert P.class_accuracy(records).tolist() == pytest.approx(expected)


def test_mask_outline_of_a_square() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:5, 1:5] = True
    outline = Pic.mask_outline(mask)
    assert outline.sum() == 12 and not outline[2:4, 2:4].any() and outline[1, 1:5].all()
    assert Pic.mask_outline(np.ones((3, 3), dtype=bool)).sum() == 8  # the image border counts as outside


def test_cam_overlay_blends_the_colormap_scaled_by_the_map_maximum() -> None:
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    cam = np.zeros((4, 4), dtype=np.float32)
    cam[0, 0] = 7.0  # raw scale: the peak shows as the top of the colormap
    cam[3, 3] = 3.5
    out = Pic.cam_overlay(image, cam)
    cmap = matplotlib.colormaps[Pic.CAM_COLORMAP]
    for (y, x), level in (((0, 0), 1.0), ((3, 3), 0.5), ((1, 1), 0.0)):
        expected = (1 - Pic.OVERLAY_ALPHA) * 100 + Pic.OVERLAY_ALPHA * np.array(cmap(level)[:3]) * 255
        assert out[y, x].tolist() == np.rint(expected).astype(int).tolist()
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    assert Pic.cam_overlay(image, cam, mask)[1, 1].tolist() == list(Pic.OUTLINE_RGB)


def test_thumbnails_are_shown_between_160_and_192_px() -> None:
    assert Pic.thumbnail_size(224, 224) == (192, 192)
    assert Pic.thumbnail_size(300, 150) == (192, 96)
    assert Pic.thumbnail_size(64, 64) == (192, 192)  # enlarged by a whole factor: 3
    assert Pic.thumbnail_size(16, 16) == (160, 160)
    assert Pic.thumbnail_size(170, 100) == (170, 100)  # already in range
    big = np.zeros((224, 224, 3), dtype=np.uint8)
    pictures = Pic.sample_pictures(big, np.ones((224, 224), dtype=bool), np.ones((224, 224), dtype=np.float32))
    assert decode_picture(pictures.overlay).size == (192, 192)
    assert decode_picture(pictures.image).size == (192, 192)  # shrunk: stored at the shown size


def test_a_small_image_is_enlarged_by_nearest_neighbour_for_display_only() -> None:
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    shown = Pic.thumbnail(image)
    assert shown.shape == (192, 192, 3)
    assert np.array_equal(shown, image.repeat(3, axis=0).repeat(3, axis=1))  # every pixel a 3x3 block


def noisy_photo(size: int = 64, seed: int = 0) -> np.ndarray:
    """A photo-like picture: a smooth gradient scene with sensor noise and a flat disc on it."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, size)
    scene = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 120.0)], -1)
    noisy = scene + rng.normal(0, 12, scene.shape)
    yy, xx = np.mgrid[:size, :size]
    noisy[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = (20, 220, 20)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return len(buffer.getvalue())


def test_a_photo_is_stored_as_jpeg_close_to_the_original_and_smaller_than_png() -> None:
    photo = Pic.draw_outline(noisy_photo(), np.pad(np.ones((32, 32), dtype=bool), 16))
    uri = Pic.image_uri(photo)
    decoded = np.asarray(decode_picture(uri).convert("RGB"))
    assert uri.startswith(JPEG_URI)
    assert len(base64.b64decode(uri[len(JPEG_URI):])) < png_bytes(photo) / 2
    assert psnr(decoded, photo) > 30
    outline = Pic.mask_outline(np.pad(np.ones((32, 32), dtype=bool), 16))
    # Full-resolution colour: the 1-px cyan outline stays cyan (with 4:2:0 it is off by ~80 levels).
    assert np.abs(decoded[outline].astype(int) - Pic.OUTLINE_RGB).mean() < 12


def test_a_flat_synthetic_picture_is_stored_as_lossless_png() -> None:
    flat = np.zeros((64, 64, 3), dtype=np.uint8)
    flat[16:48, 16:48] = (255, 0, 0)
    uri = Pic.image_uri(flat)
    assert uri.startswith(PNG_URI)
    assert np.array_equal(np.asarray(decode_picture(uri).convert("RGB")), flat)


def test_sample_pictures_of_a_64px_photo_are_small() -> None:
    photo = noisy_photo()
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 16:48] = True
    cam = np.outer(np.hanning(8), np.hanning(8)).astype(np.float32)
    pictures = Pic.sample_pictures(photo, mask, cam)
    image, overlay = decode_picture(pictures.image), decode_picture(pictures.overlay)
    assert (image.format, image.size) == ("JPEG", (64, 64))  # the page enlarges it (CSS pixelated)
    assert (overlay.format, overlay.size) == ("JPEG", (192, 192))
    # The photo as a 192 px PNG, as before, is ~17 kB of base64 here.
    assert len(pictures.image) < 8_000 and len(pictures.overlay) < 16_000
    variant = decode_picture(Pic.variant_uri(photo))
    assert variant.size == (64, 64)


def test_broken_tex_in_a_class_name_is_drawn_literally() -> None:
    result = check_result(kept=0)
    records = result.candidates[0].records
    assert MATH in records.classes
    uri = P.class_accuracy_plot(records, records)  # raises ValueError if "$\x$" were parsed as TeX
    assert any(MATH in t for t in svg_texts(decode_svg(uri)))


def test_many_classes_show_the_worst_only() -> None:
    from gate.records import Records

    rng = np.random.default_rng(0)
    n, c = 600, 100
    labels = np.arange(n) % c
    probs = rng.dirichlet(np.ones(c), n).astype(np.float32)
    nan = np.full(n, np.nan)
    records = Records(classes=tuple(f"class{i}" for i in range(c)), ids=tuple(map(str, range(n))), labels=labels,
                      probs=probs, energy=nan, mask_area=nan, pointing_hit=nan, rank_accuracy=nan)
    assert "Accuracy per class (worst 20 of 100)" in svg_texts(decode_svg(P.class_accuracy_plot(records)))


# --- context ---------------------------------------------------------------------------


def test_context_matches_the_result(check_with_baseline: tuple[GateResult, BeautifulSoup]) -> None:
    result, _ = check_with_baseline
    context = build_context(result)
    view = context.candidates[0]
    assert context.verdict == "failed" and not context.passed and context.baseline_name == "prod.pt"
    assert [r.rule_id for r in view.failed] == ["accuracy >= 0.95"]
    gallery = result.candidates[0].gallery
    assert [g.kind for g in view.galleries] == ["failures", "wrong_reason", "borderline", "easy"]
    assert [len(g.tiles) for g in view.galleries] == [
        len(gallery.failures), len(gallery.wrong_reason), len(gallery.borderline), len(gallery.easy)]
    assert all(t.baseline is not None for g in view.galleries for t in g.tiles)
    assert context.score_columns == ("cand.pt", "baseline: prod.pt")


# --- size --------------------------------------------------------------------------


def test_report_for_400_samples_and_24_kept_is_under_3_mb() -> None:
    result = check_result(baseline=True, n=400, kept=24, size=64)
    html = render_report(result)  # its time: benchmarks/bench_inputs.py (goal under 30 s)
    size = len(html.encode("utf-8"))
    assert size < 3_000_000, f"{size / 1e6:.2f} MB"
    soup = soup_of(html)
    gallery = result.candidates[0].gallery
    assert len(section(soup, "galleries").select("figure.tile")) == 24 + len(gallery.wrong_reason)


# --- many classes ------------------------------------------------------------------------


def many_class_result(n_listed: int, n_present: int, per_class: int = 2, *, baseline: bool = False,
                      kept: int = 24, seed: int = 0) -> GateResult:
    """A check over a review set that lists ``n_listed`` classes with samples of only ``n_present``."""
    from report_fixtures import candidate_result, make_records


    rng = np.random.default_rng(seed)
    classes = tuple(f"class_{i:04d}" for i in range(n_listed))
    labels = np.repeat(np.arange(n_present) * (n_listed // n_present), per_class)

    def records_for(offset: float) -> Records:
        base = make_records(len(labels), seed=seed, kept=kept, size=32, labels=labels % 4)  # pictures only
        logits = rng.normal(0, 1, (len(labels), n_listed))
        logits[np.arange(len(labels)), labels] += rng.uniform(-2, 4 + offset, len(labels))
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return replace(base, classes=classes, labels=labels.astype(np.int64), probs=probs.astype(np.float32))

    cand_records = records_for(0.0)
    base_records = records_for(1.0) if baseline else None
    with warnings.catch_warnings():  # per-class scores of classes without samples are NaN, as the metrics give
        warnings.simplefilter("ignore", RuntimeWarning)
        cand = candidate_result("cand.pt", cand_records, base_records, rules=())
    assert np.isnan(cand.scores[f"class_accuracy.{classes[-1]}"]) or n_present == n_listed
    result = check_result(kept=0)
    base = None if base_records is None else replace(cand, records=base_records, rules=(), comparison=None,
                                                     candidate=replace(cand.candidate, name="prod.pt"))
    return replace(result, candidates=(cand,), baseline=base,
                   review_set=replace(result.review_set, classes=classes, size=len(labels)))


def test_class_table_shows_the_worst_present_classes_only() -> None:
    result = many_class_result(1000, 100, per_class=3)
    records = result.candidates[0].records
    soup = soup_of(render_report(result))
    block = section(soup, "classes")
    rows = block.select("table.classes tr[data-class]")
    assert len(rows) == 20
    counts = np.bincount(records.labels, minlength=1000)
    hits = np.bincount(records.labels, weights=records.correct, minlength=1000)
    present = np.flatnonzero(counts)
    accuracy = {records.classes[i]: hits[i] / counts[i] for i in present}
    shown = [attr(r, "data-class") for r in rows]
    assert set(shown) <= set(accuracy)  # no class without samples
    assert [accuracy[name] for name in shown] == sorted(accuracy[name] for name in shown)
    assert max(accuracy[name] for name in shown) <= sorted(accuracy.values())[19]  # the 20 worst
    for row in rows:
        texts = cells(row)
        assert texts[1] == "3" and texts[2] == fmt(accuracy[texts[0]])
    note = block.get_text(" ", strip=True)
    assert "the worst 20 of 100 classes with samples" in note and "900 listed classes have no sample" in note
    assert "n/a" not in " ".join(cells(r)[2] for r in rows)
    scores = section(soup, "scores")
    assert not scores.select('tr[data-score^="class_accuracy."]')


def test_class_lift_is_the_mean_over_scored_samples() -> None:
    from gate.records import Records

    nan = np.nan
    records = Records(classes=("a", "b", "c"), ids=("0", "1", "2", "3"), labels=np.array([0, 0, 1, 1]),
                      probs=np.full((4, 3), 1 / 3, dtype=np.float32), energy=np.array([0.5, 0.2, nan, 0.9]),
                      mask_area=np.array([0.25, 0.1, 0.2, nan]), pointing_hit=np.zeros(4), rank_accuracy=np.zeros(4))
    lift = P.class_lift(records)
    assert lift[0] == pytest.approx((0.5 / 0.25 + 0.2 / 0.1) / 2)
    assert np.isnan(lift[1]) and np.isnan(lift[2])  # no scored sample; no sample at all
    assert P.class_counts(records).tolist() == [2, 2, 0]


def test_class_plot_draws_present_classes_only() -> None:
    from gate.records import Records

    # 7 listed classes, 3 with samples: class 1 all wrong. The bars are the 3 present classes in set order.
    labels = np.array([0, 0, 1, 1, 4])
    probs = np.full((5, 7), 0.01, dtype=np.float32)
    probs[[0, 1, 4], [0, 0, 4]] = 0.9
    probs[[2, 3], [5, 5]] = 0.9
    nan = np.full(5, np.nan)
    records = Records(classes=tuple("abcdefg"), ids=tuple("01234"), labels=labels, probs=probs, energy=nan,
                      mask_area=nan, pointing_hit=nan, rank_accuracy=nan)
    order = P.worst_present(P.class_accuracy(records), P.class_counts(records), P.MAX_CLASS_BARS)
    assert order.tolist() == [0, 1, 4]
    assert P.worst_present(P.class_accuracy(records), P.class_counts(records), 2).tolist() == [1, 0]
    assert "Accuracy per class" in svg_texts(decode_svg(P.class_accuracy_plot(records)))


def test_class_deltas_are_bounded_to_the_worst_present() -> None:
    from gate.outputs.report.comparison import ComparisonView, comparison_view

    def view_of(class_deltas: dict[str, float]) -> ComparisonView:
        return comparison_view(Comparison(deltas={}, candidate_scores={}, baseline_scores={},
                                          migration=Migration(0, 0, 0, 0, float("nan")), class_deltas=class_deltas,
                                          mcnemar_p=1.0))

    deltas = {f"c{i}": (i - 50) / 100 for i in range(100)}
    deltas.update({"absent": float("nan"), "absent2": float("inf")})
    view = view_of(deltas)
    assert [d.name for d in view.class_deltas] == [f"c{i}" for i in range(20)]
    assert view.class_deltas_total == 100
    small = view_of({"b": 0.1, "a": -0.2, "gone": float("nan")})
    assert [d.name for d in small.class_deltas] == ["b", "a"] and small.class_deltas_total == 2


def test_a_prediction_outside_the_review_set_is_named() -> None:
    result = check_result(kept=2)
    cand = result.candidates[0]
    sample_id = next(iter(cand.records.kept))
    outside = replace(cand.records.kept[sample_id], pred=-1, pred_name="tench")
    records = replace(cand.records, kept={**cand.records.kept, sample_id: outside})
    gallery = replace(cand.gallery, failures=(sample_id,), easy=(), borderline=())
    soup = soup_of(render_report(replace(result, candidates=(replace(cand, records=records, gallery=gallery),))))
    tile = one(soup, f'figure.tile[data-sample="{sample_id}"]')
    assert "pred ✗ tench (outside the review set)" in tile.get_text(" ", strip=True)


def test_a_1000_class_report_stays_small() -> None:
    result = many_class_result(1000, 1000, per_class=2, baseline=True)
    html = render_report(result)
    size = len(html.encode("utf-8"))
    # Pictures are shown at >= 160 px (24 kept samples, 7 pictures each); the per-class parts stay bounded.
    assert size < 2_000_000, f"{size / 1e6:.2f} MB"
    soup = soup_of(html)
    assert len(section(soup, "classes").select("tr[data-class]")) == 20
    assert len(section(soup, "baseline").select("table.class-deltas tr[data-class]")) == 20
    assert len(soup.find_all("tr")) < 200


# --- many classes through a real gate ------------------------------------------------------------


@pytest.fixture(scope="module")
def thirty_class_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pinned review set of 30 classes (c0000, c0003, ...), 2 tiny 16x16 photos each, with disc masks."""
    from gate.inputs.review_set import build

    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:16, :16]
    for k in range(30):
        name = f"c{3 * k:04d}"
        for j in range(2):
            (root / "plain" / "images" / name).mkdir(parents=True, exist_ok=True)
            (root / "plain" / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / "plain" / "images" / name / f"{j}.png")
            disc = (yy - 8) ** 2 + (xx - 4 - 8 * j) ** 2 <= 12
            Image.fromarray((disc * 255).astype(np.uint8)).save(root / "plain" / "masks" / name / f"{j}.png")
    return build(root / "plain", root / "set").root


def random_candidate(path: Path, n_classes: int, seed: int) -> Path:
    from gate.inputs import candidate
    from gate.inputs.archs import tiny_cnn

    torch.manual_seed(seed)
    model = tiny_cnn(num_classes=n_classes, width=4)
    return candidate.save(path, model, arch="tiny_cnn", arch_kwargs={"num_classes": n_classes, "width": 4},
                          classes=[f"c{i:04d}" for i in range(n_classes)], input_size=(16, 16))


def gate_report(tmp_path: Path, review_set: Path, candidates: list[Path], command: str) -> tuple[GateResult, str]:
    import yaml

    from gate.engine.core import EngineOptions
    from gate.inputs.review_set import open_review_set
    from gate.run import GateRequest, run_gate

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "name": "many", "review_set": {"path": str(review_set), "digest": open_review_set(review_set).digest},
        "probes": ["background"], "rules": [{"score": "accuracy", "min": 0.0}]}))
    result = run_gate(GateRequest(command=command, candidates=tuple(candidates), policy=policy,
                                  engine=EngineOptions(device="cpu", batch_size=32)))
    return result, render_report(result)


def test_a_1000_class_model_gated_on_30_classes(tmp_path: Path, thirty_class_set: Path) -> None:
    result, html = gate_report(tmp_path, thirty_class_set, [random_candidate(tmp_path / "big.pt", 1000, 0)], "check")
    size = len(html.encode("utf-8"))
    assert size < 1_500_000, f"{size / 1e6:.2f} MB"
    soup = soup_of(html)
    table = one(section(soup, "classes"), "table.classes")
    assert attr(table, "data-present") == "30" and len(table.select("tr[data-class]")) == 20
    names = [attr(r, "data-class") for r in table.select("tr[data-class]")]
    assert set(names) <= set(result.review_set.classes)
    assert "n/a" not in " ".join(cells(r)[2] for r in table.select("tr[data-class]"))
    assert not section(soup, "scores").select('tr[data-score^="class_accuracy."]')
    assert len(section(soup, "galleries").select("figure.tile")) <= 24
    assert len(section(soup, "showroom").select("div.showroom-row")) <= 6


def test_select_over_three_100_class_candidates_renders(tmp_path: Path, thirty_class_set: Path) -> None:
    candidates = [random_candidate(tmp_path / f"{name}.pt", 100, seed) for seed, name in enumerate("abc")]
    result, html = gate_report(tmp_path, thirty_class_set, candidates, "select")
    soup = soup_of(html)
    assert len(section(soup, "diagnosis").select("table.ranking tr[data-candidate]")) == 3
    table = one(section(soup, "classes"), "table.classes")
    header = [th.get_text(strip=True) for th in table.select("thead tr")[0].find_all("th")]
    assert header == ["Class", "Samples", *[c.candidate.name for c in result.ranked()]]
    assert len(table.select("tr[data-class]")) == 20
    assert len(html.encode("utf-8")) < 2_000_000


# --- the shipped candidates on a slice of the shipped review set ----------------------------------------------

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_showroom_flags_the_scene_reader_and_not_the_honest_model(tmp_path: Path) -> None:
    """cheater.pt reads the scene: its empty scenes are answered with their class, and flagged red. bgmix.pt
    answers "circle" to every empty scene: right for circles, but its default, so never a red card."""
    import shutil

    from gate.inputs.review_set import build

    source = REPO / "review_sets" / "shapes-v1"
    plain = tmp_path / "plain"
    for image in sorted((source / "images").glob("*/*.png")):
        per_class = sorted(image.parent.glob("*.png"))[:8]  # 8 per class, 32 in all: seconds on a CPU
        if image in per_class:
            for part in ("images", "masks"):
                target = plain / part / image.parent.name / image.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / part / image.parent.name / image.name, target)
    review = build(plain, tmp_path / "set").root
    verdicts = {}
    for name in ("cheater.pt", "bgmix.pt"):
        result, html = gate_report(tmp_path, review, [REPO / "candidates" / name], "check")
        view = build_context(result).candidates[0]
        soup = soup_of(html)
        verdicts[name] = (any(r.scene_tells for r in view.showroom), len(section(soup, "showroom").select(".pic.miss")))
        assert len({r.label for r in view.showroom[:4]}) == 4  # one of each class first
    assert verdicts["cheater.pt"][0] and verdicts["cheater.pt"][1] > 0
    assert verdicts["bgmix.pt"] == (False, 0)


# --- reasons in words -------------------------------------------------------------------------------------


def test_every_registered_score_says_its_value_in_words() -> None:
    from gate.metrics.registry import all_specs, say

    for spec in all_specs():
        assert spec.words, spec.name
        assert spec.name not in say(spec.expand("cat"), 0.5), spec.name  # words, not "name = value"
    assert say("alignment.off_object_rate", 0.9767) == "the map lands off the object on 97.7% of samples"
    assert say("background.only_bg_accuracy", 0.9133) == "the scene alone gives the right answer 91.3% of the time"
    assert say("class_accuracy.cat", 0.4) == "class cat is answered right on 40% of its samples"
    assert say("alignment.lift", 0.5764) == "the map puts 0.58× the mass on the object that a uniform map would"
    assert say("made_up", 0.25) == "made_up = 0.25" and say("accuracy", None) == "accuracy could not be computed"


@pytest.mark.parametrize(
    ("score", "anchor"),
    [("accuracy", "c1-gallery-failures"), ("ece", "c1-plot-reliability"),
     ("confident_wrong_rate@0.99", "c1-plot-wrong_by_threshold"), ("class_accuracy.cat", "c1-plot-class_accuracy"),
     ("alignment.lift", "c1-gallery-wrong_reason"), ("alignment.pointing_game", "c1-galleries"),
     ("background.bg_gap", "c1-showroom"), ("sanity.randomization_similarity", "c1-rule-1"),
     ("made_up", "c1-rule-1")],
)
def test_a_failed_rule_links_to_its_evidence(score: str, anchor: str) -> None:
    from gate.outputs.report.reasons import reasons
    from gate.result import RuleResult

    def rule(passed: bool) -> RuleResult:
        return RuleResult(rule_id=f"{score} >= 0.9", score=score, op=">=", threshold=0.9, value=0.25, passed=passed,
                          message="", higher_is_better=True, interval=(0.2, 0.3))

    found = reasons((rule(True), rule(False)), 1)  # the second rule of the second candidate in rank order
    assert len(found) == 1 and found[0].anchor == anchor
    assert found[0].decision.endswith("0.9, and even the upper bound 0.3 < 0.9: failed") or \
        found[0].decision.endswith("90%, and even the upper bound 30% < 90%: failed") or \
        found[0].decision.endswith("0.90×, and even the upper bound 0.30× < 0.90×: failed"), found[0].decision


def test_a_failed_baseline_rule_links_to_the_comparison_box() -> None:
    from gate.outputs.report.reasons import reasons
    from gate.result import RuleResult

    rule = RuleResult(rule_id="accuracy vs baseline", score="accuracy", op="non_inferior", threshold=0.01,
                      value=-0.03, passed=False, message="", higher_is_better=True, interval=(-0.05, -0.012),
                      confidence=0.95)
    (found,) = reasons((rule,), 1)
    assert found.anchor == "c1-comparison"
    assert found.text == "accuracy is 3.0 points below the baseline's (worse); it may drop at most 1.0 points"
    assert found.decision == ("change -3.0 pts < -1.0 pts, and even the 95% upper bound -1.2 pts < -1.0 pts: "
                              "failed")


def test_a_one_class_gallery_makes_room_for_the_other_kept_classes() -> None:
    from report_fixtures import kept_sample

    from gate.outputs.report.samples import stratify

    rng = np.random.default_rng(0)

    def sample(sample_id: str, label: int, pred: int, confidence: float):  # type: ignore[no-untyped-def]
        return replace(kept_sample(rng, sample_id, label, pred, confidence, 8, False), label=label, pred=pred)

    picks = {f"a{i}": sample(f"a{i}", 0, 0, 0.99 - i / 100) for i in range(8)}  # the engine's easy: all class 0
    fixed = {"b0": sample("b0", 1, 1, 0.7), "b1": sample("b1", 1, 1, 0.9), "c0": sample("c0", 2, 0, 0.95),
             "d0": sample("d0", 3, 3, 0.5)}
    kept = {**picks, **fixed}
    easy = [s.sample_id for s in stratify("easy", tuple(picks), kept)]
    # Class 1's most confident right sample and class 3's right one; class 2 has none right (c0 is wrong).
    assert easy == ["a0", "a1", "a2", "a3", "a4", "a5", "b1", "d0"]
    assert [s.sample_id for s in stratify("failures", ("c0",), kept)] == ["c0"]  # one pick: nothing to give up
    assert [s.sample_id for s in stratify("borderline", ("a7", "a6"), kept)] == ["a7", "a6"]
    # A sample another gallery shows (b1 as borderline) does not stand in: the next right one of class 1 does.
    easy = [s.sample_id for s in stratify("easy", tuple(picks), kept, frozenset({"b1"}))]
    assert easy == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "d0"]


def test_borderline_tiles_show_the_margin_to_the_runner_up(
    check_with_baseline: tuple[GateResult, BeautifulSoup],
) -> None:
    result, soup = check_with_baseline
    records = result.candidates[0].records
    for sample_id in result.candidates[0].gallery.borderline:
        row = records.ids.index(sample_id)
        top2 = sorted(records.probs[row].tolist())[-2:]  # the fixture's model has no outputs beyond the set
        text = one(soup, f'div.gallery[data-kind="borderline"] figure.tile[data-sample="{sample_id}"]').get_text()
        assert f"margin {top2[1] - top2[0]:.2f} to the runner-up" in text  # two digits, as confidence and lift
