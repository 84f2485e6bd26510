"""`svms data …`: look at, check, convert and prepare GR00T-flavoured LeRobot datasets (v2.0, v2.1, v3.0)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from svms.errors import SvmsError


@dataclass
class DataInspect:
    """Summarise a dataset: episodes, frames, fps, tasks, cameras, state/action keys, embodiment."""

    path: Annotated[Path, tyro.conf.Positional]
    """dataset folder (the one containing meta/)"""

    def run(self) -> int:
        from svms.data.lerobot import inspect_dataset

        for line in inspect_dataset(self.path).lines():
            print(line)
        return 0


@dataclass
class DataValidate:
    """Check a dataset strictly; exit 1 on any inconsistency (each printed with its file and the fix).

    Checked: meta/ files, each episode's parquet columns (dtypes, widths against info.json and modality.json,
    NaN/Inf, timestamps, frame_index, episode_index, task indices), its videos (frame count, fps, size) and
    the statistics files (finite, as wide as their columns). LeRobot v3.0 also: each episode's index range
    against its length and the index column, each video time range against length / fps and the file, every
    referenced file present, every task in meta/tasks.parquet. Image-feature cameras: their bytes decode at
    the declared size. A dataset that lacks only meta/stats.json is
    valid; the note says how to compute it. Training and evaluation refuse what is an error here, except a
    length in episodes.jsonl that differs from the parquet rows and metadata totals (they warn).
    """

    path: Annotated[Path, tyro.conf.Positional]
    """dataset folder (the one containing meta/)"""
    max_abs: float = 1e6
    """state/action values beyond ±this are reported (a warning unless --strict-extremes)"""
    strict_extremes: bool = False
    """make values beyond --max-abs an error"""

    def run(self) -> int:
        from svms.data.lerobot import validate_dataset

        if not self.max_abs > 0:
            raise SvmsError(f"--max-abs {self.max_abs}: use a positive number")
        problems = validate_dataset(self.path, progress=True, max_abs=self.max_abs,
                                    strict_extremes=self.strict_extremes)
        for p in problems:
            print(p)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise SvmsError(
                f"{self.path}: {len(errors)} problem(s) found (listed above); fix them and "
                "run `svms data validate` again."
            )
        print(f"{self.path}: valid")
        return 0


@dataclass
class DataStats:
    """Write meta/stats.json (float columns) and meta/relative_stats.json (relative action keys) in place.

    Every statistic is computed from the data, whatever an existing stats.json holds; one svms did not write
    (e.g. LeRobot's, without quantiles) is kept as meta/stats.backup.json."""

    path: Annotated[Path, tyro.conf.Positional]
    """dataset folder (the one containing meta/)"""
    embodiment_tag: str = "new_embodiment"
    """embodiment whose modality config says which action keys are relative"""

    def run(self) -> int:
        from svms.data.lerobot import write_stats

        stats, relative, *backup = write_stats(self.path, self.embodiment_tag, progress=True)
        for path in backup:
            print(f"kept the previous {stats.name} (not written by svms) as {path}")
        print(f"wrote {stats}\nwrote {relative}")
        return 0


@dataclass
class DataConvert:
    """Convert a dataset between LeRobot v2.1 and v3.0 into a new folder, keeping meta/modality.json,
    stats.json and relative_stats.json (LeRobot's own converter drops them, and only goes v2.1 → v3.0).

    Columns and image features are copied as they are, videos packet by packet (bit-identical frames) where
    the episode boundaries allow, else re-encoded as h264. Statistics are computed when the source's
    stats.json lacks the quantiles training needs. The output passes `svms data validate`."""

    source: Annotated[Path, tyro.conf.Positional]
    """dataset folder to read (the one containing meta/)"""
    out: Annotated[Path, tyro.conf.Positional]
    """new dataset folder (must not exist, or be empty)"""
    to: Literal["v2.1", "v3.0"] = "v3.0"
    """LeRobot format to write"""
    data_file_mb: float = 100
    """v3.0: start a new data parquet once one reaches this size (LeRobot's default)"""
    video_file_mb: float = 200
    """v3.0: start a new mp4 per camera once one reaches this size (LeRobot's default)"""
    embodiment_tag: str = "new_embodiment"
    """embodiment whose relative action keys get relative_stats.json, when statistics are computed"""

    def run(self) -> int:
        from svms.data.lerobot.convert import convert_dataset

        meta = convert_dataset(self.source, self.out, self.to, self.data_file_mb, self.video_file_mb,
                               self.embodiment_tag)
        print(f"wrote {self.out}: LeRobot {meta.version}, {len(meta.episodes)} episodes, {meta.total_frames} frames")
        return 0


@dataclass
class DataAuxCoverage:
    """How much of a dataset's instructions the SVMS keyword sets label, per stream, and the most
    frequent unlabelled words (candidates for the keyword lists)."""

    path: Annotated[Path, tyro.conf.Positional]
    """dataset folder (the one containing meta/)"""
    top: int = 20
    """unlabelled words to list"""

    def run(self) -> int:
        from svms.data.aux_labels import aux_coverage
        from svms.data.language import normalize_language
        from svms.data.lerobot import load_meta

        meta = load_meta(self.path)
        texts = [normalize_language(t) for ep in meta.episodes for t in ep.tasks]
        if not texts:
            raise SvmsError(f"{self.path}: {meta.episode_list} lists no instruction (no episode has tasks).")
        cov = aux_coverage(texts, top=self.top)
        print(f"{cov.n_texts} instructions (one per episode and task), {cov.n_tokens} tokens")
        for name, share in cov.stream_share.items():
            print(f"  {name:<9} {100 * share:5.1f}% of tokens labelled")
        print(f"  any       {100 * cov.any_share:5.1f}%")
        print("most frequent unlabelled words: " + ", ".join(f"{w} ({n})" for w, n in cov.unlabelled))
        return 0
