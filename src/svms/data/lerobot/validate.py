"""Strict dataset validation (LeRobot v2.0, v2.1, v3.0): every inconsistency the loader would tolerate or trip
over, as a list.

Where loading warns and carries on as the reference does (a declared episode length that differs
from the parquet rows, tasks missing from tasks.jsonl), validation reports an error. A dataset
that only lacks `meta/stats.json` is valid: that gets a note saying how to compute it. A quaternion
state key that flips sign between steps gets a warning: q and -q are one rotation, so the data are
not wrong, but a policy sees a jump. State/action values beyond ±`max_abs` get a warning (an error
with `strict_extremes`). The per-episode and statistics checks live in `checks`, which the loader
shares: training and evaluation refuse what is an error here, except what the reference tolerates.
"""

from __future__ import annotations

from pathlib import Path

from rich.progress import track

from svms.data.lerobot.checks import DEFAULT_MAX_ABS, Problem, annotation_columns, episode_problems, stats_problems
from svms.data.lerobot.meta import load_meta, modality_range_problems
from svms.errors import SvmsError

__all__ = ["DEFAULT_MAX_ABS", "Problem", "validate_dataset"]


def validate_dataset(root: str | Path, progress: bool = False, max_abs: float = DEFAULT_MAX_ABS,
                     strict_extremes: bool = False) -> list[Problem]:
    """All problems of the dataset at `root`; valid iff none has severity "error"."""
    try:
        meta = load_meta(root)
    except SvmsError as e:
        return [Problem(str(Path(root) / "meta"), str(e))]
    out = [Problem("meta", p, tolerated=True) for p in meta.problems]
    out += [
        Problem("meta/modality.json", p.removeprefix("meta/modality.json: "))
        for p in modality_range_problems(meta)
    ]
    if not meta.episodes:
        out.append(Problem(meta.episode_list, "lists no episode: the dataset is empty."))
    declared = meta.info.get("total_episodes")
    if declared is not None and declared != len(meta.episodes):
        out.append(
            Problem(
                "meta/info.json",
                f"total_episodes is {declared} but {meta.episode_list} lists "
                f"{len(meta.episodes)} episodes; make them agree.",
                tolerated=True,
            )
        )
    declared = meta.info.get("total_frames")
    if declared is not None and declared != meta.total_frames:
        out.append(
            Problem(
                "meta/info.json",
                f"total_frames is {declared} but the episode lengths sum to "
                f"{meta.total_frames}; make them agree.",
                tolerated=True,
            )
        )
    try:
        annotation_columns(meta)
    except SvmsError as e:
        out.append(Problem("meta/modality.json", str(e)))
        return out
    if meta.stats is None and not meta.stats_incomplete:
        out.append(
            Problem(
                "meta/stats.json",
                f"missing; compute it with `svms data stats {meta.root} "
                "--embodiment-tag TAG` (training computes it otherwise).",
                "note",
            )
        )
    positions = range(len(meta.episodes))
    if progress:
        positions = track(positions, description="checking episodes", transient=True)
    for pos in positions:
        out += episode_problems(meta, pos, max_abs, strict_extremes)
    return out + stats_problems(meta)
