"""The report in a real browser (headless Chromium) with the network cut off: it renders and fetches nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image
from report_fixtures import check_result, select_result

from gate.outputs.files import default_paths, write_outputs
from gate.outputs.report import render_report

pytestmark = pytest.mark.slow

# Chromium's own background traffic (time sync, updates, sign-in) is not the page's.
BROWSER_HOSTS = ("google.com", "googleapis.com", "gstatic.com", "gvt1.com")
REQUEST = re.compile(r"NotifyBeforeURLRequest: (\S+)")
CSP_VIOLATION = "violates the following Content Security Policy"
WIDTH, HEIGHT = 1280, 2000


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (apt-get install chromium)")


def _run(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        _browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",  # nothing listens there: any request fails
        "--enable-logging=stderr", "--v=1", *extra, page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _page_requests(stderr: str) -> list[str]:
    urls = REQUEST.findall(stderr)
    return [u for u in urls if not (urlparse(u).hostname or "").endswith(BROWSER_HOSTS)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write_outputs(check_result(baseline=True, kept=8), default_paths(out)).report


def test_the_detector_sees_a_page_that_fetches(tmp_path: Path) -> None:
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="http://example.invalid/a.png">', encoding="utf-8")
    run = _run(page, tmp_path / "profile", f"--screenshot={tmp_path / 'x.png'}", "--window-size=200,200")
    assert _page_requests(run.stderr) == ["http://example.invalid/a.png"]


def test_report_renders_offline_and_fetches_nothing(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run = _run(report, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert _page_requests(run.stderr) == []
    assert CSP_VIOLATION not in run.stderr  # no blocked script, style or image either
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # text, tables, plots: not a blank page
    banner = pixels[5:40, 5:400].reshape(-1, 3)
    assert np.median(banner, axis=0).tolist() == [0xC6, 0x28, 0x28]  # the red "failed" banner was styled


def test_report_dom_has_every_section_and_only_inline_resources(report: Path, tmp_path: Path) -> None:
    run = _run(report, tmp_path / "profile", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = BeautifulSoup(run.stdout, "html.parser")
    ids = [str(s["id"]) for s in dom.find_all("section")]
    # The answer, then the evidence, then the tables.
    assert ids == ["verdict", "galleries", "showroom", "plots", "rules", "baseline", "scores", "classes", "about"]
    assert dom.find_all("script") == []
    sources = [str(tag["src"]) for tag in dom.find_all(src=True)]
    links = [str(tag["href"]) for tag in dom.find_all(href=True)]
    assert len(sources) > 20 and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,",
                                                    "data:image/svg+xml,")) for s in sources)
    assert any(s.startswith("data:image/svg+xml,") for s in sources)  # the plots
    assert all(h.startswith("#") for h in links)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", report.read_text(encoding="utf-8"), re.I)


# A measuring script added to a COPY of the report (the report itself has none and its CSP forbids one):
# it writes what the layout gives into the DOM, which --dump-dom returns.
MEASURE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "measured";
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > width + 1);
  const verdict = document.getElementById("verdict").getBoundingClientRect().bottom;
  const reasons = [...document.querySelectorAll("#verdict ul.reasons li")].map(li => li.getBoundingClientRect().bottom);
  out.textContent = JSON.stringify({width, wide: wide.length, verdict, reasons});
  document.body.appendChild(out);
});
</script>"""


def _measure(html: str, tmp_path: Path, width: int) -> dict[str, object]:
    import json

    page = tmp_path / f"measured-{width}.html"
    page.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace(
        "</body>", MEASURE + "</body>"), encoding="utf-8")
    run = _run(page, tmp_path / f"profile-{width}", "--dump-dom", f"--window-size={width},900",
               "--virtual-time-budget=5000")
    assert run.returncode == 0, run.stderr[-2000:]
    found = BeautifulSoup(run.stdout, "html.parser").find(id="measured")
    assert found is not None, run.stdout[-2000:]
    return dict(json.loads(found.get_text()))


@pytest.mark.parametrize("make", [lambda: check_result(baseline=True, kept=8),
                                  lambda: select_result(baseline=True)], ids=["check", "select"])
def test_the_answer_is_on_the_first_screen_and_no_table_overflows(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    html = render_report(make())
    wide = _measure(html, tmp_path, 1400)
    assert wide["reasons"], "the fixture has failed rules"
    assert float(wide["verdict"]) <= 900 and all(float(b) <= 900 for b in wide["reasons"])  # type: ignore[union-attr]
    narrow = _measure(html, tmp_path, 1000)
    assert narrow["width"] <= 1000 and narrow["wide"] == 0  # type: ignore[operator]


def test_every_reason_links_to_evidence_that_is_on_the_page() -> None:
    for result in (check_result(baseline=True, kept=8), select_result(baseline=True)):
        dom = BeautifulSoup(render_report(result), "html.parser")
        links = [str(a["href"]) for a in dom.select("#verdict ul.reasons a")]
        failed = sum(len(c.failed_rules) for c in result.candidates)
        assert len(links) == failed > 0
        assert all(h.startswith("#") and dom.find(id=h[1:]) is not None for h in links), links
