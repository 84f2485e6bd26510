"""Peak GPU memory of one fine-tuning phase, measured: the real model on a CUDA device (random weights), a few
training steps as the trainer takes them, and torch's peak counters. `svms.train.memory` is the analytical
estimate this checks; both share its phase, precision and sequence conventions."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train.lora import apply_lora
from svms.train.memory import (
    DEFAULT_SEQ_LEN,
    GIB,
    IMAGE_SIZE,
    IMAGES,
    TOKENS_PER_IMAGE,
    check_args,
    check_phase,
)
from svms.train.optimizers import OPTIMIZERS, build_optimizer
from svms.train.phases import apply_phase, apply_phase_dtypes


@dataclass
class MeasuredMemory:
    device: str
    peak_allocated_gib: float  # torch.cuda.max_memory_allocated over the steps
    peak_reserved_gib: float  # torch.cuda.max_memory_reserved (what the allocator took from the card)
    steps: int
    step_seconds: float  # median wall time of the steps after the first (which warms up kernels)


def sequence_layout(seq_len: int) -> tuple[int, int]:
    """(text tokens, images) for a `seq_len`-token prompt: up to 3 images of 81 tokens, >= 4 text tokens."""
    images = max(1, min(IMAGES, (seq_len - 4) // TOKENS_PER_IMAGE))
    if seq_len - images * TOKENS_PER_IMAGE < 4:
        raise SvmsError(f"--seq-len {seq_len} is too short for one image ({TOKENS_PER_IMAGE} tokens) and "
                        f"4 text tokens; use at least {TOKENS_PER_IMAGE + 4}")
    return seq_len - images * TOKENS_PER_IMAGE, images


def prepare_model(model: nn.Module, phase: int, frozen_dtype: str = "bf16",
                  grad_checkpointing: bool = False, lora: tuple[int, tuple[str, ...]] | None = None
                  ) -> list[nn.Parameter]:
    """Set `model` up as `phase` trains it: trainability, LoRA adapters (`lora = (rank, targets)`, as
    `svms train --lora-rank` adds them), dtypes (trainable fp32, frozen per `frozen_dtype`), optional
    checkpointing of LLM layers and DiT blocks. Returns the trainable params."""
    check_phase(phase)
    apply_phase(model, str(phase))
    if lora is not None:
        apply_lora(model, lora[0], None, 0.0, tuple(lora[1]), str(phase))
    apply_phase_dtypes(model, frozen_dtype)
    if grad_checkpointing:
        from torch.utils.checkpoint import checkpoint

        model.action_head.model.gradient_checkpointing = True
        for block in model.backbone.model.language_model.model.layers:
            forward = block.forward
            block.forward = functools.partial(checkpoint, forward, use_reentrant=False)
    return [p for p in model.parameters() if p.requires_grad]


def training_steps(model: nn.Module, batch: dict, params: list[nn.Parameter], steps: int, optimizer: str,
                   device_type: str, seconds: list[float] | None = None) -> list[float]:
    """`steps` optimizer steps as the trainer takes them (bf16 autocast, AdamW, clipping); the losses.
    The wall time of each step (synchronised on CUDA) is appended to `seconds` when given."""
    if optimizer not in OPTIMIZERS:
        raise SvmsError(f"--measure runs the optimizers of svms train ({', '.join(OPTIMIZERS)}), not {optimizer!r}")
    opt = build_optimizer(optimizer, params, 1e-5, torch.device(device_type), weight_decay=1e-5)
    losses = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = model(batch)
            loss = out.loss
            if out.svms is not None:
                loss = loss + 0.1 * out.svms.sheaf_loss + 0.01 * out.svms.balance_loss
                if out.svms.aux_loss is not None:
                    loss = loss + 0.3 * out.svms.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # synchronises the device
        if seconds is not None:
            seconds.append(time.perf_counter() - start)
    return losses


def measure(preset: str, phase: int, batch_size: int, grad_checkpointing: bool = False, optimizer: str = "adamw",
            frozen_dtype: str = "bf16", seq_len: int | None = None, steps: int = 3,
            lora: tuple[int, tuple[str, ...]] | None = None, fsdp_gpus: int = 1) -> MeasuredMemory:
    """Build the real model on the GPU (random weights), run `steps` training steps of `phase` and report
    the peak memory (weights included; the CUDA context is not in these numbers)."""
    seq = DEFAULT_SEQ_LEN if seq_len is None else seq_len
    check_args(phase, batch_size, optimizer, frozen_dtype, seq, fsdp_gpus)
    if fsdp_gpus > 1:
        raise SvmsError("--measure runs on one GPU, so it cannot measure FSDP over several: drop --fsdp-gpus "
                        "for --measure (the estimate covers it)")
    if not torch.cuda.is_available():
        raise SvmsError("--measure needs a CUDA GPU (none is visible to torch); "
                        "drop --measure for the analytical estimate")

    text, images = sequence_layout(seq)
    config = dataclasses.replace(Gr00tN1d6Config.preset(preset), use_sheaf_streams=True)
    torch.cuda.empty_cache()
    with torch.device("cuda"):
        model = Gr00tN1d6(config, backbone_dtype=torch.bfloat16)
    params = prepare_model(model, phase, frozen_dtype, grad_checkpointing, lora)
    batch = model.dummy_batch(batch_size, text_tokens=text, n_images=images, image_size=IMAGE_SIZE)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds: list[float] = []
    try:
        training_steps(model, batch, params, steps, optimizer, "cuda", seconds)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GIB
        reserved = torch.cuda.max_memory_reserved() / GIB
    finally:
        del model, params, batch
        torch.cuda.empty_cache()
    step_seconds = statistics.median(seconds[1:] or seconds)
    return MeasuredMemory(torch.cuda.get_device_name(), peak, reserved, steps, step_seconds)


__all__ = ["MeasuredMemory", "measure", "prepare_model", "sequence_layout", "training_steps"]
