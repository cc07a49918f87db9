"""The outbox on disk: a planned gate call staged as files, kept until MLflow has it.

``stage_entry`` writes every run's artifacts beside the plan's JSON manifest; when
delivery fails the staged folder is moved to the outbox, where ``xgate sync`` claims
each entry, uploads it and removes it. Nothing here talks to MLflow.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from gate.errors import InputError, reason
from gate.records import PROBE_VARIANTS, KeptSample, Records
from gate.result import CandidateResult, GateResult
from gate.tracking.plan import OUTBOX_FORMAT, EntryPlan, safe_file_name

MANIFEST = "manifest.json"
# Output files are logged under fixed names, whatever --report/--json/--junit called them,
# so that runs compare artifact for artifact.
OUTPUT_ARTIFACTS: Mapping[str, str] = {"report": "report.html", "json": "result.json", "junit": "junit.xml"}
STAGED_PREFIX = ".staged-"  # an entry being uploaded by a running gate call
STALE_CLAIM_S = 3600  # an outbox entry claimed by a sync this long ago is retried
_MIN_MAP_SIDE = 128  # maps are upscaled (nearest) to at least this many pixels so they are legible in the UI


# --- staging ------------------------------------------------------------------------


def stage_entry(
    root: Path, plan: EntryPlan, result: GateResult, outputs: Mapping[str, Path], candidate_files: Mapping[str, Path]
) -> None:
    """Write the manifest and every run's artifacts under ``root/files/<run key>/``."""
    by_key = {f"c{i}": cand for i, cand in enumerate(result.candidates)}
    for run in plan.runs:
        folder = root / "files" / run.key
        folder.mkdir(parents=True)
        if run.parent is None:  # the outputs cover the whole call: on the check run, or on the select parent
            _copy_outputs(outputs, folder)
        cand = by_key.get(run.key)
        if cand is None:
            continue
        write_samples_csv(cand.records, folder / "samples.csv")
        write_maps(cand.records.kept.values(), folder / "maps")
        write_atlas(cand.records, folder / "atlas")
        if run.aliases:
            _stage_checkpoint(cand, candidate_files, folder / "checkpoint")
    write_manifest(root, plan)


def write_samples_csv(records: Records, path: Path) -> None:
    """The per-sample table: id,label,pred,confidence,correct,energy,lift,pointing_hit,probe.<variant>..."""
    variants = [v for v in PROBE_VARIANTS if v in records.probe_preds]
    variants += sorted(set(records.probe_preds) - set(variants))
    names = records.classes
    preds, confidence, correct, lift = records.preds, records.confidence, records.correct, records.lift
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "pred", "confidence", "correct", "energy", "lift", "pointing_hit",
                         *(f"probe.{v}" for v in variants)])
        for i, sample_id in enumerate(records.ids):
            writer.writerow([
                sample_id, names[int(records.labels[i])], records.class_name(int(preds[i])), _num(confidence[i]),
                int(bool(correct[i])), _num(records.energy[i]), _num(lift[i]), _num(records.pointing_hit[i]),
                *(records.class_name(int(records.probe_preds[v][i])) for v in variants),
            ])


def write_maps(samples: Iterable[KeptSample], folder: Path) -> list[Path]:
    """One ``<sample id>.png`` per kept sample: the image with its mask outline | the Grad-CAM overlay."""
    written = []
    for sample in samples:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_file_name(sample.sample_id)}.png"
        path.write_bytes(map_png(sample))
        written.append(path)
    return written


