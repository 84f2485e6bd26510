"""Bad input to `svms eval open-loop` and `svms eval compare`: exit 1 with one message naming the file or field
and the fix, never a traceback; episodes shorter than one action chunk are skipped with a warning."""

from __future__ import annotations

import json

import pytest

from svms.cli import main
from svms.data.lerobot import write_synthetic_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 1-step tiny checkpoint of embodiment new_embodiment: state and action keys arm (3) and gripper (1)."""
    root = tmp_path_factory.mktemp("bad")
    write_synthetic_dataset(root / "data", lengths=(24, 30, 20), heldout=1)
    assert main(["train", "--dataset", str(root / "data"), "--out", str(root / "run"), "--max-steps", "1",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 0
    return root / "run"


def open_loop(checkpoint, dataset, out, *extra) -> list[str]:
    return ["eval", "open-loop", "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--out", str(out),
            "--plots", "0", "--device", "cpu", *extra]


def clean_error(capsys, *words: str) -> str:
    """The one `error:` paragraph on stderr, with each of `words` and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- open loop: checkpoint vs dataset --------------------------------------------------------------------------

def test_embodiment_the_checkpoint_was_not_trained_for(checkpoint, tmp_path, capsys):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 20), heldout=1)
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o", "--embodiment-tag",
                          "robocasa_panda_omron")) == 1
    clean_error(capsys, "not trained for embodiment 'robocasa_panda_omron'", "processor_config.json",
                "['new_embodiment']", "--embodiment-tag new_embodiment")


def test_dataset_of_another_embodiment(checkpoint, tmp_path, capsys):
    """The dataset's modality.json names other state/action keys: not the checkpoint's robot."""
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 20), heldout=1, state_keys={"joints": 7, "gripper": 1},
                            action_keys={"joints": 7, "gripper": 1})
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "state keys ['arm', 'gripper']", "modality.json", "missing ['arm']",
                "different embodiments")


def test_state_width_differs_from_the_checkpoint(checkpoint, tmp_path, capsys):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 20), heldout=1, state_keys={"arm": 4, "gripper": 1})
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "modality.json", "state key 'arm' spans 4 values", "trained with 3", "statistics.json")


def test_action_width_differs_from_the_checkpoint(checkpoint, tmp_path, capsys):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 20), heldout=1, action_keys={"arm": 3, "gripper": 2})
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "action key 'gripper' spans 2 values", "trained with 1")


# --- open loop: the split guard ---------------------------------------------------------------------------------

def test_dataset_without_a_heldout_split_needs_split_all(checkpoint, tmp_path, capsys):
    """No held-out split: an error naming --split all, not a silent evaluation of training episodes."""
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 24, 18))  # splits: train only
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "info.json has no split 'heldout'", "(its splits: train)", "--split all",
                "svms sim generate --heldout N")
    assert not (tmp_path / "o" / "metrics.json").exists()
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o", "--split", "test")) == 1
    clean_error(capsys, "no split 'test'", "--split all")
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o", "--split", "all")) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["split"] == "all" and [e["episode_index"] for e in metrics["episodes"]] == [0, 1, 2]


def test_split_all_evaluates_training_episodes_too(checkpoint, tmp_path):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 24, 18), heldout=1)
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "h")) == 0
    assert [e["episode_index"] for e in json.loads((tmp_path / "h/metrics.json").read_text())["episodes"]] == [2]
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "a", "--split", "all")) == 0
    assert [e["episode_index"] for e in json.loads((tmp_path / "a/metrics.json").read_text())["episodes"]] == [0, 1, 2]
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "e", "--episodes", "1")) == 0
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    assert metrics["split"] == "episodes" and [e["episode_index"] for e in metrics["episodes"]] == [1]


def test_an_explicit_episode_list_is_recorded_as_such(checkpoint, tmp_path, capsys):
    """Issue 16 case 12: `--episodes 0` (a training episode) is labelled as an explicit list, not a split."""
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 24, 18), heldout=1)
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "e", "--episodes", "0")) == 0
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    assert metrics["split"] == "episodes" and metrics["requested_episodes"] == [0]
    assert "(--episodes 0, physical units)" in capsys.readouterr().out
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "h")) == 0
    metrics = json.loads((tmp_path / "h/metrics.json").read_text())
    assert metrics["split"] == "heldout" and metrics["requested_episodes"] is None


