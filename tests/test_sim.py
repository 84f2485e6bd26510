"""svms.sim: layout conversion, instructions, Wilson intervals and task errors (pure Python), and,
with robosuite installed (marked slow), generation → validation → replay / zero-policy rollouts."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from svms.errors import SvmsError
from svms.policy import Policy, first_of_batch
from svms.sim import layout
from svms.sim.check_policies import RandomPolicy, ZeroPolicy, load_policy
from svms.sim.instructions import INSTRUCTIONS, instruction, instructions
from svms.sim.rollout import _check_chunk, wilson_interval
from svms.sim.tasks import CAMERAS, TASKS, check_cameras, task_spec

HAS_SIM = importlib.util.find_spec("robosuite") is not None and importlib.util.find_spec("mujoco") is not None
needs_sim = pytest.mark.skipif(not HAS_SIM, reason="robosuite/mujoco not installed (extra `sim`)")
SMALL = dict(resolution=64, cameras=("res256_image_side_0", "res256_image_wrist_0"))


def _random_rotation(rng) -> np.ndarray:
    q = rng.standard_normal(4)
    return layout.quat_to_matrix(q / np.linalg.norm(q))


def test_layout_keys_follow_the_robocasa_config():
    from svms.data.modality import MODALITY_CONFIGS

    config = MODALITY_CONFIGS["robocasa_panda_omron"]
    # Columns are picked by key name in the config's (the release's) order, so the writer's column order
    # may differ from it; the key sets must not.
    assert set(layout.STATE_KEYS) == set(config.state.modality_keys)
    assert tuple(layout.ACTION_KEYS) == config.action.modality_keys
    assert tuple(CAMERAS) == config.video.modality_keys
    assert (layout.STATE_DIM, layout.ACTION_DIM) == (16, 12)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = _random_rotation(rng)
        np.testing.assert_allclose(layout.quat_to_matrix(layout.matrix_to_quat(m)), m, atol=1e-9)
        assert layout.matrix_to_quat(m)[3] >= 0


def test_axis_angle_of_a_known_rotation():
    axis = np.array([0.0, 0.6, 0.8])
    q = np.append(axis * np.sin(0.35), np.cos(0.35))  # 0.7 rad about `axis`
    np.testing.assert_allclose(layout.rotation_to_axis_angle(layout.quat_to_matrix(q)), 0.7 * axis, atol=1e-9)


def test_state_is_relative_to_a_rotated_base():
    rng = np.random.default_rng(1)
    base_rot, eef_rot = _random_rotation(rng), _random_rotation(rng)
    base_pos, local = rng.standard_normal(3), rng.standard_normal(3)
    state = layout.state_vector(base_pos + base_rot @ local, eef_rot, base_pos, base_rot, [0.02, -0.02])
    parts = layout.split_keys(state, layout.STATE_KEYS)
    np.testing.assert_allclose(parts["end_effector_position_relative"], local, atol=1e-5)
    np.testing.assert_allclose(layout.quat_to_matrix(parts["end_effector_rotation_relative"]),
                               base_rot.T @ eef_rot, atol=1e-5)
    np.testing.assert_array_equal(parts["base_position"], 0)
    np.testing.assert_array_equal(parts["base_rotation"], [0, 0, 0, 1])
    np.testing.assert_allclose(parts["gripper_qpos"], [0.02, -0.02])


def test_actions_round_trip_through_the_environment_layout():
    env_action = np.array([0.1, -0.5, 0.9, 0.0, 0.3, -1.0, 1.0])
    action = layout.action_from_env(env_action)
    parts = layout.split_keys(action, layout.ACTION_KEYS)
    assert parts["gripper_close"][0] == 1 and not parts["base_motion"].any() and parts["control_mode"][0] == 0
    np.testing.assert_allclose(layout.action_to_env(action), env_action, atol=1e-6)
    opened = layout.action_to_env(layout.action_from_env(np.append(np.full(6, 3.0), -1.0)))
    np.testing.assert_array_equal(opened, np.append(np.ones(6), -1.0))  # clipped, gripper open


def test_join_inverts_split():
    x = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    np.testing.assert_array_equal(layout.join_keys(layout.split_keys(x, layout.ACTION_KEYS), layout.ACTION_KEYS), x)


def test_instructions_vary_and_name_the_object():
    assert set(INSTRUCTIONS) == set(TASKS)
    for task in TASKS:
        assert len(set(instructions(task))) >= 3
    assert "pick the can from the counter and place it in the bin" in instructions("PickPlaceCan")
    assert all("milk" in s for s in instructions("PickPlaceMilk"))
    drawn = {instruction("Door", np.random.default_rng(s)) for s in range(40)}
    assert drawn == set(instructions("Door"))


def test_wilson_interval():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1) and wilson_interval(0, 0) == (0.0, 1.0)


def test_unknown_task_and_camera_are_clear_errors():
    with pytest.raises(SvmsError, match="valid tasks are Lift, Stack, .*Door"):
        task_spec("OpenFridge")
    with pytest.raises(SvmsError, match="res256_image_side_0"):
        check_cameras(("left",))
    assert check_cameras(("res256_image_wrist_0", "res256_image_side_0")) == (
        "res256_image_side_0", "res256_image_wrist_0")


def test_missing_simulator_names_the_extra(monkeypatch):
    import sys

    from svms.sim.tasks import import_simulator

    monkeypatch.setitem(sys.modules, "robosuite", None)  # makes `import robosuite` fail
    with pytest.raises(SvmsError, match=r"svms-gr00t\[sim\].*SVMS_EXTRAS=dev,sim"):
        import_simulator()


def test_pseudo_checkpoints_and_policy_shapes():
    for policy in (ZeroPolicy(), RandomPolicy(0), load_policy("zero"), load_policy("random")):
        assert isinstance(policy, Policy) and policy.reset() == {}
        action, info = policy.get_action({})
        assert info == {} and all(v.shape[0] == 1 and v.dtype == np.float32 for v in action.values())  # a batch of 1
        assert _check_chunk(first_of_batch(action)).shape == (16, 12)
    with pytest.raises(SvmsError, match="neither a folder"):
        load_policy("runs/tiny/checkpoint-10")
    with pytest.raises(SvmsError, match="robocasa_panda_omron"):
        _check_chunk({"x": np.zeros((16, 7), np.float32)})


def _fake_expert(monkeypatch):
    """`generate` without robosuite: every slot "succeeds" with a short random episode."""
    from svms.sim import generate as gen

    def run(jobs, workers):
        for task, slot, seed, cameras, resolution in jobs:
            rng = np.random.default_rng(slot)
            n = 4
            frames = {c: rng.integers(0, 255, (n, resolution, resolution, 3), dtype=np.uint8) for c in cameras}
            state = rng.standard_normal((n, sum(layout.STATE_KEYS.values())))
            action = rng.standard_normal((n, sum(layout.ACTION_KEYS.values())))
            yield task, slot, gen.Demonstration(task, seed, f"lift the cube {slot}", state, action, frames, True), 1

    monkeypatch.setattr(gen, "_run", run)


def test_generate_overwrite_replaces_only_its_own_dataset(monkeypatch, tmp_path):
    """Issue 16 case 3: --overwrite replaces a dataset `svms sim generate` wrote (info.json says so) and refuses
    any other folder, naming it and deleting nothing."""
    from svms.commands.sim import SimGenerate
    from svms.data.lerobot import write_synthetic_dataset

    _fake_expert(monkeypatch)
    args = dict(tasks=("Lift",), episodes=1, resolution=16, cameras=("res256_image_side_0",), workers=1)
    out = tmp_path / "G"
    assert SimGenerate(out, **args).run() == 0
    assert json.loads((out / "meta/info.json").read_text())["created_by"] == "svms sim generate"
    with pytest.raises(SvmsError, match=rf"{out} is not empty.*--overwrite"):
        SimGenerate(out, **args).run()
    assert SimGenerate(out, **{**args, "episodes": 2}, overwrite=True).run() == 0  # its own: replaced
    assert json.loads((out / "meta/info.json").read_text())["total_episodes"] == 2

    mine = tmp_path / "mine"  # a user's folder
    (mine / "meta").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (mine / "meta/info.json").write_text("{}")
    other = tmp_path / "other"  # a dataset someone else wrote
    write_synthetic_dataset(other, (8,), cameras=("cam0",), hw=(16, 16))
    (out / "results.csv").write_text("mine")  # a file added to a generated dataset
    for folder, why in ((mine, 'has no "created_by"'), (other, '"created_by": "svms.data.lerobot.writer"'),
                        (out, "also holds results.csv")):
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        with pytest.raises(SvmsError, match=rf"{folder} is not a dataset svms sim generate wrote.*{why}.*--overwrite"):
            SimGenerate(folder, **args, overwrite=True).run()
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (mine / "notes.txt").read_text() == "keep me"


# ---- with the simulator -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from svms.sim.generate import generate

    root = tmp_path_factory.mktemp("sim") / "ds"
    report = generate(root, ("Lift", "PickPlaceCan", "Door"), episodes=1, seed=0, workers=2,
                      progress=False, **SMALL)
    return root, report


@needs_sim
@pytest.mark.slow
def test_generated_dataset_validates(dataset):
    from svms.data.lerobot import load_meta, validate_dataset

    root, report = dataset
    assert validate_dataset(root) == []
    meta = load_meta(root)
    assert len(meta.episodes) == 3 and meta.fps == 20
    assert list(meta.modality["video"]) == list(SMALL["cameras"])
    assert meta.stats is not None and (root / "meta" / "stats.json").is_file()
    assert all(report.success_rate(t) > 0 for t in report.episodes)


@needs_sim
@pytest.mark.slow
def test_replay_succeeds_and_zero_policy_fails(dataset):
    from svms.sim.check_policies import ReplayPolicy
    from svms.sim.rollout import evaluate

    root, _ = dataset
    tasks = ("Lift", "PickPlaceCan", "Door")
    replay = evaluate(ReplayPolicy.from_dataset(root), tasks, episodes=1, progress=False, **SMALL)
    assert [r.successes for r in replay] == [1, 1, 1]
    zero = evaluate(ZeroPolicy(), ("Lift", "Door"), episodes=1, progress=False, **SMALL)
    assert [r.successes for r in zero] == [0, 0]
    assert zero[0].lengths == [task_spec("Lift").max_steps]


@needs_sim
@pytest.mark.slow
def test_generation_is_deterministic_for_a_seed():
    from svms.sim.generate import demonstrate
    from svms.sim.tasks import SimEnv

    env = SimEnv("Lift", **SMALL)
    first, other, again = demonstrate(env, 7), demonstrate(env, 8), demonstrate(env, 7)
    np.testing.assert_array_equal(first.action, again.action)
    np.testing.assert_array_equal(first.state, again.state)
    np.testing.assert_array_equal(first.frames["res256_image_side_0"], again.frames["res256_image_side_0"])
    assert first.instruction == again.instruction
    assert first.action.shape != other.action.shape or not np.array_equal(first.action, other.action)
    env.close()


@needs_sim
@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_one_short_episode_per_task(task):
    """Every task builds, renders, steps and converts into the layout; the expert's result is reported."""
    from svms.sim.generate import demonstrate
    from svms.sim.tasks import SimEnv

    env = SimEnv(task, **SMALL)
    demo = demonstrate(env, 0)
    assert demo.state.shape[1:] == (16,) and demo.action.shape[1:] == (12,)
    assert demo.frames["res256_image_wrist_0"].shape[1:] == (64, 64, 3)
    assert demo.frames["res256_image_wrist_0"].dtype == np.uint8
    assert len(demo.state) <= task_spec(task).max_steps
    env.close()
