"""`svms data convert`: LeRobot v2.x ↔ v3.0, keeping GR00T's and svms's files.

LeRobot ships only a v2.1 → v3.0 converter, and it drops `meta/modality.json` and `relative_stats.json`;
this one goes both ways and keeps `modality.json`, `stats.json` and `relative_stats.json`. State, action,
task and every other column are copied as they are (only v3.0's global `index` is renumbered when the
source's is not already 0..N-1). Image features are copied byte for byte. Videos are copied packet by
packet (the frames decode bit-identical): to v3.0 an episode's mp4 is appended to its camera's shared file,
from v3.0 an episode's time range is cut out, which works when it starts on a keyframe, as LeRobot's writer
and converter make it. Where packets cannot be copied (episodes encoded with different settings, a range
that starts between keyframes), the frames are decoded and re-encoded as h264 (within codec rounding).

v2.1 output also gets LeRobot's `meta/episodes_stats.jsonl`, so LeRobot 0.3.x opens it offline. When the
source's stats.json lacks the quantiles training needs (LeRobot's converter writes none), the statistics
are computed (`stats_files.write_stats`), the source's file kept as `stats.backup.json`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svms.data.lerobot.images import decode_image
from svms.data.lerobot.meta import CAMERA_DTYPES, DatasetMeta, load_meta
from svms.data.lerobot.parquet import read_table_rows
from svms.data.lerobot.stats_files import write_stats
from svms.data.lerobot.video import VideoDecoder
from svms.data.lerobot.writer import (
    DATA_PATH,
    VIDEO_PATH,
    feature_stats,
    image_stats,
    write_json,
    write_jsonl,
    write_video,
)
from svms.errors import SvmsError

TARGETS = ("v2.1", "v3.0")
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
#: Files of meta/ that LeRobot's converter does not carry and this one does.
CARRIED = ("modality.json", "stats.json", "relative_stats.json")
CREATED_BY = "svms data convert"
#: Frames per episode and camera that LeRobot-style per-episode image statistics are computed from.
STATS_FRAMES = 32


def _cameras(meta: DatasetMeta) -> tuple[DatasetMeta, list[str]]:
    """Every camera feature (not only modality.json's), and a view of `meta` that names each by its feature."""
    cameras = [k for k, f in meta.features.items() if f.get("dtype") in CAMERA_DTYPES]
    video = {k: {"original_key": k} for k in cameras}
    return dataclasses.replace(meta, modality={**meta.modality, "video": video}), cameras


def _chunk(index: int, size: int) -> tuple[int, int]:
    return index // size, index % size


# ---- video packets ---------------------------------------------------------------------------------------
def _stream_key(path: Path) -> tuple:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.name, s.codec_context.width, s.codec_context.height, bytes(
            s.codec_context.extradata or b""), s.time_base


class PacketJoiner:
    """Appends frame ranges of mp4 files to one mp4 by copying packets, shifting their times so that the
    pieces play back to back; `append` returns False (writing nothing) when a piece cannot be cut there."""

    def __init__(self, path: Path, template: Path, fps: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.frames, self.bytes = path, fps, 0, 0
        self._template = av.open(str(template))
        self.out = av.open(str(path), "w")
        self.stream = self.out.add_stream_from_template(self._template.streams.video[0], opaque=True)

    def append(self, source: Path, start: int, count: int) -> bool:
        with av.open(str(source)) as c:
            s = c.streams.video[0]
            tb, origin = float(s.time_base), s.start_time or 0
            index = lambda p: round((p.pts - origin) * tb * self.fps)  # noqa: E731
            packets = [p for p in c.demux(s) if p.dts is not None and p.pts is not None
                       and start <= index(p) < start + count]
            if not packets or not packets[0].is_keyframe or index(packets[0]) != start or len(packets) != count:
                return False
            shift = round((self.frames - start) / self.fps / tb) - origin
            for p in packets:
                p.pts, p.dts = p.pts + shift, p.dts + shift
                p.stream = self.stream
                self.bytes += p.size
                self.out.mux(p)
        self.frames += count
        return True

    def close(self) -> None:
        self.out.close()
        self._template.close()


def _decoded(meta: DatasetMeta, episode: int, camera: str, count: int) -> np.ndarray:
    decoder = VideoDecoder(meta.video_path(episode, camera))
    try:
        start = meta.video_start(episode, camera)
        return np.stack(decoder.frames(list(range(start, start + count))))
    finally:
        decoder.close()


# ---- statistics ------------------------------------------------------------------------------------------
def _episode_stats(meta: DatasetMeta, episode: int, table: pa.Table, cameras: list[str]) -> dict[str, Any]:
    """LeRobot's per-episode statistics of every numeric column and camera (cameras from <= STATS_FRAMES frames)."""
    out = {}
    for name in table.column_names:
        kind = table.schema.field(name).type
        base = kind.value_type if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) else kind
        if not (pa.types.is_integer(base) or pa.types.is_floating(base) or pa.types.is_boolean(base)):
            continue
        column = table.column(name).combine_chunks()
        values = (column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1) if base is not kind
                  else column.to_numpy(zero_copy_only=False))
        out[name] = feature_stats(values)
    n = table.num_rows
    picks = sorted(set(np.linspace(0, n - 1, min(n, STATS_FRAMES)).round().astype(int).tolist())) if n else []
    for camera in cameras:
        if meta.features[camera]["dtype"] == "image":
            cells = table.column(camera).to_pylist()
            frames = np.stack([decode_image(cells[i], f"{camera} row {i}") for i in picks])
        else:
            decoder = VideoDecoder(meta.video_path(episode, camera))
            start = meta.video_start(episode, camera)
            frames = np.stack(decoder.frames([start + i for i in picks]))
            decoder.close()
        out[camera] = image_stats(frames)
    return out


