"""What one observation may hold on the server (`Limits`, `check_limits`); the flat and nested forms
themselves are part of the wire (`svms.policy.flat`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from svms.data.modality import EmbodimentConfig
from svms.errors import SvmsError

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
