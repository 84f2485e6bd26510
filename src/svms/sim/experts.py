"""Scripted experts: privileged object state → waypoints → OSC_POSE delta actions.

Each task's expert is a list of phases. A phase names a target for the grip site (a function of
the current privileged state, so a moving object is tracked), the gripper command, and when it
ends (target reached within a tolerance, or a fixed number of steps for closing/opening the
gripper). The controller is proportional in position and orientation, with the step size capped,
and the gripper keeps pointing down with a yaw chosen from the object's. A bounded random jitter
on grasp points and speeds (drawn from the episode's seed) varies the demonstrations beyond the
environment's own randomised initial state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from svms.sim.layout import quat_to_matrix, rotation_to_axis_angle
from svms.sim.tasks import SimEnv

POS_SCALE = 0.05  # metres per unit of OSC_POSE position input
ROT_SCALE = 0.5  # radians per unit of OSC_POSE rotation input
GRIP_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # home grip-site rotation: fingers down
OPEN, CLOSE = -1.0, 1.0


@dataclass
class Phase:
    """Move the grip site to `target(env)` with yaw `yaw(env)` holding `gripper`; done when within
    `tol` metres, or after `steps` steps when `steps` is set (gripper actuation, settling). A phase
    never lasts more than `limit` steps: a stuck expert moves on and its episode fails the check."""

    target: Callable[[SimEnv], np.ndarray]
    gripper: float
    tol: float = 0.01
    steps: int | None = None
    speed: float = 1.0
    limit: int = 60


def _rz(yaw: float) -> np.ndarray:
    """Rotation about the world z axis by `yaw` (3×3)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("z", yaw).as_matrix()


def _yaw_of(quat_xyzw: np.ndarray) -> float:
    """Heading (yaw) of an object's x axis in the world xy plane."""
    m = quat_to_matrix(quat_xyzw)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def _closest_yaw(object_yaw: float, symmetry: float, current: float = 0.0) -> float:
    """The grasp yaw equivalent to `object_yaw` under a `symmetry` period that turns the wrist least."""
    k = np.round((current - object_yaw) / symmetry)
    return float(object_yaw + k * symmetry)


class ScriptedExpert:
    """Follows a task's phases; `act()` returns the next OSC_POSE action (7,) or None when done."""

    def __init__(self, env: SimEnv, rng: np.random.Generator):
        self.env, self.rng = env, rng
        self.phases, self.yaw = PLANS[env.spec.name](env, rng)
        self.index, self.count = 0, 0
        self.max_speed = float(rng.uniform(0.5, 0.8))

    @property
    def done(self) -> bool:
        return self.index >= len(self.phases)

    def act(self) -> np.ndarray:
        """The action for the current step (the last phase's hold once all phases are done)."""
        phase = self.phases[min(self.index, len(self.phases) - 1)]
        pos, rot = self.env.eef_pose()
        error = phase.target(self.env) - pos
        if not self.done:
            self.count += 1
            reached = self.count >= phase.steps if phase.steps else np.linalg.norm(error) < phase.tol
            finished = reached or self.count >= phase.limit
            if finished:
                self.index, self.count = self.index + 1, 0
        move = error / POS_SCALE * 2.0
        cap = self.max_speed * phase.speed
        norm = np.linalg.norm(move)
        if norm > cap:
            move *= cap / norm
        target_rot = _rz(self.yaw) @ GRIP_DOWN
        turn = np.clip(rotation_to_axis_angle(target_rot @ rot.T) / ROT_SCALE * 2.0, -1, 1)
        return np.concatenate([move, turn, [phase.gripper]])


def _pos(name: str) -> Callable[[SimEnv], np.ndarray]:
    return lambda env: np.asarray(env.obs[f"{name}_pos"], np.float64)


def _offset(f: Callable[[SimEnv], np.ndarray], delta) -> Callable[[SimEnv], np.ndarray]:
    delta = np.asarray(delta, np.float64)
    return lambda env: f(env) + delta


def _fixed(point) -> Callable[[SimEnv], np.ndarray]:
    point = np.asarray(point, np.float64)
    return lambda env: point


def _pick(obj: Callable[[SimEnv], np.ndarray], grasp_dz: float, rng) -> list[Phase]:
    """Above the object, down to the grasp point, close, lift."""
    jitter = np.append(rng.uniform(-0.005, 0.005, 2), rng.uniform(-0.005, 0.005))
    grasp = _offset(obj, jitter + [0, 0, grasp_dz])
    return [
        Phase(_offset(grasp, [0, 0, 0.10]), OPEN, tol=0.02),
        Phase(grasp, OPEN, tol=0.008, speed=0.5),
        Phase(grasp, CLOSE, steps=8),
    ]