def write_atlas(records: Records, folder: Path) -> list[Path]:
    """``atlas.png`` (the mean unit-mass Grad-CAM map, inferno, upscaled) and ``atlas.json`` (its grid, hot spot,
    off-object share and sample count); nothing when the records carry no atlas with mass."""
    import io
    import json

    from PIL import Image

    from gate.metrics.atlas import hot_spot, off_object_share
    from gate.outputs.report.pictures import CAM_COLORMAP

    atlas = records.atlas
    if atlas is None or not atlas.count:
        return []
    import matplotlib

    mean = atlas.mean
    scaled = mean / mean.max() if mean.max() > 0 else mean
    colours = np.rint(matplotlib.colormaps[CAM_COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)
    scale = max(1, math.ceil(_MIN_MAP_SIDE / max(1, min(mean.shape))))
    picture = Image.fromarray(colours, mode="RGB").resize((mean.shape[1] * scale, mean.shape[0] * scale),
                                                          Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    spot = hot_spot(mean)
    share = off_object_share(atlas)
    summary = {"samples": atlas.count, "hot_spot": None if spot is None else spot.words,
               "off_object_share": None if math.isnan(share) else round(share, 6),
               "mean": np.round(mean, 8).tolist()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "atlas.png").write_bytes(buffer.getvalue())
    (folder / "atlas.json").write_text(json.dumps(summary), encoding="utf-8")
    return [folder / "atlas.png", folder / "atlas.json"]


def map_png(sample: KeptSample) -> bytes:
    """A kept sample's map panel as PNG bytes (inferno overlay, cyan mask outline, upscaled when small)."""
    import io

    from PIL import Image

    from gate.outputs.report.pictures import cam_overlay, draw_outline

    image = np.asarray(sample.image, dtype=np.uint8)
    mask = np.asarray(sample.mask, dtype=bool)
    gap = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
    panel = np.concatenate([draw_outline(image, mask), gap, cam_overlay(image, sample.cam, mask)], axis=1)
    scale = max(1, math.ceil(_MIN_MAP_SIDE / max(1, min(image.shape[:2]))))
    picture = Image.fromarray(panel, mode="RGB")
    if scale > 1:
        picture = picture.resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_manifest(root: Path, plan: EntryPlan) -> Path:
    """``root/manifest.json``."""
    path = root / MANIFEST
    path.write_text(json.dumps(plan.to_json(), indent=1), encoding="utf-8")
    return path


def read_manifest(root: Path) -> EntryPlan:
    """The plan stored in an outbox folder; a malformed manifest is an input error."""
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != OUTBOX_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return EntryPlan.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable outbox manifest ({reason(exc)})", path=path) from None


def pending_entries(outbox: Path) -> list[Path]:
    """Outbox folders waiting for ``sync``, oldest first (hidden folders are in flight)."""
    if not outbox.is_dir():
        return []
    # A sync that died mid-way, or a gate killed mid-upload: give the entry back after a while.
    for prefix in (".syncing-", STAGED_PREFIX):
        for claimed in outbox.glob(f"{prefix}*"):
            complete = prefix != STAGED_PREFIX or (claimed / MANIFEST).is_file()  # staging writes it last
            if complete and time.time() - claimed.stat().st_mtime > STALE_CLAIM_S:
                with contextlib.suppress(OSError):
                    claimed.rename(outbox / claimed.name[len(prefix):])
    folders = [p for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: (p.stat().st_mtime, p.name))


def _copy_outputs(outputs: Mapping[str, Path], folder: Path) -> None:
    for kind, name in OUTPUT_ARTIFACTS.items():
        source = outputs.get(kind)
        if source is not None and Path(source).is_file():
            shutil.copyfile(source, folder / name)


def _stage_checkpoint(cand: CandidateResult, candidate_files: Mapping[str, Path], folder: Path) -> None:
    source = Path(candidate_files.get(cand.candidate.name) or cand.candidate.path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint of {cand.candidate.name} not found at {source}")
    folder.mkdir(parents=True)
    target = folder / source.name
    try:
        os.link(source, target)  # checkpoints can be large: link when the file system allows
    except OSError:
        shutil.copyfile(source, target)


def _num(value: float) -> str:
    return "" if not math.isfinite(float(value)) else f"{float(value):.6g}"


# --- the outbox ------------------------------------------------------------------------


def staging_folder(outbox: Path, entry_id: str) -> Path:
    """A fresh folder to stage an entry in: ``outbox/.staged-<id>`` (hidden from sync), else a temporary one.

    Staging in the outbox itself means a record is on disk before the upload starts, and moving it into
    the outbox after a failure is a rename. A gate killed mid-upload leaves the hidden folder, which
    ``pending_entries`` hands to sync after STALE_CLAIM_S.
    """
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        folder = outbox / f"{STAGED_PREFIX}{entry_id}"
        folder.mkdir()
        return folder
    except OSError:  # a read-only working directory: stage in a temporary folder as before
        return Path(tempfile.mkdtemp(prefix="xgate-tracking-"))


def discard_staged(staging: Path, outbox: Path) -> None:
    """Remove a staged folder once MLflow has the entry (and the outbox folders, when that leaves them empty)."""
    shutil.rmtree(staging, ignore_errors=True)
    for folder in (outbox, outbox.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty: never removes other entries


def move_to_outbox(staging: Path, entry_id: str, outbox: Path) -> Path:
    """Move a staged folder to ``outbox/<entry id>`` (complete before it is visible); returns its absolute path."""
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / entry_id
    if staging.parent.resolve() == outbox.resolve():
        staging.rename(final)  # staged in the outbox: one atomic rename makes it visible to sync
        return final.resolve()
    hidden = outbox / f".incoming-{entry_id}"  # invisible to sync until complete
    shutil.copytree(staging, hidden)
    hidden.rename(final)
    return final.resolve()


def claim(folder: Path) -> Path | None:
    """Take an outbox folder for this sync (renamed ``.syncing-<name>``); None when another sync took it."""
    claimed = folder.with_name(f".syncing-{folder.name}")
    try:
        folder.rename(claimed)
    except OSError:
        return None
    return claimed
