"""torch.distributed in one place: what the trainer needs to run under ``torchrun``.

``setup(enabled)`` returns a :class:`DistContext`. Without ``trainer.distributed`` it is a
single-process context whose collectives return their input, so the trainer has one code path.
With it, the process group is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from nmt.errors import NMTError

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

    def broadcast_float(self, value: float) -> float:
        """Rank 0's value on every rank (so that all ranks stop on the same step)."""
        return self.broadcast_dict({"v": value})["v"]

    def broadcast_dict(self, value: dict[str, Any]) -> dict[str, Any]:
        if not self.enabled:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

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
        if self.enabled and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()


def setup(enabled: bool) -> DistContext:
    if not enabled:
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
        torch_dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return DistContext(True, torch_dist.get_rank(), torch_dist.get_world_size(), device)
