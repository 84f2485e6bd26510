"""The one seeding scheme: distinct (seed, stream, index) triples never share a generator."""

from __future__ import annotations

import pytest
import torch

from svms import seeding
from svms.train.sampling import epoch_permutation, sample_noise


class _Head:
    def sample_time(self, n, device, generator):
        return torch.rand(n, generator=generator, device=device)


def test_positions_of_one_seed_never_replay_another_seeds_noise():
    # the old scheme seeded sample p of seed s with s * 1_000_003 + p: seed 0 at 1_000_003 was seed 1 at 0
    a, ta = sample_noise([1_000_003], seed=0, horizon=4, action_dim=3, head=_Head())
    b, tb = sample_noise([0], seed=1, horizon=4, action_dim=3, head=_Head())
    assert not torch.equal(a, b) and not torch.equal(ta, tb)
    again, _ = sample_noise([1_000_003], seed=0, horizon=4, action_dim=3, head=_Head())
    assert torch.equal(a, again)  # and the same position of the same seed is the same draw


def test_streams_at_the_same_index_differ():
    draws = {stream: seeding.rng(0, stream, 5).integers(0, 2**62) for stream in seeding.STREAMS}
    assert len(set(draws.values())) == len(seeding.STREAMS)
    assert seeding.seed_int(0, "order", 5) != seeding.seed_int(0, "augment", 5)
    # an epoch's data order is not the augmentation stream of the sample with the epoch's number
    assert epoch_permutation(50, 5, seed=0).tolist() != seeding.rng(0, "augment", 5).permutation(50).tolist()


def test_index_tuples_do_not_alias():
    assert seeding.seed_int(1, "episode", 2, 3) != seeding.seed_int(1, "episode", 23)
    assert seeding.seed_int(12, "episode", 3) != seeding.seed_int(1, "episode", 23)


def test_seed_widths_and_errors():
    assert 0 <= seeding.seed_int(7, "rollout", 0, 1, bits=32) < 2**32
    assert 0 <= seeding.seed_int(7, "noise", 0) < 2**63
    torch.Generator().manual_seed(seeding.seed_int(2**40, "noise", 2**40))  # torch accepts every 63-bit seed
    with pytest.raises(KeyError, match="unknown random stream 'nosie'"):
        seeding.rng(0, "nosie", 1)
    with pytest.raises(ValueError, match="32 or 63"):
        seeding.seed_int(0, "noise", 1, bits=16)
