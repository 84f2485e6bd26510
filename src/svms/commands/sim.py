"""`svms sim generate` and `svms sim rollout`: simulated RoboCasa-style data and closed-loop success."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ALL_TASKS = ("Lift", "Stack", "PickPlaceMilk", "PickPlaceBread", "PickPlaceCereal", "PickPlaceCan", "Door")
ALL_CAMERAS = ("res256_image_side_0", "res256_image_side_1", "res256_image_wrist_0")


@dataclass
class SimGenerate:
    """Generate scripted-expert demonstrations in robosuite as a LeRobot v2 dataset in the RoboCasa
    Panda-Omron layout (embodiment robocasa_panda_omron), with modality.json and statistics.

    Only successful episodes are kept; the expert's success rate per task is printed. The same
    seed gives the same dataset whatever the number of workers. Needs the `sim` extra.
    """

    out: Path
    """new dataset folder (must not exist or be empty, unless --overwrite)"""
    tasks: tuple[str, ...] = ALL_TASKS
    """robosuite environment names"""
    episodes: int = 10
    """successful episodes per task"""
    seed: int = 0
    """seed of the initial states, expert jitter and instructions"""
    resolution: int = 256
    """camera frames are resolution x resolution (even; 64 is fast on a CPU)"""
    workers: int = 2
    """parallel simulator processes"""
    cameras: tuple[str, ...] = ALL_CAMERAS
    """video keys to render: side_0 = agentview, side_1 = frontview, wrist_0 = eye-in-hand"""
    overwrite: bool = False
    """replace a dataset `svms sim generate` wrote at --out (its meta/info.json says so); any other folder is refused"""
    heldout: int = 0
    """last episodes of every task put in the "heldout" split (the rest form "train")"""

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        from svms.sim.generate import generate

        report = generate(self.out, self.tasks, self.episodes, self.seed, self.resolution, self.workers,
                          self.cameras, overwrite=self.overwrite, heldout=self.heldout)
        table = Table("task", "episodes", "expert attempts", "expert success",
                      title=f"{report.out} ({report.episodes_per_minute:.1f} episodes/min)")
        for task, kept in report.episodes.items():
            table.add_row(task, str(kept), str(report.attempts[task]), f"{report.success_rate(task):.0%}")
        Console().print(table)
        return 0


@dataclass
class SimRollout:
    """Evaluate a policy closed-loop in the simulated tasks: success per task with a Wilson 95%
    interval and mean episode length, on initial states the demonstrations did not use.

    Each predicted action chunk's first --n-action-steps actions are executed, then the policy is
    queried again. --checkpoint is a checkpoint folder or a pseudo-checkpoint for checking the
    harness: zero, random, or replay:DATASET_DIR[:EPISODE]. Needs the `sim` extra.
    """

    checkpoint: str | None = None
    """checkpoint folder, or zero | random | replay:DATASET_DIR[:EPISODE]"""
    server: str | None = None
    """HOST:PORT of a GR00T policy server (ours, or NVIDIA's of either era) instead of --checkpoint"""
    wire: Literal["auto", "npsave", "msgpack-numpy"] = "auto"
    """--server array form: auto (settle on the server's era), npsave (N1.6 era) or msgpack-numpy (current)"""
    sim_wrapper: bool = False
    """--server runs GR00T's simulation wrapper (flat video.<key> / state.<key> observations)"""
    api_token: str | None = None
    """--server's API token (sent in every request)"""
    tasks: tuple[str, ...] = ALL_TASKS
    """robosuite environment names"""
    episodes: int = 10
    """episodes per task"""
    seed: int = 1000
    """seed of the evaluation initial states (a stream disjoint from generation's)"""
    n_action_steps: int = 8
    """actions executed from each chunk before re-planning (the reference uses 8 for RoboCasa)"""
    resolution: int = 256
    """camera frames the policy sees (resolution x resolution)"""
    cameras: tuple[str, ...] | None = None
    """video keys rendered for the policy (default: the checkpoint's cameras, else all three)"""
    out: Path | None = None
    """folder for results.json and a few episode videos (videos/*.mp4)"""
    videos_per_task: int = 2
    """episodes per task saved as mp4 when --out is given"""
    device: str = "auto"
    """where a checkpoint policy runs: auto, cpu or cuda"""

    def run(self) -> int:
        from rich.console import Console

        from svms.errors import SvmsError
        from svms.policy.protocol import cameras as policy_cameras
        from svms.sim.check_policies import load_policy
        from svms.sim.rollout import evaluate, results_table

        if (self.checkpoint is None) == (self.server is None):
            raise SvmsError("pass either --checkpoint or --server HOST:PORT (exactly one)")
        if self.server is not None:
            from svms.policy.remote import PolicyClient, parse_address

            policy = PolicyClient(*parse_address(self.server), wire=self.wire, sim_wrapper=self.sim_wrapper,
                                  api_token=self.api_token)
        else:
            policy = load_policy(self.checkpoint, seed=self.seed, device=self.device)
        cameras = self.cameras or policy_cameras(policy) or ALL_CAMERAS
        results = evaluate(policy, self.tasks, self.episodes, self.seed, self.n_action_steps, self.resolution,
                           cameras, self.out, self.videos_per_task)
        Console().print(results_table(results, title=f"closed-loop success: {self.checkpoint or self.server}"))
        return 0
