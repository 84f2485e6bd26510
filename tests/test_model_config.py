"""Model config: reference defaults, presets, JSON round trip with unknown keys, validation messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from svms.errors import SvmsError
from svms.model.config import DiTConfig, Gr00tN1d6Config

FIXTURES = Path(__file__).parent / "fixtures" / "gr00t_n1d6"

SVMS_DEFAULTS = {
    "use_sheaf_streams": False, "n_streams": 3, "d_stream": 768, "d_overlap": 384, "adapter_rank": 128,
    "sheaf_unroll_steps": 1, "lambda_sheaf_min": 0.01, "lambda_sheaf_max": 0.1,
    "sheaf_schedule_mode": "adaptive", "sheaf_delay_until_diffusion": 0.4, "use_aux_losses": True,
    "lambda_aux": 0.3, "aux_warmup_steps": 5000, "router_temp_init": 2.0, "router_temp_final": 0.5,
    "router_temp_decay_steps": 15000, "router_balance_weight": 0.01, "router_stream_dropout_p": 0.15,
}


def test_code_defaults_and_svms_defaults():
    c = Gr00tN1d6Config()
    assert (c.max_state_dim, c.max_action_dim, c.action_horizon) == (29, 29, 16)
    assert (c.backbone_embedding_dim, c.hidden_size, c.input_embedding_dim) == (2048, 1024, 1536)
    assert (c.noise_beta_alpha, c.noise_beta_beta, c.noise_s) == (1.5, 1.0, 0.999)
    assert c.num_timestep_buckets == 1000
    assert c.diffusion_model_cfg == DiTConfig()
    assert c.diffusion_model_cfg.to_dict() == {
        "positional_embeddings": None, "num_layers": 32, "num_attention_heads": 32, "attention_head_dim": 48,
        "norm_type": "ada_norm", "dropout": 0.2, "final_dropout": True, "output_dim": 1024,
        "interleave_self_attention": True,
    }
    assert {k: getattr(c, k) for k in SVMS_DEFAULTS} == SVMS_DEFAULTS
    assert c.eagle_config is None
    assert Gr00tN1d6Config.preset("reference-default") == c


def test_reference_fixture_config_fields_are_ours():
    """Every field the reference's config holds has our name; its code defaults equal ours."""
    ref = json.loads((FIXTURES / "action_head_tiny" / "config.json").read_text())
    ours = Gr00tN1d6Config().to_dict()
    public = {k for k in ref if not k.startswith("_")}
    assert public <= set(ours)
    tiny_overrides = {"backbone_embedding_dim", "max_state_dim", "max_action_dim", "hidden_size",
                      "input_embedding_dim", "max_num_embodiments", "max_seq_len", "diffusion_model_cfg"}
    assert {k: ref[k] for k in public - tiny_overrides} == {k: ours[k] for k in public - tiny_overrides}


def test_n1d6_3b_preset_matches_the_manifest_config():
    manifest = json.loads((FIXTURES / "manifest_n1d6_3b.json").read_text())["gr00t_config"]
    c = Gr00tN1d6Config.preset("n1d6-3b")
    # The manifest was built by overriding sizes only; the release also sets these fields (its config.json:
    # tests/test_release_checkpoint.py checks every field against it).
    assert c.apply_sincos_state_encoding and c.use_relative_action and c.eagle_collator
    released = dataclasses.replace(c, apply_sincos_state_encoding=False, use_relative_action=False,
                                   eagle_collator=False, color_jitter_params=None).to_dict()
    assert {k: released[k] for k in manifest} == manifest
    assert (c.max_state_dim, c.action_horizon, c.state_dropout_prob, c.select_layer) == (128, 50, 0.0, 16)


def test_tiny_preset_is_consistent_and_cpu_sized():
    c = Gr00tN1d6Config.preset("tiny")
    assert c.max_num_embodiments == 32 and c.max_state_dim >= 16 and c.max_action_dim >= 12
    assert c.diffusion_model_cfg.num_layers == 4
    dit = c.diffusion_model_cfg  # the DiT's width is the action tokens' width
    assert dit.num_attention_heads * dit.attention_head_dim == c.input_embedding_dim
    # a tiny head that learns: wider than the backbone, no DiT dropout (README, "Tiny policies that learn")
    assert c.input_embedding_dim >= 4 * c.backbone_embedding_dim and dit.dropout == 0.0
    assert c.eagle_config["text_config"]["hidden_size"] == c.backbone_embedding_dim
    assert c.select_layer <= c.eagle_config["text_config"]["num_hidden_layers"]


