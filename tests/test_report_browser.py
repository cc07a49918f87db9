"""The report in a real browser (headless Chromium) with the network cut off: it renders and fetches nothing."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image
from report_fixtures import check_result, demo_result, select_result, six_select

from gate.outputs.files import default_paths, write_outputs
from gate.outputs.report import render_report
from gate.result import GateResult

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
    assert ids == ["verdict", "diagnosis", "galleries", "showroom", "shortcuts", "plots", "rules", "baseline", "scores",
                   "classes", "about"]
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
  const scroll = document.documentElement.scrollWidth;
  const bottom = sel => [...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect().bottom);
  const wide = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > width + 1);
  const banner = document.getElementById("verdict").getBoundingClientRect();
  out.textContent = JSON.stringify({width, scroll, wide: wide.length, verdict: banner.bottom, banner: banner.height,
    headline: bottom("#verdict .headline"), reasons: bottom("#diagnosis .family li"),
    decisions: bottom("#diagnosis .family li .decision"), box: bottom("#diagnosis .comparison-box"),
    ranking: bottom("#diagnosis table.ranking")});
  document.body.appendChild(out);
});
</script>"""


def _measure(html: str, tmp_path: Path, width: int) -> dict[str, Any]:
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


def _twenty_failed() -> GateResult:
    # A check that fails 20 rules: the banner still fits in 300 px; the reasons follow under it.
    result = demo_result("cheater.pt")
    cand = result.candidates[0]
    extra = tuple(replace(rule, rule_id=f"{rule.rule_id} #{n}") for n in range(4) for rule in cand.failed_rules[:4])
    result = replace(result, candidates=(replace(cand, rules=(*cand.rules, *extra[:14])),))
    assert len(result.candidates[0].failed_rules) == 20
    return result


@pytest.mark.parametrize("make", [lambda: demo_result("cheater.pt"), lambda: demo_result("release"),
                                  lambda: six_select(n=200, kept=6, size=32), _twenty_failed],
                         ids=["cheater", "release", "select", "twenty-failed"])
def test_the_answer_is_on_the_first_screen_and_no_table_overflows(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = make()
    html = render_report(result)
    wide = _measure(html, tmp_path, 1400)
    # The headline, every reason with its deciding bound, and the comparison box above the fold at 1400 x 900.
    assert wide["banner"] <= 300, wide
    assert all(b <= 900 for b in wide["headline"] + wide["reasons"] + wide["decisions"] + wide["box"]), wide
    failed = sum(len(c.failed_rules) for c in result.candidates if result.command == "check")
    assert len(wide["reasons"]) == len(wide["decisions"]) == failed
    assert bool(wide["box"]) == (result.baseline is not None)
    assert bool(wide["ranking"]) == (result.command == "select") and all(b <= 900 for b in wide["ranking"])
    narrow = _measure(html, tmp_path, 1000)
    assert narrow["width"] <= 1000 and narrow["wide"] == 0


def test_every_reason_links_to_evidence_that_is_on_the_page() -> None:
    for result in (check_result(baseline=True, kept=8), demo_result("cheater.pt"), select_result(baseline=True)):
        dom = BeautifulSoup(render_report(result), "html.parser")
        links = [str(a["href"]) for a in dom.select("#diagnosis .family li a, #diagnosis table.ranking a")]
        if result.command == "select":  # one line per rejected candidate, linking to its rules
            failed = sum(not c.passed for c in result.candidates)
        else:
            failed = sum(len(c.failed_rules) for c in result.candidates)
        assert len(links) == failed > 0
        assert all(h.startswith("#") and dom.find(id=h[1:]) is not None for h in links), links


# --- driven through the DevTools protocol: a phone's width (headless windows are at least 500 px) and real keys ---


class DevTools:
    """One headless Chromium page driven through the DevTools protocol (aiohttp's WebSocket client)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sent = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.sent += 1
        await self.ws.send_json({"id": self.sent, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.sent:
                assert "error" not in message, message
                return dict(message.get("result", {}))

    async def value(self, expression: str) -> Any:
        found = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return found["result"].get("value")

    async def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)


def _devtools_port(process: subprocess.Popen[str], seconds: float = 60) -> str:
    """The port Chromium's DevTools listen on, read from its stderr within ``seconds``."""
    import selectors
    import time

    assert process.stderr is not None
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=1):
                line = process.stderr.readline()
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found:
                    return found.group(1)
    raise AssertionError("Chromium did not open its DevTools port")


def _devtools(page: Path, profile: Path, width: int, steps: Callable[[DevTools], Awaitable[Any]]) -> Any:
    aiohttp = pytest.importorskip("aiohttp")
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
               f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "about:blank"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port = _devtools_port(process)

        async def drive() -> Any:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as listing:
                    target = next(t for t in await listing.json() if t["type"] == "page")
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    tools = DevTools(ws)
                    await tools.call("Page.enable")
                    await tools.call("Emulation.setDeviceMetricsOverride", width=width, height=800,
                                     deviceScaleFactor=1, mobile=width < 600)
                    await tools.call("Page.navigate", url=page.as_uri())
                    await tools.value("new Promise(done => document.readyState === 'complete' ? done(1) : "
                                      "window.addEventListener('load', () => done(1)))")
                    return await steps(tools)

        return asyncio.run(asyncio.wait_for(drive(), 120))
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("make", [lambda: demo_result("cheater.pt"), lambda: demo_result("release"),
                                  lambda: six_select(n=200, kept=6, size=32)], ids=["cheater", "release", "select"])
def test_no_horizontal_scroll_on_a_phone(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = tmp_path / "report.html"
    page.write_text(render_report(make()), encoding="utf-8")

    async def widths(tools: DevTools) -> Any:
        return await tools.value("[document.documentElement.clientWidth, document.documentElement.scrollWidth]")

    client, scroll = _devtools(page, tmp_path / "profile", 390, widths)
    assert client == 390 and scroll <= client


def test_escape_closes_the_full_size_view_and_gives_focus_back_to_the_tile(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(demo_result("cheater.pt")), encoding="utf-8")

    async def open_then_escape(tools: DevTools) -> Any:
        await tools.value("(() => { const b = document.querySelector('.tile button.open'); b.focus(); b.click(); })()")
        opened = await tools.value(
            "(() => { const v = document.querySelector('.tile .pics'); return [v.matches(':popover-open'), "
            "v.querySelector('img').getBoundingClientRect().width, document.documentElement.clientWidth]; })()")
        await tools.key("Escape", 27)
        closed = await tools.value(
            "(() => { const b = document.querySelector('.tile button.open'); return [document.querySelector("
            "'.tile .pics').matches(':popover-open'), document.activeElement === b, b.textContent.trim()]; })()")
        return opened, closed

    (is_open, image, viewport), (still_open, focused, name) = _devtools(page, tmp_path / "profile", 390,
                                                                          open_then_escape)
    assert is_open and image >= 0.9 * viewport  # on a phone the full-size picture is the screen's width
    assert not still_open and focused  # Escape closed it; focus is back on the tile's button
    assert name.startswith("full size: s0") and "→" in name  # named by sample, label and prediction
