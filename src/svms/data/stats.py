"""Normalisation statistics (spec §6.2, §7.2): `stats.json`, `relative_stats.json`, `statistics.json`.

Computed the reference's way on purpose: float32 accumulation (`np.mean`/`np.std` of float32 data),
population std, linear quantiles. A constant column of 0.7 then gets std 2.98e-7, not 0, so the
mean-std "std == 0" pass-through does not fire — the pretrained model saw exactly that.
Inputs are per-episode arrays, so a parquet reader can feed these functions directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from svms.data.modality import ActionRep, EmbodimentConfig
from svms.errors import SvmsError

STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
Stats = dict[str, list]


def array_stats(values: np.ndarray) -> Stats:
    """The six statistics along axis 0 of a float array (N, ...), accumulated in its own dtype."""
    values = np.asarray(values)
    return {
        "mean": np.mean(values, axis=0).tolist(),
        "std": np.std(values, axis=0).tolist(),
        "min": np.min(values, axis=0).tolist(),
        "max": np.max(values, axis=0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def compute_stats(
    episodes: Sequence[Mapping[str, np.ndarray]], float_columns: Sequence[str]
) -> dict[str, Stats]:
    """`stats.json`: per float column, statistics over all rows of all episodes (in episode order).

    A scalar column (one value per row) gets length-1 lists, as the reference writes them.
    """
    out = {}
    for col in float_columns:
        parts = [np.asarray(ep[col], dtype=np.float32) for ep in episodes]
        rows = np.concatenate([p.reshape(len(p), -1) for p in parts], axis=0)
        out[col] = array_stats(rows)
    return out


def _key_slice(modality_json: Mapping[str, Any], modality: str, key: str) -> tuple[str, slice]:
    entry = modality_json.get(modality, {}).get(key)
    if entry is None:
        raise SvmsError(
            f"meta/modality.json has no {modality} key {key!r}; declare it with its "
            "start/end slice or remove it from the modality config."
        )
    column = entry.get("original_key") or ("observation.state" if modality == "state" else "action")
    return column, slice(entry["start"], entry["end"])


def relative_windows(
    state: np.ndarray, action: np.ndarray, config: EmbodimentConfig, state_slice: slice, action_slice: slice
) -> np.ndarray:
    """Relative chunks of one episode, float32 (N_windows, H_e, D): action rows minus the reference state.

    Window starts i satisfy i + last action delta < episode length; the reference state row is
    i + last state delta (NON_EEF subtraction).
    """
    a_deltas = np.asarray(config.action.delta_indices)
    s_last = config.state.delta_indices[-1]
    n = len(action)
    starts = [i for i in range(n) if i + a_deltas[-1] < n and 0 <= i + s_last < n and i + a_deltas[0] >= 0]
    if not starts:
        return np.zeros((0, len(a_deltas), action_slice.stop - action_slice.start), np.float32)
    idx = np.asarray(starts)
    a = np.asarray(action, np.float32)[idx[:, None] + a_deltas[None, :], action_slice]
    s = np.asarray(state, np.float32)[idx + s_last, state_slice]
    return a - s[:, None, :]


def compute_relative_stats(
    episodes: Sequence[Mapping[str, np.ndarray]], modality_json: Mapping[str, Any], config: EmbodimentConfig
) -> dict[str, Stats]:
    """`relative_stats.json`: per RELATIVE action key (sorted), statistics (H_e, D) over all windows.

    Returns `{}` when no key is relative — the reference still writes that file.
    """
    config = config.validate()
    out = {}
    rel = [k for k in config.action.modality_keys if config.action_config(k).rep is ActionRep.RELATIVE]
    for key in sorted(rel):
        ac = config.action_config(key)
        if ac.type.name == "EEF":
            raise SvmsError(
                f"action key {key!r} is RELATIVE with type EEF: relative end-effector poses "
                "are not implemented yet; use NON_EEF or ABSOLUTE."
            )
        a_col, a_sl = _key_slice(modality_json, "action", key)
        s_col, s_sl = _key_slice(modality_json, "state", ac.state_key or key)
        windows = [relative_windows(ep[s_col], ep[a_col], config, s_sl, a_sl) for ep in episodes]
        out[key] = array_stats(np.concatenate(windows, axis=0))
    return out


def merge_statistics(datasets: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None) -> dict:
    """Merge same-structured statistics of several datasets by sampling weight (normalised to sum 1).

    Weighted mean; std from the weighted second moment, sqrt(Σw(std²+mean²) − mean²), recomputed
    even for one dataset (the reference does; cancellation can move a tiny std by ~1e-11);
    elementwise min of min/q01, max of max/q99.
    """
    w = np.asarray(weights if weights is not None else [1.0] * len(datasets), dtype=np.float64)
    w = w / w.sum()

    def merge(nodes: Sequence[Mapping[str, Any]]) -> dict:
        first = nodes[0]
        if "mean" not in first:
            return {k: merge([n[k] for n in nodes]) for k in first}
        arr = {s: [np.asarray(n[s], dtype=np.float64) for n in nodes] for s in STAT_NAMES}
        mean = sum(wi * m for wi, m in zip(w, arr["mean"], strict=True))
        second = sum(wi * (s**2 + m**2) for wi, s, m in zip(w, arr["std"], arr["mean"], strict=True))
        return {
            "mean": mean.tolist(),
            "std": np.sqrt(second - mean**2).tolist(),
            "min": np.min(arr["min"], axis=0).tolist(),
            "max": np.max(arr["max"], axis=0).tolist(),
            "q01": np.min(arr["q01"], axis=0).tolist(),
            "q99": np.max(arr["q99"], axis=0).tolist(),
        }

    return merge(list(datasets))


def embodiment_statistics(
    stats_json: Mapping[str, Stats],
    relative_stats_json: Mapping[str, Stats],
    modality_json: Mapping[str, Any],
    config: EmbodimentConfig,
) -> dict[str, dict[str, Stats]]:
    """Per-key statistics of one dataset: the `state`/`action`/`relative_action` entry of a tag.

    State and action keys are the `[start:end]` slices of the column statistics; relative keys
    also get their (H_e, D) statistics. Pass several of these to `merge_statistics` to get the
    tag's entry of a checkpoint's `statistics.json`.
    """
    config = config.validate()
    config.check_modality_json(modality_json)
    out: dict[str, dict[str, Stats]] = {"state": {}, "action": {}, "relative_action": {}}
    for modality in ("state", "action"):
        for key in getattr(config, modality).modality_keys:
            column, sl = _key_slice(modality_json, modality, key)
            if column not in stats_json:
                raise SvmsError(
                    f"stats.json has no statistics for column {column!r} (needed by {modality} "
                    f"key {key!r}); recompute them with `svms data stats`."
                )
            out[modality][key] = {s: list(stats_json[column][s][sl]) for s in STAT_NAMES}
    for key in config.action.modality_keys:
        if config.action_config(key).rep is ActionRep.RELATIVE:
            if key not in relative_stats_json:
                raise SvmsError(
                    f"relative_stats.json has no statistics for RELATIVE action key {key!r}; "
                    "recompute them with `svms data stats`."
                )
            out["relative_action"][key] = {s: relative_stats_json[key][s] for s in STAT_NAMES}
    return out
