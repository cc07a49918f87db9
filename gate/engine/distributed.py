"""One review set over many processes: ``torchrun --nproc-per-node N -m gate check ...``.

Each rank runs the engine on one consecutive block of the review set (every
rank reads the whole set, so probe partners from other blocks are at hand).
Rank 0 gathers the runs, joins them in review-set order, and alone scores,
decides, writes and logs. Then every rank leaves with rank 0's exit code.
torch.distributed uses NCCL on GPUs and Gloo on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gate.errors import UsageError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` ranks."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 decides, writes outputs and logs."""
        return self.rank == 0

    @property
    def launch(self) -> str | None:
        """The id all ranks of this torchrun launch share (``TORCHELASTIC_RUN_ID``), None when there is none."""
        return os.environ.get("TORCHELASTIC_RUN_ID") or None

    def indices(self, size: int) -> np.ndarray:
        """This rank's consecutive block of rows ``0..size-1`` (blocks differ in length by at most one)."""
        import numpy as np  # here, not at import: the CLI imports this module on every call

        return np.array_split(np.arange(size, dtype=np.int64), self.world_size)[self.rank]


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str) -> Shard | None:
    """Join the process group when launched by torchrun (else None); CUDA ranks get their own GPU."""
    if not launched_by_torchrun():
        return None
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available", field="--device")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Shard(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def device_for(shard: Shard | None, device: str) -> str:
    """``cuda`` (or ``auto`` on a GPU machine) becomes this rank's own ``cuda:<local rank>``."""
    if shard is None:
        return device
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"cuda:{shard.local_rank}"
    return device


def gather(shard: Shard, value: Any) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0; None on the other ranks."""
    import torch.distributed as dist

    received: list[Any] | None = [None] * shard.world_size if shard.is_main else None
    dist.gather_object(value, received, dst=0)
    return received


def agree_exit_code(code: int) -> int:
    """Every rank adopts rank 0's exit code and leaves the process group; ``code`` as is outside torchrun."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return code
    box: list[Any] = [code]
    dist.broadcast_object_list(box, src=0)
    dist.destroy_process_group()
    return int(box[0])


def transpose(per_rank: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """``[rank][model]`` → ``[model][rank]``."""
    return [list(parts) for parts in zip(*per_rank, strict=True)]
