"""MLflow tracking: delivery, outboxing and sync, history, and real MLflow stores (SQLite and a server)."""

from __future__ import annotations

import hashlib
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

import pytest
from tracking_fixtures import CLASSES, MODEL, candidate, gate_result, write_outputs

from gate.errors import InputError, TrackingError
from gate.result import GateResult
from gate.tracking import (
    history,
    load_registered_baseline,
    log_gate,
    mlflow_env,
    sync,
)
from gate.tracking.outbox import map_png
from gate.tracking.plan import TrackingConfig


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- MLflow plumbing -----------------------------------------------------------------------------


def test_importing_tracking_does_not_import_mlflow() -> None:
    code = "import sys, gate.tracking, gate.outputs.report.history; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


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


# The history page and table: tests/test_history.py.


# --- real MLflow stores (slow) ------------------------------------------------------------------------


@pytest.fixture
def checkpoints(tmp_path: Path) -> list[Path]:
    import torch

    from gate.inputs.archs import tiny_cnn
    from gate.inputs.candidate import save

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
    assert run.info.status == "FINISHED" and run.info.run_name == "passed · v1.pt"
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
