"""State/action normalisation, relative actions and decoding (spec §6.3–§6.7), per key.

Rules that are easy to get wrong and reproduced deliberately:
- min-max maps to [-1, 1]; where `np.isclose(max, min)` (relative to |min|) the output is 0;
- mean-std passes values through where std == 0 exactly; mean-std *states* are never clipped,
  every *action* is clipped (mean-std ones too); min-max states are clipped;
- sin/cos works on raw state values, all sines then all cosines;
- a RELATIVE action is taken against the raw state of its `state_key` at the *last* state step;
- precision follows the reference: absolute keys round twice (float64 division stored as float32,
  then `2y − 1` in float32); relative keys stay float64 until the end, which is also why the
  action mask comes out float64 whenever a key is relative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from svms.data.modality import ActionRep, ActionType, EmbodimentConfig
from svms.errors import SvmsError


@dataclass(frozen=True)
class NormalizationSettings:
    """The processor switches that change normalisation (released values are the defaults)."""

    apply_sincos_state_encoding: bool = True
    use_relative_action: bool = True
    use_percentiles: bool = False
    clip_outliers: bool = True


@dataclass(frozen=True)
class KeyLayout:
    """Where one key lands in the concatenated vector and how it is encoded.

    `mode`: `min_max_clip`, `min_max`, `mean_std`, `mean_std_clip` or `sincos`; `columns` is
    [start, end) in the concatenated (and padded) vector; `relative_to` the state key of a relative action.
    """

    key: str
    mode: str
    raw_dim: int
    columns: tuple[int, int]
    relative_to: str | None = None


def min_max_normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, clip: bool) -> np.ndarray:
    """float32 input, two roundings: float64 ratio stored as float32, then `2y − 1` in float32."""
    close = np.isclose(hi, lo)
    span = np.where(close, 1.0, hi - lo)
    y = ((x.astype(np.float64) - lo) / span).astype(np.float32)
    out = np.where(close, np.float32(0), y * np.float32(2) - np.float32(1)).astype(np.float32)
    return np.clip(out, -1, 1) if clip else out


def min_max_normalize_f64(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, clip: bool) -> np.ndarray:
    """The relative-action path: everything in float64, no intermediate float32 rounding."""
    close = np.isclose(hi, lo)
    span = np.where(close, 1.0, hi - lo)
    out = np.where(close, 0.0, 2.0 * (x - lo) / span - 1.0)
    return np.clip(out, -1, 1) if clip else out


def mean_std_normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: bool) -> np.ndarray:
    """(x − mean)/std where std ≠ 0 exactly, x unchanged elsewhere; keeps x's float width."""
    safe = np.where(std != 0, std, 1.0)
    out = np.where(std != 0, (x.astype(np.float64) - mean) / safe, x).astype(x.dtype)
    return np.clip(out, -1, 1) if clip else out


def sincos_encode(x: np.ndarray) -> np.ndarray:
    """[sin(x_1..x_D), cos(x_1..x_D)] of the raw state; doubles the width; not invertible."""
    return np.concatenate([np.sin(x), np.cos(x)], axis=-1)


