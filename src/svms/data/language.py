"""Instruction normalisation (spec §5.3): what the model was trained to read."""

from __future__ import annotations

import re

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")


def normalize_language(text: str) -> str:
    """Lower-case `text` and delete every character that is neither a word character nor whitespace.

    Whitespace (tabs, runs, leading/trailing) is kept exactly: the reference does not collapse it,
    and the tokenizer sees it, so collapsing would change the token ids.
    """
    return _NOT_WORD_OR_SPACE.sub("", text.lower())
