"""A dataset at a glance: format, episodes, frames, fps, tasks, cameras, state/action layout, embodiment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svms.data.lerobot.meta import load_meta
from svms.data.lerobot.video import probe_video
from svms.data.modality import MODALITY_CONFIGS
from svms.errors import SvmsError


@dataclass(frozen=True)
class CameraSummary:
    """A camera: declared size/codec in info.json and, when its first video opens, the file's."""

    key: str
    original_key: str
    declared: str
    actual: str


@dataclass(frozen=True)
class DatasetSummary:
    root: Path
    version: str
    robot_type: str | None
    episodes: int
    frames: int
    fps: float
    tasks: list[str]
    cameras: list[CameraSummary]
    state: dict[str, int]
    action: dict[str, int]
    language: list[str]
    matching_tags: list[str]
    has_stats: bool
    has_relative_stats: bool
    layout: str = ""
    """v3.0: how many data and video files the episodes share."""

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""

        def keys(d: dict[str, int]) -> str:
            return ", ".join(f"{k}[{n}]" for k, n in d.items()) + f"  (total {sum(d.values())})"

        out = [
            f"dataset      {self.root}  (LeRobot {self.version}, robot {self.robot_type or '?'})",
            *([f"layout       {self.layout}"] if self.layout else []),
            f"episodes     {self.episodes}, {self.frames} frames at {self.fps:g} fps "
            f"({self.frames / max(self.fps, 1e-9):.1f} s)",
            f"tasks        {len(self.tasks)}",
            *(f"  - {t}" for t in self.tasks[:10]),
            *([f"  … {len(self.tasks) - 10} more"] if len(self.tasks) > 10 else []),
            "cameras",
            *(
                f"  - {c.key} ({c.original_key}): declared {c.declared}; file {c.actual}"
                for c in self.cameras
            ),
            f"state        {keys(self.state)}",
            f"action       {keys(self.action)}",
            f"language     {', '.join(self.language) or '-'}",
            f"embodiment   registered configs that fit: {', '.join(self.matching_tags) or 'none'}"
            " (custom robots: new_embodiment)",
            f"statistics   stats.json {'yes' if self.has_stats else 'no'}, "
            f"relative_stats.json {'yes' if self.has_relative_stats else 'no'}",
        ]
        return out


def inspect_dataset(root: str | Path) -> DatasetSummary:
    """Summarise metadata; probes the first episode's videos for their real size and codec."""
    meta = load_meta(root)
    cameras = []
    for key in meta.modality["video"]:
        info = meta.video_feature_info(key)
        declared = (
            f"{info.get('video.height', '?')}x{info.get('video.width', '?')} {info.get('video.codec', '?')}"
        )
        actual = "-"
        if meta.camera_dtype(key) == "image":
            shape = meta.features[meta.video_original_key(key)].get("shape") or ["?", "?"]
            declared, actual = f"{shape[0]}x{shape[1]} image feature", "encoded images in the parquet rows"
        elif meta.episodes:
            try:
                p = probe_video(meta.video_path(meta.episodes[0].index, key))
                actual = (
                    f"{p.height}x{p.width} {p.codec}, {p.frames} frames (episode {meta.episodes[0].index})"
                )
            except SvmsError:
                actual = "missing or unreadable"
        cameras.append(CameraSummary(key, meta.video_original_key(key), declared, actual))

    def widths(modality: str) -> dict[str, int]:
        return {k: e["end"] - e["start"] for k, e in meta.modality[modality].items()}

    fits = [
        tag
        for tag, cfg in MODALITY_CONFIGS.items()
        if all(
            set(getattr(cfg, m).modality_keys) <= set(meta.modality[m]) for m in ("state", "action", "video")
        )
    ]
    return DatasetSummary(
        meta.root,
        meta.version,
        meta.robot_type,
        len(meta.episodes),
        meta.total_frames,
        meta.fps,
        [meta.tasks[i] for i in sorted(meta.tasks)],
        cameras,
        widths("state"),
        widths("action"),
        [f"annotation.{k}" for k in meta.modality.get("annotation", {})],
        fits,
        meta.stats is not None,
        meta.relative_stats is not None,
        _layout(meta),
    )


def _layout(meta) -> str:
    if not meta.is_v3:
        return ""
    data = {loc.data_file for loc in meta.locations.values()}
    videos = {v[0] for loc in meta.locations.values() for v in loc.videos.values()}
    return f"{len(data)} data file(s), {len(videos)} video file(s) shared by {len(meta.episodes)} episodes"
