"""MLflow tracking: plans, staged artifacts, the outbox, and real MLflow stores (SQLite and a server)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from gate.errors import InputError, TrackingError
from gate.records import KeptSample, Records
from gate.report.history import render_history
from gate.result import CandidateInfo, CandidateResult, GateResult, PolicyInfo, ReviewSetInfo, RuleResult
from gate.tracking import (
    HistoryRow,
    TrackingConfig,
    format_history,
    history,
    load_registered_baseline,
    log_gate,
    map_png,
    metric_key,
    metrics_of,
    mlflow_env,
    pending_entries,
    plan_entry,
    read_manifest,
    stage_entry,
    sync,
    write_samples_csv,
)

CLASSES = ("circle", "square", "star", "triangle")
MODEL = "shapes-classifier"


# --- fixtures: tiny records and results built by hand ------------------------------------------


def kept_sample(sample_id: str, label: int, pred: int, seed: int) -> KeptSample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:10, 5:12] = True
    yy, xx = np.mgrid[0:16, 0:16]
    cam = np.exp(-((yy - 7) ** 2 + (xx - 8) ** 2) / 8.0).astype(np.float32) * 3.0  # peak 3.0 at (7, 8)
    return KeptSample(sample_id=sample_id, image=image, mask=mask, cam=cam, label=label, pred=pred, confidence=0.9)


def make_records() -> Records:
    # Samples 0-2 right, sample 3 ("s/3", a triangle) confidently called a circle.
    probs = np.array([[0.90, 0.05, 0.03, 0.02], [0.10, 0.70, 0.10, 0.10],
                      [0.20, 0.20, 0.40, 0.20], [0.995, 0.002, 0.002, 0.001]], dtype=np.float32)
    return Records(
        classes=CLASSES, ids=("s0", "s1", "s2", "s/3"), labels=np.array([0, 1, 2, 3], dtype=np.int64), probs=probs,
        energy=np.array([0.5, 0.2, np.nan, 0.9]), mask_area=np.array([0.25, 0.2, 0.1, 0.3]),
        pointing_hit=np.array([1.0, 0.0, np.nan, 1.0]), rank_accuracy=np.array([0.4, 0.1, np.nan, 0.8]),
        probe_preds={"mixed_rand": np.array([0, 1, 0, 0], dtype=np.int64),
                     "only_bg": np.array([3, 3, 3, 3], dtype=np.int64)},
        kept={"s0": kept_sample("s0", 0, 0, seed=1), "s/3": kept_sample("s/3", 3, 0, seed=2)},
    )


def rule(rule_id: str, score: str, value: float, passed: bool) -> RuleResult:
    return RuleResult(rule_id=rule_id, score=score, op=">=", threshold=0.9, value=value, passed=passed,
                      message="", higher_is_better=True)


def candidate(path: Path | str, passed: bool, sha256: str = "ab" * 32) -> CandidateResult:
    rules = (rule("accuracy >= 0.9", "accuracy", 0.75, passed), rule("alignment.lift >= 2", "alignment.lift", 2.5,
                                                                      True))
    if not passed:
        rules = (*rules, rule("ece <= 0.05", "ece", 0.2, False))
    scores = {"accuracy": 0.75, "ece": 0.04 if passed else 0.2, "confident_wrong_rate@0.99": 0.25,
              "alignment.lift": 2.5, "class_accuracy.star": 1.0, "nll": float("nan"), "aurc": float("inf")}
    info = CandidateInfo(path=str(path), name=Path(path).name, sha256=sha256, arch="tiny_cnn", target_layer="features")
    return CandidateResult(candidate=info, scores=scores, rules=rules, records=make_records())


def gate_result(*cands: CandidateResult, command: str = "check", selected: str | None = None,
                created: str = "2026-01-01T10:00:00+00:00") -> GateResult:
    return GateResult(
        command=command, policy=PolicyInfo(name="strict", path="policies/strict.yaml", sha256="cd" * 32),
        review_set=ReviewSetInfo(name="shapes-v1", version="1", path="review_sets/shapes-v1",
                                 digest="sha256:" + "ef" * 32, size=4, classes=CLASSES),
        candidates=cands, selected=selected, environment={"git_commit": "1" * 40}, created=created,
    )


def write_outputs(result: GateResult, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"report": folder / "my-report.html", "json": folder / "result.json", "junit": folder / "junit.xml"}
    paths["report"].write_text("<html>report</html>", encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_json()), encoding="utf-8")
    paths["junit"].write_text("<testsuites/>", encoding="utf-8")
    return paths


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    assert run.parent is None and run.name == "v1.pt"
    assert run.params["candidate"] == "cands/v1.pt"
    assert run.params["candidate.sha256"] == "ab" * 32
    assert run.params["arch"] == "tiny_cnn"
    assert run.params["policy"] == "strict" and run.params["policy.sha256"] == "cd" * 32
    assert run.params["review_set.digest"] == "sha256:" + "ef" * 32
    assert run.metrics == {"accuracy": 0.75, "ece": 0.04, "confident_wrong_rate_at_0.99": 0.25,
                           "alignment.lift": 2.5, "class_accuracy.star": 1.0}
    assert run.tags["xgate.verdict"] == "passed" and run.tags["xgate.failed_rules"] == ""
    assert run.tags["xgate.candidate"] == "v1.pt" and run.tags["xgate.review_set"] == "shapes-v1"
    assert run.tags["xgate.policy"] == "strict" and run.tags["mlflow.source.git.commit"] == "1" * 40
    assert run.aliases == ("champion",)

    (failed,) = plan_entry(gate_result(candidate("cands/v2.pt", False)), config).runs
    assert failed.tags["xgate.verdict"] == "failed"
    assert failed.tags["xgate.failed_rules"] == "accuracy >= 0.9,ece <= 0.05"
    assert failed.aliases == ()
    (unregistered,) = plan_entry(gate_result(candidate("cands/v1.pt", True)), TrackingConfig()).runs
    assert unregistered.aliases == ()


def test_plan_of_a_select_nests_candidates_under_a_parent() -> None:
    result = gate_result(candidate("a.pt", True), candidate("b.pt", False), candidate("c.pt", True),
                         command="select", selected="c.pt")
    config = TrackingConfig(experiment="team/gates", register=MODEL, challenger_alias="challenger")
    plan = plan_entry(result, config)
    assert plan.experiment == "team/gates"
    assert [(r.key, r.name, r.parent) for r in plan.runs] == [
        ("parent", "select (3 candidates)", None), ("c0", "a.pt", "parent"), ("c1", "b.pt", "parent"),
        ("c2", "c.pt", "parent")]
    parent = plan.runs[0]
    assert parent.tags["xgate.kind"] == "select" and parent.tags["xgate.selected"] == "c.pt"
    assert parent.tags["xgate.failed_candidates"] == "b.pt" and parent.metrics == {}
    assert {r.name: r.aliases for r in plan.runs[1:]} == {"a.pt": ("challenger",), "b.pt": (), "c.pt": ("champion",)}
    assert [r.tags["xgate.selected"] for r in plan.runs[1:]] == ["false", "false", "true"]


# --- staging ---------------------------------------------------------------------------------------


def test_samples_csv_rows(tmp_path: Path) -> None:
    write_samples_csv(make_records(), tmp_path / "samples.csv")
    with (tmp_path / "samples.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "label", "pred", "confidence", "correct", "energy", "lift", "pointing_hit",
                       "probe.only_bg", "probe.mixed_rand"]
    assert rows[1] == ["s0", "circle", "circle", "0.9", "1", "0.5", "2", "1", "triangle", "circle"]
    assert rows[3] == ["s2", "star", "star", "0.4", "1", "", "", "", "triangle", "circle"]  # NaN -> empty
    assert rows[4] == ["s/3", "triangle", "circle", "0.995", "0", "0.9", "3", "1", "triangle", "circle"]


def test_map_png_is_image_outline_and_inferno_overlay() -> None:
    sample = kept_sample("s0", 0, 0, seed=1)
    picture = np.asarray(Image.open(io.BytesIO(map_png(sample))).convert("RGB"))
    scale = 8  # 16-pixel images are upscaled to at least 128 pixels
    assert picture.shape == (16 * scale, (16 + 2 + 16) * scale, 3)
    small = picture[::scale, ::scale]
    left, right = small[:, :16], small[:, 18:]
    assert np.array_equal(left[0, 0], sample.image[0, 0])  # outside the mask: the image itself
    assert tuple(left[4, 8]) == (0, 255, 255)  # top edge of the mask: cyan outline
    peak = np.asarray(matplotlib.colormaps["inferno"](1.0)[:3]) * 255
    expected = np.rint(0.45 * sample.image[7, 8] + 0.55 * peak)
    assert np.abs(right[7, 8].astype(float) - expected).max() <= 1  # map maximum: the colormap's top colour


def test_stage_writes_manifest_and_artifacts(tmp_path: Path) -> None:
    ckpt = tmp_path / "v1.pt"
    ckpt.write_bytes(b"weights")
    result = gate_result(candidate(ckpt, True))
    plan = plan_entry(result, TrackingConfig(register=MODEL))
    root = tmp_path / "stage"
    stage_entry(root, plan, result, write_outputs(result, tmp_path / "out"), {"v1.pt": ckpt})
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["files/c0/checkpoint/v1.pt", "files/c0/junit.xml", "files/c0/maps/s0.png",
                     "files/c0/maps/s_3.png", "files/c0/report.html", "files/c0/result.json",
                     "files/c0/samples.csv", "manifest.json"]
    assert read_manifest(root) == plan


def test_stage_of_a_select_puts_outputs_on_the_parent(tmp_path: Path) -> None:
    result = gate_result(candidate("a.pt", True), candidate("b.pt", False), command="select", selected="a.pt")
    plan = plan_entry(result, TrackingConfig())
    stage_entry(tmp_path / "stage", plan, result, write_outputs(result, tmp_path / "out"), {})
    files = sorted(str(p.relative_to(tmp_path / "stage/files")) for p in tmp_path.glob("stage/files/**/*.*"))
    assert files == ["c0/maps/s0.png", "c0/maps/s_3.png", "c0/samples.csv", "c1/maps/s0.png", "c1/maps/s_3.png",
                     "c1/samples.csv", "parent/junit.xml", "parent/report.html", "parent/result.json"]


def test_importing_tracking_does_not_import_mlflow() -> None:
    code = "import sys, gate.tracking, gate.report.history; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_manifest_of_another_format_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="manifest.json: unreadable outbox manifest"):
        read_manifest(tmp_path)


def test_mlflow_env_sets_short_timeouts_keeps_user_values_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    with mlflow_env(3):
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


# --- failures: the outbox ----------------------------------------------------------------------------


def test_unreachable_server_outboxes_and_require_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = gate_result(candidate(tmp_path / "v1.pt", False))
    outputs = write_outputs(result, tmp_path / "out")
    config = TrackingConfig(uri=f"http://127.0.0.1:{closed_port()}", outbox=tmp_path / "outbox", timeout_s=2)
    started = time.monotonic()
    outcome = log_gate(result, outputs, config, {})
    assert time.monotonic() - started < 30
    assert not outcome.logged and outcome.run_ids == () and outcome.outboxed is not None
    assert outcome.warning is not None and "xgate sync" in outcome.warning and "127.0.0.1" in outcome.warning
    assert outcome.outboxed.parent == (tmp_path / "outbox").resolve()
    manifest = json.loads((outcome.outboxed / "manifest.json").read_text())
    assert manifest["runs"][0]["tags"]["xgate.verdict"] == "failed" and manifest["error"]
    assert json.loads((outcome.outboxed / "files/c0/result.json").read_text()) == result.to_json()

    with pytest.raises(TrackingError, match="MLflow logging to http://127.0.0.1") as info:
        log_gate(result, outputs, replace(config, require=True), {})
    assert info.value.exit_code == 2
    assert len(list((tmp_path / "outbox").iterdir())) == 2  # kept even when required

    with pytest.raises(TrackingError, match="after 0 uploaded"):
        sync(config)
    assert len([p for p in (tmp_path / "outbox").iterdir() if not p.name.startswith(".")]) == 2  # nothing lost
    assert not (tmp_path / "mlruns").exists()


def test_entry_of_a_dead_sync_is_retried_after_an_hour(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".syncing-aaa", tmp_path / ".syncing-bbb"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 3700, time.time() - 3700))
    assert pending_entries(tmp_path) == [tmp_path / "aaa"]
    assert fresh.is_dir()


def test_hanging_server_fails_within_the_timeout(tmp_path: Path) -> None:
    # A listening socket that never answers: connections succeed, reads time out.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = gate_result(candidate(tmp_path / "v1.pt", True))
        config = TrackingConfig(uri=uri, outbox=tmp_path / "outbox", timeout_s=1)
        started = time.monotonic()
        outcome = log_gate(result, write_outputs(result, tmp_path / "out"), config, {})
        elapsed = time.monotonic() - started
    assert not outcome.logged and outcome.outboxed is not None
    assert elapsed < 20, elapsed


def test_missing_checkpoint_to_register_warns_without_outbox(tmp_path: Path) -> None:
    result = gate_result(candidate(tmp_path / "gone.pt", True))
    config = TrackingConfig(uri="http://127.0.0.1:9", register=MODEL, outbox=tmp_path / "outbox")
    outcome = log_gate(result, {}, config, {})
    assert not outcome.logged and outcome.outboxed is None
    assert outcome.warning is not None and "gone.pt not found" in outcome.warning


def test_registered_baseline_uri_must_name_an_alias_or_version() -> None:
    with pytest.raises(InputError, match="expected models:/NAME@ALIAS"):
        load_registered_baseline("models:/shapes", TrackingConfig(uri="http://127.0.0.1:9"))


# --- history page ---------------------------------------------------------------------------------


def history_rows() -> list[HistoryRow]:
    return [
        HistoryRow(run_id="r2", start_time=datetime(2026, 1, 2, 9, 30, tzinfo=UTC), candidate="<script>v2.pt",
                   verdict="failed", scores={"accuracy": 0.7, "ece": 0.2}, failed_rules=("ece <= 0.05",),
                   sha256="12" * 32),
        HistoryRow(run_id="r1", start_time=datetime(2026, 1, 1, 9, 0, tzinfo=UTC), candidate="v1.pt",
                   verdict="passed", scores={"accuracy": 0.95}, failed_rules=(), sha256="34" * 32,
                   registered=f"{MODEL}/1"),
    ]


def test_history_page_lists_runs_trends_and_maps() -> None:
    png = map_png(kept_sample("s0", 0, 0, seed=1))
    html = render_history(history_rows(), {"s0": {"r1": png, "r2": png}, "s_3": {"r1": png}})
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("script") is None  # the candidate name "<script>v2.pt" is escaped text
    runs = soup.select("table.runs tbody tr")
    assert [r["data-run-id"] for r in runs] == ["r2", "r1"]
    cells = [[td.get_text(strip=True) for td in r.find_all("td")] for r in runs]
    assert cells[0] == ["2026-01-02 09:30", "<script>v2.pt", "121212121212", "failed", "0.7000", "0.2000",
                        "ece <= 0.05", ""]
    assert cells[1] == ["2026-01-01 09:00", "v1.pt", "343434343434", "passed", "0.9500", "–", "–",
                        f"{MODEL}/1"]
    assert soup.select_one("img.trend")["src"].startswith("data:image/png;base64,")
    maps = {r["data-sample-id"]: r for r in soup.select("table.maps tbody tr")}
    assert len(maps["s0"].find_all("img")) == 2
    assert len(maps["s_3"].find_all("img")) == 1  # oldest first: r1 has it, r2 does not
    assert [td.get_text(strip=True) for td in maps["s_3"].find_all("td")] == ["", "–"]


def test_history_text_table() -> None:
    lines = format_history(history_rows()).splitlines()
    assert lines[0].split() == ["started", "(UTC)", "candidate", "sha256", "verdict", "accuracy", "ece", "failed",
                                "rules"]
    assert lines[2].split() == ["2026-01-01", "09:00", "v1.pt", "343434343434", "passed", "0.9500", "-", "-"]
    assert format_history([]) == "no gate runs found"


# --- real MLflow stores (slow) ------------------------------------------------------------------------


@pytest.fixture
def checkpoints(tmp_path: Path) -> list[Path]:
    import torch

    from gate.archs import tiny_cnn
    from gate.candidate import save

    torch.manual_seed(0)
    return [save(tmp_path / "cands" / f"v{i}.pt", tiny_cnn(4, width=4), arch="tiny_cnn", classes=CLASSES,
                 input_size=(64, 64), arch_kwargs={"num_classes": 4, "width": 4}) for i in (1, 2, 3)]


def result_for(path: Path, passed: bool, created: str) -> GateResult:
    return gate_result(candidate(path, passed, sha256=sha256_of(path)), created=created)


@pytest.mark.slow
def test_default_sqlite_store_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoints: list[Path]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = TrackingConfig(register=MODEL)
    assert config.resolved_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    v1, v2 = checkpoints[:2]
    late = result_for(v1, True, "2026-01-01T12:00:00+00:00")
    first = log_gate(late, write_outputs(late, tmp_path / "o1"), config, {v1.name: v1})
    assert first.logged and first.warning is None and first.registered_version == "1"
    # A pass from an *earlier* gate call (as `sync` uploads it) becomes a version but keeps the alias away.
    early = result_for(v2, True, "2026-01-01T08:00:00+00:00")
    second = log_gate(early, write_outputs(early, tmp_path / "o2"), config, {v2.name: v2})
    assert second.logged and second.registered_version is None
    assert second.warning == f"registered {MODEL} version 2, but @champion stays on the version of a later gate call"

    assert (tmp_path / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "mlartifacts/xgate/shapes-v1/strict").glob("*/artifacts/maps/s0.png"))
    rows = history(config, experiment="xgate/shapes-v1/strict")
    assert [(r.candidate, r.verdict) for r in rows] == [("v1.pt", "passed"), ("v2.pt", "passed")]
    assert rows[0].registered == f"{MODEL}/1" and rows[1].registered == f"{MODEL}/2"
    baseline = load_registered_baseline(f"models:/{MODEL}@champion", config, dst=tmp_path / "dl")
    assert sha256_of(baseline) == sha256_of(v1)
    assert sha256_of(load_registered_baseline(f"models:/{MODEL}/2", config, dst=tmp_path / "dl2")) == sha256_of(v2)
    assert not (tmp_path / "mlruns").exists()


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite backend and served artifacts."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_s: float = 90.0) -> None:
        command = [str(Path(sys.executable).parent / "mlflow"), "server",
                   "--backend-store-uri", f"sqlite:///{self.root / 'db.sqlite'}",
                   "--artifacts-destination", str(self.root / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not healthy after {wait_s} s")

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)  # the server's own process group (uvicorn + job runner)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    root = tmp_path / "server"
    root.mkdir()
    instance = MlflowServer(root, closed_port())
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.mark.slow
def test_mlflow_server_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: MlflowServer,
                                  checkpoints: list[Path]) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = TrackingConfig(uri=server.url, register=MODEL, outbox=tmp_path / "outbox", timeout_s=5)
    v1, v2, v3 = checkpoints
    files = {p.name: p for p in checkpoints}
    passing = result_for(v1, True, "2026-01-01T10:00:00+00:00")
    failing = result_for(v2, False, "2026-01-01T11:00:00+00:00")
    first = log_gate(passing, write_outputs(passing, tmp_path / "o1"), config, files)
    second = log_gate(failing, write_outputs(failing, tmp_path / "o2"), config, files)
    assert first.logged and first.registered_version == "1" and first.warning is None
    assert second.logged and second.registered_version is None

    client = MlflowClient(server.url)
    run = client.get_run(first.run_ids[0])
    assert run.info.status == "FINISHED" and run.info.run_name == "v1.pt"
    assert run.data.params["candidate.sha256"] == sha256_of(v1) and run.data.params["candidate"] == str(v1)
    assert run.data.params["review_set.digest"] == "sha256:" + "ef" * 32
    assert run.data.metrics["confident_wrong_rate_at_0.99"] == 0.25 and "nll" not in run.data.metrics
    assert run.data.tags["xgate.verdict"] == "passed" and run.data.tags["mlflow.source.git.commit"] == "1" * 40
    failed_tags = client.get_run(second.run_ids[0]).data.tags
    assert failed_tags["xgate.verdict"] == "failed"
    assert failed_tags["xgate.failed_rules"] == "accuracy >= 0.9,ece <= 0.05"
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"checkpoint", "junit.xml", "maps", "report.html", "result.json", "samples.csv"}
    got = Path(client.download_artifacts(run.info.run_id, "result.json", str(tmp_path / "dl1")))
    assert json.loads(got.read_text()) == passing.to_json()
    got = Path(client.download_artifacts(second.run_ids[0], "maps/s_3.png", str(tmp_path / "dl2")))
    assert got.read_bytes() == map_png(failing.candidates[0].records.kept["s/3"])
    assert "checkpoint" not in {a.path for a in client.list_artifacts(second.run_ids[0])}

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.run_id == first.run_ids[0]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1  # the failing one is not registered
    rows = history(config, experiment=None)
    assert [(r.candidate, r.verdict) for r in rows] == [("v2.pt", "failed"), ("v1.pt", "passed")]
    assert sha256_of(load_registered_baseline(f"models:/{MODEL}@champion", config, dst=tmp_path / "b")) == \
        sha256_of(v1)

    server.stop()  # the server goes away: the third gate call lands in the outbox
    third = result_for(v3, True, "2026-01-01T12:00:00+00:00")
    outcome = log_gate(third, write_outputs(third, tmp_path / "o3"), config, files)
    assert not outcome.logged and outcome.outboxed is not None and outcome.warning is not None

    server.start()
    assert sync(config) == 1
    assert sync(config) == 0
    rows = history(config, experiment="xgate/shapes-v1/strict")
    assert [(r.candidate, r.verdict) for r in rows] == [("v3.pt", "passed"), ("v2.pt", "failed"), ("v1.pt", "passed")]
    assert rows[0].start_time == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == rows[0].run_id
    synced = client.get_run(rows[0].run_id)
    assert {a.path for a in client.list_artifacts(synced.info.run_id, "maps")} == {"maps/s0.png", "maps/s_3.png"}
    assert not (tmp_path / "mlruns").exists()
