"""Open-loop evaluation: chunk tiling against recorded actions, splits, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svms.cli import main
from svms.data.lerobot import (
    EpisodeData,
    Gr00tLeRobotDataset,
    LeRobotWriter,
    load_meta,
    moving_frames,
    write_synthetic_dataset,
)
from svms.data.lerobot.meta import split_episodes
from svms.errors import SvmsError
from svms.eval.open_loop import evaluate_episode, summarise, task_name


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ol") / "data"
    write_synthetic_dataset(root, lengths=(24, 30, 20), heldout=1)
    return root


class OraclePolicy:
    """Answers each query with the recorded actions that follow it (or a constant), to test tiling."""

    def __init__(self, dataset, pos, constant=None):
        self.dataset, self.pos, self.constant = dataset, pos, constant
        self.config = dataset.config
        self.language_key = self.config.language.modality_keys[0]
        self.queries = []

    def get_modality_config(self):
        return self.config

    def get_action(self, observation):
        self.queries.append(observation)
        start = (len(self.queries) - 1) * self.horizon
        out = {}
        for k, v in self.dataset.episode_actions(self.pos).items():
            chunk = np.zeros((1, self.config.action_horizon, v.shape[1]), np.float32)
            rows = v[start:start + self.config.action_horizon]
            chunk[0, : len(rows)] = rows if self.constant is None else self.constant
            out[k] = chunk
        return out, {}


@pytest.mark.parametrize("horizon", [16, 5])
def test_tiled_chunks_line_up_with_the_recorded_actions(dataset_dir, horizon):
    ds = Gr00tLeRobotDataset(dataset_dir, allow_padding=True)
    pos = ds.position_of(1)
    oracle = OraclePolicy(ds, pos)
    oracle.horizon = horizon
    result = evaluate_episode(oracle, ds, pos, steps=200, action_horizon=horizon)
    assert result.n_steps == 30 and result.query_steps == list(range(0, 30, horizon))
    assert len(oracle.queries) == -(-30 // horizon)
    assert result.errors()["mse"] == 0.0
    zeros = OraclePolicy(ds, pos, constant=0.0)
    zeros.horizon = horizon
    result = evaluate_episode(zeros, ds, pos, steps=12, action_horizon=horizon)
    recorded = np.concatenate(list(ds.episode_actions(pos).values()), axis=-1)[:12]
    assert result.errors()["mse"] == pytest.approx(float(np.mean(recorded**2)), rel=1e-6)
    summary = summarise([result])
    assert set(summary["per_key"]) == {"arm", "gripper"} and summary["overall"]["mse"] == result.errors()["mse"]


def write_sim_like_dataset(root, tasks, task_column=True):
    """Episodes of simulated tasks, each phrased differently (as `svms sim generate` writes them)."""
    from svms.sim.generate import TASK_COLUMN
    from svms.sim.tasks import TASKS

    rng = np.random.default_rng(0)
    writer = LeRobotWriter(root, 20, {"arm": 3, "gripper": 1}, {"arm": 3, "gripper": 1}, ("cam0", "cam1"),
                           overwrite=True)
    for e, task in enumerate(tasks):
        n = 20
        extra = {TASK_COLUMN: np.full(n, list(TASKS).index(task), np.int64)} if task_column else {}
        videos = {c: moving_frames(n, (32, 32), seed=e + 11 * i) for i, c in enumerate(("cam0", "cam1"))}
        writer.add_episode(EpisodeData(rng.standard_normal((n, 4)), rng.standard_normal((n, 4)), videos,
                                       f"{task} phrasing number {e}", extra))
    return writer.finish(heldout=len(tasks) // 2)


def per_task_of(root):
    ds = Gr00tLeRobotDataset(root, allow_padding=True)
    results = []
    for pos in range(len(ds.meta.episodes)):
        oracle = OraclePolicy(ds, pos)
        oracle.horizon = 16
        results.append(evaluate_episode(oracle, ds, pos, steps=200, action_horizon=16))
    return summarise(results)["per_task"]


def test_per_task_groups_simulated_episodes_by_task_name(tmp_path):
    """Every episode of `svms sim generate` is phrased differently; per task means Lift and Door, as in rollouts."""
    write_sim_like_dataset(tmp_path / "sim", ("Lift", "Lift", "Door", "Lift", "Door", "Door"))
    per_task = per_task_of(tmp_path / "sim")
    assert {t: v["episodes"] for t, v in per_task.items()} == {"Door": 3, "Lift": 3}
    # without the column (a real LeRobot dataset) the episode's task string groups, one per phrasing here
    write_sim_like_dataset(tmp_path / "real", ("Lift", "Door"), task_column=False)
    assert sorted(per_task_of(tmp_path / "real")) == ["Door phrasing number 1", "Lift phrasing number 0"]


def test_lerobot_v3_evaluates_as_its_v2_source(tmp_path):
    """Open-loop evaluation (tiling, per-task names from the sim.task_index column, splits) reads v3.0 as v2.1."""
    from svms.data.lerobot.convert import convert_dataset

    write_sim_like_dataset(tmp_path / "v2", ("Lift", "Door", "Lift", "Door"))
    convert_dataset(tmp_path / "v2", tmp_path / "v3", "v3.0", data_file_mb=0.004, video_file_mb=0.01)
    assert len({load_meta(tmp_path / "v3").data_path(e) for e in range(4)}) > 1  # episodes share and span files
    assert per_task_of(tmp_path / "v3") == per_task_of(tmp_path / "v2")
    assert split_episodes(load_meta(tmp_path / "v3"), "heldout") == [2, 3]
    results = {}
    for version in ("v2", "v3"):
        ds = Gr00tLeRobotDataset(tmp_path / version, allow_padding=True)
        zeros = OraclePolicy(ds, 3, constant=0.0)
        zeros.horizon = 8
        results[version] = evaluate_episode(zeros, ds, 3, steps=20, action_horizon=8).errors()
    assert results["v3"] == results["v2"] and results["v2"]["mse"] > 0


def test_bad_task_index_is_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from svms.sim.generate import TASK_COLUMN

    meta = write_sim_like_dataset(tmp_path / "sim", ("Lift", "Door"))
    path = meta.data_path(0)
    table = pq.read_table(path)
    column = table.schema.get_field_index(TASK_COLUMN)
    pq.write_table(table.set_column(column, TASK_COLUMN, pa.array(np.full(table.num_rows, 99, np.int64))), path)
    ds = Gr00tLeRobotDataset(tmp_path / "sim", allow_padding=True)
    with pytest.raises(SvmsError, match="holds task index 99, not a simulated task"):
        task_name(ds, 0)


def test_splits_select_existing_episodes(dataset_dir):
    meta = load_meta(dataset_dir)
    assert split_episodes(meta, "train") == [0, 1] and split_episodes(meta, "heldout") == [2]
    assert split_episodes(meta, "test", required=False) == [0, 1, 2]
    with pytest.raises(SvmsError, match="no split 'test'"):
        split_episodes(meta, "test")
    train = Gr00tLeRobotDataset(dataset_dir, episodes=[0, 1])
    assert {train.locate(i)[0] for i in range(len(train))} == {0, 1}


def test_train_then_open_loop_cli(dataset_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(run), "--max-steps", "2",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["split"] == "train"
    out = tmp_path / "eval"
    assert main(["eval", "open-loop", "--checkpoint", str(run), "--dataset", str(dataset_dir),
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "heldout" and [e["episode_index"] for e in metrics["episodes"]] == [2]
    assert np.isfinite(metrics["overall"]["mse"]) and (out / "figures" / "trajectory_episode_2.png").is_file()
    assert main(["eval", "open-loop", "--checkpoint", str(run), "--dataset", str(dataset_dir),
                 "--out", str(out), "--action-horizon", "99"]) == 1
    assert "action-horizon" in capsys.readouterr().err


def test_svms_diagnostics_of_an_svms_checkpoint(dataset_dir, tmp_path, capsys):
    """Router weights per token type sum to one, one sheaf residual per episode, aux-head accuracy per stream."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(run), "--phase", "1", "--max-steps", "1",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "open-loop", "--checkpoint", str(run), "--dataset", str(dataset_dir), "--out", str(out),
                 "--split", "all"]) == 0
    assert "SVMS: aux head" in capsys.readouterr().out
    svms = json.loads((out / "metrics.json").read_text())["svms"]
    assert set(svms["router_mean"]) == {"image", "text"}
    for weights in svms["router_mean"].values():
        assert list(weights) == ["visual", "temporal", "state"]
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    residuals = svms["sheaf_residual"]["values"]
    assert len(residuals) == 3 and all(r >= 0 for r in residuals)
    assert svms["sheaf_residual"]["mean"] == pytest.approx(float(np.mean(residuals)))
    aux = svms["aux"]
    assert set(aux) == {"visual", "temporal", "state"}
    assert aux["visual"]["prompts"] == 3 and aux["visual"]["labelled_tokens"] > 0  # image tokens are visual
    for stream in aux.values():
        if stream["prompts"]:
            assert 0.0 <= stream["accuracy"] <= 1.0 and 0.0 <= stream["balanced_accuracy"] <= 1.0
    assert (out / "figures" / "router_heatmap.png").is_file() and (out / "figures" / "sheaf_residuals.png").is_file()


