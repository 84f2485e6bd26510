"""Edge rules of the reference's input processing (fixture README, "Observed behaviour"; spec §5–§7)."""

from __future__ import annotations

import numpy as np
import pytest

from svms.data import (
    MODALITY_CONFIGS,
    ActionConfig,
    ActionRep,
    EmbodimentConfig,
    Gr00tProcessor,
    ModalityConfig,
    StateActionNormalizer,
    collate,
    compute_relative_stats,
    compute_stats,
    eagle_resize,
    eagle_smart_resize,
    embodiment_ids,
    expand_image_placeholders,
    gr00t_transform_plan,
    load_tokenizer,
    merge_statistics,
    normalize_language,
    order_frames,
    render_chat,
    tokenize_prompts,
)
from svms.errors import SvmsError

HEADER = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198]


def _stats(lo, hi, mean=None, std=None):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    mean = (lo + hi) / 2 if mean is None else np.asarray(mean, float)
    std = np.ones_like(lo) if std is None else np.asarray(std, float)
    return {
        "min": lo.tolist(),
        "max": hi.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "q01": lo.tolist(),
        "q99": hi.tolist(),
    }


def _config(
    state_keys=("a",),
    action_keys=("a",),
    horizon=4,
    reps=None,
    state_keys_ref=None,
    mean_std=None,
    state_mean_std=None,
    sincos=None,
    state_delta=(0,),
):
    reps = reps or ["ABSOLUTE"] * len(action_keys)
    refs = state_keys_ref or [None] * len(action_keys)
    acs = tuple(ActionConfig(ActionRep[r], state_key=s) for r, s in zip(reps, refs, strict=True))
    return EmbodimentConfig(
        video=ModalityConfig((0,), ("cam",)),
        state=ModalityConfig(tuple(state_delta), tuple(state_keys), sincos, state_mean_std),
        action=ModalityConfig(tuple(range(horizon)), tuple(action_keys), None, mean_std, acs),
        language=ModalityConfig((0,), ("task",)),
    )


# --- prompt -------------------------------------------------------------------------------------


def _ids(language: str, n_tokens=(81,)) -> list[int]:
    text = expand_image_placeholders(render_chat(language, len(n_tokens)), n_tokens)
    ids, mask = tokenize_prompts([text], load_tokenizer())
    return ids[0].tolist()


def test_image_tag_merges_with_preceding_space_or_dot():
    plain = _ids("open the drawer")
    assert plain[:14] == HEADER
    i = plain.index(151670)
    assert plain[i - 5 : i] == [27, 1805, 220, 16, 29]
    spaced = _ids("open the drawer ")
    i = spaced.index(151670)
    assert spaced[i - 5 : i] == [366, 1805, 220, 16, 29]  # " <" is one token
    dotted = _ids("Open the drawer.")
    assert 15757 in dotted  # ".<" is one token
    tok = load_tokenizer()
    separate = tok("open the drawer ")["input_ids"] + tok("<image 1>")["input_ids"]
    assert separate[-5:] != spaced[i - 5 : i]


def test_prompt_token_counts_match_spec():
    gr1 = _ids("pick the pear from the counter and place it in the plate")
    assert len(gr1) == 116 and gr1.count(151669) == 81 and gr1[-3:] == [151671, 151645, 198]
    three = _ids("open the drawer", (81, 81, 81))
    assert len(three) == 283 and three.count(151669) == 243
    k2 = three.index(151671) + 1
    assert three[k2 : k2 + 5] == [27, 1805, 220, 17, 29]  # <image 2> after </img>


def test_left_padding_with_endoftext_and_zero_mask():
    texts = [
        expand_image_placeholders(render_chat(lang, 1), [81]) for lang in ("a", "a much longer instruction")
    ]
    ids, mask = tokenize_prompts(texts, load_tokenizer())
    pad = int((mask[0] == 0).sum())
    assert pad > 0 and ids[0, :pad].eq(151643).all() and mask[0, pad:].eq(1).all()
    assert ids[0, pad] == 151644 and mask[1].eq(1).all()
    assert str(ids.dtype) == "torch.int64" and str(mask.dtype) == "torch.int64"