# ---- v2 → v3 ---------------------------------------------------------------------------------------------
def _videos_to_v3(meta: DatasetMeta, out: Path, camera: str, lengths: list[int], file_mb: float,
                  chunks_size: int) -> list[tuple[str, float, float, int, int]]:
    """Join a camera's episode files by copying packets (a new file once one reaches `file_mb` MB); per episode
    (file, from, to, chunk, file index). Re-encodes all of them when some cannot be copied."""
    sources = [meta.video_path(ep.index, camera) for ep in meta.episodes]
    if len({_stream_key(p) for p in sources}) != 1:  # different encoders: packets cannot share one stream
        return _videos_to_v3_encoded(meta, out, camera, lengths)
    rows, file_index, joiner = [], 0, None
    for source, n in zip(sources, lengths, strict=True):
        if joiner is not None and joiner.bytes / 1e6 >= file_mb:
            joiner.close()
            joiner, file_index = None, file_index + 1
        chunk, f = _chunk(file_index, chunks_size)
        if joiner is None:
            joiner = PacketJoiner(out / V3_VIDEO_PATH.format(video_key=camera, chunk_index=chunk, file_index=f),
                                  source, meta.fps)
        begin = joiner.frames
        if not joiner.append(source, 0, n):
            joiner.close()
            shutil.rmtree(out / "videos" / camera)
            return _videos_to_v3_encoded(meta, out, camera, lengths)
        rows.append((str(joiner.path.relative_to(out)), begin / meta.fps, (begin + n) / meta.fps, chunk, f))
    joiner.close()
    return rows


def _videos_to_v3_encoded(meta: DatasetMeta, out: Path, camera: str, lengths: list[int]):
    """Decode every episode of a camera and encode them as one h264 file (episodes that cannot be copied)."""
    frames = [_decoded(meta, ep.index, camera, n) for ep, n in zip(meta.episodes, lengths, strict=True)]
    path = out / V3_VIDEO_PATH.format(video_key=camera, chunk_index=0, file_index=0)
    write_video(path, np.concatenate(frames), meta.fps, "h264", gop=2)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rel = str(path.relative_to(out))
    return [(rel, starts[i] / meta.fps, starts[i + 1] / meta.fps, 0, 0) for i in range(len(lengths))]


def _tasks_parquet(path: Path, tasks: dict[int, str]) -> None:
    """meta/tasks.parquet as LeRobot writes it: column task_index, the task string as the pandas index."""
    order = sorted(tasks)
    pandas = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(order, pa.int64()),
                      "__index_level_0__": pa.array([tasks[i] for i in order], pa.string())})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), path)


