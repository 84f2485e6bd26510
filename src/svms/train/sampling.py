"""Deterministic data order and per-sample noise, so runs resume exactly and split across processes.

Sample position p (0, 1, 2, ...) is the p-th sample of the seeded data stream: optimizer step s (from 1)
with global batch G takes positions o+(s-1)G ... o+sG-1 (o = the run's data offset, 0 unless a phase goes
on where a previous one stopped), micro-batch m of process r the slice m*(W*b) + r*b ... + b
(W processes, b per-process micro-batch). Position p maps to dataset index
perm_e[p mod N] with perm_e a seeded permutation of epoch e = p // N. The flow-matching noise and time
of a sample are drawn from a generator seeded by (seed, p), so they do not depend on how the batch
is split; one process and two processes at the same global batch see the same samples and noise.
The sampler hands the dataset `(index, p)` pairs, so the dataset's own random choices (the train
image transform, the instruction of a multi-task episode) are seeded by (seed, p) too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from svms import seeding


def epoch_permutation(n: int, epoch: int, seed: int) -> np.ndarray:
    return seeding.rng(seed, "order", epoch).permutation(n)


def micro_positions(step: int, micro: int, rank: int, world: int, per_process: int,
                    accumulation: int, offset: int = 0) -> list[int]:
    """Sample positions of micro-batch `micro` of process `rank` at optimizer step `step` (1-based)."""
    global_batch = per_process * world * accumulation
    start = offset + (step - 1) * global_batch + micro * per_process * world + rank * per_process
    return list(range(start, start + per_process))


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """(dataset index, sample position) pairs of every micro-batch of this process, from step
    `start_step + 1` to `max_steps`; the dataset takes them as keys (`dataset[(index, position)]`)."""

    def __init__(self, n: int, seed: int, start_step: int, max_steps: int, rank: int, world: int,
                 per_process: int, accumulation: int, offset: int = 0) -> None:
        self.n, self.seed, self.offset = n, seed, offset
        self.start_step, self.max_steps = start_step, max_steps
        self.rank, self.world = rank, world
        self.per_process, self.accumulation = per_process, accumulation
        self._perms: dict[int, np.ndarray] = {}

    def index(self, position: int) -> int:
        epoch = position // self.n
        if epoch not in self._perms:
            self._perms = {epoch: epoch_permutation(self.n, epoch, self.seed)}
        return int(self._perms[epoch][position % self.n])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step + 1, self.max_steps + 1):
            for micro in range(self.accumulation):
                positions = micro_positions(step, micro, self.rank, self.world, self.per_process,
                                            self.accumulation, self.offset)
                yield [(self.index(p), p) for p in positions]

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accumulation


def sample_noise(positions: list[int], seed: int, horizon: int, action_dim: int, head) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(noise (B, H, A), t (B,)) for the samples at `positions`, each from its own seeded generator."""
    noises, times = [], []
    for p in positions:
        gen = seeding.torch_generator(seed, "noise", p)
        noises.append(torch.randn(horizon, action_dim, generator=gen))
        times.append(head.sample_time(1, torch.device("cpu"), generator=gen))
    return torch.stack(noises), torch.cat(times)


class SyntheticDataset(Dataset):
    """Random but fixed per-index samples of a model's `dummy_batch` (smoke tests and benchmarks only:
    they exercise the training machinery, not learning)."""

    def __init__(self, model, size: int = 64, image_size: int = 56) -> None:
        self.model, self.size, self.image_size = model, size, image_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key  # the position does not matter here
        batch = self.model.dummy_batch(1, image_size=self.image_size, seed=index)
        return {k: (v.cpu() if torch.is_tensor(v) else [x.cpu() for x in v]) for k, v in batch.items()}

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            out[key] = [x for v in values for x in v] if isinstance(values[0], list) else torch.cat(values)
        return out
