"""What closed-loop evaluation runs: any object with the small `Policy` protocol, and three policies
that check the harness itself — replaying a demonstration (must succeed about as often as the
expert), doing nothing and acting at random (must fail).

Observation (one environment, no batch axis): every video key → uint8 (T, H, W, 3), every state
key → float32 (T, D_key), `INSTRUCTION_KEY` → the instruction string and `STEP_KEY` → the
step index; T = 1 here. A policy may also define `initial_seed(task, index)` to choose the
initial state of an episode (a replay must start where its recording did). The policy
returns, per action key, a float32 chunk (H, D_key) in physical units; the rollout executes the
first `n_action_steps` rows and asks again (spec §9.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from svms.errors import SvmsError
from svms.sim.layout import ACTION_DIM, ACTION_KEYS, split_keys

INSTRUCTION_KEY = "annotation.human.action.task_description"
STEP_KEY = "step"  # the environment step of the observation (an int), for open-loop replays
HORIZON = 16  # the Panda-Omron action horizon (spec §6.11)


@runtime_checkable
class Policy(Protocol):
    """Observation dict in, action-chunk dict out; `reset` is called before every episode."""

    def reset(self) -> None: ...

    def get_action(self, observation: dict[str, Any]) -> dict[str, np.ndarray]: ...


def _chunk(actions: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in split_keys(actions, ACTION_KEYS).items()}


class ZeroPolicy:
    """Arm still, gripper open: the baseline that must never succeed."""

    def reset(self) -> None:
        pass

    def get_action(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        return _chunk(np.zeros((HORIZON, ACTION_DIM)))


class RandomPolicy:
    """Uniform arm deltas in [-1, 1] and a random gripper: must fail, and exercises the whole range."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def get_action(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        actions = np.zeros((HORIZON, ACTION_DIM))
        actions[:, :6] = self.rng.uniform(-1, 1, (HORIZON, 6))
        actions[:, 6] = self.rng.integers(0, 2, HORIZON)
        return _chunk(actions)


class ReplayPolicy:
    """Replays recorded demonstrations open-loop, chunk by chunk (then holds still).

    Started from a recording's own initial state (the rollout asks `initial_seed`), it must
    reproduce the demonstration: this checks layout conversion, chunking and stepping. Rollout
    episode i of a task replays that task's recording i (cycling)."""

    def __init__(self, recordings: dict[str, list[tuple[int, np.ndarray]]]):
        self.recordings = recordings  # task -> [(initial-state seed, actions (T, 12))]
        self.actions = np.zeros((0, ACTION_DIM), np.float32)

    @classmethod
    def from_dataset(cls, root: str | Path, episode: int | None = None) -> ReplayPolicy:
        """Recordings of a dataset written by `svms sim generate` (all episodes, or one)."""
        from svms.data.lerobot.meta import ACTION_COLUMN, load_meta
        from svms.sim.generate import SEED_COLUMN, TASK_COLUMN
        from svms.sim.tasks import TASKS

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

    def reset(self) -> None:
        pass

    def get_action(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        step = int(observation[STEP_KEY])
        chunk = np.zeros((HORIZON, ACTION_DIM), np.float32)
        rows = self.actions[step:step + HORIZON]
        chunk[:len(rows)] = rows
        if len(rows) < HORIZON and len(self.actions):  # past the recording: hold the gripper
            chunk[len(rows):, 6] = self.actions[-1, 6]
        return _chunk(chunk)


class CheckpointPolicy:
    """A trained GR00T checkpoint (`svms.eval.policy.Gr00tPolicy`) behind the rollout's protocol:
    one unbatched observation in, one action chunk per key out (physical units)."""

    def __init__(self, policy) -> None:
        self.policy = policy
        config = policy.get_modality_config()
        self.cameras = tuple(config.video.modality_keys)
        missing = [k for k in ACTION_KEYS if k not in config.action.modality_keys]
        if missing:
            raise SvmsError(f"the policy's embodiment has no action keys {missing}; the "
                            "simulated Panda needs the robocasa_panda_omron layout (train on a dataset from "
                            "`svms sim generate`)")

    def reset(self) -> None:
        self.policy.reset()

    def get_action(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        config = self.policy.get_modality_config()
        batched = {
            "video": {k: np.asarray(observation[k])[None] for k in config.video.modality_keys},
            "state": {k: np.asarray(observation[k], np.float32)[None] for k in config.state.modality_keys},
            "language": {self.policy.language_key: [[observation[INSTRUCTION_KEY]]]},
        }
        action, _ = self.policy.get_action(batched)
        return {k: v[0] for k, v in action.items()}


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
    from svms.eval.policy import Gr00tPolicy

    return CheckpointPolicy(Gr00tPolicy.from_checkpoint(spec, device=device, seed=seed))
