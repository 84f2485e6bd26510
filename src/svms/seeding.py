"""The one seeding scheme: every random stream of a run is numpy's `SeedSequence` of (seed, *index) with the
stream's own spawn key, so no two (seed, stream, index) triples share a generator.

A leaf module (imports nothing of ours), used by data generation, sampling, augmentation and evaluation.
Schemes such as `seed * K + position` collide (seed 0 at position K draws seed 1's noise at position 0);
entropy lists without a stream id collide across streams (the data order of epoch 5 and the augmentation of
sample 5). Keys of `STREAMS` never change meaning: a stream's number is part of every seed it makes.
"""

from __future__ import annotations

import numpy as np
import torch

#: stream name → spawn key. `rollout` keeps the number the evaluation episodes always had.
STREAMS: dict[str, int] = {"rollout": 1, "episode": 2, "order": 3, "noise": 4, "augment": 5, "dropout": 6}


def seed_sequence(seed: int, stream: str, *index: int) -> np.random.SeedSequence:
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; the streams are {sorted(STREAMS)}")
    return np.random.SeedSequence([int(seed), *(int(i) for i in index)], spawn_key=(STREAMS[stream],))


def rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """A numpy generator of one stream at one index (e.g. the augmentation of sample position p)."""
    return np.random.default_rng(seed_sequence(seed, stream, *index))


def seed_int(seed: int, stream: str, *index: int, bits: int = 63) -> int:
    """A non-negative integer seed of one stream at one index: 32 bits for simulators and numpy's legacy
    seeding (which refuse more), 63 for torch."""
    if bits == 32:
        return int(seed_sequence(seed, stream, *index).generate_state(1, np.uint32)[0])
    if bits == 63:
        return int(seed_sequence(seed, stream, *index).generate_state(1, np.uint64)[0] >> np.uint64(1))
    raise ValueError(f"bits must be 32 or 63, not {bits}")


def torch_generator(seed: int, stream: str, *index: int) -> torch.Generator:
    """A CPU torch generator of one stream at one index (e.g. the flow-matching noise of sample position p)."""
    return torch.Generator().manual_seed(seed_int(seed, stream, *index))
