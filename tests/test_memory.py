"""`svms memory`: the estimate follows the real model's counts and scales as it should."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import tyro

from svms.commands.memory import Memory
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train import memory, memory_measure
from svms.train.memory import estimate, fit_options, phase_stages
from svms.train.phases import apply_phase, apply_phase_dtypes

PRESET = "n1d6-3b"


def trainable_after_set_trainable(phase: int) -> int:
    model = memory._meta_model(PRESET)  # built once per process (meta device, ~0.3 s)
    apply_phase(model, str(phase))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_phase_counts_come_from_the_model():
    model = memory._meta_model(PRESET)
    svms_params = sum(p.numel() for p in model.svms.parameters())
    assert estimate(PRESET, 1, 16).trainable_params == svms_params
    for phase in (2, 3):
        assert estimate(PRESET, phase, 4).trainable_params == trainable_after_set_trainable(phase)
    model.set_trainable(tune_top_llm_layers=4, tune_projector=True, tune_diffusion_model=True, tune_vlln=True,
                        tune_svms=True, tune_llm=False, tune_visual=False)
    phase3 = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert estimate(PRESET, 3, 8).trainable_params == phase3
    blocks = model.action_head.model.transformer_blocks
    half = sum(p.numel() for b in blocks[: len(blocks) // 2] for p in b.parameters())
    assert estimate(PRESET, 2, 4).trainable_params == svms_params + half
    assert sum(s.params for s in phase_stages(PRESET, 1)) == sum(p.numel() for p in model.parameters())


def test_gradients_and_optimizer_scale_with_trainable_params():
    for phase in (1, 2, 3):
        e = estimate(PRESET, phase, 2)
        assert e.gradients_all_gib * 2**30 == pytest.approx(4 * e.trainable_params)
        assert e.optimizer_gib * 2**30 == pytest.approx(8 * e.trainable_params)
    small, large = estimate(PRESET, 1, 2), estimate(PRESET, 3, 2)
    assert large.optimizer_gib / small.optimizer_gib == pytest.approx(large.trainable_params / small.trainable_params)


def test_activations_linear_in_batch_and_smaller_with_checkpointing():
    for phase in (1, 2, 3):
        a = [estimate(PRESET, phase, b).activations_all_gib for b in (2, 4, 8)]
        assert a[2] - a[1] == pytest.approx(2 * (a[1] - a[0]), rel=1e-6)
        assert a[1] > a[0] > 0
        ckpt = estimate(PRESET, phase, 8, grad_checkpointing=True)
        plain = estimate(PRESET, phase, 8)
        assert ckpt.activations_all_gib < plain.activations_all_gib
        assert ckpt.total_gib <= plain.total_gib
    longer = estimate(PRESET, 3, 8, seq_len=600)
    assert longer.activations_all_gib > estimate(PRESET, 3, 8).activations_all_gib


def test_optimizer_options_reduce_the_optimizer_line():
    full = estimate(PRESET, 3, 8)
    eight = estimate(PRESET, 3, 8, optimizer="adamw8bit")
    off = estimate(PRESET, 3, 8, optimizer="offload")
    assert eight.optimizer_gib == pytest.approx(full.optimizer_gib / 4)
    assert off.optimizer_gib == 0
    assert off.total_gib < eight.total_gib < full.total_gib
    assert estimate(PRESET, 1, 16, frozen_dtype="fp32").weights_gib > estimate(PRESET, 1, 16).weights_gib


def test_lines_add_up_and_phase_3_is_the_largest():
    totals = []
    for phase, batch in memory.PHASE_BATCH.items():
        e = estimate(PRESET, phase, batch)
        assert sum(v for name, v in e.lines() if name != "total") == pytest.approx(e.total_gib)
        assert e.allocated_gib < e.total_gib
        totals.append(e.total_gib)
    assert totals[0] < totals[1] < totals[2]
    # the reference's setup (fp32 head, multi-tensor AdamW) does not fit 32 GB even at batch 1 (#536)
    reference = estimate(PRESET, 3, 1, optimizer="adamw-foreach", frozen_dtype="mixed")
    assert not reference.fits()
    options = fit_options(reference)
    assert options and any(o.fits for o in options)
    assert all(o.estimate.total_gib <= reference.total_gib for o in options)
    assert fit_options(estimate(PRESET, 1, 16)) == []


def test_bad_input_is_a_clear_error():
    with pytest.raises(SvmsError, match="phase"):
        estimate(PRESET, 4, 8)
    with pytest.raises(SvmsError, match="optimizer"):
        estimate(PRESET, 1, 8, optimizer="sgd")
    with pytest.raises(SvmsError, match="batch"):
        estimate(PRESET, 1, 0)
    with pytest.raises(SvmsError, match="preset"):
        estimate("huge", 1, 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_measure_on_cpu_is_a_clear_error():
    with pytest.raises(SvmsError, match="needs a CUDA GPU"):
        memory_measure.measure(PRESET, 1, 2)
    with pytest.raises(SvmsError, match="needs a CUDA GPU"):
        tyro.cli(Memory, args=["--phase", "1", "--measure"]).run()


def test_training_steps_run_on_a_tiny_model():
    """The measuring loop (phase setup, dtypes, checkpointing, autocast, AdamW) on CPU at tiny size."""
    from svms.model import Gr00tN1d6, Gr00tN1d6Config

    torch.manual_seed(0)
    config = dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=True)
    model = Gr00tN1d6(config, backbone_dtype=torch.bfloat16)
    params = memory_measure.prepare_model(model, 2, grad_checkpointing=True)
    assert all(p.dtype == torch.float32 for p in params)
    assert model.backbone.model.language_model.model.embed_tokens.weight.dtype == torch.bfloat16
    before = [p.detach().clone() for p in params]
    batch = model.dummy_batch(2, text_tokens=8, n_images=1, image_size=56)
    losses = memory_measure.training_steps(model, batch, params, 2, "adamw", "cpu")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_command_prints_the_table(capsys):
    assert tyro.cli(Memory, args=[]).run() == 0
    out = capsys.readouterr().out
    for text in ("phase 1, batch 16", "phase 3, batch 8", "weights", "optimizer states", "activations",
                 "18 GB", "28 GB", "fits a 32 GB card"):
        assert text in out
    assert tyro.cli(Memory, args=["--phase", "3", "--optimizer", "adamw-foreach", "--frozen-dtype", "mixed",
                                  "--batch-size", "16"]).run() == 0
    assert "what makes it fit" in capsys.readouterr().out


@pytest.mark.parametrize("frozen", ["bf16", "mixed", "fp32"])
@pytest.mark.parametrize("phase", ["1", "3"])
def test_phase_dtypes_keep_trainable_fp32_and_follow_the_frozen_rule(phase, frozen):
    config = dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=True)
    model = Gr00tN1d6(config, backbone_dtype=torch.bfloat16)  # the mixed build a checkpoint load gives
    apply_phase(model, phase)
    apply_phase_dtypes(model, frozen)
    for name, p in model.named_parameters():
        if p.requires_grad:
            expected = torch.float32
        elif frozen == "bf16" or (frozen == "mixed" and name.startswith("backbone.")):
            expected = torch.bfloat16
        else:
            expected = torch.float32
        assert p.dtype == expected, (name, p.dtype)
    # the model still trains under bf16 autocast (CPU autocast stands in for CUDA's here)
    batch = model.dummy_batch(2, image_size=56)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(batch).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters() if p.requires_grad and p.grad is not None)
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_phase_dtypes_reject_an_unknown_rule():
    model = Gr00tN1d6(Gr00tN1d6Config.preset("tiny"))
    with pytest.raises(SvmsError, match="bf16, fp32, mixed"):
        apply_phase_dtypes(model, "fp16")


LORA = (32, ("llm", "dit"))


def test_lora_freezes_the_adapted_weights_and_adds_rank_sized_adapters():
    full, lora = estimate(PRESET, 3, 8), estimate(PRESET, 3, 8, lora=LORA)
    model = memory._meta_model(PRESET)
    apply_phase(model, "3")
    from svms.train.lora import resolve_targets

    adapted = [dict(model.named_modules())[n] for names in resolve_targets(model, LORA[1]).values() for n in names]
    base = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in adapted)
    adapters = sum(32 * (m.in_features + m.out_features) for m in adapted)
    assert lora.trainable_params == full.trainable_params - base + adapters
    assert lora.total_params == full.total_params + adapters
    assert lora.trainable_params < full.trainable_params / 2
    assert lora.optimizer_gib < full.optimizer_gib / 2 and lora.total_gib < full.total_gib
    rank8 = estimate(PRESET, 3, 8, lora=(8, LORA[1]))
    assert rank8.trainable_params < lora.trainable_params
    assert estimate(PRESET, 1, 16, lora=LORA).trainable_params == estimate(PRESET, 1, 16).trainable_params


def test_fsdp_shards_states_and_paged_counts_as_8bit():
    one, two, four = (estimate(PRESET, 3, 8, fsdp_gpus=n) for n in (1, 2, 4))
    assert two.optimizer_gib == pytest.approx(one.optimizer_gib / 2)
    assert four.optimizer_gib == pytest.approx(one.optimizer_gib / 4)
    assert four.total_gib < two.total_gib < one.total_gib
    assert one.weights_gib / 2 < two.weights_gib < one.weights_gib  # plus the units gathered whole
    paged, eight = estimate(PRESET, 3, 8, optimizer="paged-adamw8bit"), estimate(PRESET, 3, 8, optimizer="adamw8bit")
    assert paged.total_gib == eight.total_gib
    with pytest.raises(SvmsError, match="fsdp-gpus"):
        estimate(PRESET, 3, 8, fsdp_gpus=0)
    with pytest.raises(SvmsError, match="lora-rank"):
        estimate(PRESET, 3, 8, lora=(0, ("llm",)))


def test_gpu_memory_lists_the_settings_that_fit(capsys):
    from svms.cli import main

    assert main(["memory", "--gpu-memory", "24"]) == 0
    out = capsys.readouterr().out
    for phase in (1, 2, 3):
        assert f"Phase {phase}, batch {memory.PHASE_BATCH[phase]}: settings that fit 24 GiB" in out
    phase3 = out[out.index("Phase 3, batch 8: settings"):]
    assert "--optimizer adamw8bit" in phase3 and "--lora-rank 32 --lora-targets llm dit" in phase3
    assert "as set" not in phase3  # plain AdamW does not fit 24 GiB in phase 3
    for option in fit_options(estimate(PRESET, 3, 8), 24, every=True):
        assert option.fits == (option.estimate.total_gib <= 24)
