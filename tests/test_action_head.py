"""Action head: reference-fixture parity, the 3B state-dict layout, sampling and trainability."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from svms.compat.action_head import FORWARD_OUTPUTS, GET_ACTION_OUTPUTS, check_action_head_fixture
from svms.errors import SvmsError
from svms.model.action_head import Gr00tActionHead, inference_buckets
from svms.model.config import Gr00tN1d6Config

FIXTURES = Path(__file__).parent / "fixtures" / "gr00t_n1d6"
HEAD_FIXTURES = ("action_head_tiny", "action_head_tiny_dit")


def _copy_fixture(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def _tiny_head(**overrides) -> Gr00tActionHead:
    torch.manual_seed(0)
    return Gr00tActionHead(dataclasses.replace(Gr00tN1d6Config.preset("tiny"), **overrides))


def _dropout_head() -> Gr00tActionHead:
    """The tiny head with the release's DiT dropout (the tiny preset turns it off)."""
    dit = dataclasses.replace(Gr00tN1d6Config.preset("tiny").diffusion_model_cfg, dropout=0.2)
    return _tiny_head(diffusion_model_cfg=dit)


def _batch(head: Gr00tActionHead, b: int = 2, s: int = 10) -> dict[str, torch.Tensor]:
    """Random inputs: each sample has text, image and (sample 1) left-padding tokens."""
    c = head.config
    g = torch.Generator().manual_seed(1)
    attention = torch.ones(b, s, dtype=torch.bool)
    attention[1, :2] = False
    image = torch.zeros(b, s, dtype=torch.bool)
    image[:, 4:7] = True
    return {
        "backbone_features": torch.randn(b, s, c.backbone_embedding_dim, generator=g),
        "backbone_attention_mask": attention,
        "image_mask": image,
        "state": torch.randn(b, 1, c.max_state_dim, generator=g),
        "embodiment_id": torch.tensor([0, 5])[:b],
    }


def _actions(head: Gr00tActionHead, b: int = 2) -> dict[str, torch.Tensor]:
    c = head.config
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(b, c.action_horizon, c.max_action_dim)
    mask[:, :, 12:] = 0
    return {"action": torch.randn(b, c.action_horizon, c.max_action_dim, generator=g), "action_mask": mask}


# ---- parity with the reference fixtures -----------------------------------------------------------