def _plan_lift(env: SimEnv, rng) -> tuple[list[Phase], float]:
    cube = _pos("cube")
    yaw = _closest_yaw(_yaw_of(env.obs["cube_quat"]), np.pi / 2)
    lift = rng.uniform(0.10, 0.15)
    phases = _pick(cube, 0.0, rng)
    start = None

    def up(e: SimEnv) -> np.ndarray:
        nonlocal start
        if start is None:
            start = e.eef_pose()[0]
        return start + [0, 0, lift]

    return [*phases, Phase(up, CLOSE, tol=0.02), Phase(up, CLOSE, steps=5)], yaw


def _carry(obj: Callable[[SimEnv], np.ndarray], dest: Callable[[SimEnv], np.ndarray]):
    """Grip-site target that brings the held object (not the grip site) to `dest`."""
    return lambda env: dest(env) + (env.eef_pose()[0] - obj(env))


def _release(obj, dest, place_dz: float, travel_z: float) -> list[Phase]:
    """Carry a held object at `travel_z`, lower it to `place_dz` above `dest`, open, back off upwards."""
    def above(env: SimEnv) -> np.ndarray:
        p = dest(env)
        return np.array([p[0], p[1], travel_z])

    rise = _carry(obj, lambda env: np.append(obj(env)[:2], travel_z))
    place = _carry(obj, _offset(dest, [0, 0, place_dz]))
    return [
        Phase(rise, CLOSE, tol=0.02),
        Phase(_carry(obj, above), CLOSE, tol=0.015),
        Phase(place, CLOSE, tol=0.01, speed=0.6),
        Phase(place, OPEN, steps=6),
        Phase(lambda env: np.append(env.eef_pose()[0][:2], travel_z + 0.05), OPEN, tol=0.03),
    ]


def _plan_stack(env: SimEnv, rng) -> tuple[list[Phase], float]:
    a, b = _pos("cubeA"), _pos("cubeB")
    yaw = _closest_yaw(_yaw_of(env.obs["cubeA_quat"]), np.pi / 2)
    return [*_pick(a, 0.0, rng), *_release(a, b, 0.05, 0.95)], yaw


#: PickPlace objects: grasp height above the object's origin, yaw offset of the grasp to the
#: object's yaw, its symmetry period (the can is round: any yaw), and the carrying height (the
#: tall cereal box must clear the bin walls).
PICK_PLACE = {"Milk": (0.02, np.pi / 2, np.pi, 1.0), "Bread": (0.0, np.pi / 2, np.pi, 1.0),
              "Cereal": (0.03, 0.0, np.pi, 1.1), "Can": (0.0, 0.0, None, 1.0)}


def _plan_pick_place(env: SimEnv, rng) -> tuple[list[Phase], float]:
    name = env.spec.name.removeprefix("PickPlace")
    dz, yaw_offset, symmetry, travel_z = PICK_PLACE[name]
    obj = _pos(name)
    yaw = 0.0 if symmetry is None else _closest_yaw(_yaw_of(env.obs[f"{name}_quat"]) + yaw_offset, symmetry)
    target = env.env.target_bin_placements[env.env.object_to_id[name.lower()]].copy()
    if target[1] > 0.3:  # the far quadrants' centres are out of reach; aim at their near half
        target[1] -= 0.05
    dest = _fixed(np.append(target[:2] + rng.uniform(-0.015, 0.015, 2), target[2]))
    return [*_pick(obj, dz, rng), *_release(obj, dest, 0.12, travel_z)], yaw


def _plan_door(env: SimEnv, rng) -> tuple[list[Phase], float]:
    """Hook the closed fingers between the handle bar and the door panel, then pull along the
    door's arc (the hand is too wide to grasp the bar without hitting the panel)."""
    sim = env.env.sim
    hinge = sim.data.xanchor[sim.model.joint_name2id("Door_hinge")][:2].copy()
    depth = rng.uniform(0.04, 0.05)  # from the handle's centre line towards the panel

    def tangent(env: SimEnv) -> np.ndarray:
        r = env.obs["handle_pos"][:2] - hinge
        return np.array([-r[1], r[0]]) / np.linalg.norm(r)

    def hook(env: SimEnv) -> np.ndarray:
        return np.append(env.obs["handle_pos"][:2] - depth * tangent(env), env.obs["handle_pos"][2])

    return [
        Phase(_offset(hook, [0, 0, 0.08]), CLOSE, tol=0.015),
        Phase(hook, CLOSE, tol=0.01, speed=0.5),
        Phase(lambda env: hook(env) + np.append(0.06 * tangent(env), 0), CLOSE, steps=50, speed=0.6),
    ], np.pi / 2


PLANS: dict[str, Callable[[SimEnv, np.random.Generator], tuple[list[Phase], float]]] = {
    "Lift": _plan_lift,
    "Stack": _plan_stack,
    **{f"PickPlace{name}": _plan_pick_place for name in PICK_PLACE},
    "Door": _plan_door,
}
