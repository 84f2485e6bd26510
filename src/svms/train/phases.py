"""Which parameters each phase trains, and the train/eval modes that go with it."""

from __future__ import annotations

from torch import nn

from svms.errors import SvmsError
from svms.model import Gr00tN1d6


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
