"""`Gr00tN1d6`: the assembled policy, SVMS identity at init, checkpoints, manifest, freezing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from svms.cli import main
from svms.compat.manifest import state_dict_manifest
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config

FIXTURES = Path(__file__).parent / "fixtures" / "gr00t_n1d6"
IMAGE = 56  # 4x4 patches of 14 -> 4 LLM tokens per image in the tiny preset


@pytest.fixture(scope="module")
def tiny_config() -> Gr00tN1d6Config:
    return Gr00tN1d6Config.preset("tiny")


@pytest.fixture(scope="module")
def baseline(tiny_config) -> Gr00tN1d6:
    torch.manual_seed(0)
    return Gr00tN1d6(tiny_config).eval()


def svms_copy(model: Gr00tN1d6) -> Gr00tN1d6:
    """An SVMS-enabled model holding the baseline's weights, SVMS freshly initialised."""
    cfg = dataclasses.replace(model.config, use_sheaf_streams=True)
    torch.manual_seed(123)
    other = Gr00tN1d6(cfg).eval()
    missing, unexpected = other.load_state_dict(model.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("svms.") for k in missing)
    return other


def test_svms_off_is_the_release_state_dict_and_on_adds_only_svms_keys(tiny_config):
    base = {n for n, _ in state_dict_manifest(tiny_config)}
    with_svms = {n for n, _ in state_dict_manifest(dataclasses.replace(tiny_config, use_sheaf_streams=True))}
    assert base < with_svms
    assert all(k.startswith("svms.") for k in with_svms - base)


def test_identity_at_init_forward_and_get_action(baseline):
    model = svms_copy(baseline)
    batch = baseline.dummy_batch(2, image_size=IMAGE)
    batch_svms = model.dummy_batch(2, image_size=IMAGE)
    assert "aux_labels" in batch_svms and "aux_labels" not in batch
    for train in (False, True):
        baseline.train(train)
        model.train(train)
        torch.manual_seed(1)  # the DiT's dropout draws from the global RNG in training
        a = baseline(batch, generator=torch.Generator().manual_seed(5))
        torch.manual_seed(1)
        b = model(batch_svms, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.loss, b.loss)
        assert b.svms is not None and a.svms is None
    baseline.eval()
    model.eval()
    x = baseline.get_action(batch, generator=torch.Generator().manual_seed(9))["action_pred"]
    y = model.get_action(batch_svms, generator=torch.Generator().manual_seed(9))["action_pred"]
    assert x.shape == (2, baseline.config.action_horizon, baseline.config.max_action_dim)
    assert torch.equal(x, y)
    # Once the merge is trained the SVMS model differs: the identity is not an accident.
    with torch.no_grad():
        model.svms.merge.weight.normal_(0, 0.1)
    z = model.get_action(batch_svms, generator=torch.Generator().manual_seed(9))["action_pred"]
    assert not torch.equal(x, z)


def test_forward_backward_reaches_trainable_parts_only(tiny_config):
    torch.manual_seed(0)
    model = Gr00tN1d6(dataclasses.replace(tiny_config, use_sheaf_streams=True)).train()
    batch = model.dummy_batch(2, image_size=IMAGE)
    out = model(batch)
    (out.loss + out.svms.sheaf_loss + out.svms.aux_loss + out.svms.balance_loss).backward()
    for name, p in model.named_parameters():
        if p.requires_grad and ".head." not in name:  # the ViT pooling head never runs
            assert p.grad is not None, name
        if not p.requires_grad:
            assert p.grad is None, name
    assert not model.backbone.model.vision_model.training  # frozen -> eval mode
    assert model.action_head.model.training


def test_set_trainable_freezes_and_keeps_frozen_modules_in_eval(baseline):
    model = svms_copy(baseline)
    model.set_trainable(tune_diffusion_model=False, tune_projector=False, tune_vlln=False,
                        tune_top_llm_layers=0, tune_svms=True)
    model.train()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"svms"}
    assert not model.action_head.model.training


def test_save_load_round_trip_is_bit_exact(baseline, tmp_path):
    model = svms_copy(baseline)
    with torch.no_grad():
        model.svms.merge.weight.normal_()
        model.svms.router_temperature.fill_(0.7)
    model.save_pretrained(tmp_path / "ck")
    loaded = Gr00tN1d6.from_pretrained(tmp_path / "ck")
    saved = loaded.config.to_dict()
    assert saved.pop("architectures") == ["Gr00tN1d6"]  # HF bookkeeping, as in the release
    assert saved == model.config.to_dict()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype, k
    assert loaded.backbone.model.language_model.lm_head.weight is \
        loaded.backbone.model.language_model.model.embed_tokens.weight
    batch = model.dummy_batch(1, image_size=IMAGE)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    expected = model.get_action(batch, g())["action_pred"]
    assert torch.equal(expected, loaded.eval().get_action(batch, g())["action_pred"])


