"""The sim-wrapper (flat) observation and action form of GR00T's simulation clients (spec §9.1).

Flat observations carry `video.<camera>` (B, T, H, W, 3) and `state.<key>` (B, T, D) arrays and the
instruction under the language modality key (also read as `language.<key>`) as a list of B strings;
actions go back as `action.<key>`. The policy works on the nested form, so the server converts here
(`from_flat`, `to_flat`), and so does `PolicyClient(sim_wrapper=True)` in the other direction
(`flat_observation`, `nested_action`). `Limits` and `check_limits` bound what one observation may hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from svms.data.modality import EmbodimentConfig
from svms.errors import SvmsError


def from_flat(observation: Mapping[str, Any], config: EmbodimentConfig, language_key: str) -> dict[str, Any]:
    """Flat keys → the nested `{video, state, language}` form, with errors naming the flat key."""
    if "video" in observation and "state" in observation:
        raise SvmsError("observation uses the nested {video, state, language} form, but this server runs with "
                        "--sim-wrapper and expects flat keys 'video.<camera>', 'state.<key>' and "
                        f"{language_key!r}; restart it without --sim-wrapper for the nested form")
    video, state = {}, {}
    for modality, keys, out in (("video", config.video.modality_keys, video),
                                ("state", config.state.modality_keys, state)):
        for key in keys:
            flat = f"{modality}.{key}"
            if flat not in observation:
                present = sorted(str(k) for k in observation if str(k).startswith(f"{modality}."))
                raise SvmsError(f"observation lacks {flat!r}; expected {[f'{modality}.{k}' for k in keys]}, "
                                f"got {present}")
            out[key] = observation[flat]
    names = (language_key, f"language.{language_key}")
    text = next((observation[n] for n in names if n in observation), None)
    if not isinstance(text, list | tuple) or not all(isinstance(s, str) for s in text):
        raise SvmsError(f"observation {language_key!r}: expected a list of B instruction strings, got "
                        f"{type(text).__name__ if text is not None else 'nothing'}")
    return {"video": video, "state": state, "language": {language_key: [[s] for s in text]}}


def to_flat(action: Mapping[str, Any]) -> dict[str, Any]:
    """Nested `{key: (B, H, D)}` actions → `{"action.<key>": (B, H, D)}`."""
    return {f"action.{k}": v for k, v in action.items()}


def flat_observation(observation: Mapping[str, Any]) -> dict[str, Any]:
    """Nested `{video, state, language}` → flat keys, instructions `[[s], ...]` → `[s, ...]` (already
    flat: unchanged)."""
    if "video" not in observation and "state" not in observation:
        return dict(observation)
    flat: dict[str, Any] = {}
    for modality in ("video", "state"):
        flat.update({f"{modality}.{k}": v for k, v in (observation.get(modality) or {}).items()})
    for key, texts in (observation.get("language") or {}).items():
        flat[key] = [t[0] if isinstance(t, list | tuple) else t for t in texts]
    return flat


def nested_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """`{"action.<key>": ...}` → `{key: ...}` (keys without the prefix kept as they are)."""
    return {str(k).removeprefix("action."): v for k, v in action.items()}


#: Default `--max-message-bytes`: a 3B request of 3 cameras at 256² with B = 64 is ~38 MiB (a uint8
#: image is 192 KiB), so 64 MiB leaves room while a 1 GiB message can no longer be sent at all.
MAX_MESSAGE_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class Limits:
    """What one request may hold (`svms serve --max-message-bytes/--max-batch/--max-image-edge/--max-state-abs`).

    `max_message_bytes` is ZeroMQ's `MAXMSGSIZE`: a larger frame never reaches the server (ZeroMQ closes that
    connection); the rest are checked on the decoded observation, with an error reply naming the flag.
    `max_state_abs` refuses finite state values no robot reports in the units GR00T's embodiments use
    (metres, radians, quaternions, gripper widths): 1e6 is a units bug or uninitialised memory, which the
    policy would otherwise clip to the training range or pass on unnormalised (mean-std keys) without a word.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_batch: int = 64
    max_image_edge: int = 2048
    max_state_abs: float = 1e6

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_batch", "max_image_edge"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SvmsError(f"--{name.replace('_', '-')} {value!r}: expected a whole number ≥ 1")
        if not self.max_state_abs > 0:  # also refuses NaN; inf turns the check off
            raise SvmsError(f"--max-state-abs {self.max_state_abs!r}: expected a number > 0 (inf: no limit)")


def check_limits(observation: Mapping[str, Any], config: EmbodimentConfig, batch: int, limits: Limits) -> None:
    """Refuse, naming the key and the flag, what the policy would mis-handle or that costs too much: a batch
    over `--max-batch`, an image with no pixels (its resize divides by zero) or an edge over
    `--max-image-edge`, and NaN, ±Inf (also float64 values beyond float32, which the policy's cast turns into
    Inf) or magnitudes over `--max-state-abs` in the state. Runs on the nested form, after the policy's
    dtype/rank checks."""
    if batch > limits.max_batch:
        raise SvmsError(f"observation holds a batch of {batch}, over this server's --max-batch "
                        f"{limits.max_batch}; send at most {limits.max_batch} samples per request, or restart "
                        "the server with a higher --max-batch")
    for key in config.video.modality_keys:
        height, width = np.shape(observation["video"][key])[2:4]
        if height < 1 or width < 1:
            raise SvmsError(f"video {key!r} holds {height}×{width} images (H×W); every image needs at least "
                            "one pixel each way")
        if max(height, width) > limits.max_image_edge:
            raise SvmsError(f"video {key!r} holds {height}×{width} images (H×W), over this server's "
                            f"--max-image-edge {limits.max_image_edge}; send smaller images (the policy resizes "
                            "them to 256 anyway) or restart the server with a higher --max-image-edge")
    for key in config.state.modality_keys:
        raw = np.asarray(observation["state"][key])
        with np.errstate(over="ignore", invalid="ignore"):
            values = raw.astype(np.float32)  # what the policy computes with
        bad = ~np.isfinite(values)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            found = raw[index]
            what = str(found) if not np.isfinite(found) else f"{float(found):g} (beyond float32: read as inf)"
            raise SvmsError(f"state {key!r} holds {what} at index {list(index)} (B, T, D), {int(bad.sum())} of "
                            f"{bad.size} values not finite; send finite float state (NaN gives NaN actions, "
                            "Inf is silently clipped)")
        over = np.abs(values) > limits.max_state_abs
        if over.any():
            index = tuple(int(i) for i in np.argwhere(over)[0])
            raise SvmsError(f"state {key!r} holds {float(values[index]):g} at index {list(index)} (B, T, D), over "
                            f"this server's --max-state-abs {limits.max_state_abs:g}; check the state's units, or "
                            "restart the server with a higher --max-state-abs if the robot reports values that large")
