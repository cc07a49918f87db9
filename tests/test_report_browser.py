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
from report_fixtures import check_result

from gate.outputs import default_paths, write_outputs

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
    assert ids == ["verdict", "rules", "scores", "plots", "galleries", "showroom", "baseline", "about"]
    assert dom.find_all("script") == []
    sources = [str(tag["src"]) for tag in dom.find_all(src=True)]
    links = [str(tag["href"]) for tag in dom.find_all(href=True)]
    assert len(sources) > 20 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in links)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", report.read_text(encoding="utf-8"), re.I)