def min_max_denormalize(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of min-max: clip and (+1)/2 in float32, the affine map in float64 (no isclose rule)."""
    y = (np.clip(y.astype(np.float32), -1, 1) + np.float32(1)) / np.float32(2)
    return y.astype(np.float64) * (hi - lo) + lo


def mean_std_denormalize(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of mean-std, no clipping; identity where std == 0; float64 stored as float32."""
    return np.where(std != 0, y.astype(np.float64) * std + mean, y).astype(np.float32)


class StateActionNormalizer:
    """Normalises one embodiment's states and actions and decodes model actions back to physical units.

    `statistics` is the tag's entry of `statistics.json`: `{"state"|"action"|"relative_action":
    {key: {min, max, mean, std, q01, q99}}}`. Arrays are per key: states (T, D), actions (H_e, D);
    decode takes batches (B, ...).
    """

    def __init__(
        self, config: EmbodimentConfig, statistics: Mapping, settings: NormalizationSettings | None = None
    ):
        self.config = config.validate()
        self.settings = settings or NormalizationSettings()
        self.statistics = statistics
        self.state_layout = self._layout("state")
        self.action_layout = self._layout("action")

    def _stats(self, modality: str, key: str) -> dict[str, np.ndarray]:
        entry = self.statistics.get(modality, {}).get(key)
        if entry is None:
            raise SvmsError(
                f"statistics have no {modality} entry for key {key!r} (they hold "
                f"{sorted(self.statistics.get(modality, {}))}); compute them with "
                "`svms data stats` or use a checkpoint whose statistics.json covers this key."
            )
        return {s: np.asarray(v, dtype=np.float64) for s, v in entry.items()}

    def _bounds(self, stats: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.settings.use_percentiles:
            return stats["q01"], stats["q99"]
        return stats["min"], stats["max"]

    def _is_relative(self, key: str) -> bool:
        ac = self.config.action_config(key)
        return self.settings.use_relative_action and ac.rep is ActionRep.RELATIVE

    def _layout(self, modality: str) -> list[KeyLayout]:
        m = getattr(self.config, modality)
        sincos = set(m.sin_cos_embedding_keys or ()) if self.settings.apply_sincos_state_encoding else set()
        mean_std = set(m.mean_std_embedding_keys or ())
        clip = "_clip" if self.settings.clip_outliers else ""
        out, start = [], 0
        for key in m.modality_keys:
            dim = len(self._stats(modality, key)["min"])
            if modality == "state":
                mode = "sincos" if key in sincos else "mean_std" if key in mean_std else "min_max" + clip
                width = 2 * dim if key in sincos else dim
                relative_to = None
            else:
                mode = ("mean_std" if key in mean_std else "min_max") + clip
                width = dim
                ac = self.config.action_config(key)
                relative_to = (ac.state_key or key) if self._is_relative(key) else None
                if relative_to is not None and ac.type is ActionType.EEF:
                    raise SvmsError(
                        f"action key {key!r} is RELATIVE with type EEF: relative end-effector "
                        "poses are not implemented yet; use NON_EEF or ABSOLUTE."
                    )
                if relative_to is not None:
                    self._stats("relative_action", key)
            out.append(KeyLayout(key, mode, dim, (start, start + width), relative_to))
            start += width
        return out

    @property
    def state_dim(self) -> int:
        """Width of the encoded state before padding (sin/cos keys count twice)."""
        return self.state_layout[-1].columns[1] if self.state_layout else 0

    @property
    def action_dim(self) -> int:
        """D_a, width of the concatenated action before padding."""
        return self.action_layout[-1].columns[1] if self.action_layout else 0

    def _get(self, arrays: Mapping[str, np.ndarray], key: str, what: str, width: int) -> np.ndarray:
        if key not in arrays:
            raise SvmsError(
                f"{what} key {key!r} is missing from the sample (it has {sorted(arrays)}); "
                f"the modality config needs every key of {what}.modality_keys."
            )
        x = np.asarray(arrays[key], dtype=np.float32)
        if x.shape[-1] != width:
            raise SvmsError(
                f"{what} key {key!r} has width {x.shape[-1]} but its statistics have "
                f"{width}; check meta/modality.json's start/end for this key."
            )
        return x

    def normalize_state(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw states {key: (T, D)} → float32 (T, state_dim), keys in config order."""
        parts = []
        for lay in self.state_layout:
            x = self._get(state, lay.key, "state", lay.raw_dim)
            st = self._stats("state", lay.key)
            if lay.mode == "sincos":
                parts.append(sincos_encode(x))
            elif lay.mode == "mean_std":
                parts.append(mean_std_normalize(x, st["mean"], st["std"], clip=False))
            else:
                parts.append(min_max_normalize(x, *self._bounds(st), clip=lay.mode.endswith("_clip")))
        return np.concatenate(parts, axis=-1).astype(np.float32)

    def normalize_action(
        self, action: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.dtype]:
        """Raw actions {key: (H_e, D)} → (float32 (H_e, action_dim), dtype the reference's mask gets).

        Relative keys subtract the raw state of their state key at the last state step first.
        """
        parts = []
        for lay in self.action_layout:
            x = self._get(action, lay.key, "action", lay.raw_dim)
            clip = lay.mode.endswith("_clip")
            if lay.relative_to is not None:
                ref = np.asarray(state[lay.relative_to], dtype=np.float32)[..., -1:, :]
                rel = x.astype(np.float64) - ref.astype(np.float64)
                st = self._stats("relative_action", lay.key)
                if lay.mode.startswith("mean_std"):
                    parts.append(mean_std_normalize(rel, st["mean"], st["std"], clip))
                else:
                    parts.append(min_max_normalize_f64(rel, *self._bounds(st), clip=clip))
                continue
            st = self._stats("action", lay.key)
            if lay.mode.startswith("mean_std"):
                parts.append(mean_std_normalize(x, st["mean"], st["std"], clip))
            else:
                parts.append(min_max_normalize(x, *self._bounds(st), clip=clip))
        joined = np.concatenate(parts, axis=-1)
        return joined.astype(np.float32), joined.dtype

    def relative_action(self, key: str, action: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """The float64 intermediate of a relative key: raw action minus the reference state's last step."""
        lay = next(a for a in self.action_layout if a.key == key)
        if lay.relative_to is None:
            raise SvmsError(f"action key {key!r} is not relative in this config.")
        ref = np.asarray(state[lay.relative_to], dtype=np.float32)[..., -1:, :]
        return np.asarray(action, np.float32).astype(np.float64) - ref.astype(np.float64)

    def decode_action(
        self, action_pred: np.ndarray, state: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Model output (B, H, D) in normalised units → {key: float32 (B, H_e, D_key)} in physical units.

        Steps ≥ H_e and channels ≥ action_dim are ignored; relative keys add the raw state
        `state[state_key]` (B, T, D) at its last step.
        """
        pred = np.asarray(action_pred, dtype=np.float32)[:, : self.config.action_horizon]
        out = {}
        for lay in self.action_layout:
            y = pred[..., lay.columns[0] : lay.columns[1]]
            st = self._stats("relative_action" if lay.relative_to else "action", lay.key)
            if lay.mode.startswith("mean_std"):
                x = mean_std_denormalize(y, st["mean"], st["std"]).astype(np.float64)
            else:
                x = min_max_denormalize(y, *self._bounds(st))
            if lay.relative_to is not None:
                ref = np.asarray(state[lay.relative_to], dtype=np.float32)[..., -1:, :]
                x = x + ref.astype(np.float64)
            out[lay.key] = x.astype(np.float32)
        return out
