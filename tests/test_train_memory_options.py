"""`svms train` memory options: LoRA (peft) with merged N1.6 checkpoints, 8-bit optimizers, FSDP2 against DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from svms.cli import main
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train import TrainConfig
from svms.train.lora import ADAPTER_DIR, adapted_modules, apply_lora, merged_state_dict, resolve_targets
from svms.train.optimizers import build_optimizer
from svms.train.phases import apply_phase
from svms.train.sampling import SyntheticDataset
from svms.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
NO_DROPOUT = ("diffusion_model_cfg.dropout=0",)


def tiny(svms: bool = True, seed: int = 0) -> Gr00tN1d6:
    torch.manual_seed(seed)
    return Gr00tN1d6(dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=svms))


def run(out: Path, **kw) -> list[dict]:
    base = dict(dataset=out, out=out, max_steps=4, save_every=2, global_batch_size=2, phase="3", tensorboard=False,
                log_every=100)
    base.update(kw)
    train(TrainConfig(**base), SyntheticDataset(tiny(base["phase"] != "scratch"), size=8), SyntheticDataset.collate)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def shapes(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)


# -- LoRA ------------------------------------------------------------------------------------------------------

def adapted_layer_counts(rank: int) -> tuple[int, int]:
    """(trainable parameters of the LLM layers and DiT blocks with LoRA, the same without) in phase 3."""
    def count(model):
        return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and
                   (".language_model.model.layers." in n or ".transformer_blocks." in n))
    model = tiny()
    apply_phase(model, "3")
    full = count(model)
    apply_lora(model, rank, None, 0.0, ("llm", "dit"), "3")
    return count(model), full


def held_loss(model: Gr00tN1d6, data: SyntheticDataset) -> float:
    """Flow loss over the data with fixed noise and times, in eval mode: the training noise averaged out."""
    batch = SyntheticDataset.collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        return float(model.eval()(batch, generator=torch.Generator().manual_seed(0)).loss)


def test_lora_trains_far_fewer_parameters_and_its_loss_falls(tmp_path):
    lora, full = adapted_layer_counts(4)
    assert 0 < lora < full / 5  # the adapted layers: rank-4 adapters + their norms and AdaLN, not the weights
    tiny(seed=5).save_pretrained(tmp_path / "init")
    run(tmp_path / "run", lora_rank=4, max_steps=16, save_every=16, learning_rate=1e-3, init=tmp_path / "init",
        model_override=NO_DROPOUT)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["lora"]
    assert resolved["trainable"] < resolved["trainable_without_lora"]
    data = SyntheticDataset(tiny(), size=8)
    before = held_loss(Gr00tN1d6.from_pretrained(tmp_path / "init"), data)
    after = held_loss(Gr00tN1d6.from_pretrained(tmp_path / "run" / "checkpoint-16"), data)
    assert after < 0.98 * before, (before, after)  # deterministic: fixed data, noise and times


def test_merged_weights_give_the_lora_models_outputs(tmp_path):
    model = tiny(seed=1)
    apply_phase(model, "3")
    lora = apply_lora(model, 4, 8.0, 0.0, ("llm", "dit"), "3")
    assert lora is not None and len(lora.modules) > 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op); give the adapters an effect
                p.normal_(0, 0.05)
    model.eval()
    merged = merged_state_dict(model.state_dict(), lora.scaling)
    model.save_pretrained(tmp_path / "merged", state_dict=merged)
    plain = Gr00tN1d6.from_pretrained(tmp_path / "merged").eval()
    batch = model.dummy_batch(2, image_size=56, seed=3)
    with torch.no_grad():
        want = model.get_action(batch, generator=torch.Generator().manual_seed(0))["action_pred"]
        got = plain.get_action(batch, generator=torch.Generator().manual_seed(0))["action_pred"]
        unadapted = tiny(seed=1).eval().get_action(batch, generator=torch.Generator().manual_seed(0))["action_pred"]
    assert (got - want).abs().max() < 1e-5
    assert (unadapted - want).abs().max() > 1e-3  # the adapters do change the outputs


def test_lora_checkpoint_has_the_plain_layout_and_a_peft_adapter(tmp_path):
    run(tmp_path / "plain", max_steps=1)
    run(tmp_path / "lora", max_steps=1, lora_rank=4)
    plain, lora = tmp_path / "plain" / "checkpoint-1", tmp_path / "lora" / "checkpoint-1"
    assert shapes(lora) == shapes(plain)
    config = json.loads((lora / ADAPTER_DIR / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    with safe_open(str(lora / ADAPTER_DIR / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    model = tiny()
    apply_phase(model, "3")
    expected = resolve_targets(model, ("llm", "dit"))
    assert adapted_modules(lora) == sorted(expected["llm"] + expected["dit"]) and expected["llm"]
    assert len(keys) == 2 * len(adapted_modules(lora))  # one A and one B per adapted linear
    Gr00tN1d6.from_pretrained(lora)  # loads without peft's help (strict key check)


def test_phase_without_targets_trains_as_without_lora(tmp_path, capsys):
    lines = run(tmp_path / "run", phase="1", lora_rank=4, max_steps=1)
    assert "trains none of the layers" in capsys.readouterr().err
    assert lines and not (tmp_path / "run" / "checkpoint-1" / ADAPTER_DIR).exists()


KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from svms.train import TrainConfig, metrics, trainer
    from svms.train.sampling import SyntheticDataset
    sys.path.insert(0, sys.argv[4])
    from test_train_memory_options import tiny

    out, kill_at, extra = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    log = metrics.MetricsLogger.log
    def log_then_maybe_die(self, step, record, samples, print_line):
        log(self, step, record, samples, print_line)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    metrics.MetricsLogger.log = log_then_maybe_die
    trainer.train(TrainConfig(dataset=out, out=out, max_steps=5, save_every=2, global_batch_size=2, phase="3",
                              tensorboard=False, log_every=100, learning_rate=1e-3, **extra),
                  SyntheticDataset(tiny(), size=8), SyntheticDataset.collate)
""")


