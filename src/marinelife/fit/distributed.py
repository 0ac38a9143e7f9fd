"""Training on several processes (``torchrun``): device per rank, process group, sharding, and
the few collectives the trainer needs.

Every helper is a no-op in a plain single process, so training has one code path: a run without
``torchrun`` never touches ``torch.distributed``. The batch size is per process (as in timm), so
the global batch is ``batch_size x world size``. Rank 0 alone writes files and logs; the other
ranks log warnings only (prefixed with their rank) and show no progress bars.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from marinelife.errors import MarineLifeError
from marinelife.logutil import LOGGER_NAME

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- who am I
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK); 0 without torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


# --------------------------------------------------------------------------- set-up
def select_device(name: str, *, local: int = 0) -> torch.device:
    """``auto|cpu|cuda|mps`` → a device; CUDA under torchrun is ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MarineLifeError(
                "--device cuda requested but no CUDA GPU is available to PyTorch",
                fix="use --device cpu (or --device auto), or install a CUDA build of PyTorch",
            )
        if local >= torch.cuda.device_count():
            raise MarineLifeError(
                f"process LOCAL_RANK={local} needs GPU {local} but only "
                f"{torch.cuda.device_count()} are visible",
                fix="start at most one process per GPU: torchrun --nproc_per_node=<GPUs>",
            )
        return torch.device("cuda", local)
    if name == "mps" and not _mps_available():
        raise MarineLifeError(
            "--device mps requested but MPS is not available",
            fix="use --device cpu or --device auto",
        )
    return torch.device(name)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str) -> torch.device:
    """This process's device; under torchrun (WORLD_SIZE > 1) also join the process group.

    The rendezvous comes from torchrun's environment (``env://``: MASTER_ADDR, MASTER_PORT, RANK,
    WORLD_SIZE), so single-node and multi-node runs need nothing else from us.
    """
    if not launched_by_torchrun() or is_distributed():
        return select_device(device_name, local=local_rank())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local=local)
    if device.type == "mps":
        raise MarineLifeError(
            "multi-process training is not supported on MPS",
            fix="run without torchrun on a Mac, or use --device cpu",
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and *_object collectives use the current device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    if not is_main():
        _quiet_this_rank()
    log.info(
        "distributed: %d processes, backend %s, %s per process",
        world_size(),
        backend,
        device.type,
    )
    return device


def _quiet_this_rank() -> None:
    # One voice: rank 0 logs and draws bars. Others keep warnings, marked with their rank.
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(max(logger.level, logging.WARNING))
    for handler in logger.handlers:
        handler.setFormatter(logging.Formatter(f"[rank {rank()}] %(message)s"))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's ``obj`` in rank order on rank 0; None elsewhere."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather_in_order(
    index: list[int], targets: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """On rank 0, every rank's (targets, probs) shard put back in dataset order (``index`` are
    the shard's positions in the dataset); None on the other ranks."""
    if not is_distributed():
        return targets, probs
    parts = gather_to_main((list(index), targets, probs))
    if parts is None:
        return None
    parts = [part for part in parts if len(part[0])]  # ranks with an empty shard
    order = np.argsort(np.concatenate([np.asarray(i, dtype=np.int64) for i, _, _ in parts]))
    return (
        np.concatenate([t for _, t, _ in parts])[order],
        np.concatenate([p for _, _, p in parts])[order],
    )


def all_gather_objects(obj: T) -> list[T]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (so every rank takes the same branch)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sum_over_ranks(values: list[float]) -> list[float]:
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_rows(local: torch.Tensor | None, rows: int, item_shape: tuple[int, ...]) -> list:
    """Every rank's ``[rows, *item_shape]`` block (``local`` may be short or None) on every rank.

    Blocks are padded to ``rows`` because collectives need one shape; callers know each rank's
    true row count. Used to assemble feature-cache shards without a shared filesystem.
    """
    device = _comm_device() if is_distributed() else torch.device("cpu")
    block = torch.zeros((rows, *item_shape), dtype=torch.float32, device=device)
    if local is not None and len(local):
        block[: len(local)] = local.to(device, torch.float32)
    if not is_distributed():
        return [block]
    out = [torch.empty_like(block) for _ in range(world_size())]
    dist.all_gather(out, block)
    return out


def broadcast_module_state(
    module: torch.nn.Module, src: int = 0, *, buffers_only: bool = False
) -> None:
    """Overwrite every parameter and buffer (or only the buffers) with rank ``src``'s, in place."""
    if not is_distributed():
        return
    tensors = [b for b in module.buffers()] if buffers_only else list(module.state_dict().values())
    for tensor in tensors:
        # state_dict() tensors share storage with the module; collectives want contiguous ones
        # (channels_last weights are not), so those go through a copy.
        buffer = tensor if tensor.is_contiguous() else tensor.contiguous()
        dist.broadcast(buffer, src=src)
        if buffer is not tensor:
            tensor.copy_(buffer)


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only; its result, or its error, reaches every rank.

    Used for file-system decisions (does the run folder exist? read the checkpoint) that must be
    taken once and then agreed on, instead of racing between ranks.
    """
    if not is_distributed():
        return fn()
    result: Any = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            error = exc
    shared = error if isinstance(error, MarineLifeError) or error is None else None
    failed, result, shared = broadcast_object((error is not None, result, shared))
    if error is not None:
        raise error
    if failed:
        raise shared or RuntimeError("rank 0 failed; see its traceback")
    return result


def wrap_for_training(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` under torchrun (its trainable parameters only)."""
    if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=device if ids else None)


# --------------------------------------------------------------------------- sharding
class ShardSampler(Sampler):
    """One rank's share of ``inner``'s order, with ``DistributedSampler`` semantics.

    Every rank draws the same seeded order from ``inner`` (a RandomSampler or
    WeightedRandomSampler with its own generator), pads it by wrapping around to a multiple of the
    world size, and keeps every ``world``-th index from its rank. Global step ``k`` therefore sees
    exactly the samples a single process with ``world x batch_size`` would: runs stay
    reproducible, resumable, and comparable with one-process runs. In one process it is ``inner``.
    """

    def __init__(self, inner: Sampler, *, rank_: int | None = None, world: int | None = None):
        self.inner = inner
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def set_epoch(self, seed: int) -> None:
        """Reseed the shared order for an epoch (``seed`` is the epoch's seed, not its number)."""
        generator = getattr(self.inner, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        if self.world == 1:
            return iter(order)
        total = len(self) * self.world
        while order and len(order) < total:
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world])

    def __len__(self) -> int:
        return math.ceil(len(self.inner) / self.world)


def shard_indices(n: int) -> range:
    """This rank's items of an evaluation set: every item exactly once over all ranks."""
    return range(rank(), n, world_size())


def node_writes_cache(probe_dir: Path) -> bool:
    """Whether this rank writes a shared cache entry under ``probe_dir``.

    One writer per filesystem: rank 0, plus local rank 0 of any node that cannot see rank 0's
    files (a node-local ``~/.cache``). Every rank must call this (it synchronises).
    """
    if not is_distributed():
        return True
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) == world_size():
        return is_main()  # one machine, one filesystem
    probe_dir.mkdir(parents=True, exist_ok=True)
    token = broadcast_object(os.urandom(8).hex() if is_main() else None)
    probe = probe_dir / f".probe-{token}"
    if is_main():
        probe.touch()
    barrier()
    sees_main = probe.exists()
    barrier()
    if is_main():
        probe.unlink(missing_ok=True)
    return is_main() or (local_rank() == 0 and not sees_main)