def _to_v3(meta: DatasetMeta, out: Path, data_file_mb: float, video_file_mb: float) -> None:
    meta, cameras = _cameras(meta)
    chunks_size = meta.chunks_size
    tables = [read_table_rows(meta.data_path(ep.index), _data_columns(meta), meta.data_rows(ep.index))
              for ep in meta.episodes]
    lengths = [t.num_rows for t in tables]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    episodes: list[dict[str, Any]] = []
    file_index, pending, pending_bytes = 0, [], 0

    def flush():
        nonlocal file_index, pending, pending_bytes
        if pending:
            chunk, f = _chunk(file_index, chunks_size)
            path = out / V3_DATA_PATH.format(chunk_index=chunk, file_index=f)
            path.parent.mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(path, pending[0].schema) as writer:
                for table in pending:  # a row group per episode: reading one episode reads its own rows
                    writer.write_table(table)
            file_index, pending, pending_bytes = file_index + 1, [], 0

    for i, (ep, table) in enumerate(zip(meta.episodes, tables, strict=True)):
        if "index" in table.column_names:
            table = table.set_column(table.column_names.index("index"), "index",
                                     pa.array(np.arange(starts[i], starts[i + 1], dtype=np.int64)))
        table = table.replace_schema_metadata(tables[0].schema.metadata)
        if pending and pending_bytes + table.nbytes >= data_file_mb * 1e6:
            flush()
        chunk, f = _chunk(file_index, chunks_size)
        stats = _episode_stats(meta, ep.index, table, cameras)
        episodes.append({"episode_index": ep.index, "tasks": list(ep.tasks), "length": lengths[i],
                         "data/chunk_index": chunk, "data/file_index": f, "dataset_from_index": int(starts[i]),
                         "dataset_to_index": int(starts[i + 1]),
                         **{f"stats/{k}/{s}": v for k, entry in stats.items() for s, v in entry.items()}})
        pending.append(table)
        pending_bytes += table.nbytes
    flush()
    videos = [c for c in cameras if meta.features[c]["dtype"] == "video"]
    for camera in videos:
        for row, (_file, begin, end, chunk, f) in zip(episodes, _videos_to_v3(meta, out, camera, lengths,
                                                                            video_file_mb, chunks_size), strict=True):
            row.update({f"videos/{camera}/chunk_index": chunk, f"videos/{camera}/file_index": f,
                        f"videos/{camera}/from_timestamp": begin, f"videos/{camera}/to_timestamp": end})
    for row in episodes:
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
    path = out / V3_EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    _tasks_parquet(out / "meta" / "tasks.parquet", meta.tasks)
    info = {k: v for k, v in meta.info.items() if k not in ("total_chunks", "total_videos")}
    info.update(codebase_version="v3.0", created_by=CREATED_BY, total_episodes=len(episodes),
                total_frames=int(starts[-1]), total_tasks=len(meta.tasks), data_files_size_in_mb=data_file_mb,
                video_files_size_in_mb=video_file_mb, data_path=V3_DATA_PATH,
                video_path=V3_VIDEO_PATH if videos else None)
    write_json(out / "meta" / "info.json", info)


