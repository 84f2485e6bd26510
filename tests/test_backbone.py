"""Eagle backbone: reference fixture parity, manifest layout, trainability, the pieces of spec §4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from svms.compat.backbone import check_backbone_fixture
from svms.errors import SvmsError
from svms.model.backbone import ATTENTION_MODES, BUNDLED_EAGLE_CONFIG, EagleBackbone, resolve_eagle_config
from svms.model.backbone.vision import images_to_tokens, pixel_unshuffle_tokens

FIXTURES = Path(__file__).parent / "fixtures" / "gr00t_n1d6"
TINY = FIXTURES / "backbone_tiny"
ROW_NAMES = {"backbone_features", "backbone_attention_mask", "image_mask", "vision_last_hidden_state",
             "vit_embeds", "llm_inputs_embeds", "llm_hidden_states"}


def tiny_backbone(**kwargs) -> EagleBackbone:
    config = json.loads((TINY / "config.json").read_text())
    backbone = EagleBackbone(config["eagle_config"], config["select_layer"], **kwargs)
    backbone.load_state_dict(load_file(TINY / "weights.safetensors"))
    return backbone


def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    io = load_file(TINY / "io.safetensors")
    return io["input_ids"], io["attention_mask"], [io[f"pixel_values.{i}"] for i in range(4)]


def test_fixture_passes_every_row():
    rows = check_backbone_fixture(TINY)
    assert {row.name for row in rows} == ROW_NAMES
    assert all(row.passed for row in rows), "\n".join(row.format() for row in rows)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fixture_valid_positions_pass_with_other_kernels(attention):
    rows = check_backbone_fixture(TINY, attention=attention)
    assert all(row.passed for row in rows), "\n".join(row.format() for row in rows)


def tampered(tmp_path: Path, file: str, key: str, index: tuple[int, ...], delta: float) -> Path:
    folder = tmp_path / "backbone_tiny"
    shutil.copytree(TINY, folder)
    tensors = load_file(folder / file)
    tensors[key][index] += delta
    save_file(tensors, folder / file)
    return folder


def test_tampered_weight_fails(tmp_path):
    folder = tampered(tmp_path, "weights.safetensors", "model.mlp1.3.bias", (0,), 1e-3)
    failed = {row.name for row in check_backbone_fixture(folder) if not row.passed}
    assert failed == {"vit_embeds", "llm_inputs_embeds", "llm_hidden_states", "backbone_features"}


def test_tampered_padded_feature_fails_only_under_flash_rule(tmp_path):
    # Sample 1 is left-padded: position 0 is padding, compared only when the flash rule is reproduced.
    folder = tampered(tmp_path, "io.safetensors", "backbone_features", (1, 0, 0), 1e-3)
    failed = {row.name for row in check_backbone_fixture(folder) if not row.passed}
    assert failed == {"backbone_features"}
    assert all(row.passed for row in check_backbone_fixture(folder, attention="sdpa"))


def test_meta_build_matches_manifest():
    manifest = json.loads((FIXTURES / "manifest_n1d6_3b.json").read_text())
    # The manifest lists the tied lm_head.weight (sharing storage with embed_tokens); so do we.
    expected = [(e["name"].removeprefix("backbone."), e["shape"], e["dtype"], e["requires_grad"])
                for e in manifest["entries"] if e["name"].startswith("backbone.")]
    with torch.device("meta"):
        backbone = EagleBackbone(None, 16, dtype=torch.bfloat16)  # as the reference builds it
    ours = [(name, list(t.shape), str(t.dtype).removeprefix("torch."), t.requires_grad)
            for name, t in backbone.state_dict(keep_vars=True).items()]
    assert ours == expected
    lm = backbone.model.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight


def test_frozen_parts_stay_eval_and_top_layers_train():
    backbone = tiny_backbone(tune_top_llm_layers=1).train()
    model = backbone.model
    assert backbone.training
    assert not any(m.training for m in (model.vision_model, model.mlp1, model.language_model))
    top, bottom = model.language_model.model.layers[-1], model.language_model.model.layers[0]
    assert all(p.requires_grad for p in top.parameters())
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"model.language_model.model.layers.1." + n for n, _ in top.named_parameters()}
    assert not any(p.requires_grad for p in bottom.parameters())

    backbone.set_trainable(tune_llm=False, tune_visual=True, tune_top_llm_layers=0)
    backbone.train()
    assert model.vision_model.training and model.mlp1.training and not model.language_model.training
    assert not any(p.requires_grad for p in model.language_model.parameters())


@pytest.mark.parametrize("attention", ATTENTION_MODES)
def test_gradients_reach_trainable_parts_only(attention):
    backbone = tiny_backbone(tune_visual=True, tune_top_llm_layers=1, attention=attention).train()
    input_ids, attention_mask, images = tiny_inputs()
    out = backbone(input_ids, attention_mask, images)
    out.backbone_features[out.backbone_attention_mask].square().sum().backward()
    for name, p in backbone.named_parameters():
        if ".head." in name:  # the ViT pooling head is never run
            assert p.grad is None, name
        elif p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_bf16_build_keeps_trainable_params_fp32():
    backbone = tiny_backbone(dtype=torch.bfloat16, tune_top_llm_layers=1)
    dtypes = {p.dtype for p in backbone.parameters() if p.requires_grad}
    frozen = {p.dtype for p in backbone.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}
    assert backbone.model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    kept = tiny_backbone(dtype=torch.bfloat16, tune_top_llm_layers=1, trainable_params_fp32=False)
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}


def test_lm_head_loads_from_embeddings():
    backbone = tiny_backbone()
    state = load_file(TINY / "weights.safetensors")
    embed = state["model.language_model.model.embed_tokens.weight"]
    stale = dict(state)
    stale["model.language_model.lm_head.weight"] = torch.randn_like(embed)  # an untied, random copy
    backbone.load_state_dict(stale)
    assert torch.equal(backbone.model.language_model.model.embed_tokens.weight, embed)
    del stale["model.language_model.lm_head.weight"]
    backbone.load_state_dict(stale)  # strict: a checkpoint may omit the tied entry
    assert "model.language_model.lm_head.weight" in backbone.optional_state_keys()


def test_meta_build_loads_with_assign():
    # The cheap way to load a big checkpoint: build on meta, then assign the loaded tensors.
    config = json.loads((TINY / "config.json").read_text())
    state = load_file(TINY / "weights.safetensors")
    del state["model.language_model.lm_head.weight"]  # as a saved checkpoint holds it
    with torch.device("meta"):
        backbone = EagleBackbone(config["eagle_config"], config["select_layer"])
    backbone.load_state_dict(state, assign=True)
    lm = backbone.model.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    with torch.no_grad():
        out = backbone.eval()(*tiny_inputs())
    torch.testing.assert_close(out.backbone_features, load_file(TINY / "io.safetensors")["backbone_features"],
                               rtol=1e-5, atol=1e-5)


def test_images_never_attend_to_each_other():
    # Three fixture images share a size and are encoded together; each must come out as if alone.
    backbone = tiny_backbone().eval()
    vision, mlp1 = backbone.model.vision_model, backbone.model.mlp1
    _, _, images = tiny_inputs()
    with torch.no_grad():
        together, _ = images_to_tokens(vision, mlp1, images, 2)  # (4 * 6, D)
        alone = [images_to_tokens(vision, mlp1, [img], 2)[0] for img in images]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-6, atol=1e-6)


def test_pixel_unshuffle_channel_order():
    c, h, w = 3, 4, 6
    grid = torch.tensor([[[1000 * ci + 10 * y + x for x in range(w)] for y in range(h)] for ci in range(c)])
    tokens = grid.reshape(c, h * w).T[None].float()  # (1, h*w, C) raster order
    out = pixel_unshuffle_tokens(tokens, h, w, 2)  # (1, h/2 * w/2, 4C)
    assert out.shape == (1, 6, 12)
    for ci in range(c):
        for dy in range(2):
            for dx in range(2):
                assert out[0, 0, 4 * ci + 2 * dy + dx] == 1000 * ci + 10 * dy + dx
                assert out[0, 1, 4 * ci + 2 * dy + dx] == 1000 * ci + 10 * dy + dx + 2  # token (0, 1)


def test_image_token_count_must_match():
    backbone = tiny_backbone()
    input_ids, attention_mask, images = tiny_inputs()
    with pytest.raises(SvmsError, match="image-token ids"):
        backbone(input_ids, attention_mask, images[:3])


def test_overrides_merge_into_bundled_values():
    assert resolve_eagle_config(None) == BUNDLED_EAGLE_CONFIG
    merged = resolve_eagle_config({"vision_config": {"hidden_size": 32}, "image_token_index": 7})
    assert merged["vision_config"]["hidden_size"] == 32 and merged["image_token_index"] == 7
    assert merged["vision_config"]["patch_size"] == 14 and merged["text_config"]["hidden_size"] == 2048
    with pytest.raises(SvmsError, match="use_windows_attn"):
        resolve_eagle_config({"vision_config": {"use_windows_attn": True}})
    with pytest.raises(SvmsError, match="select_layer"):
        EagleBackbone(None, 29)
