"""The one policy contract (spec §9.1): what `Gr00tPolicy`, `PolicyClient` and the simulator's check policies
all implement, and what the rollout, open-loop evaluation and the server call.

`get_action(observation, options=None) -> (action, info)` takes a batched observation in physical units,
`{"video": {camera: uint8 (B, T_v, H, W, 3)}, "state": {key: float (B, T_s, D)}, "language": {language_key:
[[instruction]] * B}}`, and returns `{action_key: float32 (B, H_e, D)}` and an info dict; `reset(options=None)`
is called before every episode and returns an info dict. `batch_of_one` and `first_of_batch` convert one
sample (a simulator step, a dataset frame) to and from that form, so no caller builds the dict by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: The language key of the GR00T embodiments (`annotation.human.action.task_description`).
INSTRUCTION_KEY = "annotation.human.action.task_description"


@runtime_checkable
class Policy(Protocol):
    """Batched observation in, batched action chunks out (physical units); `reset` before every episode."""

    def reset(self, options: Mapping[str, Any] | None = None) -> dict: ...

    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]: ...


def batch_of_one(video: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray], instruction: str,
                 language_key: str = INSTRUCTION_KEY) -> dict[str, Any]:
    """One sample's observation (video uint8 (T, H, W, 3) per camera, state (T, D) per key) as the contract's
    batch of one: video (1, T, H, W, 3), state (1, T, D), language [[instruction]]."""
    return {
        "video": {k: np.asarray(v)[None] for k, v in video.items()},
        "state": {k: np.asarray(v, np.float32)[None] for k, v in state.items()},
        "language": {language_key: [[instruction]]},
    }


def first_of_batch(action: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first sample's chunk per action key: (H, D) from (B, H, D)."""
    return {k: np.asarray(v)[0] for k, v in action.items()}


def language_key(policy: Any) -> str:
    """The language key a policy reads: its own, its modality config's, or the GR00T default."""
    key = getattr(policy, "language_key", None)
    if isinstance(key, str):
        return key
    config = modality_config(policy)
    return config.language.modality_keys[0] if config is not None else INSTRUCTION_KEY


def modality_config(policy: Any):
    """The policy's `EmbodimentConfig` when it has one (a checkpoint or a server), else None."""
    get = getattr(policy, "get_modality_config", None)
    return get() if callable(get) else None


def cameras(policy: Any) -> tuple[str, ...] | None:
    """The cameras a policy with a modality config reads, else None (it reads none in particular)."""
    config = modality_config(policy)
    return None if config is None else tuple(config.video.modality_keys)
