"""The VLM prompt (spec §5.4–§5.6): chat template, `<image-k>` expansion, tokenisation, left padding.

The expanded string is tokenised in one piece, never instruction and image blocks separately: BPE
merges `<` of `<image 1>` with a preceding space or `.` (ids 366, 15757), and the reference keeps
those merged ids.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from svms.errors import SvmsError

TOKENIZER_DIR = Path(__file__).parent / "tokenizers" / "eagle-block2a-2b-v2"
PAD_TOKEN_ID = 151643
IMAGE_TOKEN = "<IMG_CONTEXT>"
IMAGE_TOKEN_ID = 151669
IMAGE_START = "<img>"
IMAGE_END = "</img>"
SYSTEM_PROMPT = "You are a helpful assistant."


def render_chat(language: str, n_images: int) -> str:
    """The processor's own template: system line, one user turn of text then one placeholder per image."""
    placeholders = "".join(f"<image-{k}>" for k in range(1, n_images + 1))
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{language}{placeholders}<|im_end|>\n"
    )


def expand_image_placeholders(chat_text: str, image_token_counts: Sequence[int]) -> str:
    """Replace each `<image-k>` by `<image k><img>` + `<IMG_CONTEXT>`×N_k + `</img>` (first occurrence)."""
    text = chat_text
    for k, n in enumerate(image_token_counts, start=1):
        placeholder = f"<image-{k}>"
        if placeholder not in text:
            raise SvmsError(
                f"prompt has no placeholder {placeholder} for image {k} of {len(image_token_counts)}; "
                "build the prompt with render_chat(language, n_images) using the number of images."
            )
        block = f"<image {k}>{IMAGE_START}{IMAGE_TOKEN * n}{IMAGE_END}"
        text = text.replace(placeholder, block, 1)
    return text


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | Path | None = None):
    """The Qwen2 fast tokenizer with left padding, from a local folder (default: the bundled one).

    Cached: loading the 150k-token vocabulary takes most of a second.
    """
    from transformers import Qwen2TokenizerFast

    folder = Path(path) if path is not None else TOKENIZER_DIR
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise SvmsError(
            f"tokenizer folder {folder} lacks vocab.json or merges.txt; point it at a copy of "
            "eagle-block2a-2b-v2 (the default one ships inside svms.data)."
        )
    return Qwen2TokenizerFast.from_pretrained(str(folder), padding_side="left", local_files_only=True)


def tokenize_prompts(texts: Sequence[str], tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise expanded prompts in one call, left-padded with 151643: (input_ids, attention_mask) int64."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64)
