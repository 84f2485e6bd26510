"""LeRobot v2.1 and v3.0, video and image features: read as LeRobot reads them, validated, converted both ways,
and written so that LeRobot loads them.

The fixtures under tests/fixtures/lerobot/ were written by LeRobot's own writers (0.3.3 for v2.1, 0.4.4 for
v3.0) and converter (`v30_converted`), and `reference.npz` holds what LeRobot's reader returned for every frame
(`make_fixtures.py`; LeRobot itself is never imported here). `v30_video` spreads its three episodes over two
data files and two mp4 files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svms.cli import main
from svms.data.lerobot import Gr00tLeRobotDataset, load_meta, validate_dataset, write_synthetic_dataset
from svms.data.lerobot.convert import convert_dataset
from svms.data.lerobot.video import decode_all
from svms.data.lerobot.writer import write_video
from svms.errors import SvmsError

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"
LEROBOT_WRITTEN = ("v21_video", "v21_image", "v30_video", "v30_image", "v30_converted")


def _sha(frame: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


def _lerobot_view(root: Path) -> dict[str, list]:
    """Every frame as our dataset class returns it, in LeRobot's per-frame order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixtures without stats.json: computed in memory
        ds = Gr00tLeRobotDataset(root, allow_padding=True)
    out: dict[str, list] = {k: [] for k in ("state", "action", "episode_index", "frame_index", "task", "front")}
    for pos, ep in enumerate(ds.meta.episodes):
        for step in range(ds.episode_length(pos)):
            s = ds.sample_at(pos, step)
            out["state"].append(np.concatenate([s.state["joints"][0], s.state["gripper"][0]]))
            out["action"].append(np.concatenate([s.action["joints"][0], s.action["gripper"][0]]))
            out["episode_index"].append(ep.index)
            out["frame_index"].append(step)
            out["task"].append(s.language)
            out["front"].append(_sha(s.video["front"][0]))
    return out


def _assert_like_lerobot(root: Path, reference: str) -> None:
    ref = np.load(FIXTURES / reference / "reference.npz")
    ours = _lerobot_view(root)
    assert len(ours["state"]) == len(ref["state"])
    np.testing.assert_array_equal(np.stack(ours["state"]), ref["state"])  # bit-identical float32
    np.testing.assert_array_equal(np.stack(ours["action"]), ref["action"])
    assert ours["episode_index"] == ref["episode_index"].tolist()
    assert ours["frame_index"] == ref["frame_index"].tolist()
    assert ours["task"] == ref["task"].tolist()
    assert ours["front"] == ref["front_sha256"].tolist()


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _errors(root: Path) -> list[str]:
    return [str(p) for p in validate_dataset(root) if p.severity == "error"]


@pytest.mark.parametrize("name", LEROBOT_WRITTEN)
def test_every_value_equals_what_lerobot_reads(name):
    _assert_like_lerobot(FIXTURES / name, name)


@pytest.mark.parametrize("name", LEROBOT_WRITTEN)
def test_lerobot_datasets_are_valid(name):
    assert _errors(FIXTURES / name) == []


def test_v3_episodes_share_files_and_span_two_of_each():
    meta = load_meta(FIXTURES / "v30_video")
    data = [meta.data_path(e.index) for e in meta.episodes]
    video = [meta.video_path(e.index, "front") for e in meta.episodes]
    assert len(set(data)) == 2 and len(set(video)) == 2
    assert data[0] == data[1] and video[0] == video[1]  # two episodes in one file
    assert meta.data_rows(1) == (8, 19) and meta.data_rows(2) == (0, 9)
    assert meta.video_start(1, "front") == 8 and meta.video_start(2, "front") == 0
    assert meta.tasks == {0: "pick up the red cube", 1: "open the drawer"}


def _edit_episodes(root: Path, change) -> None:
    path = next((root / "meta" / "episodes").glob("**/*.parquet"))
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


V3_CASES = {
    "range shorter than length": (lambda rows: rows[1].update(dataset_to_index=18),
                                  ["meta/episodes/ episode 1", "dataset_to_index 18", "length is 11"]),
    "video range off": (lambda rows: rows[1].update({"videos/observation.images.front/to_timestamp": 2.5}),
                        ["episode 1", "to_timestamp 2.5", "17 frames", "11 rows"]),
    "ranges swapped": (lambda rows: (rows[0].update(dataset_from_index=8, dataset_to_index=16),
                                     rows[1].update(dataset_from_index=0, dataset_to_index=11)),
                       ["column 'episode_index'", "holds episode 1", "episode 0's row range"]),
    "missing data file": (lambda rows: rows[2].update({"data/file_index": 7}),
                          ["file-007.parquet", "does not exist"]),
    "missing video file": (lambda rows: rows[2].update({"videos/observation.images.front/file_index": 5}),
                           ["file-005.mp4", "does not exist"]),
}


