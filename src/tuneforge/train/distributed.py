"""Data-parallel training over several processes: one copy of the model per process, each step's rows split
between them, gradients summed, so that N processes give the update one process would with N times the batch.

A launcher starts the processes and tells each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT): `torchrun` or `accelerate launch` with a multi-GPU (or multi-CPU) config, on one node or
several. `join_world` turns that into a `World`: gloo on CPU, NCCL on CUDA (one GPU per process, by LOCAL_RANK).
Without a launcher it is the single process (`World()`), and every collective below is a no-op.

Exactness: the loop normalises a step's loss by the supervised units of the whole step on all processes
(`World.total`), and gradients are summed, not averaged, across them; gradient norm, clipping and the optimizer
step then see the same gradients everywhere, so the copies stay identical. Only the main process (rank 0) writes
the run directory.

With `sharded` (train.fsdp, or an accelerate FSDP config) each process holds only a shard of every parameter,
gradient and optimizer state (tuneforge.train.sharding): gradients are then summed by the sharding's own
reduce-scatter, and every process runs the same number of forward passes per step.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from tuneforge.errors import UserError

__all__ = ["World", "assign_whole", "is_sharded", "join_world", "leave_world"]

T = TypeVar("T")

# Rank 0 alone runs the before/after comparison and saves the model while the others wait at their next
# collective: the default 30 minutes can be too short for that with a large model.
_TIMEOUT = datetime.timedelta(hours=3)
# Gradients are summed in buckets of at most this many elements (float32: 256 MiB) to bound the extra memory.
_BUCKET = 1 << 26
# accelerate's FSDP sharding strategies (by name or number) that tuneforge's FSDP is: full shard
_FULL_SHARD = {"FULL_SHARD", "1"}


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a data-parallel run (`size` 1: a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run
    sharded: bool = False  # FSDP: each process holds a shard of the trained model (tuneforge.train.sharding)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def part(self, rows: Sequence[T], per_rank: int) -> list[T]:
        """This process's slice of a global micro-batch: rows [rank × per_rank, (rank + 1) × per_rank)."""
        return list(rows[self.rank * per_rank : (self.rank + 1) * per_rank])

    def every_nth(self, items: Sequence[T]) -> list[T]:
        """Items rank, rank + size, rank + 2 × size, …: a disjoint share of `items` for each process."""
        return list(items[self.rank :: self.size])

    def total(self, values: Sequence[float]) -> list[float]:
        """Each value summed over all processes (float64)."""
        if not self.parallel:
            return [float(v) for v in values]
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        return self.total([1.0 if flag else 0.0])[0] > 0

    def gather(self, value: T) -> list[T]:
        """Every process's `value` (picklable), by rank."""
        if not self.parallel:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` (picklable), on every process."""
        if not self.parallel:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def most(self, value: int) -> int:
        """The largest of every process's `value`."""
        return max(self.gather(value))

    def fillers(self, forwards: int) -> int:
        """How many filler forward passes this process adds to its `forwards` so that every process of a sharded
        world runs as many (each pass gathers weights from all of them); 0 when not sharded."""
        return self.most(forwards) - forwards if self.sharded else 0

    def check_same(self, value: Any, what: str) -> None:
        """Stop when the processes disagree on `value` (e.g. a digest of the prepared data)."""
        values = self.gather(value)
        if any(v != values[0] for v in values):
            raise UserError(
                f"the processes of this run prepared different {what}: every process must see the same config, "
                "data files and model (same paths and contents on every node)"
            )

    def broadcast_parameters(self, params: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's values of `params` to every process (the same starting point everywhere)."""
        if not self.parallel:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for param in params:
                if is_sharded(param):
                    continue  # a shard of a sharded world: its shards were cut from identical copies
                buffer = param.data.to(self.device).contiguous()
                dist.broadcast(buffer, src=0)
                if buffer.data_ptr() != param.data.data_ptr():
                    param.data.copy_(buffer)

    def sum_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over all processes.

        A parameter without a gradient on some process (it saw no data that reached it) counts as zeros there; one
        without a gradient anywhere keeps none, as in a single process (the optimizer then skips it).
        """
        if not self.parallel:
            return
        import torch.distributed as dist

        params = [p for p in params if not is_sharded(p)]  # the sharding reduces its gradients itself
        if not params:
            return
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        dist.all_reduce(present)
        used = [p for p, n in zip(params, present.tolist(), strict=True) if n > 0]
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets([p.grad for p in used]):
            flat = torch.cat([g.reshape(-1) for g in bucket]).to(self.device)
            dist.all_reduce(flat)
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is one process's shard of a sharded (FSDP) parameter or gradient."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def assign_whole(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the whole tensor `value` into `param`, or into this process's shard of it when it is sharded (a
    collective then: every process assigns the same parameters in the same order)."""
    value = value.to(param.device, param.dtype)
    with torch.no_grad():
        if is_sharded(param):
            from torch.distributed.tensor import distribute_tensor

            param.to_local().copy_(distribute_tensor(value, param.device_mesh, param.placements).to_local())
        else:
            param.copy_(value)


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive gradients of one device and dtype, at most `_BUCKET` elements each (a larger one alone)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        last = buckets[-1] if buckets else None
        fits = last is not None and (last[0].device, last[0].dtype) == (grad.device, grad.dtype)
        if fits and size + grad.numel() <= _BUCKET:
            last.append(grad)
            size += grad.numel()
        else:
            buckets.append([grad])
            size = grad.numel()
    return buckets


def _wants_sharding(requested: bool) -> bool:
    """Whether this launch shards the model: train.fsdp, or accelerate's FSDP config (full shard only); a DeepSpeed
    config is refused rather than silently trained data-parallel with a whole model per process."""
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        raise UserError(
            "this launch asks for DeepSpeed (ACCELERATE_USE_DEEPSPEED=true, from an accelerate config): tuneforge "
            "shards with FSDP instead. Launch with examples/distributed/accelerate_fsdp.yaml (distributed_type: "
            "FSDP) or set train.fsdp: true under torchrun; DDP: distributed_type: MULTI_GPU"
        )
    if not _env_true("ACCELERATE_USE_FSDP"):
        return requested
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    if strategy not in _FULL_SHARD:
        raise UserError(
            f"this accelerate config asks for FSDP sharding strategy {strategy}: tuneforge shards fully "
            "(fsdp_sharding_strategy: FULL_SHARD); for no sharding use distributed_type: MULTI_GPU"
        )
    if os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower() in {"false", "0", "no"}:
        raise UserError(
            "this accelerate config keeps FSDP's gathered weights after the forward pass (fsdp_reshard_after_forward: "
            "false); tuneforge shards fully: set it to true"
        )
    if _env_true("FSDP_OFFLOAD_PARAMS"):
        raise UserError(
            "this accelerate config asks FSDP to offload parameters to the CPU (fsdp_offload_params: true), which "
            "tuneforge does not do: set it to false"
        )
    return True


def _env_true(variable: str) -> bool:
    return os.environ.get(variable, "false").strip().lower() in {"true", "1", "yes"}


def join_world(fsdp: bool = False) -> World:
    """The data-parallel world the launcher set up (RANK, WORLD_SIZE, LOCAL_RANK), its process group joined:
    gloo on CPU, NCCL with this process's GPU (LOCAL_RANK) on CUDA. `World()` without a launcher.

    `fsdp` (train.fsdp) or an accelerate FSDP config makes it a sharded world."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    sharded = _wants_sharding(fsdp)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device, sharded)


def leave_world(world: World) -> None:
    """Leave the process group of `world` (a no-op for a single process)."""
    if not world.parallel:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
