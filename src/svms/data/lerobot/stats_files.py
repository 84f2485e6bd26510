"""`meta/stats.json` and `meta/relative_stats.json` of a dataset, computed from its parquet files
with `svms.data.stats` (spec §7.2): every float column, and the RELATIVE action keys of the tag.

A stats.json svms did not write (LeRobot's, with other statistics, other features, or no quantiles) is
never overwritten: it is renamed to `stats.backup.json` (`stats.backup-2.json`, ... when taken) first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.progress import track

from svms.data.lerobot.embodiment import resolve_config
from svms.data.lerobot.meta import STAT_NAMES, DatasetMeta, load_meta
from svms.data.modality import ActionRep, EmbodimentConfig
from svms.data.stats import compute_relative_stats, compute_stats
from svms.errors import SvmsError


def read_float_episodes(meta: DatasetMeta, progress: bool = False) -> list[dict[str, np.ndarray]]:
    """Every float column of every episode, in episodes.jsonl order."""
    columns = meta.float_columns()
    if not meta.episodes:
        raise SvmsError(f"{meta.root / meta.episode_list} lists no episode; there is nothing to compute.")
    episodes = meta.episodes
    if progress:
        episodes = track(episodes, description="reading episodes", transient=True)
    return [meta.read_episode(ep.index, columns) for ep in episodes]


def dataset_statistics(
    meta: DatasetMeta, config: EmbodimentConfig, progress: bool = False
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(stats.json, relative_stats.json) contents; the second is `{}` when no action key is relative."""
    episodes = read_float_episodes(meta, progress)
    for ep, arrays in zip(meta.episodes, episodes, strict=True):
        for column, values in arrays.items():
            if not np.all(np.isfinite(values)):
                row = int(np.argwhere(~np.isfinite(values))[0][0])
                raise SvmsError(
                    f"{meta.data_path(ep.index)}: column {column!r} holds NaN or Inf (first at row {row}); "
                    "statistics would be meaningless. Fix or drop those rows."
                )
    stats = compute_stats(episodes, meta.float_columns())
    relative = {}
    if any(config.action_config(k).rep is ActionRep.RELATIVE for k in config.action.modality_keys):
        relative = compute_relative_stats(episodes, meta.modality, config)
    return stats, relative


def is_own_stats(path: Path, meta: DatasetMeta) -> bool:
    """Whether stats.json is one svms writes: exactly the float columns, each with exactly STAT_NAMES."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(stats, dict) and set(stats) == set(meta.float_columns())
            and all(isinstance(e, dict) and set(e) == set(STAT_NAMES) for e in stats.values()))


def backup_path(path: Path) -> Path:
    """A free name next to `path` for keeping it: stats.backup.json, then stats.backup-2.json, ..."""
    candidate, n = path.with_name(f"{path.stem}.backup{path.suffix}"), 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}.backup-{n}{path.suffix}"), n + 1
    return candidate


def write_stats(
    root: str | Path,
    embodiment_tag: str = "new_embodiment",
    config: EmbodimentConfig | None = None,
    progress: bool = False,
) -> tuple[Path, ...]:
    """Compute and write both statistics files in place; returns their paths, then the backup of a stats.json
    svms did not write when there was one."""
    meta = load_meta(root)
    config = resolve_config(meta, embodiment_tag, config)
    stats, relative = dataset_statistics(meta, config, progress)
    paths = (meta.root / "meta" / "stats.json", meta.root / "meta" / "relative_stats.json")
    backup = ()
    if paths[0].exists() and not is_own_stats(paths[0], meta):
        backup = (backup_path(paths[0]),)
        paths[0].rename(backup[0])
    for path, content in zip(paths, (stats, relative), strict=True):
        path.write_text(json.dumps(content, indent=4) + "\n")
    return paths + backup
