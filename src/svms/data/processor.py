"""One sample → model inputs (spec §6.6): language, images, prompt text, padded state/action, mask, id.

Ties the per-concept modules together per embodiment tag. Tokenisation is left to `collate`,
because the reference tokenises a whole batch at once (padding to the longest prompt).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from svms.data.images import (
    check_augment_settings,
    check_rgb_uint8,
    draw_augment,
    eagle_normalize,
    num_image_tokens,
    order_frames,
    process_frames,
)
from svms.data.language import normalize_language
from svms.data.modality import EMBODIMENT_TAG_TO_INDEX, EmbodimentConfig, embodiment_ids, normalize_tag
from svms.data.normalize import NormalizationSettings, StateActionNormalizer
from svms.data.prompt import expand_image_placeholders, render_chat
from svms.errors import SvmsError

#: Processor fields the project does not implement, with the one value it supports; any other value is an
#: error naming the field (never silently dropped).
UNIMPLEMENTED_FIELDS: dict[str, Any] = {
    "image_crop_size": None,  # the legacy torchvision image path (spec §5.1)
    "image_target_size": None,
    "use_albumentations": True,  # the albumentations path is the one implemented (and the release's)
    "model_type": "eagle",  # the only backbone
}

#: `processor_config.json` field ← the model `config.json` field it is built from for a fresh model.
MODEL_CONFIG_FIELDS: dict[str, str] = {
    "image_crop_size": "image_crop_size",
    "image_target_size": "image_target_size",
    "use_albumentations": "use_albumentations_transforms",
    "random_rotation_angle": "random_rotation_angle",
    "color_jitter_params": "color_jitter_params",
    "shortest_image_edge": "shortest_image_edge",
    "crop_fraction": "crop_fraction",
    "model_name": "model_name",
    "model_type": "backbone_model_type",
    "formalize_language": "formalize_language",
    "max_state_dim": "max_state_dim",
    "max_action_dim": "max_action_dim",
    "max_action_horizon": "action_horizon",
    "apply_sincos_state_encoding": "apply_sincos_state_encoding",
    "use_relative_action": "use_relative_action",
}


@dataclass(frozen=True)
class ProcessorSettings:
    """Every field of a checkpoint's `processor_kwargs` except `modality_configs`, in the release's order.

    Built in one of two ways only: `from_dict` (a checkpoint's `processor_config.json`, which always wins)
    or `from_model_config` (a fresh model). The defaults are the release's values and apply only to a
    field a `processor_config.json` leaves out; `color_jitter_params` defaults to None (no jitter).
    `random_rotation_angle` (degrees) and `color_jitter_params` act only in the train transform.
    """

    image_crop_size: Any = None
    image_target_size: Any = None
    use_albumentations: bool = True
    random_rotation_angle: float | None = None
    color_jitter_params: dict[str, float] | None = None
    shortest_image_edge: int = 256
    crop_fraction: float = 0.95
    model_name: str = "nvidia/Eagle-Block2A-2B-v2"
    model_type: str = "eagle"
    formalize_language: bool = True
    max_state_dim: int = 128
    max_action_dim: int = 128
    max_action_horizon: int = 50
    use_percentiles: bool = False
    clip_outliers: bool = True
    apply_sincos_state_encoding: bool = True
    use_relative_action: bool = True

    def __post_init__(self) -> None:
        for name, supported in UNIMPLEMENTED_FIELDS.items():
            if getattr(self, name) != supported:
                raise SvmsError(
                    f"processor setting {name} = {json.dumps(getattr(self, name))} is not implemented here "
                    f"(only {json.dumps(supported)} is); set {name} to {json.dumps(supported)} in "
                    f"processor_config.json (a fresh model takes it from the model config's "
                    f"{MODEL_CONFIG_FIELDS[name]}), or use NVIDIA's reference for that setting."
                )
        for name in ("max_state_dim", "max_action_dim", "max_action_horizon", "shortest_image_edge"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise SvmsError(f"processor setting {name} = {v!r}: set it to a positive integer.")
        check_augment_settings(self.random_rotation_angle, self.color_jitter_params)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProcessorSettings:
        """From `processor_kwargs` (or a fixture's settings): every key must be a field, except
        `modality_configs` and keys whose value is null, so nothing that changes processing is dropped."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k, v in d.items() if k not in names and k != "modality_configs" and v is not None)
        if unknown:
            raise SvmsError(
                f"processor setting(s) {unknown} are not known here, so they cannot be honoured; remove them "
                f"(or set them to null) if they are at their defaults. Known settings: {sorted(names)}."
            )
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> ProcessorSettings:
        """A fresh model's settings from its config dict (`Gr00tN1d6Config.to_dict()`; see
        `MODEL_CONFIG_FIELDS`). Fields the model config lacks take the defaults above."""
        return cls(**{name: config[src] for name, src in MODEL_CONFIG_FIELDS.items() if src in config})

    def to_dict(self) -> dict[str, Any]:
        """The `processor_kwargs` entries (without `modality_configs`), in the release's order."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def check_fits(self, model_config: Mapping[str, Any], source: str) -> None:
        """Raise unless the padded sizes equal the model's (the state encoder's input width, the action
        tokens); `source` names the files in the message."""
        for name in ("max_state_dim", "max_action_dim", "max_action_horizon"):
            want = model_config.get(MODEL_CONFIG_FIELDS[name])
            if want is not None and want != getattr(self, name):
                raise SvmsError(
                    f"{source}: processor {name} = {getattr(self, name)} but the model's "
                    f"{MODEL_CONFIG_FIELDS[name]} = {want}; the two files must agree (they came from "
                    "different checkpoints?). Copy the complete checkpoint folder."
                )

    @property
    def normalization(self) -> NormalizationSettings:
        return NormalizationSettings(
            self.apply_sincos_state_encoding,
            self.use_relative_action,
            self.use_percentiles,
            self.clip_outliers,
        )


@dataclass
class ProcessedSample:
    """Everything one sample contributes to a batch (before tokenisation).

    `images` are the Eagle-resized uint8 frames (time-major, then camera order); `pixel_values`
    their (1, 3, h̄, w̄) float32 tensors; `state` (T, max_state_dim) float32; `action`
    (max_action_horizon, max_action_dim) float32 and `action_mask` (same shape; float64 when an
    action key is relative, as in the reference) only when actions were given.
    """

    language: str
    chat_text: str
    text: str
    images: list[np.ndarray]
    pixel_values: list[torch.Tensor]
    image_sizes: list[tuple[int, int]]
    embodiment_id: int
    state: np.ndarray | None = None
    action: np.ndarray | None = None
    action_mask: np.ndarray | None = None


def pad_state(state: np.ndarray, max_state_dim: int) -> np.ndarray:
    """(T, D_s) → (T, max_state_dim) float32, zeros on the right."""
    if state.shape[-1] > max_state_dim:
        raise SvmsError(
            f"encoded state has {state.shape[-1]} dims, more than max_state_dim={max_state_dim}; "
            "drop keys or raise max_state_dim (the released model has 128)."
        )
    out = np.zeros((*state.shape[:-1], max_state_dim), np.float32)
    out[..., : state.shape[-1]] = state
    return out


def pad_action(action: np.ndarray, max_action_dim: int, max_action_horizon: int) -> np.ndarray:
    """(H_e, D_a) → (max_action_horizon, max_action_dim) float32, zero channels and zero rows appended."""
    h, d = action.shape
    if d > max_action_dim or h > max_action_horizon:
        raise SvmsError(
            f"action chunk is {h}x{d}, larger than max_action_horizon x max_action_dim = "
            f"{max_action_horizon}x{max_action_dim}; shorten the horizon or drop keys."
        )
    out = np.zeros((max_action_horizon, max_action_dim), np.float32)
    out[:h, :d] = action
    return out


def action_mask(
    horizon: int, dim: int, max_action_dim: int, max_action_horizon: int, dtype: np.dtype = np.float32
) -> np.ndarray:
    """Ones on [0:H_e, 0:D_a], zeros elsewhere, shape (max_action_horizon, max_action_dim)."""
    mask = np.zeros((max_action_horizon, max_action_dim), dtype)
    mask[:horizon, :dim] = 1
    return mask


class Gr00tProcessor:
    """GR00T N1.6 input processing for a set of embodiments.

    Calls use the eval image transform (deterministic) unless given a `rng`, which selects the train
    transform (random crop, the settings' rotation and colour jitter), drawn once per sample.

    `configs` maps tag → modality config (in the checkpoint's order; the key order inside each is the
    concatenation order); `statistics` maps tag → its `statistics.json` entry (needed only for tags
    whose state/actions are processed); `ids` a checkpoint's `embodiment_id.json` (built-in tags are
    added for lookups; `declared_ids` keeps the file's own entries for writing it back).
    """

    def __init__(
        self,
        configs: Mapping[str, EmbodimentConfig],
        statistics: Mapping[str, Mapping] | None = None,
        settings: ProcessorSettings | None = None,
        ids: Mapping[str, int] | None = None,
    ):
        self.configs = {normalize_tag(t): c.validate() for t, c in configs.items()}
        self.statistics = {normalize_tag(t): s for t, s in (statistics or {}).items()}
        self.settings = settings or ProcessorSettings()
        self.ids = embodiment_ids(ids)
        self.declared_ids = dict(ids) if ids is not None else dict(EMBODIMENT_TAG_TO_INDEX)
        self._normalizers: dict[str, StateActionNormalizer] = {}

    def config(self, tag: str) -> EmbodimentConfig:
        tag = normalize_tag(tag)
        if tag not in self.configs:
            raise SvmsError(
                f"no modality config for embodiment tag {tag!r}; known tags: "
                f"{sorted(self.configs)}. Register a config for it."
            )
        return self.configs[tag]

    def normalizer(self, tag: str) -> StateActionNormalizer:
        """The (cached) state/action normaliser of `tag`."""
        tag = normalize_tag(tag)
        if tag not in self._normalizers:
            if tag not in self.statistics:
                raise SvmsError(
                    f"no statistics for embodiment tag {tag!r} (have {sorted(self.statistics)}); "
                    "compute them with `svms data stats` or load a checkpoint that has them."
                )
            self._normalizers[tag] = StateActionNormalizer(
                self.config(tag), self.statistics[tag], self.settings.normalization
            )
        return self._normalizers[tag]

    def embodiment_id(self, tag: str) -> int:
        tag = normalize_tag(tag)
        if tag not in self.ids:
            raise SvmsError(
                f"embodiment tag {tag!r} has no projector index; known: {sorted(self.ids)}. "
                "Use `new_embodiment` for a custom robot."
            )
        return self.ids[tag]

    def __call__(
        self,
        tag: str,
        video: Mapping[str, Sequence[np.ndarray]],
        instruction: str,
        state: Mapping[str, np.ndarray] | None = None,
        action: Mapping[str, np.ndarray] | None = None,
        rng: np.random.Generator | None = None,
    ) -> ProcessedSample:
        """Process one sample: `video` {camera: [uint8 RGB frame per video step]}, raw `state`
        {key: (T, D)} and `action` {key: (H_e, D)} in physical units. With `rng` the images go
        through the train transform, its parameters drawn from `rng` for the first frame of the
        first camera and replayed on all frames; without, the eval transform."""
        cfg, s = self.config(tag), self.settings
        frames = order_frames(video, cfg.video.modality_keys)
        draw = None
        if rng is not None and frames:
            first = check_rgb_uint8(frames[0])
            draw = draw_augment(rng, first.shape[:2], s.shortest_image_edge, s.crop_fraction,
                                s.random_rotation_angle, s.color_jitter_params)
        images = process_frames(frames, s.shortest_image_edge, s.crop_fraction, draw)
        sizes = [(im.shape[0], im.shape[1]) for im in images]
        language = normalize_language(instruction) if s.formalize_language else instruction
        chat = render_chat(language, len(images))
        sample = ProcessedSample(
            language,
            chat,
            expand_image_placeholders(chat, [num_image_tokens(hw) for hw in sizes]),
            images,
            [eagle_normalize(im) for im in images],
            sizes,
            self.embodiment_id(tag),
        )
        if state is not None:
            sample.state, sample.action, sample.action_mask = self.state_action(tag, state, action)
        elif action is not None:
            raise SvmsError(
                "actions were given without a state; relative actions and the model both need "
                "the observation's state."
            )
        return sample

    def state_action(
        self, tag: str, state: Mapping[str, np.ndarray], action: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The model's state (T, max_state_dim) and, with `action`, its padded action chunk and
        `action_mask` from raw {key: array} in physical units: the non-image part of a sample."""
        s, norm = self.settings, self.normalizer(tag)
        padded_state = pad_state(norm.normalize_state(state), s.max_state_dim)
        if action is None:
            return padded_state, None, None
        act, mask_dtype = norm.normalize_action(action, state)
        mask = action_mask(act.shape[0], act.shape[1], s.max_action_dim, s.max_action_horizon, mask_dtype)
        return padded_state, pad_action(act, s.max_action_dim, s.max_action_horizon), mask

    def decode_action(
        self, tag: str, action_pred: np.ndarray | torch.Tensor, state: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Model `action_pred` (B, H, D) → {key: float32 (B, H_e, D_key)} in physical units."""
        if isinstance(action_pred, torch.Tensor):
            action_pred = action_pred.detach().float().cpu().numpy()
        return self.normalizer(tag).decode_action(action_pred, state)