def test_non_finite_error_is_refused_naming_the_episode(checkpoint, tmp_path, capsys):
    """Issue 16 case 9: recorded actions of 1e30 overflow the squared error; metrics.json is strict JSON, so
    evaluation stops with an error naming the episode instead of writing `Infinity`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_synthetic_dataset(tmp_path / "data", lengths=(20, 24, 18), heldout=1)
    path = tmp_path / "data/data/chunk-000/episode_000002.parquet"
    table = pq.read_table(path)
    action = np.asarray(table.column("action").to_pylist(), np.float32)
    action[3, 0] = 1e30
    column = pa.array([list(map(float, row)) for row in action], pa.list_(pa.float32()))
    pq.write_table(table.set_column(table.column_names.index("action"), "action", column), path)
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "open-loop error of episode 2 is not finite", "mse", "strict JSON", "svms data validate")
    assert not (tmp_path / "o" / "metrics.json").exists()


# --- open loop: episodes shorter than one action chunk ----------------------------------------------------------

def test_short_episode_is_skipped_with_a_warning(checkpoint, tmp_path, capsys):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 30, 10), heldout=2)  # held out: 30 and 10 steps
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "skipping 1 episode(s) shorter than one action chunk (16 steps): 2 (10 steps)" in err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert [e["episode_index"] for e in metrics["episodes"]] == [1]
    assert metrics["skipped"] == [{"episode_index": 2, "length": 10, "reason": "shorter than 16 steps"}]


def test_no_episode_long_enough_is_an_error(checkpoint, tmp_path, capsys):
    write_synthetic_dataset(tmp_path / "data", lengths=(20, 12, 10), heldout=2)
    assert main(open_loop(checkpoint, tmp_path / "data", tmp_path / "o")) == 1
    clean_error(capsys, "none of the 2 episode(s) of split 'heldout'", "16 steps", "1 (12 steps), 2 (10 steps)",
                "--episodes")
    assert not (tmp_path / "o" / "metrics.json").exists()


# --- compare: runs without metadata or nothing to compare --------------------------------------------------------

def write_run(root, name, config, mse=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    if mse is not None:
        (run / "eval/open_loop").mkdir(parents=True)
        episodes = [{"episode_index": i, "task": "Lift", "mse": mse, "mae": mse} for i in range(10)]
        (run / "eval/open_loop/metrics.json").write_text(json.dumps({"split": "heldout", "episodes": episodes}))
    return run


def compare_args(tmp_path, *runs) -> list[str]:
    return ["eval", "compare", *map(str, runs), "--out", str(tmp_path / "report")]


def test_compare_without_runs(tmp_path, capsys):
    assert main(compare_args(tmp_path)) == 1
    clean_error(capsys, "no runs given", "svms train")


def test_compare_with_one_arm_only(tmp_path, capsys):
    runs = [write_run(tmp_path, f"b{s}", {"phase": "3", "seed": s, "arm": "baseline"}, 1.0) for s in range(2)]
    assert main(compare_args(tmp_path, *runs)) == 1
    clean_error(capsys, "only the baseline arm", "add SVMS runs")
    runs = [write_run(tmp_path, f"s{s}", {"phase": "3", "seed": s, "arm": "svms"}, 1.0) for s in range(2)]
    assert main(compare_args(tmp_path, *runs)) == 1
    clean_error(capsys, "no baseline run among svms", "--no-svms")


def test_compare_run_without_seed(tmp_path, capsys):
    base = write_run(tmp_path, "b", {"phase": "3", "arm": "baseline"}, 1.0)
    svms = write_run(tmp_path, "s", {"phase": "3", "seed": 0, "arm": "svms"}, 1.0)
    assert main(compare_args(tmp_path, base, svms)) == 1
    clean_error(capsys, str(base / "config.json"), "has no 'seed'")


def test_compare_run_without_arm(tmp_path, capsys):
    base = write_run(tmp_path, "b", {"phase": "3", "seed": 0}, 1.0)
    svms = write_run(tmp_path, "s", {"phase": "3", "seed": 0, "arm": "svms"}, 1.0)
    assert main(compare_args(tmp_path, base, svms)) == 1
    clean_error(capsys, str(base / "config.json"), "neither 'arm' nor 'svms'")


def test_compare_folder_that_is_not_a_run(tmp_path, capsys):
    svms = write_run(tmp_path, "s", {"phase": "3", "seed": 0, "arm": "svms"}, 1.0)
    (tmp_path / "data").mkdir()
    assert main(compare_args(tmp_path, tmp_path / "data", svms)) == 1
    clean_error(capsys, "config.json does not exist", "not a run folder written by `svms train`")


def test_compare_runs_without_results(tmp_path, capsys):
    runs = [write_run(tmp_path, arm, {"phase": "3", "seed": 0, "arm": arm}) for arm in ("baseline", "svms")]
    assert main(compare_args(tmp_path, *runs)) == 1
    clean_error(capsys, "nothing to compare", "svms eval open-loop", "svms sim rollout")
