"""Training throughput through `svms.train.trainer.train`, baseline vs SVMS in the same run.

Run: .venv/bin/python benchmarks/train.py [--steps 10 --batch 8]                  (tiny, CPU)
     python benchmarks/train.py --preset n1d6-3b --phase 3 --batch 8 --images 3 --image-size 224  (GPU)
Samples/s of full training steps (data, forward, backward, AdamW) with synthetic samples, counted from
the trainer's own metrics after the first step (start-up and the final checkpoint excluded). On CUDA the
trainer's dtypes apply (trainable fp32, frozen bf16, bf16 autocast) and the peak memory is printed; the
CPU run also prints the `svms memory` table of the 3B model.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from svms.device import resolve_device
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train import TrainConfig
from svms.train.sampling import SyntheticDataset
from svms.train.trainer import train


class SampleSet(torch.utils.data.Dataset):
    """Fixed random samples of `n_images` square images each, made from a weightless (meta) model."""

    def __init__(self, config: Gr00tN1d6Config, n_images: int, image_size: int, size: int = 64) -> None:
        with torch.device("meta"):
            self.shapes = Gr00tN1d6(config)
        self.n_images, self.image_size, self.size = n_images, image_size, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int]) -> dict:  # (index, position), as the trainer's sampler gives
        return self.shapes.dummy_batch(1, n_images=self.n_images, image_size=self.image_size, seed=key[0],
                                       device="cpu")


class StampedCollate:
    """The trainer draws one batch per step (no accumulation, no workers): stamping each gives step times."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, samples: list[dict]) -> dict:
        self.stamps.append(time.perf_counter())
        return SyntheticDataset.collate(samples)


def run(args: argparse.Namespace, svms: bool, out: Path) -> tuple[float, float | None]:
    """(samples/s after the first step, peak CUDA GiB or None) of one training run."""
    torch.manual_seed(0)
    config = dataclasses.replace(Gr00tN1d6Config.preset(args.preset), use_sheaf_streams=svms)
    data, collate = SampleSet(config, args.images, args.image_size), StampedCollate()
    cfg = TrainConfig(dataset=out, out=out, preset=args.preset, phase=args.phase, svms=svms, max_steps=args.steps + 2,
                      save_every=10**6, global_batch_size=args.batch, tensorboard=False, log_every=10**6,
                      device=args.device)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(cfg, data, collate)
    peak = torch.cuda.max_memory_allocated() / 2**30 if resolve_device(args.device).type == "cuda" else None
    stamps = collate.stamps  # batch k is drawn just before step k runs; step 1 warms up and is left out
    return args.steps * args.batch / (stamps[-1] - stamps[1]), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--phase", default="scratch", help="scratch, 1, 2 or 3 (1 and 2 train SVMS only: no baseline)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2, help="runs per arm, best taken (load noise)")
    args = ap.parse_args()
    arms = (True,) if args.phase in ("1", "2") else (False, True)
    results: dict[bool, list[tuple[float, float | None]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:  # alternate arms so drifting load hits both
        for i in range(args.repeats):
            for svms in arms:
                results[svms].append(run(args, svms, Path(tmp) / f"{svms}-{i}"))
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset}, phase {args.phase}, {where}, batch {args.batch}, {args.images} image(s) of "
          f"{args.image_size}², {args.steps} timed steps, best of {args.repeats}")
    base = max(r for r, _ in results[arms[0]])
    for svms, rows in results.items():
        rate = max(r for r, _ in rows)
        peak = rows[0][1]
        print(f"  {'svms' if svms else 'baseline':<9} {rate:8.1f} samples/s   {base / rate:.2f}x step time"
              + ("" if peak is None else f"   peak {peak:.2f} GiB allocated"))
    if device.type == "cpu" and args.preset == "tiny":
        print()
        from svms.commands.memory import Memory

        Memory().run()


if __name__ == "__main__":
    main()
