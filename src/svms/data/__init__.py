"""GR00T N1.6 input processing, identical to NVIDIA's reference (spec §5–§7).

One concept per module: `language` (instruction normalisation), `images` (GR00T transform, Eagle
resize/normalise), `prompt` (chat template, tokenizer), `modality` (embodiment configs and tags),
`stats` (statistics files), `normalize` (per-key state/action rules, decoding), `processor` (one
sample), `collate` (a batch).
"""

from svms.data.collate import collate
from svms.data.images import (
    Gr00tTransformPlan,
    check_rgb_uint8,
    eagle_normalize,
    eagle_resize,
    eagle_smart_resize,
    gr00t_transform,
    gr00t_transform_plan,
    num_image_tokens,
    order_frames,
    process_frames,
)
from svms.data.language import normalize_language
from svms.data.modality import (
    EMBODIMENT_TAG_TO_INDEX,
    MODALITY_CONFIGS,
    ActionConfig,
    ActionFormat,
    ActionRep,
    ActionType,
    EmbodimentConfig,
    ModalityConfig,
    embodiment_ids,
    normalize_tag,
)
from svms.data.normalize import KeyLayout, NormalizationSettings, StateActionNormalizer
from svms.data.processor import (
    Gr00tProcessor,
    ProcessedSample,
    ProcessorSettings,
    action_mask,
    pad_action,
    pad_state,
)
from svms.data.prompt import (
    IMAGE_TOKEN_ID,
    PAD_TOKEN_ID,
    TOKENIZER_DIR,
    expand_image_placeholders,
    load_tokenizer,
    render_chat,
    tokenize_prompts,
)
from svms.data.stats import (
    array_stats,
    compute_relative_stats,
    compute_stats,
    embodiment_statistics,
    merge_statistics,
    relative_windows,
)

__all__ = [
    "EMBODIMENT_TAG_TO_INDEX",
    "IMAGE_TOKEN_ID",
    "MODALITY_CONFIGS",
    "PAD_TOKEN_ID",
    "TOKENIZER_DIR",
    "ActionConfig",
    "ActionFormat",
    "ActionRep",
    "ActionType",
    "EmbodimentConfig",
    "Gr00tProcessor",
    "Gr00tTransformPlan",
    "KeyLayout",
    "ModalityConfig",
    "NormalizationSettings",
    "ProcessedSample",
    "ProcessorSettings",
    "StateActionNormalizer",
    "action_mask",
    "array_stats",
    "check_rgb_uint8",
    "collate",
    "compute_relative_stats",
    "compute_stats",
    "eagle_normalize",
    "eagle_resize",
    "eagle_smart_resize",
    "embodiment_ids",
    "embodiment_statistics",
    "expand_image_placeholders",
    "gr00t_transform",
    "gr00t_transform_plan",
    "load_tokenizer",
    "merge_statistics",
    "normalize_language",
    "normalize_tag",
    "num_image_tokens",
    "order_frames",
    "pad_action",
    "pad_state",
    "process_frames",
    "relative_windows",
    "render_chat",
    "tokenize_prompts",
]
