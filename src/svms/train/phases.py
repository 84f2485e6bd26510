"""Which parameters each phase trains, and the train/eval modes that go with it."""

from __future__ import annotations

import torch
from torch import nn

from svms.errors import SvmsError
from svms.model import Gr00tN1d6
from svms.train.config import FROZEN_DTYPES


def bottom_dit_blocks(model: Gr00tN1d6) -> list[nn.Module]:
    blocks = model.action_head.model.transformer_blocks
    return list(blocks[: len(blocks) // 2])


def apply_phase(model: Gr00tN1d6, phase: str) -> None:
    """Set requires_grad per the phase (see `svms.train.config`); frozen modules go to eval mode."""
    svms = model.svms is not None
    if phase in ("1", "2") and not svms:
        raise SvmsError(f"phase {phase} trains the SVMS module, but the model has none")
    if phase == "scratch":
        model.set_trainable(tune_llm=True, tune_visual=True, tune_projector=True, tune_diffusion_model=True,
                            tune_vlln=True, tune_svms=svms)
    elif phase in ("1", "2"):
        model.set_trainable(tune_llm=False, tune_visual=False, tune_top_llm_layers=0, tune_projector=False,
                            tune_diffusion_model=False, tune_vlln=False, tune_svms=True)
        if phase == "2":
            for block in bottom_dit_blocks(model):
                block.requires_grad_(True)
    elif phase == "3":
        model.set_trainable(tune_llm=False, tune_visual=False,
                            tune_top_llm_layers=model.config.tune_top_llm_layers, tune_projector=True,
                            tune_diffusion_model=True, tune_vlln=True, tune_svms=svms)
    else:
        raise SvmsError(f"unknown phase {phase!r}")
    set_train_mode(model, phase)


def frozen_is_bf16(name: str, frozen_dtype: str) -> bool:
    """Whether frozen parameter `name` is stored in bf16: all frozen weights for "bf16", only the
    backbone's for "mixed" (the reference: frozen backbone bf16, action head fp32), none for "fp32"."""
    if frozen_dtype not in FROZEN_DTYPES:
        raise SvmsError(f"frozen weights dtype {frozen_dtype!r}: use one of {', '.join(FROZEN_DTYPES)}")
    return frozen_dtype == "bf16" or (frozen_dtype == "mixed" and name.startswith("backbone."))


def apply_phase_dtypes(model: nn.Module, frozen_dtype: str = "bf16") -> None:
    """Trainable parameters in fp32, frozen ones per `frozen_dtype` (call after `apply_phase`).

    For training under bf16 autocast on a GPU, where the matrix products run in bf16 anyway; frozen
    bf16 weights halve their memory (phase 1 of the 3B model: 5.6 instead of 11.2 GiB of weights).
    """
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()
        elif frozen_is_bf16(name, frozen_dtype):
            p.data = p.data.to(torch.bfloat16)
        else:
            p.data = p.data.float()


def set_train_mode(model: Gr00tN1d6, phase: str) -> None:
    """model.train() with frozen parts in eval, but phase 2's trained bottom DiT blocks in train mode."""
    model.train()
    if phase == "2":
        for block in bottom_dit_blocks(model):
            block.train()


def trainable_summary(model: Gr00tN1d6) -> dict[str, int]:
    """Trainable parameter count per top-level group (backbone, action_head, svms)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            group = name.split(".")[0]
            counts[group] = counts.get(group, 0) + p.numel()
    return counts
