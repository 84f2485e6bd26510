"""`svms memory` table for the three fine-tuning phases at n1d6-3b; on CUDA, measured peaks beside it.

Run: .venv/bin/python benchmarks/memory.py [--grad-checkpointing] [--optimizer adamw] [--no-measure]
The estimate is analytical (svms.train.memory); on a CUDA GPU each phase also runs 3 real training
steps (random weights, bf16 autocast, fused AdamW) and the table shows max_memory_allocated and its
ratio to the estimate's allocated figure, with the device name.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console

from svms.commands.memory import memory_table
from svms.train.memory import PHASE_BATCH, estimate, fit_options
from svms.train.memory_measure import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="n1d6-3b")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--frozen-dtype", default="bf16")
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.no_measure
    console = Console(width=160)
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


if __name__ == "__main__":
    main()