def test_sharded_checkpoint_round_trip(baseline, tmp_path):
    baseline.save_pretrained(tmp_path, max_shard_bytes=8_000_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "backbone.model.language_model.lm_head.weight" not in index["weight_map"]
    loaded = Gr00tN1d6.from_pretrained(tmp_path)
    for k, v in baseline.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_plain_checkpoint_loads_into_svms_model_with_fresh_svms(baseline, tmp_path):
    baseline.save_pretrained(tmp_path)
    model = Gr00tN1d6.from_pretrained(tmp_path, overrides={"use_sheaf_streams": True}).eval()
    assert model.svms is not None
    assert "SVMS weights start fresh" in model.load_report.summary()
    batch = model.dummy_batch(1, image_size=IMAGE)
    plain = {k: v for k, v in batch.items() if k != "aux_labels"}
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    expected = baseline.get_action(plain, g())["action_pred"]
    assert torch.equal(model.get_action(batch, g())["action_pred"], expected)


def test_bf16_checkpoint_is_cast_to_the_model_dtype(baseline, tmp_path):
    baseline.save_pretrained(tmp_path, dtype=torch.bfloat16)
    loaded = Gr00tN1d6.from_pretrained(tmp_path)
    assert loaded.load_report.cast > 0
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_optional_keys_may_be_absent(baseline, tmp_path):
    baseline.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if ".vision_model.head." in k]
    assert dropped
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors")
    loaded = Gr00tN1d6.from_pretrained(tmp_path)
    assert set(dropped) <= set(loaded.load_report.fresh)


@pytest.mark.parametrize("damage, message", [
    ("drop", "missing"),
    ("extra", "unexpected"),
    ("shape", "shape"),
])
def test_incompatible_checkpoint_lists_the_difference(baseline, tmp_path, damage, message):
    baseline.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = "action_head.action_decoder.layer1.W"
    if damage == "drop":
        del state[key]
    elif damage == "extra":
        state["action_head.some_new_module.weight"] = torch.zeros(2)
    else:
        state[key] = torch.zeros(1, 2, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(SvmsError, match=message) as err:
        Gr00tN1d6.from_pretrained(tmp_path)
    assert "action_head" in str(err.value)


def test_missing_folder_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(SvmsError, match="does not exist"):
        Gr00tN1d6.from_pretrained(tmp_path / "nope")
    Gr00tN1d6Config.preset("tiny").to_json_file(tmp_path / "config.json")
    with pytest.raises(SvmsError, match="holds no weights"):
        Gr00tN1d6.from_pretrained(tmp_path)


def test_manifest_matches_the_released_model_exactly(capsys):
    assert main(["compat", "manifest", "--preset", "n1d6-3b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    reference = json.loads((FIXTURES / "manifest_n1d6_3b.json").read_text())["entries"]
    expected = [f"{e['name']} [{', '.join(str(s) for s in e['shape'])}]" for e in reference]
    assert lines == expected


def test_compat_check_cli_passes_fixture_and_fails_tampered_copy(tmp_path, capsys):
    folder = FIXTURES / "action_head_tiny"
    assert main(["compat", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "pred_velocity" in out and "14/14 passed" in out
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in folder.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    io = load_file(tampered / "io.safetensors")
    io["action_pred"] = io["action_pred"] + 1e-3
    save_file(io, tampered / "io.safetensors")
    assert main(["compat", "check", str(tampered)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_compat_check_on_a_non_fixture_is_a_clean_error(tmp_path, capsys):
    assert main(["compat", "check", str(tmp_path)]) == 1
    assert "not a fixture folder" in capsys.readouterr().err


def test_missing_batch_key_is_a_clear_error(baseline):
    batch = baseline.dummy_batch(1, image_size=IMAGE)
    del batch["action_mask"]
    with pytest.raises(SvmsError, match="action_mask"):
        baseline(batch)


def test_bf16_autocast_forward_runs(tiny_config):
    torch.manual_seed(0)
    model = Gr00tN1d6(dataclasses.replace(tiny_config, use_sheaf_streams=True)).train()
    batch = model.dummy_batch(2, image_size=IMAGE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_bf16_inference_casts_inputs_and_returns_float32(baseline, tmp_path):
    baseline.save_pretrained(tmp_path)
    model = Gr00tN1d6.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = baseline.dummy_batch(2, image_size=IMAGE)
    pred = model.get_action(batch, torch.Generator().manual_seed(1))["action_pred"]
    ref = baseline.get_action(batch, torch.Generator().manual_seed(1))["action_pred"]
    assert pred.dtype == torch.float32
    assert (pred - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 rounding, not a different model
