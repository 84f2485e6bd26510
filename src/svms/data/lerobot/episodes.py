"""The records of a dataset's episode list, whatever its format: one episode (v2 `episodes.jsonl` line or v3.0
episodes-parquet row) and, for v3.0, where its rows and frames lie in the shared files."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SubTask:
    """A span of an episode with its own instruction (`sub_tasks` of episodes.jsonl)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class EpisodeInfo:
    """One line of episodes.jsonl: index, declared length, task strings, optional sub-tasks."""

    index: int
    length: int
    tasks: tuple[str, ...]
    sub_tasks: tuple[SubTask, ...] = ()


@dataclass(frozen=True)
class EpisodeLocation:
    """Where a v3.0 episode lies: its data file with the global `index` range [start, stop) and the
    file's first index (so rows start - file_start .. stop - file_start of the file), and per camera
    feature the mp4 and the time range [from, to) of the episode in it."""

    data_file: str
    start: int
    stop: int
    file_start: int
    videos: dict[str, tuple[str, float, float]] = field(default_factory=dict)
