"""The `meta/` folder of a GR00T-flavoured LeRobot dataset (spec §7.1–§7.2), parsed with clear errors.

Everything a loader, validator or summary needs from metadata lives here: `info.json` (paths,
fps, features), the episode and task lists, `modality.json` (GR00T's key → slice map) and the
optional statistics files. Quirks NVIDIA's own files have are accepted on purpose: `splits` naming
more episodes than exist, `total_chunks: 0`, v2.0's `video_info` next to v2.1's `info`, float fps.

The episode index is format-neutral: v2.0/v2.1 keep one parquet and one mp4 per episode
(`episodes.jsonl`, `tasks.jsonl`); v3.0 packs many episodes into each file and says where each one
lies in `meta/episodes/*.parquet` (`meta_v3`). Readers ask `data_path`, `data_rows`, `video_path`
and `video_start` and never see the difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svms.data.lerobot.episodes import EpisodeInfo, EpisodeLocation, SubTask  # noqa: F401 (re-exported)
from svms.data.lerobot.meta_v3 import read_v3_index
from svms.data.lerobot.parquet import parquet_rows, read_columns
from svms.errors import SvmsError

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
#: Camera feature dtypes: mp4 files ("video") or PNG/JPEG bytes in the parquet rows ("image").
CAMERA_DTYPES = ("video", "image")
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
STATE_COLUMN = "observation.state"
ACTION_COLUMN = "action"
#: Language keys read from episodes.jsonl instead of a parquet column (spec §7.1).
EPISODE_LANGUAGE_KEYS = ("task", "sub_task")

MODALITY_JSON_HOWTO = (
    'Write meta/modality.json next to info.json: {"state": {KEY: {"start": 0, "end": D}}, '
    '"action": {KEY: {"start": 0, "end": D}}, "video": {KEY: {"original_key": '
    '"observation.images.CAMERA"}}, "annotation": {"human.action.task_description": '
    '{"original_key": "task_index"}}}, where start/end slice the concatenated '
    "observation.state / action vectors (Python slice, end exclusive)."
)
INFO_JSON_HOWTO = (
    'meta/info.json must be a JSON object with codebase_version ("v2.1" or "v3.0"), fps, chunks_size, '
    'data_path (e.g. "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"), '
    'video_path (e.g. "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4", '
    "needed when a camera is a video feature) and features (one entry per parquet column and per camera, "
    "each with dtype and shape)."
)


@dataclass(frozen=True)
class DatasetMeta:
    """Parsed `meta/` of one dataset; paths of episode files are derived from `info.json`'s patterns."""

    root: Path
    info: dict[str, Any]
    episodes: tuple[EpisodeInfo, ...]
    tasks: dict[int, str]
    modality: dict[str, Any]
    stats: dict[str, dict[str, list]] | None = None
    relative_stats: dict[str, dict[str, list]] | None = None
    problems: tuple[str, ...] = field(default=())
    """Soft inconsistencies of episodes/tasks (the loader warns, `validate` fails)."""
    locations: dict[int, EpisodeLocation] = field(default_factory=dict)
    """v3.0: where each episode lies (empty for v2, whose paths follow from the episode index)."""
    stats_incomplete: tuple[str, ...] = field(default=())
    """stats.json entries of float columns that lack a statistic training needs (then `stats` is None)."""

    @property
    def version(self) -> str:
        return str(self.info["codebase_version"])

    @property
    def fps(self) -> float:
        return float(self.info.get("fps", 30))

    @property
    def chunks_size(self) -> int:
        return int(self.info.get("chunks_size", 1000))

    @property
    def features(self) -> dict[str, Any]:
        return self.info.get("features", {})

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def is_v3(self) -> bool:
        return self.version.startswith("v3")

    @property
    def episode_list(self) -> str:
        """The file that lists the episodes (named in messages)."""
        return "meta/episodes/" if self.is_v3 else "meta/episodes.jsonl"

    @property
    def task_list(self) -> str:
        return "meta/tasks.parquet" if self.is_v3 else "meta/tasks.jsonl"

    def location(self, episode_index: int) -> EpisodeLocation:
        if episode_index not in self.locations:
            raise SvmsError(f"{self.root}: no episode {episode_index} in {self.episode_list}")
        return self.locations[episode_index]

    def data_path(self, episode_index: int) -> Path:
        """The parquet file holding an episode (v2: its own, chunk = episode_index // chunks_size)."""
        if self.is_v3:
            return self.root / self.location(episode_index).data_file
        rel = self.info["data_path"].format(
            episode_chunk=episode_index // self.chunks_size, episode_index=episode_index
        )
        return self.root / rel

    def data_rows(self, episode_index: int) -> tuple[int, int] | None:
        """Rows [a, b) of `data_path` that belong to the episode; None: the whole file (v2)."""
        if not self.is_v3:
            return None
        loc = self.location(episode_index)
        return loc.start - loc.file_start, loc.stop - loc.file_start

    def read_episode(self, episode_index: int, columns: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """The episode's rows of `columns` as numpy arrays (see `parquet.read_columns`)."""
        return read_columns(self.data_path(episode_index), columns, episode_index, self.data_rows(episode_index))

    def episode_rows(self, episode_index: int) -> int:
        """How many rows of the episode its data file holds (v3: of its declared index range)."""
        rows = parquet_rows(self.data_path(episode_index))
        span = self.data_rows(episode_index)
        return rows if span is None else max(0, min(rows, span[1]) - span[0])

    def camera_dtype(self, video_key: str) -> str:
        """"video" (an mp4) or "image" (bytes in the parquet rows) for a modality.json camera key."""
        return str(self.features.get(self.video_original_key(video_key), {}).get("dtype"))

    def video_path(self, episode_index: int, video_key: str) -> Path:
        """The mp4 of camera `video_key` (a modality.json video key) holding an episode."""
        original = self.video_original_key(video_key)
        if self.is_v3:
            videos = self.location(episode_index).videos
            if original not in videos:
                raise SvmsError(
                    f"{self.root / 'meta/episodes'}: episode {episode_index} has no videos/{original}/... columns; "
                    f"every video feature needs its chunk_index, file_index, from_timestamp and to_timestamp."
                )
            return self.root / videos[original][0]
        rel = self.info["video_path"].format(
            episode_chunk=episode_index // self.chunks_size, video_key=original, episode_index=episode_index
        )
        return self.root / rel

    def video_start(self, episode_index: int, video_key: str) -> int:
        """The frame of `video_path` where the episode starts (v2: 0; v3: from_timestamp × fps)."""
        if not self.is_v3:
            return 0
        return round(self.location(episode_index).videos[self.video_original_key(video_key)][1] * self.fps)

    def video_original_key(self, video_key: str) -> str:
        return self.modality["video"][video_key]["original_key"]

    def column_of(self, modality: str, key: str) -> str:
        """Parquet column holding a state/action key (its `original_key`, else the concatenated column)."""
        entry = self.modality[modality][key]
        return entry.get("original_key") or (STATE_COLUMN if modality == "state" else ACTION_COLUMN)

    def key_slice(self, modality: str, key: str) -> slice:
        entry = self.modality[modality][key]
        return slice(entry["start"], entry["end"])

    def language_column(self, language_key: str) -> str | None:
        """Parquet column of an `annotation.*` language key; None for the episodes.jsonl keys."""
        if language_key in EPISODE_LANGUAGE_KEYS:
            return None
        name = language_key.removeprefix("annotation.")
        entry = self.modality.get("annotation", {}).get(name)
        if entry is None:
            raise SvmsError(
                f"{self.root / 'meta/modality.json'}: language key {language_key!r} has no entry "
                f'{name!r} under "annotation" (it declares {sorted(self.modality.get("annotation", {}))}); '
                "add it, or pick one of those keys in the embodiment's language modality."
            )
        return entry.get("original_key") or language_key

    def float_columns(self) -> list[str]:
        """Columns that get statistics: every feature whose dtype contains "float" (spec §7.1)."""
        return [k for k, f in self.features.items() if "float" in str(f.get("dtype", ""))]

    def feature_width(self, column: str) -> int | None:
        """Declared width of a 1-D feature (`shape[0]`), None when undeclared."""
        shape = self.features.get(column, {}).get("shape")
        return int(shape[0]) if shape else None

    def video_feature_info(self, video_key: str) -> dict[str, Any]:
        """Declared codec/size of a camera; v2.0 calls the block `video_info`, v2.1 `info`."""
        feat = self.features.get(self.video_original_key(video_key), {})
        info = dict(feat.get("info") or feat.get("video_info") or {})
        shape = feat.get("shape")
        if shape and len(shape) == 3:
            info.setdefault("video.height", shape[0])
            info.setdefault("video.width", shape[1])
        return info

    @property
    def total_frames(self) -> int:
        return sum(e.length for e in self.episodes)


def read_json(path: Path, howto: str) -> Any:
    """Parse a JSON file; a missing or malformed file is an SvmsError naming it and `howto` fix it."""
    if not path.is_file():
        raise SvmsError(f"{path} does not exist. {howto}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SvmsError(f"{path} is not valid JSON ({e}). {howto}") from None


def read_jsonl(path: Path, howto: str) -> list[dict[str, Any]]:
    """One JSON object per non-empty line; errors name the line."""
    if not path.is_file():
        raise SvmsError(f"{path} does not exist. {howto}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SvmsError(f"{path} line {n} is not valid JSON ({e}). {howto}") from None
        if not isinstance(row, dict):
            raise SvmsError(f"{path} line {n} is not a JSON object. {howto}")
        rows.append(row)
    return rows


def _check_info(info: Any, path: Path) -> None:
    if not isinstance(info, dict):
        raise SvmsError(f"{path} is not a JSON object. {INFO_JSON_HOWTO}")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise SvmsError(
            f"{path}: codebase_version is {version!r}; supported are {list(SUPPORTED_VERSIONS)}. "
            "Set it to the LeRobot version that wrote the dataset, or convert the dataset with "
            "`svms data convert IN OUT --to v2.1` (or --to v3.0)."
        )
    for name, kind in (("data_path", str), ("features", dict)):
        if not isinstance(info.get(name), kind):
            raise SvmsError(f"{path}: field {name!r} is missing or not a {kind.__name__}. {INFO_JSON_HOWTO}")
    videos = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    if videos and not isinstance(info.get("video_path"), str):
        raise SvmsError(f"{path}: field 'video_path' is missing or not a str, but features {videos[:3]} are "
                        f"videos (dtype \"video\"); give the mp4 path pattern. {INFO_JSON_HOWTO}")
    for name in ("fps", "chunks_size"):
        value = info.get(name, 1)
        if not isinstance(value, (int, float)) or value <= 0:
            raise SvmsError(f"{path}: field {name!r} must be a positive number, got {value!r}.")


def check_modality_json(modality: Any, path: Path) -> None:
    """Structure of modality.json: state/action slices with 0 ≤ start < end, video original keys."""
    if not isinstance(modality, dict):
        raise SvmsError(f"{path} is not a JSON object. {MODALITY_JSON_HOWTO}")
    for name in ("state", "action", "video"):
        if not isinstance(modality.get(name), dict):
            raise SvmsError(f"{path}: section {name!r} is missing or not an object. {MODALITY_JSON_HOWTO}")
    for name in ("state", "action"):
        for key, entry in modality[name].items():
            start = entry.get("start") if isinstance(entry, dict) else None
            end = entry.get("end") if isinstance(entry, dict) else None
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
                raise SvmsError(
                    f'{path}: {name} key {key!r} needs integer "start" and "end" with '
                    f"0 <= start < end, got {entry!r}. {MODALITY_JSON_HOWTO}"
                )
    for key, entry in modality["video"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("original_key"), str):
            raise SvmsError(
                f'{path}: video key {key!r} needs an "original_key" naming its camera feature in '
                f'info.json (e.g. "observation.images.{key}"), got {entry!r}.'
            )
    if not isinstance(modality.get("annotation", {}), dict):
        raise SvmsError(f"{path}: section 'annotation' must be an object. {MODALITY_JSON_HOWTO}")


def modality_range_problems(meta: DatasetMeta) -> list[str]:
    """Slices of modality.json that reach past their column's declared width, cameras not declared."""
    out = []
    for name in ("state", "action"):
        for key, entry in meta.modality[name].items():
            column = meta.column_of(name, key)
            width = meta.feature_width(column)
            if width is None:
                out.append(
                    f"meta/modality.json: {name} key {key!r} reads column {column!r}, which "
                    "info.json's features do not declare; add the column (dtype, shape) to features."
                )
            elif entry["end"] > width:
                out.append(
                    f"meta/modality.json: {name} key {key!r} has slice [{entry['start']}:{entry['end']}] "
                    f"but column {column!r} is {width} wide; fix start/end so they lie within 0..{width}."
                )
    for key in meta.modality["video"]:
        original = meta.video_original_key(key)
        dtype = meta.features.get(original, {}).get("dtype")
        if original not in meta.features:
            out.append(
                f"meta/modality.json: video key {key!r} points to {original!r}, which info.json's "
                "features do not declare; use the camera's feature name as original_key."
            )
        elif dtype not in CAMERA_DTYPES:
            out.append(
                f"meta/modality.json: video key {key!r} points to {original!r}, whose dtype {dtype!r} is not a "
                f"camera type this toolkit reads (one of {list(CAMERA_DTYPES)}: mp4 videos, or PNG/JPEG "
                "images in the parquet rows); store that camera as a video or image feature."
            )
    return out


def _parse_episodes(rows: list[dict[str, Any]], path: Path) -> tuple[EpisodeInfo, ...]:
    out = []
    for n, row in enumerate(rows, start=1):
        idx, length, tasks = row.get("episode_index"), row.get("length"), row.get("tasks", [])
        if not isinstance(idx, int) or not isinstance(length, int) or length < 0:
            raise SvmsError(
                f'{path} line {n}: needs integer "episode_index" and non-negative "length", got {row}.'
            )
        if isinstance(tasks, str):
            tasks = [tasks]
        subs = tuple(
            SubTask(int(s["start"]), int(s["end"]), str(s["text"])) for s in row.get("sub_tasks") or ()
        )
        out.append(EpisodeInfo(idx, length, tuple(str(t) for t in tasks), subs))
    return tuple(out)


def _parse_tasks(rows: list[dict[str, Any]], path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for n, row in enumerate(rows, start=1):
        idx, task = row.get("task_index"), row.get("task")
        if not isinstance(idx, int) or not isinstance(task, str):
            raise SvmsError(f'{path} line {n}: needs integer "task_index" and string "task", got {row}.')
        out[idx] = task
    return out


def check_stats_file(stats: Any, path: Path, matrix: bool = False) -> dict[str, dict[str, list]]:
    """A stats file maps name → the six statistics; `matrix` (relative stats) wants (H_e, D) lists."""
    howto = "Recompute it with `svms data stats DIR` (delete the file to start over)."
    if not isinstance(stats, dict):
        raise SvmsError(f"{path} is not a JSON object. {howto}")
    for name, entry in stats.items():
        missing = incomplete_stats(entry)
        if missing:
            raise SvmsError(f"{path}: entry {name!r} lacks {missing}. {howto}")
        if matrix and not all(isinstance(r, list) for r in entry["min"]):
            raise SvmsError(f"{path}: entry {name!r} must hold one row per horizon step. {howto}")
    return stats


def incomplete_stats(entry: Any) -> list[str]:
    """The statistics of STAT_NAMES an entry of a stats file lacks (all of them when it is no object)."""
    return [s for s in STAT_NAMES if not isinstance(entry, dict) or s not in entry]


def _read_stats(path: Path, float_columns: list[str]) -> tuple[dict[str, dict[str, list]] | None, tuple[str, ...]]:
    """stats.json, which LeRobot writes too: entries of other features (images, integers) and extra statistics
    are ignored; when a float column's entry lacks a statistic training needs (LeRobot's converter writes no
    quantiles), the file is not used (None) and the columns are returned, so that it is computed instead."""
    stats = read_json(path, "Recompute it with `svms data stats DIR`.")
    if not isinstance(stats, dict):
        raise SvmsError(f"{path} is not a JSON object. Recompute it with `svms data stats DIR`.")
    lacking = tuple(c for c in float_columns if c in stats and incomplete_stats(stats[c]))
    return (None if lacking else stats), lacking


def load_meta(root: str | Path, require_modality: bool = True) -> DatasetMeta:
    """Parse `root/meta/`; raise SvmsError naming the file and the fix on anything unusable.

    Without `require_modality` (format conversion, which needs no GR00T key map) a dataset that lacks
    meta/modality.json gets one naming every camera feature and no state/action key."""
    root = Path(root)
    if not root.is_dir():
        raise SvmsError(f"dataset folder {root} does not exist; pass the folder that contains meta/.")
    meta_dir = root / "meta"
    info = read_json(meta_dir / "info.json", INFO_JSON_HOWTO)
    _check_info(info, meta_dir / "info.json")
    if require_modality or (meta_dir / "modality.json").exists():
        modality = read_json(meta_dir / "modality.json", MODALITY_JSON_HOWTO)
    else:
        cameras = [k for k, f in info["features"].items() if f.get("dtype") in CAMERA_DTYPES]
        modality = {"state": {}, "action": {}, "video": {k: {"original_key": k} for k in cameras}}
    check_modality_json(modality, meta_dir / "modality.json")
    locations: dict[int, EpisodeLocation] = {}
    if str(info["codebase_version"]).startswith("v3"):
        episodes, tasks, locations = read_v3_index(root, info)
        episode_list, task_list = "meta/episodes/", "meta/tasks.parquet"
    else:
        episodes_howto = 'Each line must be {"episode_index": i, "tasks": ["..."], "length": n}.'
        episodes = _parse_episodes(
            read_jsonl(meta_dir / "episodes.jsonl", episodes_howto), meta_dir / "episodes.jsonl"
        )
        tasks_howto = 'Each line must be {"task_index": i, "task": "..."}.'
        tasks = _parse_tasks(read_jsonl(meta_dir / "tasks.jsonl", tasks_howto), meta_dir / "tasks.jsonl")
        episode_list, task_list = "meta/episodes.jsonl", "tasks.jsonl"
    stats = rel = None
    lacking: tuple[str, ...] = ()
    if (meta_dir / "stats.json").is_file():
        floats = [k for k, f in info["features"].items() if "float" in str(f.get("dtype", ""))]
        stats, lacking = _read_stats(meta_dir / "stats.json", floats)
    if (meta_dir / "relative_stats.json").is_file():
        rel = check_stats_file(
            read_json(meta_dir / "relative_stats.json", ""), meta_dir / "relative_stats.json", matrix=True
        )
    problems = []
    known = set(tasks.values())
    for ep in episodes:
        unknown = [t for t in ep.tasks if t not in known]
        if unknown:
            problems.append(
                f"{episode_list}: episode {ep.index} lists tasks {unknown} that {task_list} lacks; "
                f"add them to {task_list}."
            )
    seen = [e.index for e in episodes]
    if len(set(seen)) != len(seen):
        problems.append(f"{episode_list}: some episode_index values repeat; each episode needs one entry.")
    return DatasetMeta(root, info, episodes, tasks, modality, stats, rel, tuple(problems), locations, lacking)


def split_episodes(meta: DatasetMeta, split: str | None, required: bool = True) -> list[int]:
    """Episode indices of `split` from info.json `splits` ("a:b" ranges or lists), existing episodes only.

    None, or a split the dataset lacks when not `required`, means every episode."""
    existing = [e.index for e in meta.episodes]
    if split is None:
        return existing
    splits = meta.info.get("splits") or {}
    if split not in splits and not required:
        return existing
    if split not in splits:
        raise SvmsError(f"{meta.root / 'meta/info.json'} has no split {split!r} (splits: {sorted(splits) or 'none'}); "
                        "pass --episodes explicitly or generate the dataset with a held-out split")
    spec = splits[split]
    if isinstance(spec, str) and ":" in spec:
        a, b = (int(x) for x in spec.split(":"))
        wanted = range(a, b)
    else:
        wanted = [int(x) for x in spec]
    chosen = [i for i in existing if i in set(wanted)]
    if not chosen:
        raise SvmsError(f"split {split!r} of {meta.root} names no episode that exists")
    return chosen
