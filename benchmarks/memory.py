"""`svms memory` table for the three fine-tuning phases at n1d6-3b; on CUDA, measured peaks beside it.

Run: .venv/bin/python benchmarks/memory.py [--grad-checkpointing] [--optimizer adamw] [--no-measure] [--options]
The estimate is analytical (svms.train.memory); on a CUDA GPU each phase also runs 3 real training
steps (random weights, bf16 autocast, fused AdamW) and the table shows max_memory_allocated and its
ratio to the estimate's allocated figure, with the device name.

--options: per phase, each memory option of `svms train` (8-bit AdamW, paged 8-bit AdamW, LoRA rank 32 on
llm + dit, LoRA + 8-bit) against plain AdamW: estimated total and, on CUDA, measured reserved memory and the
step time as a ratio to plain AdamW's in the same process.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from svms.commands.memory import memory_table
from svms.train.memory import LORA_DEFAULT, PHASE_BATCH, estimate, fit_options
from svms.train.memory_measure import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="n1d6-3b")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--frozen-dtype", default="bf16")
    parser.add_argument("--no-measure", action="store_true")
    parser.add_argument("--options", action="store_true", help="compare the memory options per phase")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.no_measure
    console = Console(width=160)
    if args.options:
        console.print(options_table(args.preset, cuda))
        return
    rows = []
    for phase, batch in PHASE_BATCH.items():
        kw = dict(grad_checkpointing=args.grad_checkpointing, optimizer=args.optimizer,
                  frozen_dtype=args.frozen_dtype)
        est = estimate(args.preset, phase, batch, **kw)
        measured = measure(args.preset, phase, batch, **kw) if cuda else None
        rows.append((est, measured, fit_options(est)))
        if measured is not None:
            ratio = measured.peak_allocated_gib / est.allocated_gib
            console.print(f"phase {phase}: measured {measured.peak_allocated_gib:.2f} GiB allocated vs "
                          f"estimated {est.allocated_gib:.2f} (ratio {ratio:.2f}), {measured.step_seconds:.3f} s "
                          f"per step ({batch / measured.step_seconds:.1f} samples/s) on {measured.device}")
    if not cuda:
        console.print("no CUDA GPU (or --no-measure): estimates only")
    console.print(memory_table(rows))


OPTIONS = (("AdamW (fused)", {}), ("8-bit AdamW", {"optimizer": "adamw8bit"}),
           ("paged 8-bit AdamW", {"optimizer": "paged-adamw8bit"}), ("LoRA r32 llm+dit", {"lora": LORA_DEFAULT}),
           ("LoRA r32 + 8-bit AdamW", {"lora": LORA_DEFAULT, "optimizer": "adamw8bit"}))


def options_table(preset: str, cuda: bool) -> Table:
    """Rows: phase x option; estimated total, measured reserved (CUDA) and step time / plain AdamW's."""
    table = Table(title=f"Memory options at the seed's batches, {preset}"
                  + (f", measured on {torch.cuda.get_device_name()}" if cuda else " (estimates only: no CUDA GPU)"))
    for column in ("phase", "option", "trainable", "estimated total GiB", "measured reserved GiB",
                   "measured allocated GiB", "step time vs AdamW"):
        table.add_column(column, justify="left" if column == "option" else "right")
    for phase, batch in PHASE_BATCH.items():
        plain_seconds = None
        for label, kw in OPTIONS:
            if phase == 1 and "lora" in kw:
                continue  # phase 1 trains SVMS only: nothing for LoRA to adapt
            est = estimate(preset, phase, batch, **kw)
            measured = measure(preset, phase, batch, steps=4, **kw) if cuda else None
            if measured is not None and plain_seconds is None:
                plain_seconds = measured.step_seconds
            table.add_row(str(phase), label, f"{est.trainable_params / 1e6:,.0f} M", f"{est.total_gib:.2f}",
                          "" if measured is None else f"{measured.peak_reserved_gib:.2f}",
                          "" if measured is None else f"{measured.peak_allocated_gib:.2f}",
                          "" if measured is None else f"{measured.step_seconds / plain_seconds:.2f}")
    return table


if __name__ == "__main__":
    main()
