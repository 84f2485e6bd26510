"""Rotations in `svms.sim` (issue 15): conversions exact at half-turns, quaternions continuous within an
episode (consecutive dot products ≥ 0), in the conversion functions and in a generated episode."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from svms.sim import layout

pytest.importorskip("scipy")
HAS_SIM = importlib.util.find_spec("robosuite") is not None and importlib.util.find_spec("mujoco") is not None


def _half_turn(n) -> np.ndarray:
    n = np.asarray(n, np.float64) / np.linalg.norm(n)
    return 2 * np.outer(n, n) - np.eye(3)


@pytest.mark.parametrize("axis", [(1, -1, 0), (1, 1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 2, -3), (0, 1, 1e-9)])
def test_half_turns_round_trip(axis):
    m = _half_turn(axis)
    q = layout.matrix_to_quat(m)
    assert abs(q[3]) < 1e-9 and np.isclose(np.linalg.norm(q), 1)  # a half-turn has w = 0
    np.testing.assert_allclose(layout.quat_to_matrix(q), m, atol=1e-9)
    n = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    np.testing.assert_allclose(abs(np.dot(q[:3], n)), 1, atol=1e-9)  # the axis, up to sign
    np.testing.assert_allclose(np.linalg.norm(layout.rotation_to_axis_angle(m)), np.pi, atol=1e-9)


def test_random_rotations_round_trip_through_both_signs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        m = layout.quat_to_matrix(q)
        np.testing.assert_allclose(layout.quat_to_matrix(-q), m, atol=1e-12)
        back = layout.matrix_to_quat(m, previous=q)
        np.testing.assert_allclose(back, q, atol=1e-9)  # the sign of `previous`, not a fixed w >= 0
        np.testing.assert_allclose(layout.matrix_to_quat(m, previous=-q), -q, atol=1e-9)


def _turn_sequence() -> list[np.ndarray]:
    """Matrices of a turn about a fixed axis from 150° to 210°: w crosses 0 at 180°."""
    axis = np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])
    return [layout.quat_to_matrix(np.r_[np.sin(a / 2) * axis, np.cos(a / 2)])
            for a in np.deg2rad(np.linspace(150, 210, 61))]


def test_quaternions_stay_continuous_across_w_zero():
    matrices = _turn_sequence()
    fixed_sign = np.stack([layout.matrix_to_quat(m) for m in matrices])  # no previous: w >= 0 each step
    assert (np.sum(fixed_sign[1:] * fixed_sign[:-1], axis=1) < 0).any(), "the sequence must cross w = 0"
    quats, previous = [], None
    for m in matrices:
        previous = layout.matrix_to_quat(m, previous)
        quats.append(previous)
    quats = np.stack(quats)
    assert (np.sum(quats[1:] * quats[:-1], axis=1) >= 0).all()
    assert quats[0, 3] > 0 > quats[-1, 3]  # first step w >= 0, then continued through w = 0
    for q, m in zip(quats, matrices, strict=True):
        np.testing.assert_allclose(layout.quat_to_matrix(q), m, atol=1e-9)
    np.testing.assert_allclose(layout.continuous_quats(fixed_sign), quats, atol=1e-9)


def test_state_vector_continues_the_previous_quaternion():
    matrices = _turn_sequence()
    zeros = np.zeros(3)
    states, previous = [], None
    for m in matrices:
        previous = layout.state_vector(zeros, m, zeros, np.eye(3), np.zeros(2), previous)
        states.append(previous)
    q = np.stack(states)[:, layout.STATE_SLICES["end_effector_rotation_relative"]]
    assert (np.sum(q[1:] * q[:-1], axis=1) >= 0).all() and q[-1, 3] < 0


@pytest.mark.skipif(not HAS_SIM, reason="robosuite/mujoco not installed (extra `sim`)")
def test_generated_episode_has_continuous_quaternions(tmp_path):
    """Lift's top-down grasp keeps w near 0 (w takes both signs), where a w >= 0 rule flips every crossing."""
    from svms.data.lerobot import validate_dataset
    from svms.data.lerobot.meta import STATE_COLUMN, load_meta
    from svms.data.lerobot.parquet import read_columns
    from svms.sim.generate import generate

    root = tmp_path / "lift"
    generate(root, ["Lift"], 1, seed=0, resolution=32, workers=1, cameras=("res256_image_wrist_0",),
             progress=False)
    meta = load_meta(root)
    state = read_columns(meta.data_path(0), [STATE_COLUMN])[STATE_COLUMN]
    q = state[:, meta.key_slice("state", "end_effector_rotation_relative")].astype(np.float64)
    assert len(q) > 10 and (q[:, 3] > 0).any() and (q[:, 3] < 0).any()
    assert (np.sum(q[1:] * q[:-1], axis=1) >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert not [p for p in validate_dataset(root) if p.severity in ("error", "warning")]
