"""Training throughput: tiny preset on CPU, baseline vs SVMS in the same run, plus the memory table.

Run: .venv/bin/python benchmarks/train.py [--steps 10 --batch 8]
Samples/s of full training steps (forward, backward, AdamW) with synthetic samples of one 224x224
image each, and the `svms memory` estimate of the three phases at n1d6-3b. On a CUDA GPU run
`benchmarks/memory.py` for measured peaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train import TrainConfig
from svms.train.data import SyntheticDataset
from svms.train.trainer import train


def samples_per_second(svms: bool, steps: int, batch: int, out: Path) -> float:
    torch.manual_seed(0)
    model = Gr00tN1d6(dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=svms))
    data = SyntheticDataset(model, size=64, image_size=224)
    cfg = TrainConfig(dataset=out, out=out, phase="scratch", svms=svms, max_steps=steps + 2, save_every=10**6,
                      global_batch_size=batch, tensorboard=False, log_every=10**6)
    t0 = time.perf_counter()
    train(cfg, data, SyntheticDataset.collate)
    return (steps + 2) * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # alternate arms, best of two each (load noise)
        runs = [(svms, samples_per_second(svms, args.steps, args.batch, Path(tmp) / f"{svms}-{i}"))
                for i in range(2) for svms in (False, True)]
    base = max(r for s, r in runs if not s)
    svms = max(r for s, r in runs if s)
    print(f"tiny preset, CPU ({torch.get_num_threads()} threads), batch {args.batch}, {args.steps + 2} steps "
          "incl. start-up and the final checkpoint, best of 2")
    print(f"  baseline  {base:8.1f} samples/s   1.00x")
    print(f"  svms      {svms:8.1f} samples/s   {base / svms:.2f}x step time")
    print()
    from svms.commands.memory import Memory

    Memory().run()


if __name__ == "__main__":
    main()
