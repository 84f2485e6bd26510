"""Closed-loop evaluation: run a `Policy` in the simulated tasks and report success with intervals.

As in the reference's simulation clients (spec §9.1), each predicted chunk's first
`n_action_steps` actions are executed before the policy is asked again, and an episode succeeds
if any step reports success. Episodes start from initial states the demonstrations never used
(the seeds derive from `seed`, default 1000, through a different stream than `svms sim generate`'s)
and stop at the task's step limit. Success rates carry a Wilson 95% interval, because with tens
of episodes a bare rate says little.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svms import seeding
from svms.data.lerobot.writer import write_video
from svms.errors import SvmsError
from svms.policy.protocol import Policy, batch_of_one, first_of_batch, language_key, modality_config
from svms.sim.instructions import instruction
from svms.sim.layout import ACTION_KEYS, STATE_KEYS, action_to_env, join_keys, split_keys
from svms.sim.tasks import CAMERAS, CONTROL_FREQ, TASKS, SimEnv, check_cameras, task_spec

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate; (0, 1) when there are no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rollout_seed(seed: int, task: str, index: int) -> int:
    """Initial-state seed of evaluation episode `index` (a stream disjoint from generation's)."""
    return seeding.seed_int(seed, "rollout", list(TASKS).index(task), index, bits=32)


@dataclass
class TaskResult:
    """Per task: episodes run, successes, the rate with its Wilson 95% interval, episode lengths."""

    task: str
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_length: float
    lengths: list[int]
    videos: list[str] = field(default_factory=list)
    per_episode: list[dict[str, Any]] = field(default_factory=list)  # {"seed", "success", "length"}


def _observation(env: SimEnv, text: str, language: str) -> dict[str, Any]:
    """The environment's current step in the policy contract's batched form (a batch of one)."""
    video = {key: frame[None] for key, frame in env.render().items()}
    state = {key: value[None] for key, value in split_keys(env.state(), STATE_KEYS).items()}
    return batch_of_one(video, state, text, language)


def check_embodiment(policy: Policy) -> None:
    """A policy with a modality config (a checkpoint, a server) must act in the simulated robot's keys."""
    config = modality_config(policy)
    missing = [] if config is None else [k for k in ACTION_KEYS if k not in config.action.modality_keys]
    if missing:
        raise SvmsError(f"the policy's embodiment has no action keys {missing}; the simulated Panda needs the "
                        "robocasa_panda_omron layout (train on a dataset from `svms sim generate`)")


def _check_chunk(chunk: dict[str, np.ndarray]) -> np.ndarray:
    """The chunk as (H, 12) in Panda-Omron order; a policy for another embodiment is an error."""
    bad = {k: np.shape(chunk[k]) for k in ACTION_KEYS if k in chunk and
           (np.ndim(chunk[k]) != 2 or np.shape(chunk[k])[1] != ACTION_KEYS[k])}
    missing = [k for k in ACTION_KEYS if k not in chunk]
    if missing or bad:
        raise SvmsError(
            f"the policy's actions do not fit the simulated Panda-Omron robot (missing keys {missing}, "
            f"wrong shapes {bad}); it needs the robocasa_panda_omron embodiment with action keys "
            f"{dict(ACTION_KEYS)} as (horizon, dim) chunks."
        )
    return join_keys(chunk, ACTION_KEYS)


def run_episode(env: SimEnv, policy: Policy, seed: int, text: str, n_action_steps: int = 8,
                record: bool = False) -> tuple[bool, int, list[np.ndarray]]:
    """One closed-loop episode: (success, steps, every step's frame of the first camera if `record`)."""
    env.reset(seed)
    policy.reset()
    language = language_key(policy)
    success, step, frames = False, 0, []
    while step < env.spec.max_steps and not success:
        if hasattr(policy, "set_step"):
            policy.set_step(step)
        predicted, _ = policy.get_action(_observation(env, text, language))
        chunk = _check_chunk(first_of_batch(predicted))
        for action in chunk[:n_action_steps]:
            if record:
                frames.append(env.render()[env.cameras[0]])
            env.step(action_to_env(action))
            step += 1
            success = env.success()
            if success or step >= env.spec.max_steps:
                break
    return success, step, frames


def evaluate(
    policy: Policy,
    tasks: Sequence[str] = tuple(TASKS),
    episodes: int = 10,
    seed: int = 1000,
    n_action_steps: int = 8,
    resolution: int = 256,
    cameras: Sequence[str] = tuple(CAMERAS),
    out: str | Path | None = None,
    videos_per_task: int = 2,
    progress: bool = True,
) -> list[TaskResult]:
    """Success per task over `episodes` episodes; with `out`, writes `results.json` and a few mp4s."""
    from rich.progress import Progress

    tasks = tuple(task_spec(t).name for t in dict.fromkeys(tasks))
    cameras = check_cameras(cameras)
    if episodes < 1 or n_action_steps < 1:
        raise SvmsError(f"episodes ({episodes}) and n_action_steps ({n_action_steps}) must be at least 1.")
    out = None if out is None else Path(out)
    check_embodiment(policy)
    results = []
    with Progress(disable=not progress, transient=True) as bar:
        for task in tasks:
            env = SimEnv(task, cameras, resolution)
            lengths, successes, videos, per_episode = [], 0, [], []
            for i in bar.track(range(episodes), description=f"rollout {task}"):
                seed_i = rollout_seed(seed, task, i)
                if hasattr(policy, "initial_seed"):
                    seed_i = policy.initial_seed(task, i)
                text = instruction(task, np.random.default_rng(seed_i))
                record = out is not None and i < videos_per_task
                ok, steps, frames = run_episode(env, policy, seed_i, text, n_action_steps, record)
                successes += ok
                lengths.append(steps)
                per_episode.append({"seed": int(seed_i), "success": bool(ok), "length": int(steps)})
                if record:
                    videos.append(_save_video(out / "videos" / f"{task}_{i:03d}.mp4", frames))
            env.close()
            low, high = wilson_interval(successes, episodes)
            results.append(TaskResult(task, episodes, successes, successes / episodes, (low, high),
                                      float(np.mean(lengths)), lengths, videos, per_episode))
    if out is not None:
        write_results(out / "results.json", results, {"seed": seed, "n_action_steps": n_action_steps,
                                                      "resolution": resolution})
    return results


def _save_video(path: Path, frames: list[np.ndarray]) -> str:
    write_video(path, np.stack(frames), fps=CONTROL_FREQ)
    return str(path)


def write_results(path: Path, results: list[TaskResult], settings: dict[str, Any]) -> None:
    """`results.json`: {"settings", "tasks": {task: {episodes, successes, success_rate, wilson_95,
    mean_length, lengths, videos, per_episode}}} (the format `svms eval compare` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for r in results:
        entry = asdict(r)
        entry["wilson_95"] = list(entry.pop("ci95"))
        tasks[entry.pop("task")] = entry
    content = {"settings": settings, "tasks": tasks}
    path.write_text(json.dumps(content, indent=2) + "\n")


def results_table(results: list[TaskResult], title: str = "closed-loop success"):
    """A rich table: task, successes/episodes, rate with its 95% interval, mean episode length."""
    from rich.table import Table

    table = Table("task", "success", "rate", "95% CI (Wilson)", "mean length", title=title)
    for r in results:
        table.add_row(r.task, f"{r.successes}/{r.episodes}", f"{r.success_rate:.2f}",
                      f"[{r.ci95[0]:.2f}, {r.ci95[1]:.2f}]", f"{r.mean_length:.0f}")
    return table

