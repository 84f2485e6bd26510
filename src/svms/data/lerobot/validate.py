"""Strict dataset validation: every inconsistency the loader would tolerate or trip over, as a list.

Where loading warns and carries on as the reference does (a declared episode length that differs
from the parquet rows, tasks missing from tasks.jsonl), validation reports an error. A dataset
that only lacks `meta/stats.json` is valid: that gets a note saying how to compute it. A quaternion
state key that flips sign between steps gets a warning: q and -q are one rotation, so the data are
not wrong, but a policy sees a jump.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track

from svms.data.lerobot.meta import EPISODE_LANGUAGE_KEYS, DatasetMeta, load_meta, modality_range_problems
from svms.data.lerobot.parquet import parquet_rows, read_columns
from svms.data.lerobot.video import probe_video
from svms.errors import SvmsError


@dataclass(frozen=True)
class Problem:
    """One finding: where (a file, or file + field) and what to do; notes and warnings do not fail
    validation."""

    where: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def _annotation_columns(meta: DatasetMeta) -> list[str]:
    cols = [meta.language_column(f"annotation.{name}") for name in meta.modality.get("annotation", {})]
    return [c for c in cols if c and c not in EPISODE_LANGUAGE_KEYS]


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
        values = np.asarray(arrays[column], dtype=np.float64)
        if values.ndim != 2 or values.shape[1] < entry["end"]:
            continue
        q = values[:, entry["start"]:entry["end"]]
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


def _check_episode(meta: DatasetMeta, pos: int) -> list[Problem]:
    ep = meta.episodes[pos]
    path = meta.data_path(ep.index)
    where = str(path.relative_to(meta.root))
    try:
        rows = parquet_rows(path)
        vector_cols = sorted({meta.column_of(m, k) for m in ("state", "action") for k in meta.modality[m]})
        task_cols = list(
            dict.fromkeys(_annotation_columns(meta) + ["task_index"] * ("task_index" in meta.features))
        )
        arrays = read_columns(path, vector_cols + task_cols)
    except SvmsError as e:
        return [Problem(where, str(e))]
    out = []
    if rows != ep.length:
        out.append(
            Problem(
                where,
                f"has {rows} rows but meta/episodes.jsonl gives episode {ep.index} length "
                f"{ep.length}; make them equal (fix the length or the file).",
            )
        )
    for column in vector_cols:
        values = np.asarray(arrays[column], dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            out.append(
                Problem(
                    f"{where} column {column!r}",
                    f"{int(bad.sum())} NaN/Inf values (first at row {row}); fix or drop those rows.",
                )
            )
        width = values.shape[1] if values.ndim == 2 else 1
        for m in ("state", "action"):
            for key, entry in meta.modality[m].items():
                if meta.column_of(m, key) == column and entry["end"] > width:
                    out.append(
                        Problem(
                            f"{where} column {column!r}",
                            f"is {width} wide but modality.json's {m} "
                            f"key {key!r} slices [{entry['start']}:{entry['end']}]; fix the slice.",
                        )
                    )
    out += _sign_flips(meta, ep.index, where, arrays)
    for column in task_cols:
        unknown = sorted(set(np.asarray(arrays[column]).tolist()) - set(meta.tasks))
        if unknown:
            out.append(
                Problem(
                    f"{where} column {column!r}",
                    f"task indices {unknown[:5]} have no entry in "
                    "meta/tasks.jsonl; add those tasks or fix the column.",
                )
            )
    for key in meta.modality["video"]:
        vpath = meta.video_path(ep.index, key)
        vwhere = str(vpath.relative_to(meta.root))
        try:
            probe = probe_video(vpath)
        except SvmsError as e:
            out.append(Problem(vwhere, str(e)))
            continue
        if probe.frames < rows:
            out.append(
                Problem(
                    vwhere,
                    f"has {probe.frames} frames but its parquet file has {rows} rows; the "
                    "video is shorter than the data. Re-encode it with one frame per row.",
                )
            )
        elif probe.frames > rows:
            out.append(
                Problem(
                    vwhere,
                    f"has {probe.frames} frames for {rows} rows; the extra frames are never read.",
                    "note",
                )
            )
        declared = meta.video_feature_info(key)
        size = (declared.get("video.height"), declared.get("video.width"))
        if None not in size and size != (probe.height, probe.width):
            out.append(
                Problem(
                    vwhere,
                    f"is {probe.height}x{probe.width} but info.json declares "
                    f"{size[0]}x{size[1]} for {meta.video_original_key(key)!r}; fix the "
                    "feature's shape.",
                )
            )
    return out


def validate_dataset(root: str | Path, progress: bool = False) -> list[Problem]:
    """All problems of the dataset at `root`; valid iff none has severity "error"."""
    try:
        meta = load_meta(root)
    except SvmsError as e:
        return [Problem(str(Path(root) / "meta"), str(e))]
    out = [Problem("meta", p) for p in meta.problems]
    out += [
        Problem("meta/modality.json", p.removeprefix("meta/modality.json: "))
        for p in modality_range_problems(meta)
    ]
    if not meta.episodes:
        out.append(Problem("meta/episodes.jsonl", "lists no episode: the dataset is empty."))
    declared = meta.info.get("total_episodes")
    if declared is not None and declared != len(meta.episodes):
        out.append(
            Problem(
                "meta/info.json",
                f"total_episodes is {declared} but episodes.jsonl has "
                f"{len(meta.episodes)} lines; make them agree.",
            )
        )
    declared = meta.info.get("total_frames")
    if declared is not None and declared != meta.total_frames:
        out.append(
            Problem(
                "meta/info.json",
                f"total_frames is {declared} but the episode lengths sum to "
                f"{meta.total_frames}; make them agree.",
            )
        )
    try:
        _annotation_columns(meta)
    except SvmsError as e:
        out.append(Problem("meta/modality.json", str(e)))
        return out
    if meta.stats is None:
        out.append(
            Problem(
                "meta/stats.json",
                f"missing; compute it with `svms data stats {meta.root} "
                "--embodiment-tag TAG` (training computes it otherwise).",
                "note",
            )
        )
    else:
        for column in meta.float_columns():
            if column not in meta.stats:
                out.append(
                    Problem(
                        "meta/stats.json",
                        f"has no entry for float column {column!r}; recompute it with `svms data stats`.",
                    )
                )
    positions = range(len(meta.episodes))
    if progress:
        positions = track(positions, description="checking episodes", transient=True)
    for pos in positions:
        out += _check_episode(meta, pos)
    return out
