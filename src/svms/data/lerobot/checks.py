"""Checks of one episode's files and of the statistics files against the dataset's metadata, shared by
`svms data validate` (which lists every finding) and the loader (which refuses the errors before training
or evaluation reads a sample).

What is checked per episode: the parquet rows against episodes.jsonl; every declared column's dtype
(numbers, not strings) and width (`features.*.shape`); state/action columns against modality.json's
slices; NaN/Inf; values beyond ±`max_abs` (a warning, or an error with `strict_extremes`); timestamps
(increasing, within a quarter frame of frame_index / fps); `frame_index` = 0..n−1 and one `episode_index`
per episode; task indices; each camera's mp4 (frame count, fps against info.json, size) or image feature (its
bytes decode, at the declared size). LeRobot v3.0 adds what its layout promises: the episode's index range
(`dataset_from_index` .. `dataset_to_index`) as long as its `length` and matching the `index` column, and
each video time range (`from_timestamp` .. `to_timestamp`) as long as `length` / fps and inside the file.
Statistics: every value finite, and each entry as wide as its column.

A finding the loader tolerates as the reference does (a declared length that differs from the parquet
rows, metadata totals, a declared video size) is `tolerated`: validation fails on it, loading warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from svms.data.lerobot.images import decode_image
from svms.data.lerobot.meta import CAMERA_DTYPES, EPISODE_LANGUAGE_KEYS, STAT_NAMES, DatasetMeta
from svms.data.lerobot.parquet import read_schema_names
from svms.data.lerobot.video import probe_video
from svms.errors import SvmsError

#: Absolute state/action values beyond this are flagged: they are unit errors or garbage far more often than
#: data, and min-max normalisation squashes the rest of the column to a constant.
DEFAULT_MAX_ABS = 1e6
#: A timestamp may differ from frame_index / fps by this many frames (float32 rounding is far below it).
TIMESTAMP_TOLERANCE_FRAMES = 0.25
#: Relative difference allowed between a video's frame rate and info.json's fps.
FPS_TOLERANCE = 0.01
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index")


@dataclass(frozen=True)
class Problem:
    """One finding: where (a file, or file + field) and what to do; notes and warnings do not fail
    validation. `tolerated`: an error the loader tolerates as the reference does (with a warning)."""

    where: str
    message: str
    severity: str = "error"
    tolerated: bool = False

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def annotation_columns(meta: DatasetMeta) -> list[str]:
    cols = [meta.language_column(f"annotation.{name}") for name in meta.modality.get("annotation", {})]
    return [c for c in cols if c and c not in EPISODE_LANGUAGE_KEYS]


def vector_columns(meta: DatasetMeta) -> list[str]:
    """The parquet columns modality.json's state and action keys slice."""
    return sorted({meta.column_of(m, k) for m in ("state", "action") for k in meta.modality[m]})


def _is_quaternion_key(key: str, entry: dict) -> bool:
    """A 4-wide state key whose name says rotation or quaternion."""
    name = key.lower()
    return entry["end"] - entry["start"] == 4 and ("quat" in name or "rotation" in name)


def _sign_flips(meta: DatasetMeta, episode: int, where: str, arrays: dict) -> list[Problem]:
    """One warning per quaternion state key whose consecutive steps have a negative dot product."""
    out = []
    for key, entry in meta.modality["state"].items():
        column = meta.column_of("state", key)
        if not _is_quaternion_key(key, entry) or column not in arrays:
            continue
        values = arrays[column]
        if values.ndim != 2 or values.shape[1] < entry["end"] or values.dtype.kind not in "fiu":
            continue
        q = values[:, entry["start"]:entry["end"]].astype(np.float64)
        dots = np.sum(q[1:] * q[:-1], axis=1)
        flips = np.flatnonzero(dots < 0)
        if flips.size:
            step = int(flips[0]) + 1
            out.append(Problem(
                f"{where} state key {key!r}",
                f"episode {episode}: the quaternion flips sign at step {step} (dot product with step {step - 1} "
                f"is {dots[flips[0]]:.2f}; {flips.size} flip(s) in this episode). q and -q are the same rotation, "
                "but a policy sees a jump: write each quaternion with the sign nearer the previous step's.",
                "warning",
            ))
    return out


