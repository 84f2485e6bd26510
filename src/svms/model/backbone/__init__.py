"""GR00T N1.6's Eagle VLM backbone: SigLIP2 vision tower, pixel unshuffle, mlp1, truncated Qwen3."""

from svms.model.backbone.eagle import ATTENTION_MODES, BackboneOutput, EagleBackbone
from svms.model.backbone.eagle_config import BUNDLED_EAGLE_CONFIG, EAGLE_MODEL_NAME, resolve_eagle_config

__all__ = [
    "ATTENTION_MODES",
    "BUNDLED_EAGLE_CONFIG",
    "EAGLE_MODEL_NAME",
    "BackboneOutput",
    "EagleBackbone",
    "resolve_eagle_config",
]