@pytest.mark.parametrize("name", HEAD_FIXTURES)
def test_fixture_every_row_passes(name):
    rows = check_action_head_fixture(FIXTURES / name)
    assert [r.name for r in rows] == list(FORWARD_OUTPUTS + GET_ACTION_OUTPUTS)
    failed = [r.format() for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("tensor", ["pred_velocity", "dit_output", "action_pred", "inference_timesteps"])
def test_tampered_output_fails(tensor, tmp_path):
    folder = _copy_fixture("action_head_tiny", tmp_path)
    io = load_file(str(folder / "io.safetensors"))
    changed = io[tensor].clone()
    changed.view(-1)[3] += 1 if not changed.is_floating_point() else 1e-3
    io[tensor] = changed
    save_file(io, str(folder / "io.safetensors"))
    rows = {r.name: r for r in check_action_head_fixture(folder)}
    assert not rows[tensor].passed
    assert all(r.passed for n, r in rows.items() if n != tensor)


def test_plain_dit_fixture_needs_unmasked_cross_attention(tmp_path):
    """The plain-DiT fixture attends to padded VL tokens: replaying it with masks must fail."""
    folder = _copy_fixture("action_head_tiny_dit", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["use_alternate_vl_dit"] = True
    del cfg["_diffusion_model_class"]
    (folder / "config.json").write_text(json.dumps(cfg))
    rows = {r.name: r for r in check_action_head_fixture(folder)}
    assert not rows["pred_velocity"].passed and not rows["action_pred"].passed
    assert rows["vl_embeds"].passed and rows["action_encoder_output"].passed


def test_broken_fixture_folders_are_clear_errors(tmp_path):
    folder = _copy_fixture("action_head_tiny", tmp_path)
    weights = load_file(str(folder / "weights.safetensors"))
    del weights["vlln.bias"]
    save_file(weights, str(folder / "weights.safetensors"))
    with pytest.raises(SvmsError, match="missing.*vlln.bias"):
        check_action_head_fixture(folder)
    (folder / "io.safetensors").unlink()
    with pytest.raises(SvmsError, match="io.safetensors is missing"):
        check_action_head_fixture(folder)


# ---- structure ----------------------------------------------------------------------------------


def test_state_dict_matches_released_manifest_on_meta():
    manifest = json.loads((FIXTURES / "manifest_n1d6_3b.json").read_text())
    prefix = "action_head."
    ref = [(e["name"][len(prefix):], e["shape"]) for e in manifest["entries"] if e["name"].startswith(prefix)]
    with torch.device("meta"):
        head = Gr00tActionHead(Gr00tN1d6Config.preset("n1d6-3b"))
    ours = [(k, list(v.shape)) for k, v in head.state_dict().items()]
    assert ours == ref
    assert sum(p.numel() for p in head.model.parameters()) == 1_091_722_240


def test_mask_token_only_with_state_dropout():
    with torch.device("meta"):
        default = Gr00tActionHead(Gr00tN1d6Config.preset("reference-default"))
    assert "mask_token" not in default.state_dict()
    assert default.state_dict()["state_encoder.layer1.W"].shape == (32, 29, 1024)


def test_alternate_blocks_cross_attend_text_then_image():
    with torch.device("meta"):
        head = Gr00tActionHead(Gr00tN1d6Config.preset("n1d6-3b"))
    blocks = head.model.transformer_blocks
    assert [i for i in range(32) if blocks[i].attn1.to_k.in_features == 2048] == list(range(0, 32, 2))
    assert [i for i in range(0, 32, 2) if head.model.attends_text(i)] == list(range(0, 32, 4))


@pytest.mark.parametrize(("block_index", "text"), [(0, True), (2, False)])
def test_cross_block_ignores_inadmissible_tokens(block_index, text):
    """Text blocks see valid non-image tokens only, image blocks valid image tokens only (spec §13)."""
    head = _tiny_head().eval()
    x = _batch(head)
    dit = head.model
    tokens = torch.randn(2, 17, head.config.input_embedding_dim)
    temb = dit.timestep_encoder(torch.tensor([3, 700]))
    mask = dit.key_mask(block_index, x["backbone_attention_mask"], x["image_mask"])
    admissible = (~x["image_mask"] if text else x["image_mask"]) & x["backbone_attention_mask"]
    block = dit.transformer_blocks[block_index]
    out = block(tokens, temb, x["backbone_features"], mask)
    features = x["backbone_features"]
    scrambled = torch.where(admissible[..., None], features, torch.randn_like(features))
    torch.testing.assert_close(block(tokens, temb, scrambled, mask), out)
    assert not torch.allclose(block(tokens, temb, torch.randn_like(scrambled), mask), out)


# ---- sampling -----------------------------------------------------------------------------------


def test_get_action_is_deterministic_with_a_seeded_generator():
    head = _tiny_head().eval()
    x = _batch(head)
    a1 = head.get_action(**x, generator=torch.Generator().manual_seed(7))
    a2 = head.get_action(**x, generator=torch.Generator().manual_seed(7))
    a3 = head.get_action(**x, generator=torch.Generator().manual_seed(8))
    assert a1.shape == (2, head.config.action_horizon, head.config.max_action_dim)
    assert torch.equal(a1, a2) and not torch.allclose(a1, a3)


def test_euler_loop_reaches_the_data_when_velocity_is_exact(monkeypatch):
    head = _tiny_head().eval()
    x = _batch(head)
    target = torch.randn(2, head.config.action_horizon, head.config.max_action_dim)
    noise = torch.randn_like(target)
    seen = []

    def exact_velocity(vl, attention_mask, image_mask, state_features, noisy, buckets, embodiment_id):
        seen.append(int(buckets[0]))
        return target - noise

    monkeypatch.setattr(head, "predict_velocity", exact_velocity)
    out = head.get_action(**x, initial_noise=noise, num_steps=3, cached=False)
    torch.testing.assert_close(out, target)
    assert seen == [0, 333, 666] == inference_buckets(3, 1000).tolist()


def test_forward_is_reproducible_and_injection_wins_over_generator():
    head = _tiny_head().eval()
    x, y = _batch(head), _actions(head)
    o1 = head(**x, **y, generator=torch.Generator().manual_seed(3))
    o2 = head(**x, **y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(o1.loss, o2.loss)
    noise = y["action"] - o1.velocity_target  # the noise o1 drew
    o3 = head(**x, **y, noise=noise, t=o1.t, generator=torch.Generator().manual_seed(99))
    torch.testing.assert_close(o3.loss, o1.loss)
    assert torch.equal(o1.t_discretized, (o1.t * 1000).long())


def test_sample_time_follows_the_shifted_beta():
    head = _tiny_head()
    t = head.sample_time(20000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert 0.0 <= float(t.min()) and float(t.max()) <= 0.999
    assert abs(float(t.mean()) - 0.4 * 0.999) < 0.01
    assert float((t < 0.5).float().mean()) > 0.6  # biased toward the noisy end


def test_loss_ignores_masked_elements():
    head = _tiny_head().eval()
    x, y = _batch(head), _actions(head)
    with torch.no_grad():
        out = head(**x, **y, generator=torch.Generator().manual_seed(0))
    squared = (out.pred_velocity - out.velocity_target) ** 2
    manual = (squared * y["action_mask"]).sum() / y["action_mask"].sum()
    torch.testing.assert_close(out.loss, manual)
    assert float(out.action_loss[:, :, 12:].abs().sum()) == 0.0


def test_state_dropout_replaces_the_state_token_even_in_eval():
    head = _tiny_head(state_dropout_prob=1.0).eval()
    x, y = _batch(head), _actions(head)
    out = head(**x, **y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.state_features, head.mask_token.expand(2, 1, -1))


# ---- trainability -------------------------------------------------------------------------------


def test_frozen_modules_stay_in_eval_mode():
    head = _dropout_head()
    head.set_trainable(tune_projector=False, tune_diffusion_model=False, tune_vlln=True)
    head.train()
    assert head.training and head.vlln.training
    assert not any(m.training for m in head.model.modules())
    assert not head.state_encoder.training and not head.action_decoder.training
    assert not any(p.requires_grad for p in head.model.parameters())
    assert all(p.requires_grad for p in head.vlln.parameters())
    x, y = _batch(head), _actions(head)
    o1 = head(**x, **y, generator=torch.Generator().manual_seed(0))
    o2 = head(**x, **y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(o1.loss, o2.loss)  # no dropout left anywhere


def test_trainable_dit_uses_dropout_in_training():
    head = _dropout_head().train()
    x, y = _batch(head), _actions(head)
    o1 = head(**x, **y, generator=torch.Generator().manual_seed(0))
    o2 = head(**x, **y, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(o1.loss, o2.loss)


def test_gradients_reach_every_trainable_parameter():
    head = _tiny_head().train()
    head.set_trainable(tune_projector=True, tune_diffusion_model=True, tune_vlln=False)
    x, y = _batch(head), _actions(head)
    head(**x, **y, generator=torch.Generator().manual_seed(0)).loss.backward()
    for name, p in head.named_parameters():
        if name.startswith("vlln."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_per_embodiment_gradients_are_bitwise_reproducible_on_several_threads():
    """Samples sharing an embodiment add their gradients into one W slot in a fixed order (advanced indexing's
    backward adds them from several threads and varies in the last bit, which made CPU runs irreproducible)."""
    from svms.model.action_head.projectors import CategorySpecificLinear

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        torch.manual_seed(0)
        layer = CategorySpecificLinear(4, 128, 256)
        x = torch.randn(8, 40, 128)
        ids = torch.tensor([0, 0, 0, 0, 0, 0, 2, 2])
        out = layer(x, ids)
        torch.testing.assert_close(out, torch.bmm(x, layer.W[ids]) + layer.b[ids].unsqueeze(1), rtol=0, atol=0)

        def grads():
            layer.zero_grad(set_to_none=True)
            layer(x, ids).square().sum().backward()
            return layer.W.grad.clone(), layer.b.grad.clone()

        first = grads()
        assert first[0][[1, 3]].abs().max() == 0  # unused embodiments get no gradient
        for _ in range(20):
            again = grads()
            assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def test_projector_init_release_is_fixed_std_and_fan_in_keeps_the_signal_scale():
    """The release draws every per-embodiment weight from N(0, 0.02²); `projector_init="fan_in"` (the tiny
    preset's) from N(0, 1/fan_in), so a unit-variance input leaves the layer with about unit variance."""
    from svms.model.action_head.projectors import CategorySpecificLinear

    torch.manual_seed(0)
    release, fan_in = CategorySpecificLinear(4, 512, 256), CategorySpecificLinear(4, 512, 256, "fan_in")
    assert abs(float(release.W.std()) - 0.02) < 1e-3
    assert abs(float(fan_in.W.std()) - 512 ** -0.5) < 1e-3
    x, ids = torch.randn(4, 64, 512), torch.tensor([0, 1, 2, 3])
    assert 0.9 < float(fan_in(x, ids).std()) < 1.1 and float(release(x, ids).std()) < 0.5
    assert Gr00tN1d6Config.preset("n1d6-3b").projector_init == "release"
    assert Gr00tN1d6Config.preset("tiny").projector_init == "fan_in"
    tiny, release_like = _tiny_head(), _tiny_head(projector_init="release")
    for layer in (tiny.state_encoder.layer1, tiny.action_encoder.W2, tiny.action_decoder.layer2):
        assert abs(float(layer.W.std()) - layer.W.shape[1] ** -0.5) < 0.1 * layer.W.shape[1] ** -0.5
    assert abs(float(release_like.action_encoder.W1.W.std()) - 0.02) < 2e-3
    with pytest.raises(SvmsError, match="projector_init"):
        _tiny_head(projector_init="xavier")
