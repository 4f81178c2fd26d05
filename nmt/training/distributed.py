"""torch.distributed in one place: what the trainer needs to run under ``torchrun``.

``setup(enabled)`` returns a :class:`DistContext`. Without ``trainer.distributed`` it is a
single-process context whose collectives return their input, so the trainer has one code path.
With it, the process group is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL on CUDA, gloo on CPU.

Every collective is entered by all ranks at the same point of the loop. While rank 0 validates,
the other ranks wait in :meth:`DistContext.broadcast` for its metrics; a collective that waits
longer than ``trainer.dist_timeout_minutes`` fails, and a rank that fails or exits makes
torchrun stop the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from nmt.core.errors import NMTError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def no_sync(self, model: torch.nn.Module):
        """Skip the gradient all-reduce for all but the last batch of an accumulated step."""
        return model.no_sync() if self.enabled else nullcontext()

    def _reduce(self, value: float, op) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        torch_dist.all_reduce(tensor, op=op)
        return float(tensor.item())

    def all_reduce_sum(self, value: float) -> float:
        return self._reduce(value, torch_dist.ReduceOp.SUM)

    def all_reduce_min(self, value: float) -> float:
        return self._reduce(value, torch_dist.ReduceOp.MIN)

    def any_rank(self, *flags: bool) -> tuple[bool, ...]:
        """For each flag, whether it is set on any rank (one all-reduce for all of them)."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        tensor = torch.tensor(
            [float(f) for f in flags], dtype=torch.float64, device=self._comm_device
        )
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return tuple(bool(v) for v in tensor.tolist())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on rank 0 first, then on the others (e.g. prepare data, then read it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def gather_rng(self, state: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """Every rank's RNG state (a list, indexed by rank) under DDP; the state itself otherwise."""
        if not self.enabled:
            return state
        states: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(states, state)
        return states

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def cleanup(self) -> None:
        """Leave the process group (no barrier: it also runs when this rank has failed)."""
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def setup(enabled: bool, timeout_minutes: float = 30) -> DistContext:
    """The context for ``trainer.distributed``; initialises the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not enabled:
        if world_size > 1:
            raise NMTError(
                f"launched as one of {world_size} processes (WORLD_SIZE={world_size}) but "
                "trainer.distributed=false: add trainer.distributed=true"
            )
        return DistContext()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise NMTError(
            "trainer.distributed=true needs torchrun's environment (missing "
            f"{', '.join(missing)}); launch with `torchrun --nproc_per_node=N -m nmt.train trainer.distributed=true ...`"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return DistContext(True, torch_dist.get_rank(), torch_dist.get_world_size(), device)
