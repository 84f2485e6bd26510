"""Every bad input of issue #4 fails validation (exit 1 through the CLI) with the file/field named,
and the loader raises SvmsError instead of a traceback."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svms.commands.data import DataAuxCoverage, DataInspect, DataStats, DataValidate
from svms.data.lerobot import (
    Gr00tLeRobotDataset,
    moving_frames,
    validate_dataset,
    write_synthetic_dataset,
    write_video,
)
from svms.errors import SvmsError

EP0 = "data/chunk-000/episode_000000.parquet"
VID0 = "videos/chunk-000/observation.images.cam0/episode_000000.mp4"


def _edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def _edit_parquet(root: Path, column: str, change) -> None:
    path = root / EP0
    table = pq.read_table(path)
    values = np.asarray(table.column(column).to_pylist(), dtype=np.float32 if column != "task_index" else np.int64)
    change(values)
    if values.ndim == 2:
        array = pa.ListArray.from_arrays(
            pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)), pa.array(values.reshape(-1))
        )
    else:
        array = pa.array(values)
    pq.write_table(table.set_column(table.column_names.index(column), column, array), path)


def _set_nan(values):
    values[5, 2] = np.nan


def _set_inf(values):
    values[3, 0] = np.inf


def _episodes_lines(root: Path, lines: list[dict]) -> None:
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


CASES = {
    "missing info.json": (lambda r: (r / "meta/info.json").unlink(), ["info.json", "does not exist"]),
    "malformed info.json": (lambda r: (r / "meta/info.json").write_text("{not json"), ["info.json", "not valid JSON"]),
    "info.json without data_path": (
        lambda r: _edit_json(r / "meta/info.json", lambda d: d.pop("data_path")),
        ["info.json", "data_path"],
    ),
    "missing modality.json": (
        lambda r: (r / "meta/modality.json").unlink(),
        ["modality.json", "does not exist", '"start"'],
    ),
    "malformed modality.json": (
        lambda r: _edit_json(r / "meta/modality.json", lambda d: d["state"]["arm"].pop("end")),
        ["modality.json", "'arm'", "start"],
    ),
    "modality range outside width": (
        lambda r: _edit_json(r / "meta/modality.json", lambda d: d["action"]["gripper"].update(end=9)),
        ["modality.json", "'gripper'", "4 wide"],
    ),
    "missing parquet": (lambda r: (r / EP0).unlink(), [EP0, "does not exist"]),
    "missing video": (lambda r: (r / VID0).unlink(), [VID0, "does not exist"]),
    "video shorter than parquet": (
        lambda r: write_video(r / VID0, moving_frames(12, (32, 32)), 20),
        [VID0, "12 frames", "shorter"],
    ),
    "NaN in state": (
        lambda r: _edit_parquet(r, "observation.state", _set_nan),
        [EP0, "observation.state", "NaN", "row 5"],
    ),
    "Inf in action": (lambda r: _edit_parquet(r, "action", _set_inf), [EP0, "'action'", "Inf", "row 3"]),
    "task index with no task": (
        lambda r: (r / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 7, "task": "x"}) + "\n"),
        ["tasks.jsonl", "task indices [0]"],
    ),
    "empty dataset": (lambda r: _episodes_lines(r, []), ["episodes.jsonl", "empty"]),
    "codebase v3.0": (
        lambda r: _edit_json(r / "meta/info.json", lambda d: d.update(codebase_version="v3.0")),
        ["info.json", "v3.0", "meta/episodes.jsonl, the v2 layout", '"v2.1"'],
    ),
    "episodes.jsonl length differs from parquet": (
        lambda r: _episodes_lines(
            r,
            [
                {
                    "episode_index": 0,
                    "tasks": ["pick the apple from the counter and place it in the sink"],
                    "length": 18,
                },
                *[json.loads(x) for x in (r / "meta/episodes.jsonl").read_text().splitlines()[1:]],
            ],
        ),
        [EP0, "20 rows", "length 18"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_validation_naming_the_file(case, dataset):
    mutate, needles = CASES[case]
    mutate(dataset)
    errors = [str(p) for p in validate_dataset(dataset) if p.severity == "error"]
    assert errors, case
    text = "\n".join(errors)
    for needle in needles:
        assert needle in text, (case, needle, text)
    with pytest.raises(SvmsError, match="problem"):
        DataValidate(dataset).run()


LOADER_FAILS = {  # cases where loading (or sampling) for training must stop with a clear message
    "missing info.json": "info.json",
    "malformed info.json": "not valid JSON",
    "missing modality.json": "modality.json",
    "malformed modality.json": "'arm'",
    "modality range outside width": "'gripper'",
    "missing parquet": "does not exist",
    "missing video": "does not exist",
    "video shorter than parquet": "shorter",
    "NaN in state": "NaN",
    "Inf in action": "Inf",
    "task index with no task": "tasks.jsonl",
    "empty dataset": "empty",
    "codebase v3.0": "v3",
}


@pytest.mark.parametrize("case", sorted(LOADER_FAILS))
def test_bad_input_stops_the_loader(case, dataset):
    CASES[case][0](dataset)
    with pytest.raises(SvmsError, match=LOADER_FAILS[case]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = Gr00tLeRobotDataset(dataset)
            for i in range(len(ds)):
                ds.raw_sample(i)


def test_unknown_embodiment_without_statistics(dataset):
    (dataset / "meta/stats.json").unlink()
    with pytest.raises(SvmsError, match="'my_robot'.*stats.json.*new_embodiment"):
        Gr00tLeRobotDataset(dataset, "my_robot")
    with pytest.raises(SvmsError, match="my_robot"):
        DataStats(dataset, embodiment_tag="my_robot").run()


def test_only_missing_stats_is_valid_with_a_note(dataset, capsys):
    (dataset / "meta/stats.json").unlink()
    problems = validate_dataset(dataset)
    assert [p.severity for p in problems] == ["note"]
    assert "svms data stats" in problems[0].message
    assert DataValidate(dataset).run() == 0
    assert DataStats(dataset).run() == 0
    assert validate_dataset(dataset) == []
    assert "valid" in capsys.readouterr().out


def test_inspect_and_aux_coverage_commands(dataset, capsys):
    assert DataInspect(dataset).run() == 0
    out = capsys.readouterr().out
    assert "2 frames" not in out and "40 frames at 20 fps" in out and "cam0" in out and "32x32 h264" in out
    assert DataAuxCoverage(dataset).run() == 0
    out = capsys.readouterr().out
    assert "visual" in out and "temporal" in out and "state" in out


def test_quaternion_sign_flip_is_a_warning_naming_episode_and_step(tmp_path, capsys):
    """A 4-wide rotation/quaternion state key whose sign flips between steps warns (episode, step); other
    4-wide keys do not, and the dataset stays valid."""
    root = tmp_path / "quat"
    keys = {"eef_quat": 4, "base_rotation": 4, "base_motion": 4}
    write_synthetic_dataset(root, (12, 12), cameras=("cam0",), state_keys=keys)
    path = root / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path)
    angles = np.linspace(0.1, 0.5, 12)
    quat = np.stack([np.sin(angles / 2), 0 * angles, 0 * angles, np.cos(angles / 2)], axis=1)
    quat[7:] *= -1  # same rotations, the sign flipped from step 7 on
    motion = np.where(np.arange(12)[:, None] % 2, 1.0, -1.0) * np.ones((12, 4))  # flips every step, not a rotation
    values = np.concatenate([quat, np.tile([0, 0, 0, 1.0], (12, 1)), motion], axis=1).astype(np.float32)
    column = pa.ListArray.from_arrays(pa.array(np.arange(0, values.size + 1, 12, dtype=np.int32)),
                                      pa.array(values.reshape(-1)))
    pq.write_table(table.set_column(table.column_names.index("observation.state"), "observation.state", column),
                   path)
    (root / "meta/stats.json").unlink()  # random episode 0 and the edited episode 1: recompute below
    DataStats(root).run()
    problems = [p for p in validate_dataset(root) if p.severity != "note"]
    warnings_ = [p for p in problems if p.severity == "warning"]
    assert [p.severity for p in problems] == ["warning"] * len(problems)
    ep1 = [str(p) for p in warnings_ if "episode 1:" in p.message]  # episode 0 is random: it flips too
    assert len(ep1) == 1 and "'eef_quat'" in ep1[0] and "step 7" in ep1[0] and "1 flip(s)" in ep1[0], ep1
    assert "episode_000001.parquet" in ep1[0]
    assert all("base_motion" not in str(p) for p in warnings_)
    assert DataValidate(root).run() == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "warning:" in out and "episode 1" in out and "valid" in out
