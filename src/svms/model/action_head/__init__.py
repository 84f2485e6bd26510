"""GR00T N1.6 action head: per-embodiment projectors, (Alternate-VL) DiT, flow matching."""

from svms.model.action_head.dit import AlternateVLDiT, DiT
from svms.model.action_head.head import ActionHeadOutput, Gr00tActionHead, inference_buckets
from svms.model.action_head.projectors import (
    CategorySpecificLinear,
    CategorySpecificMLP,
    MultiEmbodimentActionEncoder,
)

__all__ = [
    "ActionHeadOutput",
    "AlternateVLDiT",
    "CategorySpecificLinear",
    "CategorySpecificMLP",
    "DiT",
    "Gr00tActionHead",
    "MultiEmbodimentActionEncoder",
    "inference_buckets",
]
