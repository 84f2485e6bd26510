"""Writing GR00T-flavoured LeRobot v2.1 datasets: parquet per episode, mp4 per camera, meta/ files.

Besides GR00T's files, `meta/episodes_stats.jsonl` (LeRobot v2.1's per-episode min/max/mean/std/count of
every feature, cameras per channel in [0, 1]) is written, so LeRobot 0.3.x opens the dataset offline and
LeRobot's v2.1 → v3.0 converter accepts it.

Used by the tests and by the simulated-data generator. Output is deterministic (same inputs, same
bytes): no wall-clock times in metadata, fixed encoder settings. Videos are h264 (libx264) or AV1
(libsvtav1) yuv420p with a short keyframe interval, so random access decodes few frames.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svms.data.lerobot.meta import ACTION_COLUMN, STATE_COLUMN, DatasetMeta, load_meta
from svms.data.lerobot.stats_files import write_stats
from svms.errors import SvmsError

#: info.json's "created_by" of datasets this module writes (`svms sim generate` passes its own name).
CREATED_BY = "svms.data.lerobot.writer"
#: What a written dataset holds at its top level; `overwrite` removes these and nothing else.
DATASET_PARTS = ("meta", "data", "videos")
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
#: One encoder thread keeps h264 output byte-identical from run to run.
ENCODERS = {
    "h264": ("libx264", {"crf": "18", "preset": "veryfast", "threads": "1"}),
    "av1": ("libsvtav1", {"preset": "12"}),
}


def write_video(path: Path, frames: np.ndarray, fps: float, codec: str = "h264", gop: int = 8) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) (even H and W) to an mp4 with keyframes every `gop` frames."""
    if codec not in ENCODERS:
        raise SvmsError(f"video codec {codec!r} is not supported for writing; use one of {list(ENCODERS)}.")
    name, options = ENCODERS[codec]
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SvmsError(f"frames for {path} must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}.")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise SvmsError(
            f"frames for {path} are {frames.shape[1]}x{frames.shape[2]}; yuv420p needs even sizes."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = int(fps) if float(fps).is_integer() else round(fps * 1000) / 1000
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(name, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {**options, "g": str(gop)}
        stream.codec_context.thread_count = 1  # else FFmpeg's auto thread count overrides "threads"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def replaceable(root: Path, created_by: str) -> str:
    """Why the folder `root` is not a dataset `created_by` wrote ("" when it is): its meta/info.json must
    say `"created_by": created_by`, and it may hold nothing but meta/, data/ and videos/."""
    info_path = root / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return f"it has no readable {info_path.relative_to(root)}"
    mark = info.get("created_by") if isinstance(info, dict) else None
    if mark != created_by:
        return f'meta/info.json says "created_by": {json.dumps(mark)}' if mark else 'meta/info.json has no "created_by"'
    others = sorted(p.name for p in root.iterdir() if p.name not in DATASET_PARTS or not p.is_dir())
    if others:
        return f"it also holds {', '.join(others[:5])}"
    return ""


def _vector_column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    values = np.asarray(values)
    flat = pa.array(values.reshape(-1), type=dtype)
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)), flat
    )


@dataclass
class EpisodeData:
    """One episode in physical units: state (T, D_s), action (T, D_a), frames per camera
    (T, H, W, 3) uint8, and the instruction (one string, or one per frame)."""

    state: np.ndarray
    action: np.ndarray
    videos: Mapping[str, np.ndarray]
    language: str | Sequence[str]
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    """More parquet columns, e.g. `next.reward` (T,)."""