def test_language_normalisation_keeps_whitespace_and_unicode_letters():
    assert normalize_language("Pick up the Cup, please!") == "pick up the cup please"
    assert normalize_language("  Café: stack 3 blocks_now\tquickly ") == "  café stack 3 blocks_now\tquickly "
    assert normalize_language("Don't — stop (2nd)") == "dont  stop 2nd"


# --- images -------------------------------------------------------------------------------------


def test_sizes_round_half_to_even():
    assert gr00t_transform_plan(512, 513).first_resize_hw == (256, 256)  # 256.5 → 256
    assert gr00t_transform_plan(512, 517).first_resize_hw == (256, 258)  # 258.5 → 258
    assert gr00t_transform_plan(480, 640).out_hw == (256, 340)
    assert eagle_smart_resize(266, 266) == (280, 280) and eagle_smart_resize(238, 238) == (224, 224)
    assert eagle_smart_resize(14, 14) == (56, 56)  # min-pixels branch
    assert eagle_smart_resize(4000, 4000) == (1792, 1792)  # max-pixels branch
    assert eagle_smart_resize(256, 25621) == (252, 7000)  # 7000 clamp


def test_images_ordered_time_major_then_camera_order():
    video = {"wrist": ["w0", "w1"], "front": ["f0", "f1"]}
    assert order_frames(video, ["front", "wrist"]) == ["f0", "w0", "f1", "w1"]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((3, 8, 8), np.uint8),
    ],
)
def test_non_uint8_rgb_image_is_rejected_with_what_was_got(bad):
    with pytest.raises(SvmsError, match=rf"expected a uint8 RGB image.*got dtype {bad.dtype} with shape"):
        eagle_resize(bad)


def test_aspect_ratio_over_200_is_rejected():
    with pytest.raises(SvmsError, match="aspect ratio must be smaller than 200, got 201.0"):
        eagle_smart_resize(1, 201)
    assert eagle_smart_resize(1, 150) == (28, 140)


# --- statistics ---------------------------------------------------------------------------------


def test_stats_accumulate_in_float32():
    col = np.full((1000, 1), 0.7, np.float32)
    st = compute_stats([{"x": col}], ["x"])["x"]
    assert st["std"][0] > 0  # float32 summation error, as the reference; float64 would give exactly 0
    assert st["mean"][0] == float(np.mean(col, axis=0)[0]) != float(np.float32(0.7))
    exact = compute_stats([{"x": np.full((1000, 1), 0.75, np.float32)}], ["x"])["x"]
    assert exact["std"] == [0.0]


def test_relative_stats_windows_and_empty_file():
    cfg = _config(reps=["RELATIVE"], horizon=16)
    mj = {"state": {"a": {"start": 0, "end": 2}}, "action": {"a": {"start": 0, "end": 2}}}
    rng = np.random.default_rng(0)
    eps = [
        {
            "observation.state": rng.normal(size=(40, 2)).astype(np.float32),
            "action": rng.normal(size=(40, 2)).astype(np.float32),
        }
        for _ in range(3)
    ]
    rel = compute_relative_stats(eps, mj, cfg)
    assert np.asarray(rel["a"]["mean"]).shape == (16, 2)
    windows = [ep["action"][i : i + 16] - ep["observation.state"][i] for ep in eps for i in range(25)]
    assert np.allclose(rel["a"]["max"], np.max(windows, axis=0))  # 75 windows: i + 15 < 40
    assert compute_relative_stats(eps, mj, _config(horizon=16)) == {}


def test_merge_statistics_weighted():
    a, b = _stats([0.0], [1.0], [0.0], [1.0]), _stats([-2.0], [0.5], [2.0], [1.0])
    m = merge_statistics([a, b], [1, 3])
    assert m["mean"] == [1.5] and m["min"] == [-2.0] and m["max"] == [1.0]
    assert np.isclose(m["std"][0], np.sqrt(0.25 * 1 + 0.75 * 5 - 1.5**2))


