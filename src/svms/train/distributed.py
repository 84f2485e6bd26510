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


def shard_model(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """FSDP2 (`fully_shard`) in place: each LLM layer and DiT block is a unit whose full weights exist only
    while it runs; the rest of the model is the root unit. Parameters, gradients and optimizer state are
    sharded over the processes; gradients are averaged as DDP averages them. FSDP cannot shard a scalar
    parameter (SVMS's alpha): those stay whole on every process, and are returned for `average_gradients`."""
    from torch.distributed.fsdp import fully_shard

    scalars = [p for p in model.parameters() if p.dim() == 0]
    for block in [*model.backbone.model.language_model.model.layers, *model.action_head.model.transformer_blocks]:
        fully_shard(block)
    fully_shard(model, ignored_params=set(scalars))
    return scalars


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average the gradients of parameters kept whole on every process (what DDP does for all of them)."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, also over FSDP's sharded gradients mixed with whole ones; returns the
    total norm before clipping as a plain tensor."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g for g in grads if isinstance(g, DTensor)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    whole = [g for g in grads if not isinstance(g, DTensor)]
    total = torch.nn.utils.get_total_norm(sharded).full_tensor() ** 2
    if whole:
        total = total + torch.nn.utils.get_total_norm(whole).to(total.device) ** 2
    total = total.sqrt()
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    for g in grads:
        g.mul_(coef)
    return total


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool
               ) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state dict, optimizer state dict) to save. Sharded (FSDP): gathered whole onto the main
    process's CPU (every process must call this; the others get empty dicts), the optimizer's keyed by
    parameter name."""
    if not sharded:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, sharded: bool) -> None:
    """The inverse of `full_state` for the optimizer: each process keeps its shard of the saved full state."""
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