def kill_and_resume(tmp_path: Path, extra: dict, env_extra: dict | None = None) -> tuple[list[str], list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", **(env_extra or {}))

    def go(out: Path, kill_at: int) -> int:
        done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), str(kill_at), json.dumps(extra),
                               str(ROOT / "tests")], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode in (0, -9), done.stderr[-3000:]
        return done.returncode

    assert go(tmp_path / "straight", 0) == 0
    assert go(tmp_path / "killed", 3) == -9  # SIGKILL after step 3, checkpoint-2 on disk
    assert go(tmp_path / "killed", 0) == 0
    return ((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines(),
            (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines())


def test_lora_resume_after_sigkill_is_bitwise(tmp_path):
    straight, resumed = kill_and_resume(tmp_path, {"lora_rank": 4, "lora_dropout": 0.1})
    assert [json.loads(x)["step"] for x in resumed] == [1, 2, 3, 4, 5]
    assert resumed == straight
    a, b = tmp_path / "straight" / "checkpoint-5", tmp_path / "killed" / "checkpoint-5"
    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


# -- optimizers ------------------------------------------------------------------------------------------------

def eight_bit_skip_reason() -> str | None:
    try:
        build_optimizer("adamw8bit", [torch.nn.Parameter(torch.zeros(8))], 1e-3, torch.device("cpu"))
    except SvmsError as err:
        return str(err)
    return None


@pytest.mark.parametrize("name", ["adamw-foreach", "adamw8bit"])
def test_optimizer_state_saves_and_resumes_bitwise(tmp_path, name):
    if name == "adamw8bit" and (reason := eight_bit_skip_reason()):
        pytest.skip(f"8-bit AdamW is not available on this machine's CPU: {reason}")
    straight, resumed = kill_and_resume(tmp_path, {"optimizer": name})
    assert resumed == straight
    state = torch.load(tmp_path / "killed" / "checkpoint-5" / "training_state.pt", weights_only=False)
    def tensors(x):  # bitsandbytes nests its quantised state in a tuple of dicts
        if torch.is_tensor(x):
            return [x]
        values = x.values() if isinstance(x, dict) else x if isinstance(x, list | tuple) else []
        return [t for v in values for t in tensors(v)]

    tensors = tensors(state["optimizer"]["state"])
    assert tensors
    if name == "adamw8bit":
        assert any(t.dtype == torch.uint8 for t in tensors)  # the 8-bit state, not a silent fp32 fallback


def test_8bit_without_bitsandbytes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(SvmsError, match=r"svms-gr00t\[quant\]"):
        build_optimizer("adamw8bit", [torch.nn.Parameter(torch.zeros(8))], 1e-3, torch.device("cpu"))
    with pytest.raises(SvmsError, match="needs a CUDA GPU"):
        build_optimizer("paged-adamw8bit", [torch.nn.Parameter(torch.zeros(8))], 1e-3, torch.device("cpu"))


# -- bad flags -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--lora-rank", "8", "--lora-targets", "attention"], "not a target name"),
    (["--lora-rank", "0"], "--lora-rank must be >= 1"),
    (["--lora-rank", "-2"], "--lora-rank must be >= 1"),
    (["--lora-alpha", "16"], "without --lora-rank"),
    (["--lora-rank", "8", "--lora-targets", "layers.(0"], "not a valid regular expression"),
    (["--optimizer", "sgd"], "--optimizer 'sgd': use one of adamw, adamw-foreach, adamw8bit, paged-adamw8bit"),
    (["--fsdp"], "torchrun --nproc-per-node N"),
    (["--fsdp", "--optimizer", "adamw8bit"], "8-bit update does not take FSDP's sharded parameters"),
])
def test_bad_memory_flags_are_clear_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rc = main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), "--max-steps", "1", *argv])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_pattern_that_matches_no_module_is_an_error(tmp_path):
    with pytest.raises(SvmsError, match="matches no linear layer"):
        run(tmp_path / "run", lora_rank=4, lora_targets=(r"action_head\.nothing\..*",), max_steps=1)
    lines = run(tmp_path / "ok", lora_rank=2, lora_targets=(r"action_head\.model\.transformer_blocks\.0\.attn1\.to_q",),
                max_steps=1)
    assert lines
    assert adapted_modules(tmp_path / "ok" / "checkpoint-1") == ["action_head.model.transformer_blocks.0.attn1.to_q"]


