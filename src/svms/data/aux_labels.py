"""Auxiliary per-token stream labels for SVMS (design §4): which tokens each stream should care about.

Three streams, multi-hot (a word may belong to several): 0 visual (objects, fixtures, spatial
relations, visual attributes), 1 temporal (actions, sequencing, causal/planning words), 2 state
(object states, physical properties, robot parts and robot state). The keyword sets are written
for RoboCasa's kitchen tasks (pick-and-place between counter, cabinet, sink, microwave, stove;
doors and drawers; faucets and spouts; stove knobs; coffee machine; navigation).

Alignment: words are `\\w+` runs of the (normalised) instruction; a token gets the union of the
labels of the words its characters overlap, so every sub-word piece inherits its word's labels.
In a prompt, `<IMG_CONTEXT>` tokens are visual, other template tokens 0, padding −100 (ignored).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from svms.data.prompt import IMAGE_TOKEN_ID, load_tokenizer
from svms.sheaf.config import DEFAULT_STREAM_NAMES as STREAM_NAMES

IGNORE_INDEX = -100
IM_START_ID = 151644
IM_END_ID = 151645
IMG_START_ID = 151670
IMAGE_WORD_ID = 1805  # "image" of the literal `<image k>` before each image block

VISUAL = {
    "objects": """apple banana orange lemon lime peach pear mango kiwi avocado grape grapes watermelon
        tomato potato carrot onion garlic corn eggplant cucumber broccoli lettuce cabbage pepper squash
        bread baguette croissant cake cupcake donut cookie cheese egg meat steak chicken fish sausage
        milk juice water coffee tea cereal chips candy chocolate yogurt butter jam ketchup soup
        can bottle jar box carton bag packet mug cup glass bowl plate dish tray pan pot kettle lid
        spoon fork knife spatula ladle whisk tongs utensil sponge towel cloth soap boot shoe
        object item food fruit vegetable snack drink beverage container condiment""",
    "fixtures": """counter countertop cabinet cupboard drawer shelf sink basin faucet tap spout handle
        stove stovetop burner oven microwave fridge refrigerator freezer dishwasher toaster blender
        machine dispenser button knob switch door doors hinge rack island wall floor table chair
        kitchen room window light lamp""",
    "spatial": """left right top bottom front back behind above below under underneath beneath over
        on onto in into inside within outside near nearby next beside between center middle
        side corner edge upper lower far closest farthest here there from to toward towards
        away across along around up down forward backward""",
    "attributes": """red green blue yellow orange purple pink white black gray grey brown silver gold
        dark light bright colorful striped small large big tiny huge tall short long wide narrow
        round square rectangular flat shiny transparent wooden metal metallic plastic ceramic glass""",
}
TEMPORAL = {
    "actions": """pick place put set lay drop take grab grasp hold release lift raise lower move
        carry bring transfer fetch retrieve get open close shut turn rotate twist flip spin press push
        pull slide insert remove stack pour fill wipe clean wash serve brew navigate go walk drive
        reach approach return start stop switch activate deactivate adjust toggle unplug plug""",
    "sequencing": """then after afterwards before first second third next last finally later once
        until while when again meanwhile subsequently begin end step and""",
    "causal": """so because to order if unless goal task need needs should must try prepare ready
        setup make sure ensure avoid without using use""",
}
STATE = {
    "object_states": """open opened closed shut on off empty full filled half hot cold warm cool
        clean dirty wet dry upright tilted sideways flipped stacked running pressed locked unlocked
        ajar lit boiling melted frozen cooked raw sliced whole broken""",
    "physical": """heavy lightweight soft hard fragile rigid flexible deformable slippery sticky
        liquid solid smooth rough sharp weight mass size""",
    "robot": """robot gripper arm hand finger fingers fingertip wrist elbow shoulder joint joints
        base torso body head camera effector pose position orientation rotation angle height speed
        velocity force grip mode control""",
}
#: Function words nobody expects a stream to claim; kept out of the "unlabelled" report.
STOPWORDS = frozenset("the a an it its of this that these those them their please".split())


def _words(groups: dict[str, str]) -> frozenset[str]:
    return frozenset(w for text in groups.values() for w in text.split())


KEYWORDS: tuple[frozenset[str], ...] = (_words(VISUAL), _words(TEMPORAL), _words(STATE))
_WORD = re.compile(r"\w+")


def _candidates(word: str) -> Iterable[str]:
    """The word and its likely stems (plural, -ing, -ed), most specific first."""
    yield word
    for suffix, repl in (
        ("ies", "y"),
        ("es", ""),
        ("s", ""),
        ("ing", ""),
        ("ing", "e"),
        ("ed", ""),
        ("ed", "e"),
        ("ped", "p"),
    ):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            yield word[: -len(suffix)] + repl


@functools.lru_cache(maxsize=65536)
def word_labels(word: str) -> tuple[int, int, int]:
    """Multi-hot stream labels of one word (case-insensitive; stems tried when the word is unknown)."""
    for cand in _candidates(word.lower()):
        labels = tuple(int(cand in kw) for kw in KEYWORDS)
        if any(labels):
            return labels
    return (0, 0, 0)


def span_labels(text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """int64 (N, 3): for each character span of `text`, the union of the labels of overlapped words."""
    words = [(m.start(), m.end(), word_labels(m.group())) for m in _WORD.finditer(text)]
    out = np.zeros((len(spans), len(STREAM_NAMES)), np.int64)
    for i, (a, b) in enumerate(spans):
        for ws, we, labels in words:
            if ws < b and a < we:
                out[i] |= labels
    return out


def text_aux_labels(text: str, tokenizer=None) -> tuple[list[int], np.ndarray]:
    """Tokenise one plain text (no template) and label its tokens: (ids, int64 (L, 3))."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), span_labels(text, enc["offset_mapping"])


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _decode_with_spans(ids: Sequence[int], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Text of byte-level BPE ids and each token's character span in it."""
    decoder = _byte_decoder()
    buf, spans, prev = b"", [], 0
    for tok in tokenizer.convert_ids_to_tokens(list(ids)):
        try:
            buf += bytes(decoder[c] for c in tok)
        except KeyError:  # an added token inside the text: take its content
            buf += tok.encode()
        end = len(buf.decode("utf-8", errors="ignore"))
        spans.append((prev, end))
        prev = end
    return buf.decode("utf-8", errors="ignore"), spans


def instruction_range(ids: Sequence[int]) -> tuple[int, int]:
    """[start, end) of the instruction tokens in a GR00T prompt (spec §5.4), padding included.

    Starts after the last `<|im_start|>user\\n`; ends before the `<` of the first `<image k>` (which
    BPE may merge with a preceding space or `.`), or at `<|im_end|>` when there is no image.
    """
    ids = list(ids)
    starts = [i for i, t in enumerate(ids) if t == IM_START_ID]
    if not starts:
        return 0, 0
    start = starts[-1] + 3
    if IMG_START_ID in ids[start:]:
        img = ids.index(IMG_START_ID, start)
        word = max(i for i in range(start, img) if ids[i] == IMAGE_WORD_ID)
        return start, max(start, word - 1)
    end = ids.index(IM_END_ID, start) if IM_END_ID in ids[start:] else len(ids)
    return start, end


def prompt_aux_labels(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, tokenizer=None
) -> torch.Tensor:
    """Labels (B, L, 3) int64 aligned with batched prompt ids: instruction words by keyword,
    `<IMG_CONTEXT>` visual, other tokens 0, padding (mask 0) −100."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    ids = input_ids.cpu().numpy()
    out = np.zeros((*ids.shape, len(STREAM_NAMES)), np.int64)
    out[ids == IMAGE_TOKEN_ID, 0] = 1
    for b, row in enumerate(ids):
        start, end = instruction_range(row.tolist())
        if end > start:
            text, spans = _decode_with_spans(row[start:end].tolist(), tokenizer)
            out[b, start:end] = span_labels(text, spans)
    if attention_mask is not None:
        out[attention_mask.cpu().numpy() == 0] = IGNORE_INDEX
    return torch.from_numpy(out)


@dataclass(frozen=True)
class AuxCoverage:
    """Share of instruction tokens each stream labels, and the most frequent unlabelled words."""

    n_texts: int
    n_tokens: int
    stream_share: dict[str, float]
    any_share: float
    unlabelled: list[tuple[str, int]]


def aux_coverage(texts: Iterable[str], tokenizer=None, top: int = 20) -> AuxCoverage:
    """Coverage of the keyword sets over `texts` (normalise them first, as the model sees them)."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    counts = np.zeros(len(STREAM_NAMES), np.int64)
    n_texts = n_tokens = n_any = 0
    unlabelled: Counter[str] = Counter()
    for text in texts:
        n_texts += 1
        _, labels = text_aux_labels(text, tokenizer)
        n_tokens += len(labels)
        counts += labels.sum(axis=0)
        n_any += int(labels.any(axis=1).sum())
        unlabelled.update(
            w.lower() for w in _WORD.findall(text) if not any(word_labels(w)) and w.lower() not in STOPWORDS
        )
    share = {n: float(c) / max(n_tokens, 1) for n, c in zip(STREAM_NAMES, counts, strict=True)}
    return AuxCoverage(n_texts, n_tokens, share, n_any / max(n_tokens, 1), unlabelled.most_common(top))