# --- normalisation ------------------------------------------------------------------------------


def test_isclose_rule_is_relative_to_min():
    norm = StateActionNormalizer(
        _config(),
        {"state": {"a": _stats([1.0, 0.0], [1.0 + 4.8e-6, 1e-3])}, "action": {"a": _stats([0, 0], [1, 1])}},
    )
    out = norm.normalize_state({"a": np.array([[1.0 + 4.8e-6, 5e-4]], np.float32)})
    assert out[0, 0] == 0.0  # max != min but np.isclose(max, min)
    assert abs(out[0, 1]) < 1e-3


def test_actions_clipped_states_not_for_mean_std():
    cfg = _config(mean_std=("a",), state_mean_std=("a",))
    st = {"state": {"a": _stats([0], [1], [0], [1])}, "action": {"a": _stats([0], [1], [0], [1])}}
    norm = StateActionNormalizer(cfg, st)
    assert norm.normalize_state({"a": np.array([[3.0]], np.float32)})[0, 0] == 3.0
    act, _ = norm.normalize_action(
        {"a": np.full((4, 1), 3.0, np.float32)}, {"a": np.zeros((1, 1), np.float32)}
    )
    assert (act == 1.0).all()


def test_min_max_states_clipped_and_std_zero_passes_through():
    cfg = _config(state_keys=("a", "b"), state_mean_std=("b",))
    st = {
        "state": {"a": _stats([0], [1]), "b": _stats([0.75], [0.75], [0.75], [0.0])},
        "action": {"a": _stats([0], [1])},
    }
    out = StateActionNormalizer(cfg, st).normalize_state(
        {"a": np.array([[2.0]], np.float32), "b": np.array([[0.75]], np.float32)}
    )
    assert out.tolist() == [[1.0, 0.75]]


def test_sincos_all_sines_then_cosines():
    cfg = _config(sincos=("a",))
    norm = StateActionNormalizer(
        cfg, {"state": {"a": _stats([0, 0], [1, 1])}, "action": {"a": _stats([0], [1])}}
    )
    x = np.array([[0.3, 1.2]], np.float32)
    assert np.allclose(norm.normalize_state({"a": x}), np.concatenate([np.sin(x), np.cos(x)], -1))
    assert norm.state_dim == 4


def test_relative_action_uses_last_step_of_its_state_key_and_round_trips():
    cfg = _config(
        state_keys=("q", "p"),
        action_keys=("arm",),
        reps=["RELATIVE"],
        state_keys_ref=["p"],
        state_delta=(-1, 0),
    )
    st = {
        "state": {"q": _stats([0], [1]), "p": _stats([0, 0], [1, 1])},
        "action": {"arm": _stats([0, 0], [9, 9])},
        "relative_action": {"arm": _stats(np.full((4, 2), -1.0), np.full((4, 2), 1.0))},
    }
    norm = StateActionNormalizer(cfg, st)
    state = {"q": np.zeros((2, 1), np.float32), "p": np.array([[5.0, 5.0], [0.25, -0.5]], np.float32)}
    action = {"arm": np.array([[0.5, 0.0]] * 4, np.float32)}
    rel = norm.relative_action("arm", action["arm"], state)
    assert rel.dtype == np.float64 and np.allclose(rel, [[0.25, 0.5]] * 4)
    act, mask_dtype = norm.normalize_action(action, state)
    assert mask_dtype == np.float64  # the reference's action_mask is float64 with a relative key
    decoded = norm.decode_action(act[None], {k: v[None] for k, v in state.items()})
    assert np.allclose(decoded["arm"][0], action["arm"], atol=1e-6)


