"""Auxiliary stream labels on RoboCasa-style instructions: keywords, sub-word alignment, prompts, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svms.data import expand_image_placeholders, load_tokenizer, normalize_language, render_chat, tokenize_prompts
from svms.data.aux_labels import (
    IGNORE_INDEX,
    KEYWORDS,
    STREAM_NAMES,
    aux_coverage,
    instruction_range,
    prompt_aux_labels,
    span_labels,
    text_aux_labels,
    word_labels,
)

ROBOCASA = [
    "pick the apple from the counter and place it in the cabinet",
    "open the left door of the microwave",
    "close the drawer",
    "turn on the sink faucet",
    "turn the stove burner off",
    "press the button on the coffee machine to serve coffee",
    "pick the mug from the counter and place it under the coffee machine dispenser",
    "navigate to the sink then open the cabinet",
    "place the red bowl into the empty sink",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_keyword_sets_cover_the_three_streams():
    assert STREAM_NAMES == ("visual", "temporal", "state")
    assert word_labels("microwave") == (1, 0, 0)
    assert word_labels("pick") == (0, 1, 0)
    assert word_labels("then") == (0, 1, 0)
    assert word_labels("gripper") == (0, 0, 1)
    assert word_labels("open") == (0, 1, 1)  # an action and an object state
    assert word_labels("on") == (1, 0, 1)  # a relation and a state ("turn on")
    assert word_labels("the") == (0, 0, 0)
    assert all(len(k) > 50 for k in KEYWORDS)


def test_stems_and_case():
    assert word_labels("Apples") == word_labels("apple") == (1, 0, 0)
    assert word_labels("tomatoes") == word_labels("tomato") == (1, 0, 0)  # "-oes" plurals of listed objects
    assert word_labels("cherries") == word_labels("cherry") == (0, 0, 0)  # "-ies" stems; an unlisted fruit
    assert word_labels("placing") == word_labels("placed") == (0, 1, 0)
    assert word_labels("opened") == (0, 0, 1)  # a listed state, before stemming to the action
    assert word_labels("dishes") == (1, 0, 0)


def test_subword_tokens_inherit_their_word(tok):
    text = "grab the countertop dispenser"
    ids, labels = text_aux_labels(text, tok)
    pieces = tok.convert_ids_to_tokens(ids)
    assert len(pieces) > 4  # "countertop" / "dispenser" split into sub-words
    spans = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for (a, _), piece, label in zip(spans, pieces, labels, strict=True):
        word = next(w for w in text.split() if text.index(w) <= a + (text[a] == " ") < text.index(w) + len(w))
        assert tuple(label) == word_labels(word), (piece, word)


def test_span_labels_union_over_overlapping_words():
    labels = span_labels("open drawer", [(0, 11), (4, 5)])
    assert labels[0].tolist() == [1, 1, 1] and labels[1].tolist() == [0, 0, 0]


def test_prompt_labels_match_text_labels(tok):
    texts = [normalize_language(t) for t in ROBOCASA[:4]]
    prompts = [expand_image_placeholders(render_chat(t, 2), [4, 4]) for t in texts]
    input_ids, mask = tokenize_prompts(prompts, tok)
    labels = prompt_aux_labels(input_ids, mask, tok)
    assert labels.shape == (*input_ids.shape, 3) and labels.dtype == torch.int64
    for b, text in enumerate(texts):
        start, end = instruction_range(input_ids[b].tolist())
        ids, expected = text_aux_labels(text, tok)
        assert input_ids[b, start:end].tolist() == ids
        assert labels[b, start:end].tolist() == expected.tolist()
        valid = mask[b] == 1
        assert (labels[b][~valid] == IGNORE_INDEX).all()
        image = input_ids[b] == 151669
        assert image.sum() == 8 and (labels[b][image] == torch.tensor([1, 0, 0])).all()
        other = valid & ~image
        other[start:end] = False
        assert (labels[b][other] == 0).all()  # template tokens belong to no stream


def test_prompt_labels_when_the_instruction_ends_in_a_space_or_dot(tok):
    for instruction in ("open the drawer ", "Open the drawer."):
        prompt = expand_image_placeholders(render_chat(instruction, 1), [4])
        ids, mask = tokenize_prompts([prompt], tok)
        labels = prompt_aux_labels(ids, mask, tok)[0]
        row = ids[0].tolist()
        assert 366 in row or 15757 in row  # "<" merged with the preceding character
        pieces = tok.convert_ids_to_tokens(row)
        drawer = next(i for i, p in enumerate(pieces) if "drawer" in p)
        assert labels[drawer].tolist() == [1, 0, 0]
        merged = next(i for i, t in enumerate(row) if t in (366, 15757))
        assert labels[merged].tolist() == [0, 0, 0]


def test_prompt_without_images(tok):
    ids, mask = tokenize_prompts([render_chat("close the drawer", 0)], tok)
    labels = prompt_aux_labels(ids, mask, tok)[0]
    start, end = instruction_range(ids[0].tolist())
    assert end - start == 3 and labels[start:end, 0].tolist() == [0, 0, 1]


def test_coverage_on_robocasa_instructions(tok):
    cov = aux_coverage([normalize_language(t) for t in ROBOCASA] + ["wiggle the spatula gently"], tok)
    assert cov.n_texts == len(ROBOCASA) + 1 and cov.n_tokens > 60
    assert cov.stream_share["visual"] > 0.3 and cov.stream_share["temporal"] > 0.15
    assert cov.stream_share["state"] > 0.03
    assert 0.5 < cov.any_share < 1.0
    unlabelled = dict(cov.unlabelled)
    assert "wiggle" in unlabelled and "gently" in unlabelled and "the" not in unlabelled
    assert np.isclose(sum(cov.stream_share.values()) >= cov.any_share, True)