def test_baseline_checkpoint_has_no_svms_diagnostics(dataset_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(run), "--max-steps", "1",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "open-loop", "--checkpoint", str(run), "--dataset", str(dataset_dir), "--out", str(out),
                 "--plots", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["svms"] is None
    assert not (out / "figures" / "sheaf_residuals.png").exists()


def test_open_loop_through_a_policy_server_matches_in_process(dataset_dir, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from svms.serve import PolicyClient

    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset_dir), "--out", str(run), "--max-steps", "1",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    server = subprocess.Popen([sys.executable, "-m", "svms.cli", "serve", "--checkpoint", str(run), "--port", str(port),
                               "--seed", "0", "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        client = PolicyClient("127.0.0.1", port, timeout_s=2)
        deadline = time.time() + 120
        while not client.ping():
            assert time.time() < deadline and server.poll() is None, "server did not start"
        assert main(["eval", "open-loop", "--server", f"127.0.0.1:{port}", "--dataset", str(dataset_dir),
                     "--out", str(tmp_path / "remote")]) == 0
        assert main(["eval", "open-loop", "--checkpoint", str(run), "--dataset", str(dataset_dir),
                     "--out", str(tmp_path / "local"), "--device", "cpu"]) == 0
        remote = json.loads((tmp_path / "remote" / "metrics.json").read_text())
        local = json.loads((tmp_path / "local" / "metrics.json").read_text())
        assert remote["checkpoint"] == f"server:127.0.0.1:{port}"
        assert remote["overall"]["mse"] == pytest.approx(local["overall"]["mse"], rel=1e-5)
        client.kill()
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