def test_presets_are_independent_copies():
    a = Gr00tN1d6Config.preset("tiny")
    a.eagle_config["text_config"]["hidden_size"] = 1
    assert Gr00tN1d6Config.preset("tiny").eagle_config["text_config"]["hidden_size"] == 64


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(SvmsError, match="n1d6-3b.*reference-default.*tiny"):
        Gr00tN1d6Config.preset("small")


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    src = FIXTURES / "action_head_tiny_dit" / "config.json"
    ref = json.loads(src.read_text())
    c = Gr00tN1d6Config.from_json_file(src)
    assert c.extra["_seed"] == 0 and c.extra["_diffusion_model_class"] == "DiT"
    assert c.diffusion_model_cfg.num_layers == 4 and not c.use_alternate_vl_dit
    d = c.to_dict()
    assert {k: d[k] for k in ref} == ref  # every key written back, unchanged
    c.to_json_file(tmp_path / "config.json")
    assert Gr00tN1d6Config.from_json_file(tmp_path / "config.json") == c
    tiny = Gr00tN1d6Config.preset("tiny")
    assert Gr00tN1d6Config.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny


def test_diffusion_model_cfg_accepts_a_partial_dict_and_keeps_unknown_keys():
    dit = {"num_attention_heads": 2, "output_dim": 64, "compute_dtype": "x"}
    c = Gr00tN1d6Config(input_embedding_dim=96, hidden_size=64, diffusion_model_cfg=dit)
    assert isinstance(c.diffusion_model_cfg, DiTConfig)
    assert c.diffusion_model_cfg.num_layers == 32 and c.diffusion_model_cfg.num_attention_heads == 2
    assert c.to_dict()["diffusion_model_cfg"]["compute_dtype"] == "x"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Gr00tN1d6Config().max_state_dim = 3


@pytest.mark.parametrize(("overrides", "message"), [
    ({"input_embedding_dim": 1024}, "input_embedding_dim"),
    ({"hidden_size": 512}, "output_dim"),
    ({"backbone_model_type": "siglip"}, "eagle"),
    ({"model_type": "Gr00tN1d5"}, "Gr00tN1d6"),
    ({"max_state_dim": 0}, "max_state_dim"),
    ({"action_horizon": -1}, "action_horizon"),
    ({"d_stream": 1.5}, "d_stream"),
    ({"state_dropout_prob": 1.5}, "state_dropout_prob"),
    ({"router_stream_dropout_p": -0.1}, "router_stream_dropout_p"),
    ({"noise_s": 0.0}, "noise_s"),
    ({"router_temp_final": 0.0}, "router_temp_final"),
    ({"sheaf_schedule_mode": "cosine"}, "adaptive, linear, fixed, off"),
    ({"lambda_sheaf_min": 0.5}, "lambda_sheaf_min"),
    ({"action_horizon": 2000}, "max_seq_len"),
    ({"tune_top_llm_layers": 20}, "select_layer"),
    ({"diffusion_model_cfg": {"norm_type": "layer_norm"}}, "ada_norm"),
    ({"diffusion_model_cfg": {"interleave_self_attention": False}}, "interleave_self_attention"),
    ({"diffusion_model_cfg": {"attention_bias": False}}, "attention_bias"),
    ({"diffusion_model_cfg": {"dropout": 2.0}}, "dropout"),
    ({"eagle_config": {"text_config": {"hidden_size": 64}}}, "backbone_embedding_dim"),
    ({"eagle_config": {"text_config": {"num_hidden_layers": 8}}}, "select_layer"),
])
def test_invalid_values_raise_with_the_field_name(overrides, message):
    with pytest.raises(SvmsError, match=message):
        Gr00tN1d6Config.from_dict(overrides)


def test_from_json_file_errors_are_clear(tmp_path):
    with pytest.raises(SvmsError, match="does not exist"):
        Gr00tN1d6Config.from_json_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SvmsError, match="not valid JSON"):
        Gr00tN1d6Config.from_json_file(bad)
