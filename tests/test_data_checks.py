"""Issue 16, data: what `svms data validate` must call an error (fps, timestamps, frame/episode indices,
widths and dtypes against info.json, statistics), extreme values (a warning, or an error on request), and
the loader refusing the same errors with one message naming the column and the episode (also from a
DataLoader worker), and a bad embodiment_id.json naming the tag."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svms.commands.data import DataValidate
from svms.data.lerobot import Gr00tLeRobotDataset, validate_dataset
from svms.errors import SvmsError

EP0 = "data/chunk-000/episode_000000.parquet"


def _edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def _set_column(root: Path, column: str, array: pa.Array) -> None:
    path = root / EP0
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index(column), column, array), path)


def _column(root: Path, column: str) -> np.ndarray:
    return np.asarray(pq.read_table(root / EP0).column(column).to_pylist())


def _lists(values) -> pa.Array:
    return pa.array([list(map(float, row)) for row in values], pa.list_(pa.float32()))


def _widen_state(r: Path) -> None:
    """State rows 6 wide while info.json declares 4."""
    _set_column(r, "observation.state", _lists(np.hstack([_column(r, "observation.state"), np.ones((20, 2))])))


def _state_strings(r: Path) -> None:
    state = _column(r, "observation.state")
    _set_column(r, "observation.state", pa.array([[str(x) for x in row] for row in state], pa.list_(pa.string())))


def _stats_nan(r: Path) -> None:
    _edit_json(r / "meta/stats.json", lambda d: d["observation.state"]["mean"].__setitem__(1, float("nan")))


def _stats_narrow(r: Path) -> None:
    _edit_json(r / "meta/stats.json", lambda d: d["action"].update({s: v[:2] for s, v in d["action"].items()}))


def _slice_past_state(r: Path) -> None:
    """Issue case 10: info.json declares a wider state than the parquet holds, and modality.json's gripper
    slice reaches past the real width (numpy would silently cut it to 1 wide)."""
    _edit_json(r / "meta/info.json", lambda d: d["features"]["observation.state"].update(shape=[6]))
    _edit_json(r / "meta/modality.json", lambda d: d["state"]["gripper"].update(start=3, end=5))


CASES = {  # name: (break the copy, words the validate error and the loader error both contain)
    "fps 5 for 20-fps videos": (
        lambda r: _edit_json(r / "meta/info.json", lambda d: d.update(fps=5)),
        ["plays at 20 fps", "fps is 5"]),
    "timestamps in reverse order": (
        lambda r: _set_column(r, "timestamp", pa.array(_column(r, "timestamp")[::-1].astype(np.float32))),
        ["'timestamp'", "episode 0", "do not increase at row 1"]),
    "timestamps off frame_index / fps": (
        lambda r: _set_column(r, "timestamp", pa.array((np.arange(20) / 10).astype(np.float32))),
        ["'timestamp'", "episode 0", "row 1 is at 0.1000 s", "0.0500 s"]),
    "shuffled frame_index": (
        lambda r: _set_column(r, "frame_index", pa.array(np.random.default_rng(0).permutation(20).astype(np.int64))),
        ["'frame_index'", "episode 0", "0, 1, ..., 19"]),
    "episode_index of another episode": (
        lambda r: _set_column(r, "episode_index", pa.array(np.full(20, 5, np.int64))),
        ["'episode_index'", "holds episode 5", "episode 0's file"]),
    "state wider than info.json declares": (
        _widen_state, ["'observation.state'", "episode 0", "6 wide", "shape [4]"]),
    "state stored as strings": (
        _state_strings, ["'observation.state'", "episode 0", "str values", "float32"]),
    "NaN in stats.json": (_stats_nan, ["stats.json", "'observation.state'", "'mean'", "NaN"]),
    "stats.json action entries too narrow": (
        _stats_narrow, ["stats.json", "'action'", "2 values", "4 wide"]),
    "uneven action rows": (
        lambda r: _set_column(r, "action", _lists([[0.0] * (4 if i != 7 else 3) for i in range(20)])),
        ["'action'", "episode 0", "different widths (3, 4", "row 7"]),
    "scalar action column": (
        lambda r: _set_column(r, "action", pa.array(np.zeros(20, np.float32))),
        ["'action'", "episode 0", "one number per row"]),
    "too-narrow action rows": (
        lambda r: _set_column(r, "action", _lists(np.zeros((20, 3)))),
        ["'action'", "episode 0", "3 wide", "[3:4]"]),
    "modality slice past the state width": (
        _slice_past_state, ["'observation.state'", "episode 0", "4 wide", "'gripper'", "[3:5]"]),
}


def _errors(root: Path) -> str:
    return "\n".join(str(p) for p in validate_dataset(root) if p.severity == "error")


def test_the_pristine_copy_is_valid(dataset):
    assert validate_dataset(dataset) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_reports_it_and_the_loader_refuses_it(case, dataset):
    """Each broken copy fails `svms data validate` with the field named, and loading (what `svms train` and
    `svms eval open-loop` do) stops with one SvmsError giving validate's first error."""
    mutate, needles = CASES[case]
    mutate(dataset)
    text = _errors(dataset)
    for needle in needles:
        assert needle in text, (case, needle, text)
    with pytest.raises(SvmsError, match="problem"):
        DataValidate(dataset).run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SvmsError) as caught:
            Gr00tLeRobotDataset(dataset)
    message = str(caught.value)
    first = next(p for p in validate_dataset(dataset) if p.severity == "error")
    assert f"{first.where}: {first.message}" in message and "\n" not in message


