"""The episode and task lists of a LeRobot v3.0 dataset (`meta/episodes/*/*.parquet`, `meta/tasks.parquet`).

v3.0 packs many episodes into each data parquet and each camera's mp4; one row per episode in the
episodes parquet files says where: the data file (`data/chunk_index`, `data/file_index`) with the global
`index` range [`dataset_from_index`, `dataset_to_index`), and per video feature the mp4 and the time range
[`from_timestamp`, `to_timestamp`) within it. Its `stats/...` columns are not read. The task strings are
the pandas index of `meta/tasks.parquet` (stored as a column named in the pandas metadata). Whether the
ranges agree with the files is checked per episode in `checks`, as for v2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from svms.data.lerobot.episodes import EpisodeInfo, EpisodeLocation
from svms.errors import SvmsError

EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index")
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
EPISODES_HOWTO = (
    "LeRobot v3.0 lists episodes in meta/episodes/chunk-XXX/file-XXX.parquet, one row per episode with "
    f"columns {list(EPISODE_COLUMNS)}, tasks (list of strings) and, per video feature K, "
    "videos/K/chunk_index, videos/K/file_index, videos/K/from_timestamp and videos/K/to_timestamp."
)


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise SvmsError(f"parquet file {path} cannot be read ({e}); rewrite it.") from None


def _format(pattern: str, field: str, path: Path, **values: Any) -> str:
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise SvmsError(
            f"{path}: {field} {pattern!r} does not format with {sorted(values)} ({e!r}); v3.0 patterns use "
            '{chunk_index} and {file_index} (and {video_key}), e.g. "data/chunk-{chunk_index:03d}/'
            'file-{file_index:03d}.parquet".'
        ) from None


def read_tasks(path: Path) -> dict[int, str]:
    """task_index → task string from meta/tasks.parquet (the string is the pandas index, else column `task`)."""
    if not path.is_file():
        raise SvmsError(f"{path} does not exist; LeRobot v3.0 keeps the task strings there (column task_index, "
                        "the string as the pandas index).")
    table = _read_table(path)
    pandas = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    names = [c for c in pandas.get("index_columns", []) if isinstance(c, str)] + ["task", "__index_level_0__"]
    text = next((c for c in names if c in table.column_names), None)
    if text is None or "task_index" not in table.column_names:
        raise SvmsError(f"{path} needs a task_index column and the task strings (the pandas index, or a column "
                        f"'task'); it has {table.column_names}.")
    out = {}
    for index, task in zip(table.column("task_index").to_pylist(), table.column(text).to_pylist(), strict=True):
        if not isinstance(index, int) or not isinstance(task, str):
            raise SvmsError(f"{path}: row task_index={index!r}, task={task!r}; each needs an integer and a string.")
        out[index] = task
    return out


def _episode_rows(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    files = sorted((root / "meta" / "episodes").glob("**/*.parquet"))
    if not files:
        v2 = (" It has meta/episodes.jsonl, the v2 layout: if the data are v2.1, set meta/info.json's "
              'codebase_version to "v2.1".') if (root / "meta" / "episodes.jsonl").is_file() else ""
        raise SvmsError(f"{root / 'meta/episodes'} holds no parquet file, but meta/info.json says codebase_version "
                        f"v3.0.{v2} {EPISODES_HOWTO}")
    rows = []
    for path in files:
        names = pq.read_schema(path).names
        table = _read_table(path, [c for c in names if not c.startswith("stats/")])
        rows += [(path, row) for row in table.to_pylist()]
    return rows


def read_v3_index(root: Path, info: dict[str, Any]):
    """(episodes, tasks, locations) of a v3.0 dataset, in the order of the episodes parquet files."""
    info_path = root / "meta" / "info.json"
    videos = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    episodes, locations = [], {}
    for path, row in _episode_rows(root):
        where = f"{path.relative_to(root)} (episode_index {row.get('episode_index')!r})"
        wanted = list(EPISODE_COLUMNS) + [f"videos/{k}/{c}" for k in videos for c in VIDEO_COLUMNS]
        absent = [c for c in wanted if c not in row]
        if absent:
            raise SvmsError(f"{where} lacks column(s) {absent}. {EPISODES_HOWTO}")
        ints = [c for c in wanted if not c.endswith("_timestamp")]
        bad = [c for c in ints if not isinstance(row[c], int)] + [
            c for c in wanted if c.endswith("_timestamp") and not isinstance(row[c], (int, float))]
        if bad:
            raise SvmsError(f"{where}: column(s) {bad} are empty or not numbers. {EPISODES_HOWTO}")
        tasks = row.get("tasks") or []
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        index = row["episode_index"]
        episodes.append(EpisodeInfo(index, row["length"], tuple(str(t) for t in tasks)))
        data_file = _format(info["data_path"], "data_path", info_path, chunk_index=row["data/chunk_index"],
                            file_index=row["data/file_index"])
        video_files = {
            k: (_format(info["video_path"], "video_path", info_path, video_key=k,
                        chunk_index=row[f"videos/{k}/chunk_index"], file_index=row[f"videos/{k}/file_index"]),
                float(row[f"videos/{k}/from_timestamp"]), float(row[f"videos/{k}/to_timestamp"]))
            for k in videos
        }
        locations[index] = (data_file, row["dataset_from_index"], row["dataset_to_index"], video_files)
    first = {}
    for data_file, start, _, _ in locations.values():
        first[data_file] = min(start, first.get(data_file, start))
    located = {i: EpisodeLocation(f, a, b, first[f], v) for i, (f, a, b, v) in locations.items()}
    return tuple(episodes), read_tasks(root / "meta" / "tasks.parquet"), located
