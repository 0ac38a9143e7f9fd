"""`predict` under torchrun: each rank predicts every WORLD_SIZE-th input, rank 0 merges.

The inputs are a deterministic stream (sorted walks), so every rank sees the same sequence and
takes the items at positions ``rank, rank + world, ...`` without any list being sent around.
Each rank writes its rows to its own part file; after a barrier, rank 0 interleaves the parts
back into input order (a rank's rows for one input are consecutive and every input has at least
one row, so "one input from each part in turn" restores the order exactly).

Plain ``torch.distributed`` over gloo (CPU), joined from torchrun's environment (``env://``);
a single process never touches it. Training's helpers live in ``fit/``, which ``infer`` must not
import, and need more than this (devices, DDP).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from marinelife.logutil import LOGGER_NAME

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's place: ``rank`` of ``world`` (0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # True when join() started the process group (and so ends it)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def take(self, items: Iterable[T]) -> Iterator[T]:
        """Every ``world``-th item, starting at ``rank``."""
        if not self.distributed:
            return iter(items)
        return itertools.islice(items, self.rank, None, self.world)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True only when ``ok`` on every rank (every rank then takes the same branch)."""
        if not self.distributed:
            return ok
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def sum(self, value: int) -> int:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(total)
        return int(total.item())

    def leave(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def join() -> Shard:
    """The shard from torchrun's RANK/WORLD_SIZE; joins a gloo process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        # gloo: predict runs its network on the CPU, and only barriers cross the processes.
        dist.init_process_group(backend="gloo", init_method="env://")
        owns = True
    shard = Shard(rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns)
    if not shard.main:
        # One voice: rank 0 logs; the others keep warnings, tagged with their rank.
        logger = logging.getLogger(LOGGER_NAME)
        logger.setLevel(max(logger.level, logging.WARNING))
        for handler in logger.handlers:
            handler.setFormatter(logging.Formatter(f"[rank {shard.rank}] %(message)s"))
    return shard


def interleave(parts: list[Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Records of round-robin shards back in input order: one input's rows from each in turn.

    An input's rows are the consecutive records with one ``path`` (a photo: one; a video: one
    per frame, maybe an error row). Part ``r`` holds inputs ``r, r + world, ...``, so the parts
    are taken in turn until all are exhausted.
    """
    peeked: list[dict[str, Any] | None] = [next(p, None) for p in parts]
    while any(rec is not None for rec in peeked):
        for i, part in enumerate(parts):
            rec = peeked[i]
            if rec is None:
                continue
            path = rec.get("path")
            while rec is not None and rec.get("path") == path:
                yield rec
                rec = next(part, None)
            peeked[i] = rec