def _column_problems(meta: DatasetMeta, episode: int, where: str, column: str, values: np.ndarray,
                     max_abs: float, strict_extremes: bool) -> list[Problem]:
    """dtype, declared width, modality slices, NaN/Inf and extreme values of one column."""
    at = f"{where} column {column!r}"
    feature = meta.features.get(column, {})
    dtype = str(feature.get("dtype", ""))
    is_vector = column in vector_columns(meta)
    if (is_vector or dtype.startswith(("float", "int", "uint", "bool"))) and values.dtype.kind not in "fiub":
        sample = values.reshape(-1)[:1].tolist()
        kind = type(sample[0]).__name__ if sample else str(values.dtype)
        return [Problem(at, f"episode {episode}: holds {kind} values (e.g. {sample}) but info.json declares "
                            f"{dtype or 'numbers'}; store numbers (a float list per row for state and action).")]
    out = []
    shape = feature.get("shape")
    width = values.shape[1] if values.ndim == 2 else 1
    if isinstance(shape, list) and len(shape) == 1 and len(values) and width != shape[0]:
        kind = f"{width} wide" if values.ndim == 2 else "one value per row"
        out.append(Problem(at, f"episode {episode}: is {kind} but info.json's features declare shape {shape}; "
                               "fix the declared shape or rewrite the column."))
    for m in ("state", "action") if is_vector else ():
        for key, entry in meta.modality[m].items():
            if meta.column_of(m, key) != column:
                continue
            if values.ndim != 2:
                out.append(Problem(at, f"episode {episode}: holds one number per row, but modality.json's {m} "
                                       f"key {key!r} slices [{entry['start']}:{entry['end']}] from it; store a list "
                                       "of floats per row."))
                break
            if entry["end"] > width:
                out.append(Problem(at, f"episode {episode}: is {width} wide but modality.json's {m} key {key!r} "
                                       f"slices [{entry['start']}:{entry['end']}]; fix the slice or the column."))
    if values.dtype.kind != "f" or not values.size:
        return out
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        out.append(Problem(at, f"episode {episode}: {int((~finite).sum())} NaN/Inf values (first at row {row}); "
                               "fix or drop those rows."))
    big = finite & (np.abs(values) > max_abs)
    if is_vector and big.any():
        row = int(np.argwhere(big)[0][0])
        largest = float(np.max(np.abs(values[big])))
        out.append(Problem(
            at, f"episode {episode}: {int(big.sum())} values beyond ±{max_abs:g} (first at row {row}, largest "
                f"{largest:.3g}); normalisation squashes the rest of the column to a constant and squared errors "
                "overflow float32. Check the units or drop those rows (`svms data validate --max-abs X` sets the "
                "threshold, `--strict-extremes` makes this an error).",
            "error" if strict_extremes else "warning"))
    return out


def _first_wrong_row(arrays: dict, column: str, expected) -> int | None:
    """The first row where an integer-valued index column differs from `expected` (None: none, or the column
    is absent or not a numeric scalar column, which the column checks report)."""
    values = arrays.get(column)
    if values is None or values.ndim != 1 or values.dtype.kind not in "iuf":
        return None
    wrong = np.flatnonzero(values != expected)
    return int(wrong[0]) if wrong.size else None


