"""The sim-wrapper (flat) observation and action form of GR00T's simulation clients (spec §9.1), part of the wire.

Flat observations carry `video.<camera>` (B, T, H, W, 3) and `state.<key>` (B, T, D) arrays and the
instruction under the language modality key (also read as `language.<key>`) as a list of B strings;
actions go back as `action.<key>`. Policies work on the nested form, so the server converts here
(`from_flat`, `to_flat`), and so does `PolicyClient(sim_wrapper=True)` in the other direction
(`flat_observation`, `nested_action`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
