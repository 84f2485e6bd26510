"""The simulator's check policies: replaying a demonstration (must succeed about as often as the expert),
doing nothing and acting at random (must fail), and `load_policy`, which names them or a GR00T checkpoint.

They implement the one batched contract of `svms.policy.Policy` (batch of one here), so the rollout runs them
exactly as it runs a checkpoint or a policy server. A check policy may also define `initial_seed(task, index)`
to choose the initial state of an episode (a replay must start where its recording did) and `set_step(step)`
to be told the environment step of the next observation (a replay plays the recording from there).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from svms.data.lerobot.embodiment import DEFAULT_ACTION_HORIZON as HORIZON  # the Panda-Omron horizon (§6.11)
from svms.data.lerobot.meta import ACTION_COLUMN, load_meta
from svms.errors import SvmsError
from svms.policy import Gr00tPolicy, Policy
from svms.sim.generate import SEED_COLUMN, TASK_COLUMN
from svms.sim.layout import ACTION_DIM, ACTION_KEYS, split_keys
from svms.sim.tasks import TASKS


def _chunk(actions: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """(H, 12) Panda-Omron actions as the contract's batch of one: ({key: (1, H, D)}, info)."""
    return {k: v.astype(np.float32)[None] for k, v in split_keys(actions, ACTION_KEYS).items()}, {}


class _CheckPolicy:
    """What every check policy shares: nothing to reset."""

    def reset(self, options: Mapping[str, Any] | None = None) -> dict:
        return {}


class ZeroPolicy(_CheckPolicy):
    """Arm still, gripper open: the baseline that must never succeed."""

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        return _chunk(np.zeros((HORIZON, ACTION_DIM)))


class RandomPolicy(_CheckPolicy):
    """Uniform arm deltas in [-1, 1] and a random gripper: must fail, and exercises the whole range."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        actions = np.zeros((HORIZON, ACTION_DIM))
        actions[:, :6] = self.rng.uniform(-1, 1, (HORIZON, 6))
        actions[:, 6] = self.rng.integers(0, 2, HORIZON)
        return _chunk(actions)


class ReplayPolicy(_CheckPolicy):
    """Replays recorded demonstrations open-loop, chunk by chunk (then holds still).

    Started from a recording's own initial state (the rollout asks `initial_seed`), it must
    reproduce the demonstration: this checks layout conversion, chunking and stepping. Rollout
    episode i of a task replays that task's recording i (cycling)."""

    def __init__(self, recordings: dict[str, list[tuple[int, np.ndarray]]]):
        self.recordings = recordings  # task -> [(initial-state seed, actions (T, 12))]
        self.actions = np.zeros((0, ACTION_DIM), np.float32)
        self.step = 0

    @classmethod
    def from_dataset(cls, root: str | Path, episode: int | None = None) -> ReplayPolicy:
        """Recordings of a dataset written by `svms sim generate` (all episodes, or one)."""
        meta = load_meta(root)
        indices = [e.index for e in meta.episodes]
        if episode is not None and episode not in indices:
            raise SvmsError(f"{root}: no episode {episode}; the dataset has episodes 0..{len(indices) - 1}.")
        if SEED_COLUMN not in meta.features or meta.feature_width(ACTION_COLUMN) != ACTION_DIM:
            raise SvmsError(
                f"{root}: replay needs a dataset written by `svms sim generate` (a {SEED_COLUMN!r} column "
                f"and {ACTION_DIM}-dimensional Panda-Omron actions); generate one first."
            )
        recordings: dict[str, list[tuple[int, np.ndarray]]] = {}
        for index in indices if episode is None else [episode]:
            cols = meta.read_episode(index, [ACTION_COLUMN, SEED_COLUMN, TASK_COLUMN])
            task = list(TASKS)[int(cols[TASK_COLUMN][0])]
            recordings.setdefault(task, []).append((int(cols[SEED_COLUMN][0]), cols[ACTION_COLUMN]))
        return cls(recordings)

    def initial_seed(self, task: str, index: int) -> int:
        """Select the recording for rollout episode `index` of `task`; its initial-state seed."""
        if task not in self.recordings:
            raise SvmsError(
                f"the replayed dataset has no episode of task {task!r} (it has {', '.join(self.recordings)})."
            )
        seed, self.actions = self.recordings[task][index % len(self.recordings[task])]
        return seed

    def set_step(self, step: int) -> None:
        self.step = int(step)

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        step = self.step
        chunk = np.zeros((HORIZON, ACTION_DIM), np.float32)
        rows = self.actions[step:step + HORIZON]
        chunk[:len(rows)] = rows
        if len(rows) < HORIZON and len(self.actions):  # past the recording: hold the gripper
            chunk[len(rows):, 6] = self.actions[-1, 6]
        return _chunk(chunk)


def load_policy(checkpoint: str | Path, seed: int = 0, device: str = "auto") -> Policy:
    """The policy a `--checkpoint` names: `zero`, `random`, `replay:DATASET_DIR[:EPISODE]`, or a GR00T
    checkpoint folder (or a run folder: its newest checkpoint)."""
    spec = str(checkpoint)
    if spec == "zero":
        return ZeroPolicy()
    if spec == "random":
        return RandomPolicy(seed)
    if spec.startswith("replay:"):
        path, _, episode = spec.removeprefix("replay:").rpartition(":")
        if not path or not episode.isdigit():
            return ReplayPolicy.from_dataset(spec.removeprefix("replay:"))
        return ReplayPolicy.from_dataset(path, int(episode))
    if not Path(spec).is_dir():
        raise SvmsError(f"--checkpoint {spec!r} is neither a folder nor one of zero, random, "
                        "replay:DATASET_DIR[:EPISODE]")
    return Gr00tPolicy.from_checkpoint(spec, device=device, seed=seed)
