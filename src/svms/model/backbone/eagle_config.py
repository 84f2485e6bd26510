"""The Eagle-Block2A-2B-v2 architecture (spec §4.1), shipped as data, and its transformers configs.

The GR00T checkpoint does not carry the backbone's architecture: the reference reads it from a config
bundled with its code, so we bundle the same values here. An override dict shaped like that config
(the fixtures' `eagle_config`: `{"vision_config": {...}, "text_config": {...}, "downsample_ratio": ...,
"image_token_index": ..., ...}`) is deep-merged over them; keys we do not use (`auto_map`,
`architectures`, `template`, `torch_dtype`, ...) are accepted and ignored, and values that would select
a computation we do not implement (windowed ViT attention, LoRA, dynamic tiling, ...) are rejected.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import Qwen3Config, Siglip2VisionConfig

from svms.errors import SvmsError

EAGLE_MODEL_NAME = "nvidia/Eagle-Block2A-2B-v2"

BUNDLED_EAGLE_CONFIG: dict[str, Any] = {
    "model_type": "eagle_3_vl",
    "downsample_ratio": 0.5,
    "use_pixel_shuffle": True,
    "select_layer": -1,  # the ViT's last layer; GR00T's LLM cut is a separate `select_layer`
    "image_token_index": 151669,
    "dynamic_image_size": False,
    "use_thumbnail": False,
    "pad2square": False,
    "mlp_connector_layers": 2,
    "mlp_checkpoint": False,
    "use_backbone_lora": 0,
    "use_llm_lora": 0,
    "tie_word_embeddings": True,
    "vision_config": {
        "model_type": "siglip2_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_channels": 3,
        "patch_size": 14,
        "num_patches": 256,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "use_rope": False,
        "use_windows_attn": False,
        "window_size": 14,
        "full_attention_indexes": [7, 14, 21, 26],
    },
    "text_config": {
        "model_type": "qwen3",
        "vocab_size": 151680,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,  # the config's count; the module keeps only GR00T's `select_layer`
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "max_position_embeddings": 40960,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 28,
        "initializer_range": 0.02,
        "use_cache": False,
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
}

# Keys handed to transformers; everything else in the merged dict is bookkeeping.
_VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_channels", "patch_size", "num_patches", "hidden_act", "layer_norm_eps",
                "attention_dropout")
_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta", "rope_scaling",
              "max_position_embeddings", "attention_bias", "attention_dropout", "use_sliding_window",
              "sliding_window", "max_window_layers", "initializer_range", "tie_word_embeddings",
              "bos_token_id", "eos_token_id")

# (path, value the computation requires): anything else is a variant we do not implement.
_REQUIRED = (
    (("use_pixel_shuffle",), True),
    (("select_layer",), -1),
    (("dynamic_image_size",), False),
    (("use_thumbnail",), False),
    (("mlp_checkpoint",), False),
    (("use_backbone_lora",), 0),
    (("use_llm_lora",), 0),
    (("vision_config", "use_rope"), False),
    (("vision_config", "use_windows_attn"), False),
    (("text_config", "use_sliding_window"), False),
    (("text_config", "tie_word_embeddings"), True),
)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_eagle_config(overrides: dict[str, Any] | None = None,
                         model_name: str = EAGLE_MODEL_NAME) -> dict[str, Any]:
    """Bundled values of `model_name` with `overrides` deep-merged over them, validated.

    `overrides` is shaped like the reference's Eagle config (as stored in `eagle_config` of a fixture
    or a project config); `None` means the bundled architecture unchanged.
    """
    if model_name != EAGLE_MODEL_NAME:
        raise SvmsError(f"model_name {model_name!r} is not a bundled backbone; the only one is "
                        f"{EAGLE_MODEL_NAME!r} (set model_name to it, or leave it at its default)")
    merged = _deep_merge(BUNDLED_EAGLE_CONFIG, overrides or {})
    for path, required in _REQUIRED:
        value = merged
        for key in path:
            value = value[key]
        if value != required:
            raise SvmsError(f"eagle_config {'.'.join(path)} = {value!r} is not supported (only {required!r} "
                            "is implemented); remove it from the eagle_config overrides")
    ratio = merged["downsample_ratio"]
    factor = round(1 / ratio) if ratio > 0 else 0
    if factor < 1 or abs(factor * ratio - 1) > 1e-9:
        raise SvmsError(f"eagle_config downsample_ratio = {ratio!r} must be 1/k for an integer k (0.5 in "
                        "the released backbone)")
    vision = merged["vision_config"]
    grid = round(vision["num_patches"] ** 0.5)
    if grid * grid != vision["num_patches"]:
        raise SvmsError(f"eagle_config vision_config.num_patches = {vision['num_patches']} must be a square "
                        "(the learned position grid is g x g)")
    return merged


def unshuffle_factor(eagle: dict[str, Any]) -> int:
    """Pixel-unshuffle factor r = 1 / downsample_ratio (2 for the released backbone)."""
    return round(1 / eagle["downsample_ratio"])


def siglip2_config(eagle: dict[str, Any], attn_implementation: str) -> Siglip2VisionConfig:
    """transformers config for the vision tower of a resolved Eagle config."""
    vision = eagle["vision_config"]
    config = Siglip2VisionConfig(**{key: vision[key] for key in _VISION_KEYS if key in vision})
    config._attn_implementation = attn_implementation
    return config


def qwen3_config(eagle: dict[str, Any], num_layers: int, attn_implementation: str) -> Qwen3Config:
    """transformers config for the LLM, sized to the `num_layers` layers GR00T keeps."""
    text = eagle["text_config"]
    kwargs = {key: text[key] for key in _TEXT_KEYS if key in text}
    config = Qwen3Config(num_hidden_layers=num_layers, use_cache=False, **kwargs)
    config._attn_implementation = attn_implementation
    return config
