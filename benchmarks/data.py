"""Dataset loader throughput: samples/s of `Gr00tLeRobotDataset` against a naive decode-from-start loader.

Run: .venv/bin/python benchmarks/data.py [--episodes 6 --length 300 --samples 48 --workers 2]
Writes a synthetic dataset (2 cameras at 256x256, h264, keyframe every 8 frames) to a temporary
folder, then measures, on the same random sample indices:
  raw      video frames + state/action/language cut from the episode (no image processing)
  full     + GR00T/Eagle image processing, normalisation and collation into model batches (+ aux labels)
for the seeking decoder (ours) and for a baseline that opens each video and decodes from frame 0
up to the wanted frame for every sample; then ours through a DataLoader with worker processes.
The ratio column is against the naive loader measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

from svms.data.lerobot import Gr00tLeRobotDataset, write_synthetic_dataset


class NaiveDecoder:
    """Opens the file and decodes from its first frame up to the largest wanted index, every call."""

    def __init__(self, path: Path):
        self.path = path

    def frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        wanted, out = set(int(i) for i in indices), {}
        with av.open(str(self.path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= max(wanted):
                    break
        return [out[int(i)] for i in indices]


class NaiveDataset(Gr00tLeRobotDataset):
    """The same sample cutting and processing with decode-from-start video access."""

    def _video(self, path: Path, length: int) -> NaiveDecoder:
        return NaiveDecoder(path)


def rate(fn, indices: Sequence[int]) -> float:
    fn(indices[:2])  # warm-up: tokenizer, first decoders
    t0 = time.perf_counter()
    fn(indices)
    return len(indices) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--length", type=int, default=300, help="frames per episode")
    ap.add_argument("--samples", type=int, default=48, help="samples per measurement")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t0 = time.perf_counter()
        write_synthetic_dataset(root, [args.length] * args.episodes, cameras=("cam0", "cam1"), hw=(256, 256))
        print(
            f"wrote {args.episodes} episodes x {args.length} frames, 2 cameras 256x256 in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        ours, naive = Gr00tLeRobotDataset(root), NaiveDataset(root)
        indices = np.random.default_rng(0).permutation(len(ours))[: args.samples].tolist()
        collate = ours.collator()

        def batches(ds):
            def run(idx):
                for s in range(0, len(idx), args.batch):
                    collate([ds[i] for i in idx[s : s + args.batch]])

            return run

        rows = []
        for name, fn_ours, fn_naive in (
            ("raw", lambda idx: [ours.raw_sample(i) for i in idx], lambda idx: [naive.raw_sample(i) for i in idx]),
            ("full", batches(ours), batches(naive)),
        ):
            r_naive, r_ours = rate(fn_naive, indices), rate(fn_ours, indices)
            rows += [
                (f"{name}: naive decode-from-start, 1 process", r_naive, 1.0),
                (f"{name}: seek to keyframe (ours), 1 process", r_ours, r_ours / r_naive),
            ]
        full_naive = rows[2][1]

        if args.workers:
            loader = torch.utils.data.DataLoader(
                ours,
                batch_size=args.batch,
                num_workers=args.workers,
                collate_fn=collate,
                sampler=indices * 3,
                multiprocessing_context="spawn",
                persistent_workers=True,
            )
            it = iter(loader)
            next(it)  # worker start-up is not throughput
            t0 = time.perf_counter()
            n = sum(b["state"].shape[0] for b in it)
            r = n / (time.perf_counter() - t0)
            rows.append((f"full: ours, DataLoader {args.workers} workers", r, r / full_naive))

    print(f"\n{'loader':<48} {'samples/s':>10} {'vs naive':>9}")
    for name, r, ratio in rows:
        print(f"{name:<48} {r:>10.1f} {ratio:>8.1f}x")


if __name__ == "__main__":
    main()