class LeRobotWriter:
    """Accumulates episodes under `root` and writes meta/ (with statistics) on `finish()`.

    `state_keys` / `action_keys` map key → width in concatenation order (modality.json slices);
    `video_keys` are the modality.json camera keys (files under `observation.images.<key>`).
    `created_by` names the writer in info.json (`"created_by"`, a field LeRobot readers ignore); it is
    written first, so an interrupted dataset carries it too. `overwrite` replaces only a dataset with
    the same `created_by` and nothing but meta/, data/ and videos/ (see `replaceable`); anything else is
    refused, never deleted.
    """

    def __init__(
        self,
        root: str | Path,
        fps: float,
        state_keys: Mapping[str, int],
        action_keys: Mapping[str, int],
        video_keys: Sequence[str],
        language_key: str = "annotation.human.action.task_description",
        codec: str = "h264",
        gop: int = 8,
        robot_type: str | None = None,
        chunks_size: int = 1000,
        overwrite: bool = False,
        created_by: str = CREATED_BY,
    ):
        self.root = Path(root)
        if not language_key.startswith("annotation."):
            raise SvmsError(f"language_key {language_key!r} must start with 'annotation.'.")
        if self.root.exists() and not self.root.is_dir():
            raise SvmsError(f"{self.root} is a file, not a folder; choose a new dataset folder.")
        if self.root.is_dir() and any(self.root.iterdir()):
            if not overwrite:
                raise SvmsError(f"{self.root} is not empty; choose a new folder, or pass --overwrite "
                                f"(overwrite=True) to replace a dataset {created_by} wrote there.")
            why = replaceable(self.root, created_by)
            if why:
                raise SvmsError(f"{self.root} is not a dataset {created_by} wrote ({why}), so --overwrite "
                                "(overwrite=True) leaves it alone: choose a new folder, or move or delete this "
                                "one yourself.")
            for name in DATASET_PARTS:
                if (self.root / name).is_dir():
                    shutil.rmtree(self.root / name)
        self.created_by = created_by
        self.fps, self.codec, self.gop = fps, codec, gop
        self.state_keys, self.action_keys = dict(state_keys), dict(action_keys)
        self.video_keys, self.language_key = list(video_keys), language_key
        self.robot_type, self.chunks_size = robot_type, chunks_size
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.video_shapes: dict[str, tuple[int, int]] = {}
        self.extra_dtypes: dict[str, str] = {}
        self.n_frames = 0
        self.episode_stats: list[dict[str, Any]] = []
        (self.root / "meta").mkdir(parents=True, exist_ok=True)  # the mark first: see `replaceable`
        write_json(self.root / "meta" / "info.json", {"codebase_version": "v2.1", "created_by": created_by})

    def _path(self, pattern: str, index: int, **kw: str) -> Path:
        return self.root / pattern.format(episode_chunk=index // self.chunks_size, episode_index=index, **kw)

    def add_episode(self, episode: EpisodeData) -> int:
        """Write one episode's parquet and videos; returns its index."""
        index = len(self.episodes)
        state = np.asarray(episode.state, np.float32)
        action = np.asarray(episode.action, np.float32)
        n = len(state)
        if n == 0 or len(action) != n:
            raise SvmsError(f"episode {index}: state has {n} rows and action {len(action)}; need equal, > 0.")
        for what, arr, keys in (("state", state, self.state_keys), ("action", action, self.action_keys)):
            if arr.ndim != 2 or arr.shape[1] != sum(keys.values()):
                raise SvmsError(
                    f"episode {index}: {what} is {arr.shape}, expected (T, {sum(keys.values())})."
                )
        language = [episode.language] * n if isinstance(episode.language, str) else list(episode.language)
        if len(language) != n:
            raise SvmsError(f"episode {index}: {len(language)} instructions for {n} frames.")
        task_ids = np.asarray([self.tasks.setdefault(t, len(self.tasks)) for t in language], np.int64)
        columns = {
            STATE_COLUMN: _vector_column(state, pa.float32()),
            ACTION_COLUMN: _vector_column(action, pa.float32()),
            "timestamp": pa.array((np.arange(n) / self.fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, index, np.int64)),
            "index": pa.array(np.arange(self.n_frames, self.n_frames + n, dtype=np.int64)),
            "task_index": pa.array(task_ids),
            self.language_key: pa.array(task_ids),
        }
        for name, values in episode.extra.items():
            columns[name] = pa.array(np.asarray(values))
            self.extra_dtypes[name] = str(np.asarray(values).dtype)
        path = self._path(DATA_PATH, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        for key in self.video_keys:
            frames = np.asarray(episode.videos[key])
            if len(frames) != n:
                raise SvmsError(f"episode {index}: camera {key!r} has {len(frames)} frames for {n} rows.")
            self.video_shapes.setdefault(key, frames.shape[1:3])
            write_video(
                self._path(VIDEO_PATH, index, video_key=f"observation.images.{key}"),
                frames,
                self.fps,
                self.codec,
                self.gop,
            )
        self.episodes.append({"episode_index": index, "tasks": list(dict.fromkeys(language)), "length": n})
        stats = {name: feature_stats(column.to_numpy(zero_copy_only=False) if not pa.types.is_list(column.type)
                                     else np.stack(column.to_numpy(zero_copy_only=False)))
                 for name, column in columns.items() if _numeric(column.type)}
        for key in self.video_keys:
            stats[f"observation.images.{key}"] = image_stats(np.asarray(episode.videos[key]))
        self.episode_stats.append({"episode_index": index, "stats": stats})
        self.n_frames += n
        return index

    def _features(self) -> dict[str, Any]:
        def vector(keys: Mapping[str, int]) -> dict[str, Any]:
            names = [f"{k}_{i}" for k, d in keys.items() for i in range(d)]
            return {"dtype": "float32", "shape": [len(names)], "names": names}

        feats: dict[str, Any] = {}
        for key in self.video_keys:
            h, w = self.video_shapes.get(key, (0, 0))
            feats[f"observation.images.{key}"] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": self.codec,
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        feats[STATE_COLUMN], feats[ACTION_COLUMN] = vector(self.state_keys), vector(self.action_keys)
        feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for name in ("frame_index", "episode_index", "index", "task_index", self.language_key):
            feats[name] = {"dtype": "int64", "shape": [1], "names": None}
        for name, dtype in self.extra_dtypes.items():
            feats[name] = {"dtype": dtype, "shape": [1], "names": None}
        return feats

    def _modality(self) -> dict[str, Any]:
        def slices(keys: Mapping[str, int]) -> dict[str, dict[str, int]]:
            out, start = {}, 0
            for k, d in keys.items():
                out[k], start = {"start": start, "end": start + d}, start + d
            return out

        return {
            "state": slices(self.state_keys),
            "action": slices(self.action_keys),
            "video": {k: {"original_key": f"observation.images.{k}"} for k in self.video_keys},
            "annotation": {self.language_key.removeprefix("annotation."): {}},
        }

    @staticmethod
    def _splits(n_eps: int, heldout: int | Sequence[int]) -> dict[str, Any]:
        if isinstance(heldout, int):
            if 0 < heldout < n_eps:
                return {"train": f"0:{n_eps - heldout}", "heldout": f"{n_eps - heldout}:{n_eps}"}
            return {"train": f"0:{n_eps}"}
        held = sorted(set(int(i) for i in heldout))
        if not held:
            return {"train": f"0:{n_eps}"}
        return {"train": [i for i in range(n_eps) if i not in held], "heldout": held}

    def finish(self, embodiment_tag: str = "new_embodiment", stats: bool = True,
               heldout: int | Sequence[int] = 0) -> DatasetMeta:
        """Write meta/ (info, episodes, tasks, modality and, with `stats`, both statistics files).

        `heldout` splits episodes off for evaluation: an int k makes info.json `splits` = {"train":
        "0:n-k", "heldout": "n-k:n"}; a list of episode indices makes both splits explicit lists."""
        meta_dir = self.root / "meta"
        meta_dir.mkdir(parents=True, exist_ok=True)
        n_eps = len(self.episodes)
        info = {
            "codebase_version": "v2.1",
            "created_by": self.created_by,
            "robot_type": self.robot_type,
            "total_episodes": n_eps,
            "total_frames": self.n_frames,
            "total_tasks": len(self.tasks),
            "total_videos": n_eps * len(self.video_keys),
            "total_chunks": -(-n_eps // self.chunks_size),
            "chunks_size": self.chunks_size,
            "fps": self.fps,
            "splits": self._splits(n_eps, heldout),
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": self._features(),
        }
        write_json(meta_dir / "info.json", info)
        write_jsonl(meta_dir / "episodes.jsonl", self.episodes)
        write_jsonl(meta_dir / "tasks.jsonl", [{"task_index": i, "task": t} for t, i in self.tasks.items()])
        write_jsonl(meta_dir / "episodes_stats.jsonl", self.episode_stats)
        write_json(meta_dir / "modality.json", self._modality())
        if stats:
            write_stats(self.root, embodiment_tag)
        return load_meta(self.root)


def _numeric(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-episode statistics of a column: min, max, mean, std over rows, count = [rows]; a scalar
    column gets one-element lists."""
    values = np.asarray(values)
    values = values.reshape(len(values), -1) if values.ndim == 1 else values
    as_float = values.astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": as_float.mean(0).tolist(),
            "std": as_float.std(0).tolist(), "count": [len(values)]}


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """LeRobot's per-episode statistics of a camera: per channel over all frames and pixels, in [0, 1], as
    (3, 1, 1) nested lists."""
    channels = np.asarray(frames, np.float64).reshape(-1, frames.shape[-1]) / 255.0
    nest = lambda v: [[[float(c)]] for c in v]  # noqa: E731
    return {"min": nest(channels.min(0)), "max": nest(channels.max(0)), "mean": nest(channels.mean(0)),
            "std": nest(channels.std(0)), "count": [len(frames)]}


def write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=4) + "\n")


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def moving_frames(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3) frames that differ from step to step (a drifting colour ramp): cheap to
    encode, and a wrong frame index is visible after decoding."""
    h, w = hw
    ramp = ((np.arange(w)[None, :] * 3 + np.arange(h)[:, None] * 2) % 256).astype(np.uint8)
    out = np.empty((n, h, w, 3), np.uint8)
    for c in range(3):
        shift = (((7 + 3 * c + seed) * np.arange(n) + 40 * c) % 256).astype(np.uint8)
        out[..., c] = ramp[None] + shift[:, None, None]  # uint8 arithmetic wraps modulo 256
    return out


def write_synthetic_dataset(
    root: str | Path,
    lengths: Sequence[int] = (24, 30, 36),
    cameras: Sequence[str] = ("cam0", "cam1"),
    hw: tuple[int, int] = (32, 32),
    instructions: Sequence[str] = ("pick the apple from the counter and place it in the sink",),
    state_keys: Mapping[str, int] | None = None,
    action_keys: Mapping[str, int] | None = None,
    fps: float = 20,
    codec: str = "h264",
    seed: int = 0,
    stats: bool = True,
    heldout: int = 0,
) -> DatasetMeta:
    """A small valid dataset with random states/actions and moving frames (tests, benchmarks, demos);
    `heldout` last episodes form the "heldout" split.

    Episode e uses instruction e mod len(instructions).
    """
    state_keys = dict(state_keys or {"arm": 3, "gripper": 1})
    action_keys = dict(action_keys or {"arm": 3, "gripper": 1})
    rng = np.random.default_rng(seed)
    writer = LeRobotWriter(root, fps, state_keys, action_keys, cameras, codec=codec, overwrite=True)
    for e, n in enumerate(lengths):
        state = rng.standard_normal((n, sum(state_keys.values())))
        action = rng.standard_normal((n, sum(action_keys.values())))
        videos = {c: moving_frames(n, hw, seed=e + 11 * i) for i, c in enumerate(cameras)}
        writer.add_episode(EpisodeData(state, action, videos, instructions[e % len(instructions)]))
    return writer.finish(stats=stats, heldout=heldout)


def fill_from_meta(
    root: str | Path, seed: int = 0, frame_hw: tuple[int, int] | None = None, codec: str | None = None
) -> None:
    """Synthesise parquet and videos that fit an existing meta/ folder (lengths, columns, tasks,
    cameras): how the tests show that metadata written by others is accepted.

    Float columns get random values, task columns the episode's first task, cameras a moving
    pattern at the declared size (or `frame_hw`) in the declared codec (or `codec`).
    """
    meta = load_meta(root)
    rng = np.random.default_rng(seed)
    task_index = {t: i for i, t in meta.tasks.items()}
    offset = 0
    for ep in meta.episodes:
        n = ep.length
        first_task = task_index.get(ep.tasks[0], 0) if ep.tasks else 0
        columns = {}
        for name, feat in meta.features.items():
            dtype, shape = str(feat.get("dtype")), feat.get("shape") or [1]
            if dtype == "video":
                continue
            if name in ("frame_index", "episode_index", "index"):
                values = np.arange(n) + {"frame_index": 0, "episode_index": 0, "index": offset}[name]
                columns[name] = pa.array(np.full(n, ep.index) if name == "episode_index" else values)
            elif name == "timestamp":
                columns[name] = pa.array((np.arange(n) / meta.fps).astype(dtype))
            elif "float" in dtype:
                values = rng.standard_normal((n, shape[0])).astype(dtype)
                columns[name] = (
                    _vector_column(values, pa.from_numpy_dtype(np.dtype(dtype)))
                    if (name in (STATE_COLUMN, ACTION_COLUMN) or shape[0] > 1)
                    else pa.array(values[:, 0])
                )
            elif dtype == "bool":
                columns[name] = pa.array(np.arange(n) == n - 1)
            else:
                columns[name] = pa.array(np.full(n, first_task, np.int64))
        path = meta.data_path(ep.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        for key in meta.modality["video"]:
            info = meta.video_feature_info(key)
            h, w = frame_hw or (int(info["video.height"]), int(info["video.width"]))
            write_video(
                meta.video_path(ep.index, key),
                moving_frames(n, (h, w), seed),
                meta.fps,
                codec or str(info.get("video.codec", "h264")),
                gop=8,
            )
        offset += n
