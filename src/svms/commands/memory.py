"""`svms memory`: estimated (and on CUDA measured) peak GPU memory of the fine-tuning phases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Group

    from svms.train.memory import FitOption, MemoryEstimate
    from svms.train.memory_measure import MeasuredMemory


@dataclass
class Memory:
    """Peak GPU memory per fine-tuning phase: weights, gradients, optimizer states, activations.

    Estimated from the real model's parameter counts (meta device); `--measure` runs real training steps
    on a CUDA GPU. Phases that do not fit a 32 GB card (or --gpu-memory G) get the settings that make them fit;
    with --gpu-memory every setting that fits is listed.
    """

    preset: str = "n1d6-3b"
    """model preset"""
    phase: int | None = None
    """fine-tuning phase 1, 2 or 3 (all three when omitted)"""
    batch_size: int | None = None
    """per-GPU batch (default: the phase's, 16 / 12 / 8)"""
    grad_checkpointing: bool = False
    """checkpoint LLM layers and DiT blocks"""
    optimizer: str = "adamw"
    """adamw (fused), adamw-foreach (the reference's), adamw8bit, paged-adamw8bit, offload (estimate only)"""
    lora_rank: int | None = None
    """LoRA adapters of this rank on --lora-targets (as svms train --lora-rank)"""
    lora_targets: tuple[str, ...] = ("llm", "dit")
    """LoRA targets: llm, dit, vision or module-name patterns (with --lora-rank)"""
    fsdp_gpus: int = 1
    """FSDP over this many GPUs (svms train --fsdp under torchrun); 1: one GPU, no sharding"""
    gpu_memory: float | None = None
    """the card's memory in GiB (e.g. 24): list, per phase, the settings that fit it"""
    frozen_dtype: str = "bf16"
    """dtype of frozen weights: bf16, fp32, or mixed (the reference: frozen backbone bf16, head fp32)"""
    measure: bool = False
    """also run 3 training steps on the CUDA GPU and report torch.cuda.max_memory_allocated"""
    seq_len: int | None = None
    """VLM tokens per sample (default 283: 3 cameras x 81 image tokens + 40 text tokens)"""

    def run(self) -> int:
        from rich.console import Console

        from svms.errors import SvmsError
        from svms.train.memory import CARD_GIB, PHASE_BATCH, estimate, fit_options
        from svms.train.memory_measure import measure

        if self.gpu_memory is not None and self.gpu_memory <= 0:
            raise SvmsError(f"--gpu-memory {self.gpu_memory}: the card's memory in GiB, e.g. 24")
        card = CARD_GIB if self.gpu_memory is None else self.gpu_memory
        lora = None if self.lora_rank is None else (self.lora_rank, tuple(self.lora_targets))
        phases = list(PHASE_BATCH) if self.phase is None else [self.phase]
        rows = []
        for phase in phases:
            kw = dict(grad_checkpointing=self.grad_checkpointing, optimizer=self.optimizer,
                      frozen_dtype=self.frozen_dtype, seq_len=self.seq_len, lora=lora if phase != 1 else None)
            est = estimate(self.preset, phase, self.batch_size or PHASE_BATCH.get(phase, 1), fsdp_gpus=self.fsdp_gpus,
                           **kw)
            measured = measure(self.preset, phase, est.batch_size, **kw) if self.measure else None
            rows.append((est, measured, fit_options(est, card, every=self.gpu_memory is not None)))
        Console(width=160).print(memory_table(rows, self.gpu_memory, listing=self.gpu_memory is not None))
        return 0


def memory_table(rows: list[tuple[MemoryEstimate, MeasuredMemory | None, list[FitOption]]],
                 card_gib: float | None = None, listing: bool = False) -> Group:
    """One column per phase (lines in GiB), then for each phase that does not fit `card_gib` its options;
    `listing` (`--gpu-memory`): for every phase, the settings that fit."""
    from rich.console import Group
    from rich.table import Table

    from svms.train.memory import CARD_GIB, SEED_CLAIM_GB

    card = CARD_GIB if card_gib is None else card_gib
    first = rows[0][0]
    lora = rows[-1][0].lora
    title = (f"Peak GPU memory per training step, {first.preset}, {first.seq_len} tokens/sample, "
             f"optimizer {first.optimizer}, frozen weights {first.frozen_dtype}, "
             f"gradient checkpointing {'on' if first.grad_checkpointing else 'off'}"
             + (f", LoRA rank {lora[0]} on {' + '.join(lora[1])}" if lora else "")
             + (f", FSDP over {first.fsdp_gpus} GPUs" if first.fsdp_gpus > 1 else "") + " (GiB)")
    table = Table(title=title)
    table.add_column("")
    for est, _, _ in rows:
        table.add_column(f"phase {est.phase}, batch {est.batch_size}", justify="right")
    table.add_row("trainable params", *[f"{e.trainable_params / 1e6:,.1f} M" for e, _, _ in rows])
    for i, (name, _) in enumerate(first.lines()):
        table.add_row(name, *[f"{e.lines()[i][1]:.2f}" for e, _, _ in rows],
                      style="bold" if name == "total" else None)
    table.add_row("peak at", *[e.peak_at for e, _, _ in rows])
    table.add_row("  all gradients / all saved activations",
                  *[f"{e.gradients_all_gib:.2f} / {e.activations_all_gib:.2f}" for e, _, _ in rows])
    table.add_row("  estimated allocated (cf. measured)", *[f"{e.allocated_gib:.2f}" for e, _, _ in rows])
    if any(m is not None for _, m, _ in rows):
        table.add_row("measured max_memory_allocated",
                      *["" if m is None else f"{m.peak_allocated_gib:.2f}" for _, m, _ in rows])
        table.add_row("measured max_memory_reserved",
                      *["" if m is None else f"{m.peak_reserved_gib:.2f}" for _, m, _ in rows])
        table.add_row("measured seconds per step (samples/s)", *[
            "" if m is None else f"{m.step_seconds:.3f} ({e.batch_size / m.step_seconds:.1f})" for e, m, _ in rows])
        device = next(m.device for _, m, _ in rows if m is not None)
        table.caption = f"measured on {device}"
    table.add_row("seed's claim", *[
        f"{SEED_CLAIM_GB[e.phase]} GB at batch {b}" for e, b in ((e, _seed_batch(e.phase)) for e, _, _ in rows)])
    name = "a 32 GB card" if card_gib is None else "the card"
    table.add_row(f"fits {name} ({card:g} GiB)?", *[
        "[green]yes[/green]" if e.fits(card) else "[red]no[/red]" for e, _, _ in rows])
    parts: list = [table]
    for est, _, options in rows:
        if listing:
            fitting = ([("as set", est.settings(), est)] if est.fits(card) else []) + [
                (o.label, o.flags(), o.estimate) for o in options if o.fits and o.estimate.optimizer != "offload"]
            fix = Table(title=f"Phase {est.phase}, batch {est.batch_size}: settings that fit {card:g} GiB"
                        + ("" if fitting else " (none of those tried)"))
            fix.add_column("option")
            fix.add_column("svms train flags")
            fix.add_column("trainable params", justify="right")
            fix.add_column("total (GiB)", justify="right")
            for label, flags, option in fitting:
                fix.add_row(label, flags or "(defaults)", f"{option.trainable_params / 1e6:,.1f} M",
                            f"{option.total_gib:.2f}")
            parts.append(fix)
            continue
        if not options:
            continue
        fix = Table(title=f"Phase {est.phase} needs {est.total_gib:.1f} GiB > {card:g}: what makes it fit")
        fix.add_column("option")
        fix.add_column("total (GiB)", justify="right")
        fix.add_column("fits?")
        for option in options:
            fix.add_row(option.label, f"{option.estimate.total_gib:.2f}",
                        "[green]yes[/green]" if option.fits else "[red]no[/red]")
        parts.append(fix)
    return Group(*parts)


def _seed_batch(phase: int) -> int:
    from svms.train.memory import PHASE_BATCH

    return PHASE_BATCH[phase]