@pytest.mark.parametrize("case", sorted(V3_CASES))
def test_v3_layout_problems_are_errors_and_stop_the_loader(case, tmp_path):
    change, needles = V3_CASES[case]
    root = _copy("v30_video", tmp_path)
    _edit_episodes(root, change)
    text = "\n".join(_errors(root))
    for needle in needles:
        assert needle in text, (needle, text)
    with pytest.raises(SvmsError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Gr00tLeRobotDataset(root, allow_padding=True)


def test_v3_task_missing_from_tasks_parquet(tmp_path):
    root = _copy("v30_image", tmp_path)
    table = pq.read_table(root / "meta/tasks.parquet")
    pq.write_table(table.slice(0, 1), root / "meta/tasks.parquet")
    text = "\n".join(_errors(root))
    assert "meta/tasks.parquet" in text and "task indices [1]" in text
    assert "'open the drawer'" in text  # the episode's task string is not resolvable either


def test_camera_of_unsupported_type_is_named(tmp_path):
    root = _copy("v21_image", tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.front"]["dtype"] = "audio"
    (root / "meta/info.json").write_text(json.dumps(info))
    text = "\n".join(_errors(root))
    assert "'audio'" in text and "observation.images.front" in text and "video" in text and "image" in text
    with pytest.raises(SvmsError, match="'audio'"):
        Gr00tLeRobotDataset(root, allow_padding=True)


def test_image_rows_without_bytes_are_an_error(tmp_path):
    root = _copy("v21_image", tmp_path)
    path = root / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path)
    cells = table.column("observation.images.front").to_pylist()
    cells[4] = {"bytes": None, "path": "frame_000004.png"}
    column = pa.array(cells, table.schema.field("observation.images.front").type)
    pq.write_table(table.set_column(table.column_names.index("observation.images.front"),
                                    "observation.images.front", column), path)
    text = "\n".join(_errors(root))
    assert "episode_000001.parquet" in text and "no image bytes" in text and "row 4" in text


def test_writer_episode_stats_follow_lerobot(tmp_path):
    meta = write_synthetic_dataset(tmp_path / "ds", lengths=(6, 9), cameras=("cam0",), stats=False)
    ours = [json.loads(line) for line in (meta.root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    theirs = json.loads((FIXTURES / "v21_video/meta/episodes_stats.jsonl").read_text().splitlines()[0])["stats"]
    assert [e["episode_index"] for e in ours] == [0, 1]
    for feature, entry in ours[1]["stats"].items():
        assert set(entry) == set(theirs["action"]), feature  # min, max, mean, std, count
        assert entry["count"] == [9]
    camera = ours[1]["stats"]["observation.images.cam0"]
    assert np.asarray(camera["mean"]).shape == np.asarray(theirs["observation.images.front"]["mean"]).shape == (3, 1, 1)
    frames = decode_all(meta.video_path(1, "cam0")).astype(np.float64) / 255
    np.testing.assert_allclose(np.asarray(camera["mean"]).ravel(), frames.mean((0, 1, 2)), atol=0.02)  # source
    state = np.stack(pq.read_table(meta.data_path(1)).column("observation.state").to_pylist())
    np.testing.assert_allclose(ours[1]["stats"]["observation.state"]["std"], state.std(0), rtol=1e-6)
    assert ours[1]["stats"]["index"]["min"] == [6] and ours[1]["stats"]["episode_index"]["max"] == [1]


def test_stats_computes_missing_quantiles_and_keeps_the_foreign_file(tmp_path, capsys):
    root = _copy("v30_converted", tmp_path)  # LeRobot's converter: stats.json without quantiles
    original = (root / "meta/stats.json").read_bytes()
    assert load_meta(root).stats is None and load_meta(root).stats_incomplete
    assert main(["data", "stats", str(root)]) == 0
    assert "stats.backup.json" in capsys.readouterr().out
    assert (root / "meta/stats.backup.json").read_bytes() == original
    stats = load_meta(root).stats
    meta = load_meta(root)
    state = np.concatenate([meta.read_episode(e, ["observation.state"])["observation.state"] for e in (0, 1)])
    np.testing.assert_allclose(stats["observation.state"]["q99"], np.quantile(state, 0.99, axis=0), rtol=1e-5)
    assert main(["data", "stats", str(root)]) == 0  # now svms's own file: replaced, no second backup
    assert sorted(p.name for p in (root / "meta").glob("stats*")) == ["stats.backup.json", "stats.json"]


def _columns(meta, episode: int) -> dict:
    return meta.read_episode(episode, ["observation.state", "action", "task_index", "frame_index"])


def test_round_trip_v21_v30_v21_is_bit_identical(tmp_path):
    src = write_synthetic_dataset(tmp_path / "src", lengths=(12, 9, 14), cameras=("cam0", "cam1"), seed=3)
    (src.root / "meta/relative_stats.json").write_text(json.dumps({}))
    v3 = convert_dataset(src.root, tmp_path / "v3", "v3.0", data_file_mb=0.002, video_file_mb=0.003)
    back = convert_dataset(v3.root, tmp_path / "back", "v2.1")
    assert v3.version == "v3.0" and back.version == "v2.1"
    # the small file sizes: episodes 0 and 1 share the first data and video files, episode 2 starts the second
    for files in ([v3.data_path(e.index) for e in v3.episodes], [v3.video_path(e.index, "cam0") for e in v3.episodes]):
        assert files[0] == files[1] != files[2]
    for out in (v3, back):
        assert _errors(out.root) == []
        for name in ("modality.json", "stats.json", "relative_stats.json"):
            assert (out.root / "meta" / name).read_bytes() == (src.root / "meta" / name).read_bytes(), name
        assert out.tasks == src.tasks
        for ep in src.episodes:
            a, b = _columns(src, ep.index), _columns(out, ep.index)
            for column in a:
                np.testing.assert_array_equal(a[column], b[column])
    for ep in src.episodes:
        for key in ("cam0", "cam1"):
            original = decode_all(src.video_path(ep.index, key))
            np.testing.assert_array_equal(decode_all(back.video_path(ep.index, key)), original)
            start, n = v3.video_start(ep.index, key), ep.length
            np.testing.assert_array_equal(decode_all(v3.video_path(ep.index, key))[start:start + n], original)


@pytest.mark.parametrize("name", ["v30_video", "v30_image", "v21_video", "v21_image"])
def test_converted_lerobot_datasets_read_as_lerobot_reads_the_source(name, tmp_path):
    out = convert_dataset(FIXTURES / name, tmp_path / "out", "v2.1" if name.startswith("v30") else "v3.0")
    assert _errors(out.root) == []
    _assert_like_lerobot(out.root, name)
    if out.version == "v2.1":  # what LeRobot 0.3 needs to open it offline
        assert len((out.root / "meta/episodes_stats.jsonl").read_text().splitlines()) == len(out.episodes)


def test_converting_lerobots_conversion_back_keeps_modality_and_adds_quantiles(tmp_path):
    out = convert_dataset(FIXTURES / "v30_converted", tmp_path / "out", "v2.1")
    source = FIXTURES / "v30_converted/meta"
    assert (out.root / "meta/modality.json").read_bytes() == (source / "modality.json").read_bytes()
    assert (out.root / "meta/stats.backup.json").read_bytes() == (source / "stats.json").read_bytes()
    assert "q01" in load_meta(out.root).stats["action"]
    _assert_like_lerobot(out.root, "v30_converted")


def test_episodes_that_cannot_be_copied_are_re_encoded(tmp_path):
    src = write_synthetic_dataset(tmp_path / "src", lengths=(10, 12), cameras=("cam0",), seed=1)
    frames = decode_all(src.video_path(1, "cam0"))
    write_video(src.video_path(1, "cam0"), frames, src.fps, "av1", gop=4)  # another codec: packets cannot join
    frames = decode_all(src.video_path(1, "cam0"))
    v3 = convert_dataset(src.root, tmp_path / "v3", "v3.0")
    assert _errors(v3.root) == []
    joined = decode_all(v3.video_path(0, "cam0")).astype(int)
    assert joined.shape[0] == 22
    # within codec rounding (yuv420p halves chroma again) and far closer to its own frame than to the one before
    error = np.abs(joined[10:] - frames.astype(int)).mean(axis=(1, 2, 3))
    assert error.max() < 6
    assert (error[1:] < np.abs(joined[11:] - frames[:-1].astype(int)).mean(axis=(1, 2, 3))).all()


def test_convert_refuses_a_non_empty_target_and_the_same_version(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SvmsError, match="not empty"):
        convert_dataset(FIXTURES / "v21_video", tmp_path / "busy", "v3.0")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(SvmsError, match="already LeRobot v3.0"):
        convert_dataset(FIXTURES / "v30_video", tmp_path / "new", "v3.0")
    assert not (tmp_path / "new").exists()
    assert main(["data", "convert", str(FIXTURES / "v21_image"), str(tmp_path / "cli"), "--to", "v3.0"]) == 0
    assert "LeRobot v3.0, 2 episodes, 19 frames" in capsys.readouterr().out


def test_inspect_names_the_layout_and_image_cameras(capsys):
    assert main(["data", "inspect", str(FIXTURES / "v30_video")]) == 0
    out = capsys.readouterr().out
    assert "LeRobot v3.0" in out and "2 data file(s), 2 video file(s) shared by 3 episodes" in out
    assert main(["data", "inspect", str(FIXTURES / "v30_image")]) == 0
    out = capsys.readouterr().out
    assert "32x32 image feature" in out and "missing" not in out
