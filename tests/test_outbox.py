"""The outbox on disk: staged artifacts (samples.csv, maps, outputs, checkpoint), manifests and pending entries."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image
from tracking_fixtures import MODEL, candidate, gate_result, kept_sample, make_records, write_outputs

from gate.errors import InputError
from gate.tracking.outbox import map_png, pending_entries, read_manifest, stage_entry, write_samples_csv
from gate.tracking.plan import TrackingConfig, plan_entry

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


def test_manifest_of_another_format_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="manifest.json: unreadable outbox manifest"):
        read_manifest(tmp_path)


# --- the outbox ------------------------------------------------------------------------------------


def test_entry_of_a_dead_sync_is_retried_after_an_hour(tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".syncing-aaa", tmp_path / ".syncing-bbb"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 3700, time.time() - 3700))
    assert pending_entries(tmp_path) == [tmp_path / "aaa"]
    assert fresh.is_dir()


def test_a_gate_killed_mid_upload_is_given_to_sync_after_an_hour(tmp_path: Path) -> None:
    staged, partial = tmp_path / ".staged-ccc", tmp_path / ".staged-ddd"
    staged.mkdir()
    (staged / "manifest.json").write_text("{}")
    partial.mkdir()  # killed while staging: no manifest yet, nothing to upload
    for folder in (staged, partial):
        os.utime(folder, (time.time() - 3700, time.time() - 3700))
    assert pending_entries(tmp_path) == [tmp_path / "ccc"]
    assert partial.is_dir()


def test_an_interrupt_during_the_upload_keeps_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gate import tracking
    from gate.tracking import delivery

    seen: list[list[str]] = []

    def interrupted(client: object, uri: str, plan: object, root: Path, created: list[str]) -> None:
        seen.append(sorted(p.name for p in (tmp_path / "outbox").iterdir()))  # staged before the upload
        raise KeyboardInterrupt

    monkeypatch.setattr(delivery, "upload_entry", interrupted)
    result = gate_result(candidate(tmp_path / "v1.pt", False))
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", outbox=tmp_path / "outbox")
    with pytest.raises(KeyboardInterrupt):
        tracking.log_gate(result, write_outputs(result, tmp_path / "out"), config, {})
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(".staged-")
    entries = pending_entries(tmp_path / "outbox")
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    assert read_manifest(entries[0]).error == "interrupted during the upload"
    assert (entries[0] / "files/c0/result.json").is_file()


def test_a_delivered_entry_leaves_no_outbox_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gate import tracking
    from gate.tracking import delivery

    monkeypatch.setattr(delivery, "upload_entry", lambda *args: delivery.Uploaded(run_ids=("r1",), version=None))
    result = gate_result(candidate(tmp_path / "v1.pt", False))
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", outbox=tmp_path / ".xgate" / "outbox")
    outcome = tracking.log_gate(result, write_outputs(result, tmp_path / "out"), config, {})
    assert outcome.logged and outcome.run_ids == ("r1",)
    assert not (tmp_path / ".xgate").exists()  # staged in the outbox, removed once MLflow had it
