"""Demonstration datasets: scripted-expert episodes in parallel processes → a LeRobot v2 dataset in
the RoboCasa Panda-Omron layout (parquet, mp4, meta/, modality.json, statistics).

Determinism: episode slot i of a task tries initial states drawn from (seed, task, i, attempt)
until the expert succeeds (at most `MAX_ATTEMPTS`), so the dataset depends on the seed only, not
on the number of workers or the order in which they finish. Episodes are written task by task in
slot order. Only successful episodes are kept; the expert's success rate is reported.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svms import seeding
from svms.data.lerobot.stats_files import write_stats
from svms.data.lerobot.writer import EpisodeData, LeRobotWriter
from svms.data.modality import MODALITY_CONFIGS
from svms.errors import SvmsError
from svms.sim.experts import ScriptedExpert
from svms.sim.instructions import instruction
from svms.sim.layout import ACTION_KEYS, STATE_KEYS, action_from_env
from svms.sim.tasks import CAMERAS, CONTROL_FREQ, TASKS, SimEnv, check_cameras, task_spec

EMBODIMENT_TAG = "robocasa_panda_omron"
LANGUAGE_KEY = "annotation.human.action.task_description"
MAX_ATTEMPTS = 20
#: Extra parquet columns (int64, constant per episode) that let a replay restart a recording.
SEED_COLUMN, TASK_COLUMN = "sim.seed", "sim.task_index"
#: info.json's "created_by": `--overwrite` replaces only a dataset that says so (and holds nothing else).
CREATED_BY = "svms sim generate"
#: Steps an episode continues once the task first succeeds, so that it ends in a settled state.
HOLD_STEPS = 5


@dataclass
class Demonstration:
    """One recorded expert episode: state (T, 16), action (T, 12), frames per video key, instruction."""

    task: str
    seed: int
    instruction: str
    state: np.ndarray
    action: np.ndarray
    frames: dict[str, np.ndarray]
    success: bool


@dataclass
class GenerationReport:
    """What `generate` did: kept episodes and expert attempts per task, and the wall time."""

    out: Path
    episodes: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def success_rate(self, task: str) -> float:
        return self.episodes[task] / max(1, self.attempts[task])

    @property
    def episodes_per_minute(self) -> float:
        return sum(self.episodes.values()) / max(self.seconds, 1e-9) * 60


def embodiment_config(cameras: Sequence[str]):
    """The `robocasa_panda_omron` modality config reading the cameras that were rendered."""
    import dataclasses

    config = MODALITY_CONFIGS[EMBODIMENT_TAG]
    return dataclasses.replace(config, video=dataclasses.replace(config.video, modality_keys=tuple(cameras)))


def episode_seed(seed: int, task: str, slot: int, attempt: int) -> int:
    """The initial-state seed of one attempt; distinct for every (seed, task, slot, attempt)."""
    task_id = list(TASKS).index(task)
    return seeding.seed_int(seed, "episode", task_id, slot, attempt, bits=32)


def demonstrate(env: SimEnv, seed: int) -> Demonstration:
    """Run the expert from the initial state of `seed`, recording observations and actions."""
    env.reset(seed)
    expert = ScriptedExpert(env, np.random.default_rng(seed))
    text = instruction(env.spec.name, np.random.default_rng(seed))  # as the rollout draws it
    states, actions, frames = [], [], {k: [] for k in env.cameras}
    held = 0
    for _ in range(env.spec.max_steps):
        states.append(env.state())
        for key, frame in env.render().items():
            frames[key].append(frame)
        env_action = expert.act()
        actions.append(action_from_env(env_action))
        env.step(env_action)
        held = held + 1 if env.success() else 0
        if held >= HOLD_STEPS:
            break
    return Demonstration(env.spec.name, seed, text, np.stack(states), np.stack(actions),
                         {k: np.stack(v) for k, v in frames.items()}, held > 0)


_ENVS: dict[tuple, SimEnv] = {}


def _env(task: str, cameras: tuple[str, ...], resolution: int) -> SimEnv:
    """One environment per (task, cameras, resolution) and process, reused across episodes."""
    key = (task, cameras, resolution)
    if key not in _ENVS:
        _ENVS[key] = SimEnv(task, cameras, resolution)
    return _ENVS[key]


def _slot(job: tuple[str, int, int, tuple[str, ...], int]) -> tuple[str, int, Demonstration | None, int]:
    """Attempts for one episode slot until the expert succeeds: (task, slot, episode or None, attempts)."""
    task, slot, seed, cameras, resolution = job
    env = _env(task, cameras, resolution)
    for attempt in range(MAX_ATTEMPTS):
        demo = demonstrate(env, episode_seed(seed, task, slot, attempt))
        if demo.success:
            return task, slot, demo, attempt + 1
    return task, slot, None, MAX_ATTEMPTS


def generate(
    out: str | Path,
    tasks: Sequence[str] = tuple(TASKS),
    episodes: int = 10,
    seed: int = 0,
    resolution: int = 256,
    workers: int = 2,
    cameras: Sequence[str] = tuple(CAMERAS),
    overwrite: bool = False,
    progress: bool = True,
    heldout: int = 0,
) -> GenerationReport:
    """Generate `episodes` successful demonstrations per task into a new dataset folder `out`; the last
    `heldout` episodes of every task form the "heldout" split of info.json, the rest "train". With
    `overwrite`, a dataset this function wrote at `out` is replaced; any other non-empty folder is refused."""
    from rich.progress import Progress

    tasks = tuple(task_spec(t).name for t in dict.fromkeys(tasks))
    cameras = check_cameras(cameras)
    if episodes < 1 or workers < 1:
        raise SvmsError(f"episodes ({episodes}) and workers ({workers}) must both be at least 1.")
    writer = LeRobotWriter(out, CONTROL_FREQ, STATE_KEYS, ACTION_KEYS, cameras, language_key=LANGUAGE_KEY,
                           robot_type="panda_omron_sim", overwrite=overwrite, created_by=CREATED_BY)
    jobs = [(task, slot, seed, cameras, resolution) for task in tasks for slot in range(episodes)]
    report = GenerationReport(Path(out), dict.fromkeys(tasks, 0), dict.fromkeys(tasks, 0))
    start = time.perf_counter()
    position = {job[:2]: i for i, job in enumerate(jobs)}
    pending: dict[int, tuple[str, int, Demonstration | None, int]] = {}
    next_job = 0
    written: dict[str, list[int]] = {t: [] for t in tasks}
    with Progress(disable=not progress, transient=True) as bar:
        bar_task = bar.add_task("generating episodes", total=len(jobs))
        for result in _run(jobs, workers):
            pending[position[result[:2]]] = result
            while next_job in pending:  # write in slot order whatever order workers finish in
                task, _, demo, attempts = pending.pop(next_job)
                report.attempts[task] += attempts
                if demo is not None:
                    report.episodes[task] += 1
                    n = len(demo.state)
                    extra = {SEED_COLUMN: np.full(n, demo.seed, np.int64),
                             TASK_COLUMN: np.full(n, list(TASKS).index(task), np.int64)}
                    written[task].append(
                        writer.add_episode(EpisodeData(demo.state, demo.action, demo.frames, demo.instruction, extra)))
                next_job += 1
            bar.advance(bar_task)
    if not any(report.episodes.values()):
        raise SvmsError(f"the experts failed every attempt for {', '.join(tasks)}; no dataset was written.")
    held = [i for indices in written.values() for i in indices[len(indices) - heldout:]] if heldout > 0 else []
    writer.finish(stats=False, heldout=held)
    write_stats(out, EMBODIMENT_TAG, embodiment_config(cameras))
    report.seconds = time.perf_counter() - start
    return report


def _run(jobs: list, workers: int):
    """Results of `_slot` over jobs, in completion order; in-process when one worker suffices."""
    if workers == 1 or len(jobs) == 1:
        try:
            yield from map(_slot, jobs)
        finally:  # close GL contexts now: at interpreter exit EGL is gone and teardown spews errors
            for env in _ENVS.values():
                env.close()
            _ENVS.clear()
        return
    # spawn, not fork: a forked GL context (EGL) is not safe to use in the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_slot, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
