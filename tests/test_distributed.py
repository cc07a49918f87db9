"""torchrun: the review set sharded over ranks gives the single-process result; every rank agrees on the exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gate.engine.distributed import Shard, transpose
from gate.inputs.review_set import ReviewSet
from tests.conftest import REPO, pinned_policy, save_tiny, train_tiny


@pytest.mark.parametrize(("size", "world"), [(10, 3), (48, 2), (2, 4), (0, 2)])
def test_shards_are_consecutive_blocks_covering_every_row_once(size: int, world: int) -> None:
    blocks = [Shard(rank=r, world_size=world).indices(size) for r in range(world)]
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(size))
    lengths = [len(b) for b in blocks]
    assert max(lengths) - min(lengths) <= 1


def test_only_rank_0_is_main_and_transpose() -> None:
    assert Shard(0, 2).is_main and not Shard(1, 2).is_main
    assert transpose([["a0", "b0"], ["a1", "b1"]]) == [["a0", "a1"], ["b0", "b1"]]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "CI": "true", "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(REPO)})


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["min", "max"], ids=["passes", "fails"])  # accuracy >= 0 / <= 0 (in range)
def test_torchrun_two_ranks_give_the_single_process_result(tmp_path: Path, small_set: ReviewSet, limit: str) -> None:
    model = save_tiny(train_tiny(0.9, seed=4, n=300, epochs=2, size=32), tmp_path / "cand.pt", size=32)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", limit: 0.0}],
                           probes=("background", "sanity"))
    common = ["check", str(model), "--policy", str(policy), "--no-mlflow", "--batch-size", "8"]
    single = _run(["-m", "gate", *common, "--out", "one"], tmp_path)
    sharded = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gate", *common,
                    "--out", "two"], tmp_path)
    assert single.returncode == (0 if limit == "min" else 1), single.stderr
    assert (sharded.returncode == 0) == (single.returncode == 0), sharded.stderr
    one = json.loads((tmp_path / "one" / "result.json").read_text())["candidates"][0]
    two = json.loads((tmp_path / "two" / "result.json").read_text())["candidates"][0]
    assert one["verdict"] == two["verdict"]
    assert set(one["scores"]) == set(two["scores"])
    for name, value in one["scores"].items():
        assert two["scores"][name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
    assert one["gallery"] == two["gallery"]
    # One summary: only rank 0 speaks.
    assert sharded.stdout.count("xgate check:") == 1


@pytest.mark.slow
def test_torchrun_ranks_fill_the_frame_cache_that_the_next_launch_reads(tmp_path: Path, small_set: ReviewSet,
                                                                      untrained_checkpoint: Path) -> None:
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}], probes=("background",))
    common = ["check", str(untrained_checkpoint), "--policy", str(policy), "--no-mlflow", "--batch-size", "8",
              "--frame-cache", "frames"]
    docs = []
    for out in ("first", "second"):
        done = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gate", *common,
                     "--out", out], tmp_path)
        assert done.returncode == 0, done.stderr
        docs.append(json.loads((tmp_path / out / "result.json").read_text()))
    assert [d["environment"]["frames"] for d in docs] == ["cache-written", "cache-read"]
    assert docs[0]["candidates"][0]["scores"] == docs[1]["candidates"][0]["scores"]
    entries = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert len(entries) == 1 and not entries[0].startswith(".")  # one entry, no rank's part left behind


def test_cuda_asked_for_without_one_is_a_usage_error_before_joining(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from gate.engine.distributed import start
    from gate.errors import UsageError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as info:
        start("cuda")
    assert info.value.exit_code == 2 and info.value.field == "--device"


def test_outside_torchrun_there_is_no_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    from gate.engine.distributed import device_for, start

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert start("cuda") is None  # not joined; the engine reports a missing GPU itself
    assert device_for(None, "auto") == "auto"
    assert device_for(Shard(rank=1, world_size=2, local_rank=1), "cpu") == "cpu"


def _sharded(tmp_path: Path, small_set: ReviewSet, untrained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
             rank: int, other_rank_sends: object) -> tuple[object, list[object]]:
    """run_gate_sharded on ``rank`` of 2, with the other rank's gathered payload faked."""
    from gate.engine import distributed
    from gate.run import GateRequest, run_gate_sharded

    sent: list[object] = []

    def fake_gather(shard: Shard, value: object) -> list[object] | None:
        sent.append(value)
        return [value, other_rank_sends] if shard.is_main else None

    monkeypatch.setattr(distributed, "gather", fake_gather)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "min": 0.0}])
    request = GateRequest(command="check", candidates=(untrained_checkpoint,), policy=policy)
    return run_gate_sharded(request, Shard(rank=rank, world_size=2)), sent


def test_an_error_in_another_ranks_block_is_raised_on_rank_0(tmp_path: Path, small_set: ReviewSet,
                                                             untrained_checkpoint: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from gate.errors import ModelOutputError

    nan = ModelOutputError("model output is NaN or infinite (first on sample 's1')", path="c.pt", field="logits")
    with pytest.raises(ModelOutputError) as info:
        _sharded(tmp_path, small_set, untrained_checkpoint, monkeypatch, 0, nan)
    assert info.value.exit_code == 2 and info.value.one_line() == "c.pt: logits: model output is NaN or infinite " \
        "(first on sample 's1')"


def test_a_failing_rank_sends_its_error_instead_of_waiting(tmp_path: Path, small_set: ReviewSet,
                                                           untrained_checkpoint: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from gate.engine import core as engine
    from gate.errors import GateError

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(engine, "run", broken)
    result, sent = _sharded(tmp_path, small_set, untrained_checkpoint, monkeypatch, 1, None)
    assert result is None  # rank 1 returns; rank 0 raises the error it received, and everyone exits with its code
    (error,) = sent
    assert isinstance(error, GateError) and error.exit_code == 3
    assert error.one_line() == "rank 1: RuntimeError: CUDA out of memory"
    copied = pickle.loads(pickle.dumps(error))  # what gather_object does to it
    assert copied.one_line() == error.one_line() and copied.exit_code == 3