def test_mask_dtype_float32_without_relative_keys_and_padding():
    proc = Gr00tProcessor(
        {"new_embodiment": _config(horizon=4)},
        {"new_embodiment": {"state": {"a": _stats([0], [1])}, "action": {"a": _stats([0], [1])}}},
    )
    frame = np.zeros((64, 64, 3), np.uint8)
    s = proc(
        "NEW_EMBODIMENT",
        {"cam": [frame]},
        "go",
        {"a": np.array([[0.5]], np.float32)},
        {"a": np.full((4, 1), 2.0, np.float32)},
    )
    assert s.action_mask.dtype == np.float32 and s.action_mask.shape == (50, 128)
    assert s.action_mask.sum() == 4 and s.action_mask[:4, :1].all()
    assert (s.action[:4, 0] == 1.0).all() and not s.action[4:].any() and not s.action[:, 1:].any()
    assert s.state.shape == (1, 128) and not s.state[:, 1:].any() and s.embodiment_id == 10
    batch = collate([s, s], load_tokenizer())
    assert batch["action_mask"].shape == (2, 50, 128) and batch["embodiment_id"].tolist() == [10, 10]


def test_decode_ignores_padding_clips_min_max_and_zero_range_decodes_to_min():
    cfg = _config(action_keys=("g", "c"), reps=["ABSOLUTE", "ABSOLUTE"])
    st = {"state": {"a": _stats([0], [1])}, "action": {"g": _stats([0], [2]), "c": _stats([0.5], [0.5])}}
    pred = np.full((1, 50, 128), 7.0, np.float32)
    pred[0, :4, 0] = [-1.5, -1.0, 0.0, 1.5]
    out = StateActionNormalizer(cfg, st).decode_action(pred, {"a": np.zeros((1, 1, 1), np.float32)})
    assert out["g"].dtype == np.float32 and out["g"].shape == (1, 4, 1)
    assert out["g"][0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert (out["c"] == 0.5).all()


# --- configs and errors -------------------------------------------------------------------------


def test_embodiment_ids_checkpoint_wins_and_builtins_are_added():
    ids = embodiment_ids({"new_embodiment": 5, "my_robot": 7})
    assert ids["new_embodiment"] == 5 and ids["my_robot"] == 7 and ids["robocasa_panda_omron"] == 13
    assert embodiment_ids()["gr1"] == 20


def test_preregistered_configs():
    horizons = {tag: cfg.validate().action_horizon for tag, cfg in MODALITY_CONFIGS.items()}
    assert horizons == {
        "unitree_g1": 30,
        "libero_panda": 16,
        "oxe_widowx": 8,
        "oxe_google": 8,
        "robocasa_panda_omron": 16,
    }
    g1 = MODALITY_CONFIGS["unitree_g1"]
    assert [g1.action_config(k).rep.name for k in g1.action.modality_keys[:3]] == [
        "RELATIVE",
        "RELATIVE",
        "ABSOLUTE",
    ]
    assert MODALITY_CONFIGS["oxe_google"].to_dict()["action"]["mean_std_embedding_keys"] == [
        "x",
        "y",
        "z",
        "roll",
        "pitch",
        "yaw",
    ]


def test_config_key_missing_from_modality_json_is_an_error():
    mj = {
        "state": {"a": {"start": 0, "end": 1}},
        "action": {"b": {"start": 0, "end": 1}},
        "video": {"cam": {}},
    }
    with pytest.raises(SvmsError, match=r"modality.json: the modality config's action keys \['a'\]"):
        _config().check_modality_json(mj)


def test_sincos_for_an_action_key_is_an_error():
    cfg = _config()
    bad = EmbodimentConfig(cfg.video, cfg.state, ModalityConfig((0,), ("a",), ("a",)), cfg.language)
    with pytest.raises(SvmsError, match=r"sin/cos encoding requested for action key\(s\) \['a'\]"):
        bad.validate()


def test_missing_statistics_for_a_key_is_an_error():
    with pytest.raises(SvmsError, match="statistics have no action entry for key 'a'"):
        StateActionNormalizer(_config(), {"state": {"a": _stats([0], [1])}, "action": {}})
    with pytest.raises(SvmsError, match="no statistics for embodiment tag 'gr1'"):
        Gr00tProcessor({"gr1": _config()}).normalizer("gr1")