def test_train_refuses_the_slice_past_the_state_width(dataset, tmp_path, capsys):
    """Issue case 10: `svms train` stops before any step with validate's error, and writes no checkpoint."""
    from svms.cli import main

    _slice_past_state(dataset)
    assert main(["train", "--dataset", str(dataset), "--out", str(tmp_path / "run"), "--max-steps", "1",
                 "--global-batch-size", "2", "--no-tensorboard"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'observation.state'" in err and "episode 0" in err and "4 wide" in err
    assert f"svms data validate {dataset}` lists them all" in err
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_extreme_actions_warn_and_can_be_made_an_error(dataset, capsys):
    """1e30 actions pass NaN checks; validate warns (exit 0), `--strict-extremes` or a smaller `--max-abs`
    makes them an error, and loading warns."""
    action = _column(dataset, "action")
    action[4, 1] = 1e30
    _set_column(dataset, "action", _lists(action))
    problems = validate_dataset(dataset)
    assert [p.severity for p in problems] == ["warning"]
    assert "episode 0" in problems[0].message and "beyond ±1e+06" in problems[0].message
    assert "row 4" in problems[0].message and "1e+30" in problems[0].message
    assert DataValidate(dataset).run() == 0
    assert "warning:" in capsys.readouterr().out
    with pytest.raises(SvmsError, match="1 problem"):
        DataValidate(dataset, strict_extremes=True).run()
    assert validate_dataset(_reset(dataset), max_abs=2.0)[0].severity == "warning"  # random normals pass 2
    with pytest.raises(SvmsError, match="problem"):
        DataValidate(dataset, max_abs=1.0, strict_extremes=True).run()
    with pytest.raises(SvmsError, match="--max-abs"):
        DataValidate(dataset, max_abs=0).run()


def _reset(root: Path) -> Path:
    """The dataset with its 1e30 removed again (values now within a few units)."""
    action = _column(root, "action")
    action[4, 1] = 0.0
    _set_column(root, "action", _lists(action))
    return root


def test_loading_warns_about_extreme_values(dataset):
    action = _column(dataset, "action")
    action[4, 1] = -1e30
    _set_column(dataset, "action", _lists(action))
    with pytest.warns(UserWarning, match="episode 0.*beyond"):
        Gr00tLeRobotDataset(dataset)


def test_loading_tolerates_what_the_reference_tolerates(dataset):
    """A declared length that differs from the parquet rows stays a warning when loading (validate fails)."""
    lines = [json.loads(x) for x in (dataset / "meta/episodes.jsonl").read_text().splitlines()]
    lines[0]["length"] = 18
    (dataset / "meta/episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert "length 18" in _errors(dataset)
    with pytest.warns(UserWarning, match="18"):
        Gr00tLeRobotDataset(dataset)


def test_evaluation_with_checkpoint_statistics_ignores_the_dataset_stats(dataset):
    """stats.json is not read when statistics come from a checkpoint, so its problems do not block."""
    good = Gr00tLeRobotDataset(dataset).statistics
    _stats_nan(dataset)
    with pytest.raises(SvmsError, match="stats.json"):
        Gr00tLeRobotDataset(dataset)
    assert len(Gr00tLeRobotDataset(dataset, statistics=good)) > 0


def test_reader_names_column_and_episode_without_validation(dataset):
    """The reader's own check (it runs on every episode it reads): a too-narrow action column."""
    ds = Gr00tLeRobotDataset(dataset)
    _set_column(dataset, "action", _lists(np.zeros((20, 3))))
    with pytest.raises(SvmsError, match=r"episode 0\): column 'action' holds 3 values per row.*'gripper'"):
        ds.raw_sample(0)


def test_worker_errors_arrive_as_the_original_message(dataset):
    """With DataLoader workers (spawned, as the trainer starts them) a data error arrives as the data layer's
    one paragraph, not wrapped in the worker's traceback."""
    from torch.utils.data import DataLoader

    ds = Gr00tLeRobotDataset(dataset)
    (dataset / "videos/chunk-000/observation.images.cam0/episode_000000.mp4").write_bytes(b"not a video")
    loader = DataLoader(ds, batch_size=1, num_workers=1, multiprocessing_context="spawn",
                        collate_fn=ds.collator(aux_labels=False))
    with pytest.raises(SvmsError) as caught:
        next(iter(loader))
    message = str(caught.value)
    assert message.startswith("video file ") and "cannot be opened" in message
    assert "Traceback" not in message and "DataLoader worker" not in message and "\n" not in message


def test_bad_embodiment_id_json_names_the_tag(tmp_path):
    from svms.data.modality import MODALITY_CONFIGS
    from svms.data.processor import Gr00tProcessor
    from svms.data.processor_files import load_processor, save_processor

    tag = "robocasa_panda_omron"
    save_processor(Gr00tProcessor({tag: MODALITY_CONFIGS[tag]}, {}), tmp_path)
    (tmp_path / "embodiment_id.json").write_text(json.dumps({"new_embodiment": "x"}))
    with pytest.raises(SvmsError, match=r"embodiment_id.json: embodiment tag 'new_embodiment' maps to 'x'"):
        load_processor(tmp_path)
    (tmp_path / "embodiment_id.json").write_text(json.dumps(["new_embodiment"]))
    with pytest.raises(SvmsError, match="embodiment_id.json must be a JSON object"):
        load_processor(tmp_path)
