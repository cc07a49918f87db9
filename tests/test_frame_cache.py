"""The frame cache: a gate reads the framed set it wrote, bit for bit, and never trusts a broken entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, assert_same_runs

from gate.engine import core as engine
from gate.errors import GateError, UsageError
from gate.inputs import candidate as candidate_io
from gate.inputs import frame_cache
from gate.inputs.batches import decode, to_frame
from gate.inputs.preprocess import Geometry
from gate.inputs.review_set import ReviewSet

PROBES = frozenset({"background", "sanity"})


def _options(cache: Path | None, **changes: object) -> engine.EngineOptions:
    base = engine.EngineOptions(batch_size=8, probes=PROBES, workers=2, frame_cache=str(cache) if cache else None)
    return engine.EngineOptions(**{**vars(base), **changes})  # type: ignore[arg-type]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir())


def _usable(root: Path, review_set: ReviewSet, geometry: Geometry) -> bool:
    """Whether the entry opens (and passes its checks); closes it again."""
    store = frame_cache.open_store(root, review_set.digest, geometry, review_set.size)
    if store is not None:
        store.close()
    return store is not None


def test_second_gate_reads_the_frames_the_first_wrote_and_gets_theassert_same_runs(
    partly_masked: ReviewSet, untrained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    cache = tmp_path / "cache"
    (uncached,) = engine.run([cand], partly_masked, _options(None))
    (first,) = engine.run([cand], partly_masked, _options(cache))
    assert (uncached.frames, first.frames) == ("decoded", "cache-written")
    (entry,) = _entries(cache)  # one geometry, no temporary folder left
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["digest"] == partly_masked.digest and meta["count"] == partly_masked.size
    assert (entry / "images.u8").stat().st_size == partly_masked.size * 3 * 32 * 32

    # Nothing is decoded when the entry is there: any image or mask read would raise.
    def no_decoding(*_args: object) -> None:
        raise AssertionError("decoded although the frames are cached")

    for name in ("load_image", "load_mask", "load_void"):
        monkeypatch.setattr(ReviewSet, name, no_decoding)
    (second,) = engine.run([cand], partly_masked, _options(cache))
    assert second.frames == "cache-read"
    # partly_masked has samples without masks and a void band: all come back as they were framed.
    assert not partly_masked.has_mask.all()
    assert_same_runs(uncached, first)
    assert_same_runs(uncached, second)


def test_stored_frames_equal_the_framed_batch(partly_masked: ReviewSet, tmp_path: Path) -> None:
    geometry = Geometry(size=(24, 20), resize=28)
    rows = np.arange(partly_masked.size)
    writer = frame_cache.start_writer(tmp_path, partly_masked.digest, geometry, partly_masked.size)
    expected = to_frame(decode(partly_masked, rows), geometry, writer=writer)
    assert writer.commit()
    store = frame_cache.open_store(tmp_path, partly_masked.digest, geometry, partly_masked.size)
    assert store is not None
    picked = np.array([5, 1, 0, 17])  # any rows, in any order (probe partners)
    # Another gate replacing (here: deleting) the entry on disk cannot change what this one reads.
    shutil.rmtree(tmp_path / frame_cache.entry_name(frame_cache.entry_key(partly_masked.digest, geometry)))
    images, masks, void = store.frame(picked)
    store.close()
    torch.testing.assert_close(images, expected.images[picked], rtol=0, atol=0)
    assert torch.equal(masks, expected.masks[picked]) and torch.equal(void, expected.void[picked])
    # picked[1] is sample 1 (a void band), picked[2] sample 0 (no mask), picked[0] sample 5 (a mask)
    assert void[1].any() and not masks[2].any() and masks[0].any()


def _written_entry(review_set: ReviewSet, root: Path, geometry: Geometry) -> Path:
    writer = frame_cache.start_writer(root, review_set.digest, geometry, review_set.size)
    to_frame(decode(review_set, np.arange(review_set.size)), geometry, writer=writer)
    assert writer.commit()
    return root / frame_cache.entry_name(frame_cache.entry_key(review_set.digest, geometry))


@pytest.mark.parametrize("damage", ["flip a pixel", "truncate", "meta of another set", "meta of another torch",
                                    "no meta", "sha256 of a damaged file", "huge meta", "meta is a folder"])
def test_a_damaged_or_mismatched_entry_is_not_used(partly_masked: ReviewSet, tmp_path: Path, damage: str) -> None:
    geometry = Geometry(size=(32, 32))
    entry = _written_entry(partly_masked, tmp_path, geometry)
    assert _usable(tmp_path, partly_masked, geometry)
    images, meta_path = entry / "images.u8", entry / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "flip a pixel":
        data = bytearray(images.read_bytes())
        data[1000] ^= 0xFF
        images.write_bytes(bytes(data))
    elif damage == "truncate":
        images.write_bytes(images.read_bytes()[:-1])
    elif damage == "meta of another set":
        meta["digest"] = "sha256:" + "0" * 64
        meta_path.write_text(json.dumps(meta))
    elif damage == "meta of another torch":
        meta["torch"] = "0.0.1"
        meta_path.write_text(json.dumps(meta))
    elif damage == "no meta":
        meta_path.unlink()
    elif damage == "huge meta":  # valid JSON, but padded past what the cache ever writes
        meta_path.write_text(json.dumps(meta) + " " * (frame_cache.MAX_META_BYTES + 1))
    elif damage == "meta is a folder":
        meta_path.unlink()
        meta_path.mkdir()
    else:  # the file and its recorded checksum both changed: a damaged write re-summed
        data = bytearray(images.read_bytes())
        data[0] ^= 1
        images.write_bytes(bytes(data))
        meta["sha256"]["images.u8"] = "f" * 64
        meta_path.write_text(json.dumps(meta))
    assert not _usable(tmp_path, partly_masked, geometry)


def test_a_damaged_entry_is_decoded_around_and_replaced(
    partly_masked: ReviewSet, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    cache = tmp_path / "cache"
    (first,) = engine.run([cand], partly_masked, _options(cache))
    (entry,) = _entries(cache)
    data = bytearray((entry / "images.u8").read_bytes())
    data[:3 * 32 * 32] = bytes(3 * 32 * 32)  # sample 0 turned black: it would change its prediction
    (entry / "images.u8").write_bytes(bytes(data))
    (again,) = engine.run([cand], partly_masked, _options(cache))
    assert again.frames == "cache-written"  # the damaged entry was not read, and a good one replaced it
    assert_same_runs(first, again)
    assert _usable(cache, partly_masked, Geometry(size=(32, 32)))


def test_only_a_gate_over_the_whole_set_writes_and_a_failed_one_leaves_nothing(
    small_set: ReviewSet, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    cache = tmp_path / "cache"
    (part,) = engine.run([cand], small_set, _options(cache), indices=np.arange(10))  # a torchrun shard
    assert part.frames == "decoded" and _entries(cache) == []
    engine.run([cand], small_set, _options(cache))  # a whole-set gate writes the entry ...
    (read,) = engine.run([cand], small_set, _options(cache), indices=np.arange(10))
    assert read.frames == "cache-read"  # ... which a shard then reads
    assert_same_runs(part, read)
    for entry in _entries(cache):
        shutil.rmtree(entry)

    calls = {"n": 0}
    original = cand.model.forward

    def fails_later(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out: torch.Tensor = original(x)
        return out * float("nan") if calls["n"] > 3 else out

    cand.model.forward = fails_later  # type: ignore[method-assign]
    with pytest.raises(GateError, match="NaN or infinite"):
        engine.run([cand], small_set, _options(cache, probes=frozenset()))
    assert _entries(cache) == []  # no entry and no temporary folder


def test_an_unusable_cache_folder_is_a_usage_error_naming_it(
    small_set: ReviewSet, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cand = candidate_io.load(untrained_checkpoint)
    with pytest.raises(UsageError) as info:
        engine.run([cand], small_set, _options(blocker / "cache"))
    assert info.value.exit_code == 2 and info.value.field == "--frame-cache"
    assert info.value.path == str(blocker / "cache")


def test_models_with_two_geometries_get_two_entries(small_set: ReviewSet, untrained_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    from dataclasses import replace

    cand = candidate_io.load(untrained_checkpoint)
    other = replace(cand, input=replace(cand.input, size=(28, 28), resize=30), label="cropped")
    cache = tmp_path / "cache"
    first = engine.run([cand, other], small_set, _options(cache))
    assert [r.frames for r in first] == ["cache-written"] * 2 and len(_entries(cache)) == 2
    second = engine.run([cand, other], small_set, _options(cache))
    assert [r.frames for r in second] == ["cache-read"] * 2
    for a, b in zip(first, second, strict=True):
        assert_same_runs(a, b)


def test_a_writer_missing_rows_commits_nothing(small_set: ReviewSet, tmp_path: Path) -> None:
    geometry = Geometry(size=(32, 32))
    writer = frame_cache.start_writer(tmp_path, small_set.digest, geometry, small_set.size)
    to_frame(decode(small_set, np.arange(small_set.size - 1)), geometry, writer=writer)  # the last row missing
    assert not writer.commit()
    assert _entries(tmp_path) == []
    assert not _usable(tmp_path, small_set, geometry)


def test_the_cli_reads_its_frame_cache_and_says_so(tmp_path: Path, small_set: ReviewSet,
                                                   untrained_checkpoint: Path) -> None:
    import subprocess
    import sys

    from conftest import pinned_policy

    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}], probes=("background",))
    results = []
    for run, flag in enumerate((["--frame-cache", "frames"], [])):  # the option, then XGATE_FRAME_CACHE
        env = {"PATH": "/usr/bin:/bin", "CI": "true", "PYTHONPATH": str(REPO)}
        if not flag:
            env["XGATE_FRAME_CACHE"] = str(tmp_path / "frames")
        done = subprocess.run([sys.executable, "-m", "gate", "check", str(untrained_checkpoint), "--policy",
                               str(policy), "--no-mlflow", "--out", f"out{run}", *flag], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        results.append(json.loads((tmp_path / f"out{run}" / "result.json").read_text()))
    assert [r["environment"]["frames"] for r in results] == ["cache-written", "cache-read"]
    assert results[0]["candidates"][0]["scores"] == results[1]["candidates"][0]["scores"]
    assert len(_entries(tmp_path / "frames")) == 1


def test_a_commit_keeps_a_good_entry_another_gate_put_in_place(small_set: ReviewSet, tmp_path: Path) -> None:
    geometry = Geometry(size=(32, 32))
    frames = to_frame(decode(small_set, np.arange(small_set.size)), geometry)
    writers = [frame_cache.start_writer(tmp_path, small_set.digest, geometry, small_set.size) for _ in range(2)]
    for writer in writers:  # two gates framing the same set at once
        writer.write(np.arange(small_set.size), (frames.images * 255).round().to(torch.uint8), frames.masks,
                     frames.void)
    assert writers[0].commit()
    entry = tmp_path / frame_cache.entry_name(frame_cache.entry_key(small_set.digest, geometry))
    first = (entry / "images.u8").stat().st_ino
    reader = frame_cache.open_store(tmp_path, small_set.digest, geometry, small_set.size)
    assert reader is not None
    assert writers[1].commit()  # the same entry is already there and good: the reader's files stay
    assert _entries(tmp_path) == [entry] and (entry / "images.u8").stat().st_ino == first
    images, _, _ = reader.frame(np.arange(3))
    reader.close()
    torch.testing.assert_close(images, frames.images[:3], rtol=0, atol=0)


def test_unfinished_entries_of_dead_gates_are_removed_and_live_ones_kept(small_set: ReviewSet, tmp_path: Path) -> None:
    import os
    import time

    geometry = Geometry(size=(32, 32))
    dead = frame_cache.start_writer(tmp_path, small_set.digest, geometry, small_set.size)
    live = frame_cache.start_writer(tmp_path, small_set.digest, geometry, small_set.size)
    frames = to_frame(decode(small_set, np.arange(4)), geometry)
    for writer in (dead, live):
        writer.write(np.arange(4), (frames.images * 255).round().to(torch.uint8), frames.masks, frames.void)
        writer._close()  # as a killed gate leaves it: files written, never committed or discarded
    week_ago = time.time() - 7 * 24 * 3600
    for path in (dead.folder, *dead.folder.iterdir()):
        os.utime(path, (week_ago, week_ago))
    cache = frame_cache.plan(tmp_path, small_set.digest, small_set.size, [geometry], write=False)
    cache.finish(complete=False)
    assert not dead.folder.exists() and live.folder.is_dir()  # a gate still writing keeps its folder
    live.discard()


def test_ranks_of_one_launch_fill_one_entry_together(partly_masked: ReviewSet, untrained_checkpoint: Path,
                                                    tmp_path: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    cache = tmp_path / "cache"
    (uncached,) = engine.run([cand], partly_masked, _options(None))
    blocks = np.array_split(np.arange(partly_masked.size), 2)
    for block in blocks:  # two torchrun ranks, one after the other here
        (part,) = engine.run([cand], partly_masked, _options(cache), indices=block, shared_cache="launch-1")
        assert part.frames == "decoded"  # not committed yet: rank 0 does it once every rank is done
    geometries = engine.frame_geometries([cand], partly_masked)
    assert frame_cache.commit_shared(cache, partly_masked.digest, partly_masked.size, geometries,
                                     "launch-1") == geometries
    assert [p.name.startswith(".") for p in _entries(cache)] == [False]  # the entry, no part files left over
    (read,) = engine.run([cand], partly_masked, _options(cache))
    assert read.frames == "cache-read"
    assert_same_runs(uncached, read)


def test_a_shared_entry_missing_a_ranks_block_is_not_committed(small_set: ReviewSet, untrained_checkpoint: Path,
                                                               tmp_path: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    cache = tmp_path / "cache"
    first, _ = np.array_split(np.arange(small_set.size), 2)
    engine.run([cand], small_set, _options(cache), indices=first, shared_cache="launch-2")  # rank 1 never came
    (folder,) = _entries(cache)
    (folder / "part-forged.json").write_text("[[0, 999999], [-5, 3], \"all\"]")  # out of range: ignored
    geometries = engine.frame_geometries([cand], small_set)
    assert frame_cache.commit_shared(cache, small_set.digest, small_set.size, geometries, "launch-2") == []
    assert _entries(cache) == []  # dropped, not committed half-written
