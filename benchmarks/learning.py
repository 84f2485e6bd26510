"""Does the tiny GR00T learn? Its flow-matching loss beside a plain MLP flow-matching policy on the same samples.

Both train on the default demo's data (`svms study demo`'s [data], generated into the cache if missing) with the
plan's pretraining stage: the same sample positions of the seeded data stream, the same flow-matching noise and
time of every sample (`svms.train.sampling.sample_noise`), batch, learning-rate schedule and optimizer. The MLP sees
only the state and the noisy chunk (3 layers); the tiny GR00T also sees the cameras and the instruction, so it
should do at least as well. Prints the loss per tenth of the run for both, the mean over the last 10 % of steps
and their ratio.

    .venv/bin/python benchmarks/learning.py                # the demo's pretraining length
    .venv/bin/python benchmarks/learning.py --steps 100    # shorter
    .venv/bin/python benchmarks/learning.py --retrain      # train the GR00T again even if the study cached it

Without `--steps` or `--retrain`, a pretraining run that `svms study` already cached for the plan (the same
key: bit-identical training) is read instead of trained again; its seconds per step are then not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from svms.model.action_head.projectors import bucket_sinusoid
from svms.study.jobs import expand
from svms.study.plan import load_plan
from svms.train.sampling import StepBatchSampler, micro_positions, sample_noise
from svms.train.schedules import cosine_lr

TIME_DIM = 64


class MlpFlowPolicy(nn.Module):
    """Velocity of a noisy action chunk from the state and the time bucket: a 3-layer MLP."""

    def __init__(self, state_dim: int, horizon: int, action_dim: int, width: int) -> None:
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.net = nn.Sequential(nn.Linear(state_dim + horizon * action_dim + TIME_DIM, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, horizon * action_dim))

    def forward(self, state: torch.Tensor, noisy: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        t = bucket_sinusoid(buckets, TIME_DIM)  # (B, TIME_DIM)
        x = torch.cat([state.flatten(1), noisy.flatten(1), t], dim=1)
        return self.net(x).view(-1, self.horizon, self.action_dim)


def deciles(values: list[float]) -> list[float]:
    w = max(1, len(values) // 10)
    return [sum(values[i:i + w]) / len(values[i:i + w]) for i in range(0, len(values), w)][:10]


def last_tenth(values: list[float]) -> float:
    k = max(1, math.ceil(len(values) / 10))
    return sum(values[-k:]) / k


def train_gr00t(train_args: dict, out: Path) -> tuple[list[float], float]:
    from svms.study.job import _config
    from svms.train.trainer import train

    start = time.perf_counter()
    train(_config({**train_args, "out": str(out)}))
    losses = [json.loads(line)["flow_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return losses, time.perf_counter() - start


def train_mlp(train_args: dict, width: int, out: Path) -> tuple[list[float], float]:
    """The MLP on the samples, noise and times the GR00T run drew, with its optimizer and schedule."""
    from svms.study.job import _config
    from svms.train.trainer import build_dataset, build_model

    cfg = _config({**train_args, "out": str(out)})
    model, source = build_model(cfg, None)  # for its processing settings and time sampling only
    dataset, _, processor = build_dataset(cfg, model, source)
    mc = model.config
    torch.manual_seed(cfg.seed)
    mlp = MlpFlowPolicy(mc.max_state_dim, mc.action_horizon, mc.max_action_dim, width)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sampler = StepBatchSampler(len(dataset), cfg.seed, 0, cfg.max_steps, 0, 1, cfg.global_batch_size, 1,
                               cfg.data_offset)
    warmup = math.ceil(cfg.warmup_ratio * cfg.max_steps)
    losses, start = [], time.perf_counter()
    for step, keys in enumerate(sampler, start=1):
        rows = []
        for index, position in keys:
            raw = dataset.raw_sample(index, position, video=False)
            rows.append(processor.state_action(dataset.tag, raw.state, raw.action))
        state, action, mask = (torch.as_tensor(np.stack([r[k] for r in rows]), dtype=torch.float32)
                               for k in range(3))
        positions = micro_positions(step, 0, 0, 1, cfg.global_batch_size, 1, cfg.data_offset)
        noise, t = sample_noise(positions, cfg.seed, mc.action_horizon, mc.max_action_dim, model.action_head)
        t_ = t[:, None, None]
        noisy = (1 - t_) * noise + t_ * action
        pred = mlp(state, noisy, (t * mc.num_timestep_buckets).long())
        loss = ((pred - (action - noise)) ** 2 * mask).sum() / (mask.sum() + 1e-6)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.learning_rate, cfg.max_steps, warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mlp.parameters(), cfg.max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="demo", help="a built-in plan or a TOML file with [data] and [pretrain]")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the plan's pretraining)")
    parser.add_argument("--mlp-width", type=int, default=512)
    parser.add_argument("--retrain", action="store_true", help="train the GR00T even when the study cached it")
    args = parser.parse_args()

    plan = load_plan(args.plan, check_paths=False)
    if plan.pretrain is None:
        raise SystemExit(f"plan {args.plan!r} has no [pretrain] stage to compare with")
    with tempfile.TemporaryDirectory(prefix="svms-learning-") as tmp:
        jobs = {job.name: job for job in expand(plan, Path(tmp))}
        if "data" in jobs:
            from svms.study.job import generate_data

            print(generate_data(**jobs["data"].args), flush=True)
        train_args = dict(jobs["pretrain"].args["train"])
        if args.steps is not None:
            train_args["max_steps"] = args.steps
        steps, batch = train_args["max_steps"], train_args["global_batch_size"]
        print(f"plan {plan.name}: {steps} steps at batch {batch}, learning rate {train_args['learning_rate']}, "
              f"seed {train_args['seed']}", flush=True)
        cached = Path(jobs["pretrain"].args["cache"])
        if args.steps is None and not args.retrain and (cached / "metrics.jsonl").is_file():
            print(f"tiny GR00T: the study's cached pretraining run {cached} (--retrain to train it again)")
            lines = (cached / "metrics.jsonl").read_text().splitlines()
            gr00t, gr00t_s = [json.loads(line)["flow_loss"] for line in lines], float("nan")
        else:
            gr00t, gr00t_s = train_gr00t(train_args, Path(tmp) / "gr00t")
        mlp, mlp_s = train_mlp(train_args, args.mlp_width, Path(tmp) / "mlp")

    print("\nflow-matching loss, mean per tenth of the run")
    print(f"{'model':>22} | " + " | ".join(f"{k * 10:>3}%+" for k in range(10)) + " | last 10 % | s/step")
    for name, losses, seconds in (("tiny GR00T N1.6", gr00t, gr00t_s), (f"MLP {args.mlp_width} (state only)",
                                                                         mlp, mlp_s)):
        row = " | ".join(f"{v:5.3f}" for v in deciles(losses))
        print(f"{name:>22} | {row} | {last_tenth(losses):9.3f} | {seconds / len(losses):6.3f}")
    ratio = last_tenth(gr00t) / last_tenth(mlp)
    print(f"\nratio tiny GR00T / MLP, last 10 % of steps: {ratio:.2f} "
          f"({'GR00T learns at least as well' if ratio <= 1 else 'GR00T learns slower'})")


if __name__ == "__main__":
    main()