def _index_problems(meta: DatasetMeta, episode: int, where: str, arrays: dict, rows: int) -> list[Problem]:
    """timestamp, frame_index and episode_index of one episode file."""
    out = []
    r = _first_wrong_row(arrays, "frame_index", np.arange(rows))
    if r is not None:
        out.append(Problem(f"{where} column 'frame_index'", f"episode {episode}: row {r} holds frame "
                           f"{arrays['frame_index'][r]:g}; frame_index must be 0, 1, ..., {rows - 1} in row order. "
                           "Sort the rows by frame or rewrite the column."))
    r = _first_wrong_row(arrays, "episode_index", episode)
    if r is not None:
        out.append(Problem(f"{where} column 'episode_index'", f"row {r} holds episode "
                           f"{arrays['episode_index'][r]:g} but this is episode {episode}'s "
                           f"{'row range' if meta.is_v3 else 'file'}; every row belongs to the episode the metadata "
                           "places it in. Fix the column or move the rows to their episode."))
    t = arrays.get("timestamp")
    if t is not None and t.dtype.kind == "f" and len(t) and np.isfinite(t).all():
        t = t.reshape(len(t), -1)[:, 0].astype(np.float64)
        steps = np.flatnonzero(np.diff(t) <= 0)
        expected = np.arange(len(t)) / meta.fps
        off = np.flatnonzero(np.abs(t - expected) > TIMESTAMP_TOLERANCE_FRAMES / meta.fps)
        if steps.size:
            r = int(steps[0]) + 1
            out.append(Problem(f"{where} column 'timestamp'", f"episode {episode}: timestamps do not increase at "
                               f"row {r} ({t[r - 1]:.4f} s, then {t[r]:.4f} s); write them in frame order."))
        elif off.size:
            r = int(off[0])
            out.append(Problem(f"{where} column 'timestamp'", f"episode {episode}: row {r} is at {t[r]:.4f} s but "
                               f"frame {r} at info.json's {meta.fps:g} fps is at {expected[r]:.4f} s; the fps or the "
                               "timestamps are wrong (timestamp must be frame_index / fps)."))
    return out


def _image_problems(meta: DatasetMeta, episode: int, where: str, key: str, cells) -> list[Problem]:
    """An image feature: every row holds bytes; the first and last decode at the declared size."""
    column = meta.video_original_key(key)
    at = f"{where} column {column!r}"
    empty = [i for i, c in enumerate(cells) if not (isinstance(c, dict) and c.get("bytes"))]
    if empty:
        return [Problem(at, f"episode {episode}: {len(empty)} rows hold no image bytes (first row {empty[0]}); an "
                            "image feature needs the encoded PNG/JPEG in each row's 'bytes'. Re-write the dataset "
                            "with its images embedded.")]
    shape = meta.features[column].get("shape")
    for i in sorted({0, len(cells) - 1}) if len(cells) else ():
        try:
            image = decode_image(cells[i], f"{at} row {i}")
        except SvmsError as e:
            return [Problem(at, f"episode {episode}: {e}")]
        if isinstance(shape, list) and len(shape) == 3 and tuple(image.shape) != tuple(shape):
            return [Problem(at, f"episode {episode}: row {i} is a {image.shape[0]}x{image.shape[1]} image with "
                                f"{image.shape[2]} channels but info.json declares shape {shape}; fix the "
                                "feature's shape.", tolerated=True)]
    return []


def _layout_problems(meta: DatasetMeta, episode: int, length: int, where: str, arrays: dict) -> list[Problem]:
    """v3.0: the episode's index range against its length and the `index` column."""
    if not meta.is_v3:
        return []
    loc = meta.location(episode)
    at = f"{meta.episode_list} episode {episode}"
    if loc.stop - loc.start != length:
        return [Problem(at, f"dataset_from_index {loc.start} .. dataset_to_index {loc.stop} spans "
                            f"{loc.stop - loc.start} rows but length is {length}; make them agree (the range is "
                            "where the episode's rows are).")]
    r = _first_wrong_row(arrays, "index", np.arange(loc.start, loc.stop))
    if r is not None:
        return [Problem(f"{where} column 'index'", f"episode {episode}: row {loc.start - loc.file_start + r} holds "
                        f"index {arrays['index'][r]:g} but the episode's range says {loc.start + r}; the rows of a "
                        "data file must follow each other in index order, the episodes in the order of "
                        f"{meta.episode_list}. Rewrite the file or fix dataset_from_index/dataset_to_index.")]
    return []


