"""Helpers for tests and benchmarks only (no command uses them): a servable `tiny` checkpoint with synthetic
statistics, so the server, its tests and its benchmark run without a dataset or training. The model is randomly
initialised; the statistics are made up but consistent (min ≤ q01 ≤ mean ≤ q99 ≤ max, per-step relative-action
rows), so actions come out in plausible physical ranges with the right keys and shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from svms.data.modality import MODALITY_CONFIGS, ActionRep, EmbodimentConfig
from svms.data.processor_files import run_processor, save_processor, with_tag
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.sim.layout import ACTION_KEYS, STATE_KEYS

#: Key widths of `robocasa_panda_omron` (spec §6.11), in the release's key order: the simulated robot's.
ROBOCASA_DIMS: dict[str, int] = {**STATE_KEYS, **ACTION_KEYS}


def _key_stats(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, list]:
    lo = -1.0 - rng.random(shape)
    hi = 1.0 + rng.random(shape)
    mean = (lo + hi) / 2 + 0.1 * rng.standard_normal(shape)
    return {"min": lo.tolist(), "max": hi.tolist(), "mean": mean.tolist(), "std": ((hi - lo) / 4).tolist(),
            "q01": (lo + 0.05).tolist(), "q99": (hi - 0.05).tolist()}


def synthetic_statistics(config: EmbodimentConfig, dims: Mapping[str, int], seed: int = 0) -> dict:
    """A `statistics.json` entry for `config`: `state` and `action` per key (width `dims[key]`) and, per
    relative action key, `relative_action` of shape (H_e, D)."""
    rng = np.random.default_rng(seed)
    config = config.validate()
    stats: dict[str, dict] = {"state": {}, "action": {}, "relative_action": {}}
    for key in config.state.modality_keys:
        stats["state"][key] = _key_stats(rng, (dims[key],))
    for key in config.action.modality_keys:
        stats["action"][key] = _key_stats(rng, (dims[key],))
        if config.action_config(key).rep is ActionRep.RELATIVE:
            stats["relative_action"][key] = _key_stats(rng, (config.action_horizon, dims[key]))
    return stats


def make_tiny_checkpoint(folder: str | Path, *, svms: bool = False, tag: str = "robocasa_panda_omron",
                         modality: EmbodimentConfig | None = None, dims: Mapping[str, int] = ROBOCASA_DIMS,
                         seed: int = 0) -> Path:
    """Write a randomly initialised `tiny` model (SVMS on or off) and processor files for `tag` (its registered
    modality config unless `modality` is given) to `folder`."""
    import torch

    config = Gr00tN1d6Config.preset("tiny")
    if svms:
        config = dataclasses.replace(config, use_sheaf_streams=True)
    torch.manual_seed(seed)
    Gr00tN1d6(config).save_pretrained(folder)
    modality = modality or MODALITY_CONFIGS[tag]
    fresh = run_processor(tag, config.to_dict())  # the one source of a fresh model's processing
    save_processor(with_tag(fresh, tag, modality, synthetic_statistics(modality, dims, seed)), folder)
    return Path(folder)
