"""Dataset loader throughput: samples/s of `Gr00tLeRobotDataset` against a naive decode-from-start loader.

Run: .venv/bin/python benchmarks/data.py [--episodes 6 --length 300 --samples 48 --workers 2]
Writes a synthetic dataset (2 cameras at 256x256, h264, keyframe every 8 frames) to a temporary
folder, then measures, on the same random sample indices:
  raw      video frames + state/action/language cut from the episode (no image processing)
  full     + GR00T/Eagle image processing, normalisation and collation into model batches (+ aux labels)
for the seeking decoder (ours) and for a baseline that opens each video and decodes from frame 0
up to the wanted frame for every sample; then ours through a DataLoader with worker processes.
The ratio column is against the naive loader measured in the same run. Then the processing stage
alone, and the GR00T image transform per 256x256 frame: train (random crop, + rotation, + colour
jitter) against eval (centre crop). Then the same dataset converted to LeRobot v3.0 (`svms data convert`, one
parquet and one mp4 per camera shared by all episodes) against v2.1: raw samples/s of both on the same
indices, best of 5 interleaved rounds, and the read cost of v3.0 relative to v2.1 (target: at most 1.2x).
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
        format_costs(root, indices)
    processing_stage()
    transform_costs()


def format_costs(root: Path, indices: Sequence[int], rounds: int = 5) -> None:
    """Raw samples/s of the v2.1 dataset at `root` and of its v3.0 conversion, on the same indices."""
    from svms.data.lerobot.convert import convert_dataset

    v3 = root.parent / "ds_v30"
    t0 = time.perf_counter()
    convert_dataset(root, v3, "v3.0")
    print(f"\nconverted to LeRobot v3.0 in {time.perf_counter() - t0:.1f} s")
    datasets = {"v2.1": Gr00tLeRobotDataset(root), "v3.0": Gr00tLeRobotDataset(v3)}
    best = dict.fromkeys(datasets, 0.0)
    for _ in range(rounds):
        for name, ds in datasets.items():
            best[name] = max(best[name], rate(lambda idx, ds=ds: [ds.raw_sample(i) for i in idx], indices))
    print(f"{'raw samples, same indices':<48} {'samples/s':>10}")
    for name, r in best.items():
        print(f"{'LeRobot ' + name:<48} {r:>10.1f}")
    print(f"read cost of v3.0 relative to v2.1: {best['v2.1'] / best['v3.0']:.2f}x")


def transform_costs(frames: int = 500) -> None:
    """Time per 256x256 frame of the GR00T transform: eval against train variants (one draw per frame)."""
    from svms.data.images import draw_augment, gr00t_train_transform, gr00t_transform

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(16)]
    jitter = {"brightness": 0.3, "contrast": 0.4, "saturation": 0.5, "hue": 0.08}

    def per_frame(fn) -> float:
        fn(images[0])
        t0 = time.perf_counter()
        for i in range(frames):
            fn(images[i % len(images)])
        return (time.perf_counter() - t0) / frames

    def train(rotation=None, colour=None):
        return lambda im: gr00t_train_transform(im, draw_augment(rng, im.shape[:2], rotation=rotation, jitter=colour))

    base = per_frame(gr00t_transform)
    print(f"\n{'GR00T transform, 256x256 frame':<48} {'us/frame':>10} {'vs eval':>9}")
    for name, fn in (("eval (centre crop)", gr00t_transform), ("train: random crop", train()),
                     ("train: + rotation 15 deg", train(15.0)), ("train: + colour jitter (4 ops)", train(None, jitter)),
                     ("train: crop + rotation + jitter", train(15.0, jitter))):
        t = base if fn is gr00t_transform else per_frame(fn)
        print(f"{name:<48} {1e6 * t:>10.1f} {t / base:>8.2f}x")


def processing_stage(samples: int = 20) -> None:
    """The processing stage alone on a RoboCasa sample (3 cameras at 256x256): samples/s and the time
    split between image transforms, prompt + tokenisation, and state/action normalisation."""
    from svms.data import MODALITY_CONFIGS, Gr00tProcessor, ProcessorSettings, collate, load_tokenizer
    from svms.data.normalize import StateActionNormalizer

    tag = "robocasa_panda_omron"
    config = MODALITY_CONFIGS[tag].validate()
    rng = np.random.default_rng(0)
    widths = {"state": {}, "action": {}}
    stats: dict = {"state": {}, "action": {}, "relative_action": {}}
    for modality in ("state", "action"):
        for key in getattr(config, modality).modality_keys:
            d = 4 if "quat" in key else 3 if ("pos" in key or "axis" in key or "motion" in key) else 1
            widths[modality][key] = d
            stats[modality][key] = {"min": [-1.0] * d, "max": [1.0] * d, "mean": [0.0] * d, "std": [1.0] * d,
                                    "q01": [-1.0] * d, "q99": [1.0] * d}
            if modality == "action":  # per-step statistics, used when a key is relative
                stats["relative_action"][key] = {s: [list(v)] * config.action_horizon
                                                 for s, v in stats["action"][key].items()}
    processor = Gr00tProcessor({tag: config}, {tag: stats}, ProcessorSettings())
    tokenizer = load_tokenizer()
    video = {k: [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)] for k in config.video.modality_keys}
    state = {k: rng.uniform(-1, 1, (1, d)).astype(np.float32) for k, d in widths["state"].items()}
    action = {k: rng.uniform(-1, 1, (config.action_horizon, d)).astype(np.float32)
              for k, d in widths["action"].items()}
    instruction = "pick the can from the counter and place it in the sink"
    normalizer = StateActionNormalizer(config, stats, ProcessorSettings().normalization)

    def timed(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(samples):
            fn()
        return (time.perf_counter() - t0) / samples

    total = timed(lambda: collate([processor(tag, video, instruction, state, action)], tokenizer))
    sample = processor(tag, video, instruction, state, action)
    images = timed(lambda: processor(tag, video, instruction))
    tokens = timed(lambda: collate([sample], tokenizer))
    norm = timed(lambda: (normalizer.normalize_state(state), normalizer.normalize_action(action, state)))
    print(f"\nprocessing stage, {tag} sample (3 cameras at 256x256): {1 / total:.1f} samples/s")
    for name, t in (("image transforms (+ prompt text)", images), ("tokenisation + collation", tokens),
                    ("state/action normalisation", norm)):
        print(f"  {name:<36} {1000 * t:7.2f} ms  {100 * t / total:5.1f} %")


if __name__ == "__main__":
    main()
