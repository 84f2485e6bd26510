"""The simulated tasks: robosuite environments with a Panda under OSC_POSE at 20 Hz, our cameras, a
step limit per task, and the task's own success check.

robosuite and mujoco are optional (extra `sim`) and imported only when an environment is built.
Cameras are rendered here with `mujoco.Renderer` rather than robosuite's camera observations:
without shadows, reflections and skybox, and with Mesa's llvmpipe on one thread, software
rendering is about four times faster, and images come out upright.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from svms.errors import SvmsError
from svms.optional import require
from svms.sim.layout import state_vector

CONTROL_FREQ = 20
#: RoboCasa's video keys (spec §6.11) → the robosuite camera rendered for each.
CAMERAS: dict[str, str] = {
    "res256_image_side_0": "agentview",
    "res256_image_side_1": "frontview",
    "res256_image_wrist_0": "robot0_eye_in_hand",
}
@dataclass(frozen=True)
class TaskSpec:
    """One task: its robosuite environment name, step limit (20 Hz steps) and extra env arguments."""

    name: str
    max_steps: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, TaskSpec] = {
    "Lift": TaskSpec("Lift", 120),
    "Stack": TaskSpec("Stack", 200),
    "PickPlaceMilk": TaskSpec("PickPlaceMilk", 220),
    "PickPlaceBread": TaskSpec("PickPlaceBread", 220),
    "PickPlaceCereal": TaskSpec("PickPlaceCereal", 300),
    "PickPlaceCan": TaskSpec("PickPlaceCan", 220),
    # Without the latch the handle need not be turned first: a shorter, reliably scriptable task.
    "Door": TaskSpec("Door", 160, {"use_latch": False}),
}


def task_spec(name: str) -> TaskSpec:
    """The registered task `name`; an unknown name is an error listing the valid ones."""
    if name not in TASKS:
        raise SvmsError(
            f"unknown simulated task {name!r}; valid tasks are {', '.join(TASKS)} (robosuite environment names)."
        )
    return TASKS[name]


def check_cameras(cameras: Sequence[str]) -> tuple[str, ...]:
    """Validated video keys, in the canonical order of `CAMERAS`."""
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown or not cameras:
        raise SvmsError(
            f"unknown or no camera keys {unknown or list(cameras)}; choose one or more of {', '.join(CAMERAS)}."
        )
    return tuple(c for c in CAMERAS if c in cameras)


def import_simulator() -> tuple[Any, Any]:
    """(robosuite, mujoco), imported with an offscreen GL back-end (MUJOCO_GL=egl unless set)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    # llvmpipe's threads only contend with our worker processes; one per process renders fastest.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    _quiet_robosuite()
    mujoco = require("mujoco", "sim", "the simulator (mujoco<4)")
    robosuite = require("robosuite", "sim", "the simulator (robosuite 1.5.2)")
    return robosuite, mujoco


def _keep_errors(record) -> bool:
    return record.levelno >= logging.ERROR


def _quiet_robosuite() -> None:
    """Keep robosuite's errors only: at import it warns about its optional parts (private macros, robosuite_models,
    mink IK for GR1) and on every env about controller parts a Panda lacks, none of which we use. A filter, not a
    level: robosuite resets its logger's level when it sets the logger up at import."""
    logger = logging.getLogger("robosuite_logs")
    if _keep_errors not in logger.filters:
        logger.addFilter(_keep_errors)


class SimEnv:
    """A robosuite task with a fixed-base Panda: reset by seed, step with OSC_POSE actions, render
    our cameras, read the Panda-Omron state and the privileged object state the experts use."""

    def __init__(self, task: str, cameras: Sequence[str] = tuple(CAMERAS), resolution: int = 256):
        self.spec = task_spec(task)
        self.cameras = check_cameras(cameras)
        if resolution < 16 or resolution % 2:
            raise SvmsError(f"resolution {resolution} must be an even number ≥ 16 (videos are yuv420p).")
        self.resolution = resolution
        robosuite, mujoco = import_simulator()
        from robosuite.controllers import load_composite_controller_config

        controller = load_composite_controller_config(controller="BASIC", robot="Panda")
        self.env = robosuite.make(
            self.spec.name, robots="Panda", controller_configs=controller, control_freq=CONTROL_FREQ,
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
            horizon=self.spec.max_steps, ignore_done=True, hard_reset=False, **self.spec.env_kwargs,
        )
        self.env.reset()
        model = self.env.sim.model._model
        model.vis.quality.offsamples = 0
        try:
            self.renderer = mujoco.Renderer(model, resolution, resolution)
        except Exception as e:  # noqa: BLE001 — GL back-ends fail with many exception types
            raise SvmsError(
                f"offscreen rendering failed with MUJOCO_GL={os.environ['MUJOCO_GL']} ({type(e).__name__}: "
                f"{e}); try MUJOCO_GL=egl (GPU or Mesa) or MUJOCO_GL=osmesa (needs libOSMesa)."
            ) from None
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            self.renderer.scene.flags[flag] = False
        robot = self.env.robots[0]
        self._base_body = self.env.sim.model.body_name2id(robot.robot_model.root_body)
        self._eef_site = robot.eef_site_id["right"]
        self.obs: dict[str, Any] = {}
        self._last_state: np.ndarray | None = None  # the episode's previous state: quaternion signs continue it

    def reset(self, seed: int) -> dict[str, Any]:
        """Reset to the initial state drawn from `seed` (object placement and arm joint noise)."""
        rng = np.random.default_rng(seed)
        self.env.rng = rng
        _set_sampler_rng(getattr(self.env, "placement_initializer", None), rng)
        self.obs = self.env.reset()
        self._last_state = None
        return self.obs

    def step(self, env_action: np.ndarray) -> dict[str, Any]:
        """One 20 Hz control step with a robosuite OSC_POSE action (7,)."""
        self.obs, _, _, _ = self.env.step(np.asarray(env_action, np.float64))
        return self.obs

    def success(self) -> bool:
        return bool(self.env._check_success())

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World-frame end-effector (grip site) position (3,) and rotation matrix (3, 3)."""
        data = self.env.sim.data
        return data.site_xpos[self._eef_site].copy(), data.site_xmat[self._eef_site].reshape(3, 3).copy()

    def state(self) -> np.ndarray:
        """The Panda-Omron state (16,) of the current step; its quaternion keeps the sign nearer the
        previous step's (reset starts afresh), in generation and rollouts alike."""
        data = self.env.sim.data
        pos, rot = self.eef_pose()
        base_pos = data.body_xpos[self._base_body]
        base_rot = data.body_xmat[self._base_body].reshape(3, 3)
        self._last_state = state_vector(pos, rot, base_pos, base_rot, self.obs["robot0_gripper_qpos"],
                                        self._last_state)
        return self._last_state.copy()

    def render(self) -> dict[str, np.ndarray]:
        """One uint8 (H, W, 3) frame per video key."""
        data = self.env.sim.data._data
        frames = {}
        for key in self.cameras:
            self.renderer.update_scene(data, camera=CAMERAS[key])
            frames[key] = self.renderer.render().copy()
        return frames

    def close(self) -> None:
        self.renderer.close()
        self.env.close()


def _set_sampler_rng(sampler: Any, rng: np.random.Generator) -> None:
    """Placement samplers keep the rng they were built with; point them (and nested ones) at `rng`."""
    if sampler is None:
        return
    sampler.rng = rng
    for child in getattr(sampler, "samplers", {}).values():
        _set_sampler_rng(child, rng)