# ---- v3 → v2 ---------------------------------------------------------------------------------------------
def _to_v2(meta: DatasetMeta, out: Path) -> None:
    meta, cameras = _cameras(meta)
    chunks_size = meta.chunks_size
    episodes, stats = [], []
    for ep in meta.episodes:
        table = read_table_rows(meta.data_path(ep.index), _data_columns(meta), meta.data_rows(ep.index))
        n = table.num_rows
        path = out / DATA_PATH.format(episode_chunk=ep.index // chunks_size, episode_index=ep.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.replace_schema_metadata(_hf_schema_note(table)), path)
        for camera in (c for c in cameras if meta.features[c]["dtype"] == "video"):
            target = out / VIDEO_PATH.format(episode_chunk=ep.index // chunks_size, video_key=camera,
                                             episode_index=ep.index)
            source, start = meta.video_path(ep.index, camera), meta.video_start(ep.index, camera)
            joiner = PacketJoiner(target, source, meta.fps)
            copied = joiner.append(source, start, n)
            joiner.close()
            if not copied:
                write_video(target, _decoded(meta, ep.index, camera, n), meta.fps, "h264", gop=2)
        episodes.append({"episode_index": ep.index, "tasks": list(ep.tasks), "length": n})
        stats.append({"episode_index": ep.index, "stats": _episode_stats(meta, ep.index, table, cameras)})
    videos = sum(meta.features[c]["dtype"] == "video" for c in cameras)
    info = {k: v for k, v in meta.info.items() if k not in ("data_files_size_in_mb", "video_files_size_in_mb")}
    info.update(codebase_version="v2.1", created_by=CREATED_BY, total_episodes=len(episodes),
                total_frames=sum(e["length"] for e in episodes), total_tasks=len(meta.tasks),
                total_videos=videos * len(episodes), total_chunks=-(-len(episodes) // chunks_size),
                data_path=DATA_PATH, video_path=VIDEO_PATH if videos else None)
    write_json(out / "meta" / "info.json", info)
    write_jsonl(out / "meta" / "episodes.jsonl", episodes)
    write_jsonl(out / "meta" / "episodes_stats.jsonl", stats)
    write_jsonl(out / "meta" / "tasks.jsonl", [{"task_index": i, "task": meta.tasks[i]} for i in sorted(meta.tasks)])


def _hf_schema_note(table: pa.Table) -> dict[bytes, bytes]:
    """The `huggingface` schema note in the form every `datasets` release reads (`Sequence`, `Value`, `Image`).

    A v3.0 file's own note names types of the release that wrote it ("List" in datasets 4), which the
    releases LeRobot 0.3 runs on cannot parse; without any note they would not know a struct is an image."""
    def feature(kind: pa.DataType) -> dict[str, Any]:
        if pa.types.is_struct(kind) and {f.name for f in kind} == {"bytes", "path"}:
            return {"_type": "Image"}
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
            length = kind.list_size if pa.types.is_fixed_size_list(kind) else -1
            return {"feature": feature(kind.value_type), "length": length, "_type": "Sequence"}
        name = {"float": "float32", "double": "float64", "bool": "bool", "string": "string",
                "large_string": "large_string"}.get(str(kind), str(kind))
        return {"dtype": name, "_type": "Value"}

    note = {"info": {"features": {f.name: feature(f.type) for f in table.schema}}}
    return {b"huggingface": json.dumps(note).encode()}


def _data_columns(meta: DatasetMeta) -> list[str]:
    path = meta.data_path(meta.episodes[0].index)
    return list(pq.read_schema(path).names)


def convert_dataset(source: str | Path, out: str | Path, to: str, data_file_mb: float = 100,
                    video_file_mb: float = 200, embodiment_tag: str = "new_embodiment") -> DatasetMeta:
    """Write `source` in LeRobot format `to` ("v2.1" or "v3.0") to the new folder `out`; returns its meta.
    v3.0 output starts a new data (video) file when one reaches `data_file_mb` (`video_file_mb`) MB."""
    if to not in TARGETS:
        raise SvmsError(f"--to {to!r}: convert to one of {list(TARGETS)}.")
    source, out = Path(source), Path(out)
    meta = load_meta(source, require_modality=False)
    if meta.version == to:
        raise SvmsError(f"{source} is already LeRobot {to}; nothing to convert (copy the folder instead).")
    if not meta.episodes:
        raise SvmsError(f"{source / meta.episode_list} lists no episode; there is nothing to convert.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SvmsError(f"{out} exists and is not empty; convert into a new folder (nothing there is replaced).")
    if not (data_file_mb > 0 and video_file_mb > 0):
        raise SvmsError(f"file sizes {data_file_mb} / {video_file_mb} MB: use positive numbers.")
    created = not out.exists()
    try:
        (out / "meta").mkdir(parents=True, exist_ok=True)
        if to == "v3.0":
            _to_v3(meta, out, data_file_mb, video_file_mb)
        else:
            _to_v2(meta, out)
        for name in CARRIED:
            if (source / "meta" / name).is_file():
                shutil.copyfile(source / "meta" / name, out / "meta" / name)
        if (out / "meta" / "modality.json").is_file():
            if load_meta(out).stats_incomplete:  # e.g. LeRobot's converter writes no quantiles

                write_stats(out, embodiment_tag)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return load_meta(out, require_modality=False)
