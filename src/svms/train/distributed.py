"""One process or many (torchrun): rank, world size, device, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from svms.device import resolve_device


@dataclass
class Runtime:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a float tensor over processes (identity with one)."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world
        return values

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(device: str) -> Runtime:
    """Read torchrun's environment; NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, dev)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