def _video_problems(meta: DatasetMeta, episode: int, rows: int, where: str = "", arrays: dict | None = None
                    ) -> list[Problem]:
    out = []
    for key in meta.modality["video"]:
        if meta.camera_dtype(key) == "image":
            out += _image_problems(meta, episode, where, key, arrays[meta.video_original_key(key)])
            continue
        try:
            vpath = meta.video_path(episode, key)
        except SvmsError as e:
            out.append(Problem(meta.episode_list, str(e)))
            continue
        vwhere = str(vpath.relative_to(meta.root))
        start = meta.video_start(episode, key)
        if meta.is_v3:
            _, begin, end = meta.location(episode).videos[meta.video_original_key(key)]
            span = (end - begin) * meta.fps
            if abs(span - rows) > 0.5 or abs(begin * meta.fps - start) > TIMESTAMP_TOLERANCE_FRAMES:
                out.append(Problem(f"{meta.episode_list} episode {episode}",
                                   f"videos/{meta.video_original_key(key)} from_timestamp {begin:g} .. to_timestamp "
                                   f"{end:g} s is {span:g} frames at {meta.fps:g} fps (starting at frame "
                                   f"{begin * meta.fps:g}) but the episode has {rows} rows; the range must cover "
                                   "one frame per row, starting on a frame."))
        try:
            probe = probe_video(vpath)
        except SvmsError as e:
            out.append(Problem(vwhere, str(e)))
            continue
        if meta.is_v3 and probe.frames < start + rows:
            out.append(Problem(vwhere, f"has {probe.frames} frames but episode {episode} needs frames {start} .. "
                                       f"{start + rows - 1}; the video is shorter than its time range. Re-encode it "
                                       "or fix the episode's from_timestamp/to_timestamp."))
        elif meta.is_v3:
            pass  # a shared file holds other episodes' frames too
        elif probe.frames < rows:
            out.append(Problem(vwhere, f"has {probe.frames} frames but its parquet file has {rows} rows; the "
                                       "video is shorter than the data. Re-encode it with one frame per row."))
        elif probe.frames > rows:
            out.append(Problem(vwhere, f"has {probe.frames} frames for {rows} rows; the extra frames are never read.",
                               "note"))
        declared = meta.video_feature_info(key)
        rates = (("fps", meta.fps), (f"{meta.video_original_key(key)}'s video.fps", declared.get("video.fps")))
        for name, fps in rates:
            if isinstance(fps, (int, float)) and abs(probe.fps - fps) > FPS_TOLERANCE * fps:
                out.append(Problem(vwhere, f"plays at {probe.fps:g} fps but info.json's {name} is {fps:g}; frame i "
                                           "is at i / fps, so the data and the frames would not line up. Set it to "
                                           "the videos' rate, or re-encode the videos at the declared rate."))
        size = (declared.get("video.height"), declared.get("video.width"))
        if None not in size and size != (probe.height, probe.width):
            out.append(Problem(vwhere, f"is {probe.height}x{probe.width} but info.json declares {size[0]}x{size[1]} "
                                       f"for {meta.video_original_key(key)!r}; fix the feature's shape.",
                               tolerated=True))
    return out


def episode_problems(meta: DatasetMeta, pos: int, max_abs: float = DEFAULT_MAX_ABS,
                     strict_extremes: bool = False) -> list[Problem]:
    """Every finding in the files of the episode at position `pos` of the episode list."""
    ep = meta.episodes[pos]
    where = meta.episode_list
    try:
        path = meta.data_path(ep.index)
        where = str(path.relative_to(meta.root))
        rows = meta.episode_rows(ep.index)
        present = set(read_schema_names(path))
        task_cols = list(dict.fromkeys(annotation_columns(meta) + ["task_index"] * ("task_index" in meta.features)))
        declared = [c for c, f in meta.features.items() if f.get("dtype") not in CAMERA_DTYPES and c in present]
        columns = list(dict.fromkeys(vector_columns(meta) + task_cols + declared))
        images = [meta.video_original_key(k) for k in meta.modality["video"] if meta.camera_dtype(k) == "image"]
        arrays = meta.read_episode(ep.index, columns + images + ["index"] * (meta.is_v3 and "index" in present))
    except SvmsError as e:
        return [Problem(where, str(e))]
    out = _layout_problems(meta, ep.index, ep.length, where, arrays)
    if rows != ep.length and not out:
        out.append(Problem(where, f"has {rows} rows of episode {ep.index} but {meta.episode_list} gives it length "
                                  f"{ep.length}; make them equal (fix the length or the file).",
                           tolerated=not meta.is_v3))
    for column in columns:
        out += _column_problems(meta, ep.index, where, column, arrays[column], max_abs, strict_extremes)
    out += _index_problems(meta, ep.index, where, arrays, rows)
    out += _sign_flips(meta, ep.index, where, arrays)
    for column in task_cols:
        values = arrays[column]
        if values.dtype.kind not in "iu":
            continue  # reported as a dtype problem above
        unknown = sorted(set(values.tolist()) - set(meta.tasks))
        if unknown:
            out.append(Problem(f"{where} column {column!r}", f"task indices {unknown[:5]} have no entry in "
                                                             f"{meta.task_list}; add those tasks or fix the column."))
    return out + _video_problems(meta, ep.index, rows, where, arrays)


