"""Batching processed samples into the dict the model takes (spec §5.6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from svms.data.processor import ProcessedSample
from svms.data.prompt import tokenize_prompts


def collate(samples: Sequence[ProcessedSample], tokenizer=None) -> dict[str, Any]:
    """Tokenise all prompts together (left padding), keep pixel values as a sample-major list, stack the rest.

    Keys: `input_ids`, `attention_mask` (int64 (B, L)), `pixel_values` (list of (1, 3, h̄, w̄)),
    `image_sizes` (int64 (N_img, 2)), `embodiment_id` (int64 (B,)), and when present `state`,
    `action`, `action_mask`.
    """
    input_ids, attention_mask = tokenize_prompts([s.text for s in samples], tokenizer)
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": [pv for s in samples for pv in s.pixel_values],
        "image_sizes": torch.tensor([hw for s in samples for hw in s.image_sizes], dtype=torch.int64).reshape(
            -1, 2
        ),
        "embodiment_id": torch.tensor([s.embodiment_id for s in samples], dtype=torch.int64),
    }
    for name in ("state", "action", "action_mask"):
        values = [getattr(s, name) for s in samples]
        if all(v is not None for v in values):
            batch[name] = torch.from_numpy(np.stack(values))
    return batch
