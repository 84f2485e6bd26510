"""The RoboCasa Panda-Omron state(16)/action(12) layout (spec §6.11) for a fixed-base robosuite Panda.

RoboCasa's Panda sits on an Omron mobile base; robosuite's sits on a fixed mount. Writing the
simulated data in RoboCasa's layout lets one embodiment config (`robocasa_panda_omron`) serve both.
What the fixed-base robot lacks is constant: base position zeros, base rotation the identity
quaternion, base motion zeros, control mode 0 (arm mode).

Conventions (robosuite's and RoboCasa's): quaternions are (x, y, z, w), converted by scipy's
`Rotation`; within an episode each keeps the sign nearer the previous step's (an episode's first has
w ≥ 0), so consecutive quaternions have a non-negative dot product. The arm's position and
rotation actions are the OSC_POSE controller's normalised delta inputs in [-1, 1] (scaled by the
controller to at most 5 cm and 0.5 rad per step), so converting back gives exactly the command the
environment executed. `gripper_close` is 0/1 in data and thresholded at 0.5 when executed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: State keys and widths, in the order of the §6.11 table (= `MODALITY_CONFIGS["robocasa_panda_omron"]`).
STATE_KEYS: dict[str, int] = {
    "end_effector_position_relative": 3,
    "end_effector_rotation_relative": 4,
    "gripper_qpos": 2,
    "base_position": 3,
    "base_rotation": 4,
}
#: Action keys and widths, in the order of the §6.11 table.
ACTION_KEYS: dict[str, int] = {
    "end_effector_position": 3,
    "end_effector_rotation": 3,
    "gripper_close": 1,
    "base_motion": 4,
    "control_mode": 1,
}
STATE_DIM = sum(STATE_KEYS.values())  # 16
ACTION_DIM = sum(ACTION_KEYS.values())  # 12
#: robosuite's single-arm OSC_POSE action: dx, dy, dz, dax, day, daz, gripper (-1 open, +1 close).
ENV_ACTION_DIM = 7
IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])


def _slices(keys: Mapping[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for key, width in keys.items():
        out[key], start = slice(start, start + width), start + width
    return out


STATE_SLICES = _slices(STATE_KEYS)
ACTION_SLICES = _slices(ACTION_KEYS)


def _rotation():
    """scipy's `Rotation` (extra `sim`), imported when a conversion runs, so the layout constants stay
    importable without it."""
    from scipy.spatial.transform import Rotation

    return Rotation


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion (any norm) → 3×3 rotation matrix."""
    return _rotation().from_quat(np.asarray(q, np.float64)).as_matrix()


def matrix_to_quat(m: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """3×3 rotation matrix → unit (x, y, z, w) quaternion.

    q and −q are the same rotation; the sign is chosen so that a sequence stays continuous: the one
    nearer `previous` (dot product ≥ 0), or w ≥ 0 when there is no previous step (an episode's first).
    A fixed w ≥ 0 rule is no continuity rule: a top-down grasp keeps w near 0, where it flips.
    """
    q = _rotation().from_matrix(np.asarray(m, np.float64)).as_quat(canonical=True)
    if previous is not None and float(np.dot(q, previous)) < 0:
        q = -q
    return q


def continuous_quats(quats: np.ndarray) -> np.ndarray:
    """(T, 4) quaternions → the same rotations with each sign nearer the previous step's
    (consecutive dot products ≥ 0); the first keeps its sign."""
    out = np.array(quats, np.float64, copy=True)
    for t in range(1, len(out)):
        if float(np.dot(out[t], out[t - 1])) < 0:
            out[t] = -out[t]
    return out


def rotation_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """3×3 rotation matrix → axis-angle vector (angle in [0, π])."""
    return _rotation().from_matrix(np.asarray(m, np.float64)).as_rotvec()


def state_vector(
    eef_pos: np.ndarray, eef_rot: np.ndarray, base_pos: np.ndarray, base_rot: np.ndarray,
    gripper_qpos: np.ndarray, previous: np.ndarray | None = None,
) -> np.ndarray:
    """(16,) float32 state: end effector in the robot-base frame, a fixed base, finger joints.

    `eef_rot` and `base_rot` are world-frame 3×3 rotation matrices, positions world-frame metres;
    `previous` is the episode's previous state (16,), whose quaternion sign this one continues.
    """
    base_rot = np.asarray(base_rot)
    state = np.zeros(STATE_DIM, np.float32)
    state[STATE_SLICES["end_effector_position_relative"]] = base_rot.T @ (np.asarray(eef_pos) - base_pos)
    rot = STATE_SLICES["end_effector_rotation_relative"]
    state[rot] = matrix_to_quat(base_rot.T @ eef_rot, None if previous is None else previous[rot])
    state[STATE_SLICES["base_rotation"]] = IDENTITY_QUAT
    state[STATE_SLICES["gripper_qpos"]] = gripper_qpos
    return state


def action_from_env(env_action: np.ndarray) -> np.ndarray:
    """robosuite OSC_POSE action (7,) → Panda-Omron action (12,) float32 (base still, arm mode)."""
    env_action = np.asarray(env_action)
    action = np.zeros(ACTION_DIM, np.float32)
    action[ACTION_SLICES["end_effector_position"]] = env_action[0:3]
    action[ACTION_SLICES["end_effector_rotation"]] = env_action[3:6]
    action[ACTION_SLICES["gripper_close"]] = float(env_action[6] > 0)
    return action


def action_to_env(action: np.ndarray) -> np.ndarray:
    """Panda-Omron action (12,) → robosuite OSC_POSE action (7,): arm deltas clipped to [-1, 1],
    gripper closed when `gripper_close` > 0.5; base motion and control mode are ignored (fixed base)."""
    action = np.asarray(action, np.float64)
    env_action = np.empty(ENV_ACTION_DIM)
    env_action[0:3] = np.clip(action[ACTION_SLICES["end_effector_position"]], -1, 1)
    env_action[3:6] = np.clip(action[ACTION_SLICES["end_effector_rotation"]], -1, 1)
    env_action[6] = 1.0 if action[ACTION_SLICES["gripper_close"]][0] > 0.5 else -1.0
    return env_action


def split_keys(vector: np.ndarray, keys: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Concatenated vector(s) (..., D) → {key: (..., width)} in key order."""
    out, start = {}, 0
    for key, width in keys.items():
        out[key], start = vector[..., start:start + width], start + width
    return out


def join_keys(parts: Mapping[str, np.ndarray], keys: Mapping[str, int]) -> np.ndarray:
    """{key: (..., width)} → concatenated (..., D) float32 in `keys` order; a missing key is an error."""
    return np.concatenate([np.asarray(parts[key], np.float32) for key in keys], axis=-1)