def stats_problems(meta: DatasetMeta) -> list[Problem]:
    """stats.json: an entry for every float column, finite values as wide as the column; relative_stats.json:
    finite values, (horizon, key width) per relative action key."""
    how = "recompute it with `svms data stats`."
    if meta.stats_incomplete:
        return [Problem("meta/stats.json", f"entries {list(meta.stats_incomplete)} lack some of {list(STAT_NAMES)} "
                                           "(LeRobot's converter writes no quantiles), so training computes them in "
                                           f"memory; {how}", "note")]
    if meta.stats is None:
        return []
    out = []
    used = set(vector_columns(meta))
    for column in meta.float_columns():
        if column not in meta.stats:
            out.append(Problem("meta/stats.json", f"has no entry for float column {column!r}; {how}",
                               tolerated=column not in used))
    widths = {k: k_entry["end"] - k_entry["start"] for k, k_entry in meta.modality["action"].items()}
    for name, stats, width_of in (("stats.json", meta.stats, meta.feature_width),
                                  ("relative_stats.json", meta.relative_stats or {}, widths.get)):
        floats = set(meta.float_columns()) if name == "stats.json" else set(stats)
        for entry, values in stats.items():
            if entry not in floats:  # LeRobot also keeps stats of images and integer columns; none is used
                continue
            width = width_of(entry)
            for stat in STAT_NAMES:
                try:
                    array = np.asarray(values[stat], dtype=np.float64)
                except (TypeError, ValueError):
                    out.append(Problem(f"meta/{name}", f"entry {entry!r} {stat!r} is not an array of numbers; {how}"))
                    continue
                if not np.isfinite(array).all():
                    out.append(Problem(f"meta/{name}", f"entry {entry!r} {stat!r} holds NaN or Inf; normalising "
                                                       f"with it gives NaN inputs and targets. {how}"))
                found = array.shape[-1] if array.ndim else 1
                if width is not None and found != width:
                    out.append(Problem(f"meta/{name}", f"entry {entry!r} {stat!r} has {found} values per row but "
                                                       f"{entry!r} is {width} wide; {how}"))
    return out


def check_loadable(meta: DatasetMeta, positions: Iterable[int], statistics: bool = True) -> None:
    """What loading for training or evaluation refuses: every error `svms data validate` reports in the
    episodes at `positions` (and in the statistics files when `statistics`, i.e. when they are used),
    except those the loader tolerates. Warnings are passed on as Python warnings."""
    problems = [p for pos in positions for p in episode_problems(meta, pos)]
    problems += stats_problems(meta) if statistics else []
    cautions = [p for p in problems if p.severity == "warning"]
    if cautions:  # one warning, not one per episode
        more = f" ({len(cautions) - 1} more warnings: `svms data validate {meta.root}`)" if len(cautions) > 1 else ""
        warnings.warn(f"{meta.root}: {cautions[0].where}: {cautions[0].message}{more}", stacklevel=3)
    errors = [p for p in problems if p.severity == "error" and not p.tolerated]
    if errors:
        more = f" ({len(errors) - 1} more: `svms data validate {meta.root}` lists them all)" if len(errors) > 1 else ""
        raise SvmsError(f"{meta.root}: {errors[0].where}: {errors[0].message}{more}")