# -- FSDP ------------------------------------------------------------------------------------------------------

FSDP_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from svms.train import TrainConfig
    from svms.train.sampling import SyntheticDataset
    from svms.train.trainer import train
    sys.path.insert(0, sys.argv[3])
    from test_train_memory_options import tiny
    out = Path(sys.argv[1])
    train(TrainConfig(dataset=out, out=out, max_steps=3, save_every=3, global_batch_size=4, tensorboard=False,
                      phase="3", model_override=("diffusion_model_cfg.dropout=0",), log_every=100,
                      learning_rate=1e-3, fsdp=sys.argv[2] == "1"),
          SyntheticDataset(tiny(), size=8), SyntheticDataset.collate)
""")


def test_fsdp_gives_the_losses_of_ddp_and_one_standard_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    lines = {}
    for port, (name, fsdp) in zip((29541, 29542), (("ddp", "0"), ("fsdp", "1")), strict=True):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                               str(port), str(script), str(tmp_path / name), fsdp, str(ROOT / "tests")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lines[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines["fsdp"]] == [1, 2, 3]
    for a, b in zip(lines["ddp"], lines["fsdp"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    ddp, fsdp = tmp_path / "ddp" / "checkpoint-3", tmp_path / "fsdp" / "checkpoint-3"
    assert shapes(fsdp) == shapes(ddp)
    one, two = Gr00tN1d6.from_pretrained(ddp).state_dict(), Gr00tN1d6.from_pretrained(fsdp).state_dict()
    assert max(float((one[k] - two[k]).abs().max()) for k in one if one[k].is_floating_point()) < 1e-4
