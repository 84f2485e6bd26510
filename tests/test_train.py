"""`svms train`: phases, schedules, checkpoints, exact resume after SIGKILL, NaN stop, 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from svms.cli import main
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train import TrainConfig
from svms.train.checkpoints import list_checkpoints
from svms.train.phases import apply_phase, trainable_summary
from svms.train.sampling import StepBatchSampler, SyntheticDataset, micro_positions
from svms.train.schedules import SheafSchedule, cosine_lr, router_temperature
from svms.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
NO_DROPOUT = ("diffusion_model_cfg.dropout=0",)


def tiny_model(svms: bool = False, seed: int = 0) -> Gr00tN1d6:
    torch.manual_seed(seed)
    config = Gr00tN1d6Config.preset("tiny")
    if svms:
        import dataclasses

        config = dataclasses.replace(config, use_sheaf_streams=True)
    return Gr00tN1d6(config)


def run(tmp: Path, **kw) -> tuple[Path, list[dict]]:
    svms = kw.get("svms", kw.get("phase", "scratch") != "scratch")
    if kw.get("arm"):
        svms = kw["arm"] != "baseline"
    data = SyntheticDataset(tiny_model(bool(svms)), size=12)
    base = dict(dataset=tmp / "unused", out=tmp / "run", max_steps=4, save_every=2, global_batch_size=2,
                tensorboard=False, log_every=100)
    base.update(kw)
    final = train(TrainConfig(**base), data, SyntheticDataset.collate)
    lines = [json.loads(x) for x in (base["out"] / "metrics.jsonl").read_text().splitlines()]
    return final, lines


# -- schedules and data order ----------------------------------------------------------------------
def test_cosine_lr_warms_up_then_decays_to_zero():
    lrs = [cosine_lr(s, 1.0, 100, 10) for s in range(1, 101)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] == pytest.approx(0.0)


def test_sheaf_schedule_modes():
    assert SheafSchedule("off", 0.01, 0.1, 100).weight(50) == 0
    assert SheafSchedule("fixed", 0.01, 0.1, 100).weight(1) == 0.1
    lin = SheafSchedule("linear", 0.01, 0.1, 101)
    assert lin.weight(1) == pytest.approx(0.01) and lin.weight(101) == pytest.approx(0.1)
    ada = SheafSchedule("adaptive", 0.01, 0.1, 100, flow_threshold=0.4)
    assert ada.weight(5) == 0.0 and ada.weight(20) == pytest.approx(0.01)  # starts at 20% of the run
    assert ada.weight(50) == pytest.approx(0.1)
    early = SheafSchedule("adaptive", 0.01, 0.1, 100, flow_threshold=0.4)
    early.observe_flow_loss(3, 0.1)  # flow loss already low: the ramp starts at the next step
    assert early.weight(4) == pytest.approx(0.01) and early.weight(10) > 0.01


def test_router_temperature_anneals():
    assert router_temperature(1, 2.0, 0.5, 10) == 2.0
    assert router_temperature(11, 2.0, 0.5, 10) == 0.5


def test_one_and_two_processes_see_the_same_samples():
    one = StepBatchSampler(10, 3, 0, 4, 0, 1, 4, 1)
    two = [StepBatchSampler(10, 3, 0, 4, r, 2, 2, 1) for r in range(2)]
    merged = [a + b for a, b in zip(*two, strict=True)]
    assert list(one) == merged
    assert micro_positions(2, 1, 1, 2, 2, 2) == [14, 15]


def test_data_offset_continues_the_stream():
    """Steps 4-6 of one run are steps 1-3 of a run that starts 3 steps x 2 samples into the stream."""
    whole = list(StepBatchSampler(10, 3, 0, 6, 0, 1, 2, 1))
    assert list(StepBatchSampler(10, 3, 0, 3, 0, 1, 2, 1, offset=6)) == whole[3:]
    assert micro_positions(1, 0, 0, 1, 2, 1, offset=6) == [6, 7]


def test_trainer_feeds_samples_and_noise_from_the_data_offset(tmp_path, monkeypatch):
    import svms.train.trainer as trainer

    noise_positions, keys = [], []
    original = trainer.sample_noise

    def recording(positions, *args, **kw):
        noise_positions.append(list(positions))
        return original(positions, *args, **kw)

    class Recording(SyntheticDataset):
        def __getitem__(self, key):
            keys.append(key)
            return super().__getitem__(key)

    monkeypatch.setattr(trainer, "sample_noise", recording)
    cfg = dict(dataset=tmp_path / "unused", max_steps=2, global_batch_size=2, tensorboard=False, seed=5)
    train(TrainConfig(out=tmp_path / "whole", max_steps=4, **{k: v for k, v in cfg.items() if k != "max_steps"}),
          Recording(tiny_model(), size=12), SyntheticDataset.collate)
    whole_keys, whole_noise = keys[4:], noise_positions[2:]
    keys.clear()
    noise_positions.clear()
    train(TrainConfig(out=tmp_path / "rest", data_offset=4, **cfg), Recording(tiny_model(), size=12),
          SyntheticDataset.collate)
    assert noise_positions == whole_noise == [[4, 5], [6, 7]]
    assert keys == whole_keys and [p for _, p in keys] == [4, 5, 6, 7]
    assert json.loads((tmp_path / "rest" / "config.json").read_text())["data_offset"] == 4
    with pytest.raises(SvmsError, match="data_offset = 4 in the run, 0 now"):  # a resume must keep the stream
        train(TrainConfig(out=tmp_path / "rest", **{**cfg, "max_steps": 3}), Recording(tiny_model(), size=12),
              SyntheticDataset.collate)


# -- phases ----------------------------------------------------------------------------------------
def test_phases_freeze_what_the_protocol_says():
    model = tiny_model(svms=True)
    apply_phase(model, "1")
    assert set(trainable_summary(model)) == {"svms"}
    apply_phase(model, "2")
    blocks = model.action_head.model.transformer_blocks
    half = len(blocks) // 2
    assert all(p.requires_grad for b in blocks[:half] for p in b.parameters())
    assert not any(p.requires_grad for b in blocks[half:] for p in b.parameters())
    assert blocks[0].training and not blocks[-1].training
    apply_phase(model, "3")
    layers = model.backbone.model.language_model.model.layers
    top = model.config.tune_top_llm_layers
    assert all(p.requires_grad for p in layers[-top].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in model.action_head.parameters())


@pytest.mark.parametrize("argv, message", [
    (["--phase", "1", "--no-svms"], "cannot run with --no-svms"),
    (["--global-batch-size", "3", "--grad-accumulation", "2"], "not divisible"),
    (["--lambda-aux", "-1"], "lambda-aux"),
    (["--model-override", "nokey"], "KEY=VALUE"),
    (["--data-offset", "-8"], "--data-offset must be >= 0"),
])
def test_bad_flags_are_clear_errors_before_any_compute(tmp_path, capsys, argv, message):
    rc = main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "run"), "--max-steps", "1", *argv])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SvmsError, match="not writable"):
        run(tmp_path, out=blocker / "run")


# -- training --------------------------------------------------------------------------------------
def test_scratch_run_writes_metrics_and_checkpoints(tmp_path):
    final, lines = run(tmp_path, max_steps=4, save_every=2, keep_checkpoints=1)
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert {"loss", "flow_loss", "lr"} <= set(lines[0]) and "sheaf_loss" not in lines[0]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [4]  # keep 1
    assert final == tmp_path / "run" / "checkpoint-4"
    loaded = Gr00tN1d6.from_pretrained(final)  # a checkpoint is a model folder
    assert loaded.config.use_sheaf_streams is False
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["phase"] == "scratch" and saved["resolved"]["per_process_batch"] == 2


def test_svms_phase_logs_weighted_terms_that_add_up(tmp_path):
    _, lines = run(tmp_path, phase="1", max_steps=3, aux_warmup_steps=0)
    rec = lines[-1]
    assert rec["loss"] == pytest.approx(rec["flow_loss"] + rec["sheaf_loss"] + rec["aux_loss"] + rec["balance_loss"],
                                        rel=1e-6)
    assert rec["sheaf_loss"] == 0.0 and rec["lambda_aux"] == 0.5  # phase 1: no sheaf loss, aux 0.5
    assert "router/image/visual" in rec and "aux/visual/balanced_accuracy" in rec


def test_phase_1_changes_only_svms_weights(tmp_path):
    final, _ = run(tmp_path, phase="1", max_steps=2, seed=42)
    before = tiny_model(svms=True, seed=42).state_dict()  # what the trainer builds for --seed 42
    after = Gr00tN1d6.from_pretrained(final).state_dict()
    changed = {k.split(".")[0] for k in before if not k.startswith("svms.") and not torch.equal(before[k], after[k])}
    assert changed == set()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("svms.merge"))


def test_phases_chain_with_init(tmp_path):
    first, _ = run(tmp_path, out=tmp_path / "p1", phase="1", max_steps=2)
    second, lines = run(tmp_path, out=tmp_path / "p2", phase="2", max_steps=2, init=tmp_path / "p1")
    saved = json.loads((tmp_path / "p2" / "config.json").read_text())
    assert saved["resolved"]["init_from"] == str(first)
    a, b = Gr00tN1d6.from_pretrained(first).state_dict(), Gr00tN1d6.from_pretrained(second).state_dict()
    assert not torch.equal(a["svms.merge.weight"], b["svms.merge.weight"])  # continued training the SVMS weights


def test_fresh_svms_on_a_checkpoint_depends_on_the_seed_only(tmp_path):
    """Phase 1 from a checkpoint without SVMS: the new SVMS weights and the dropout masks follow --seed, not
    whatever drew from the global RNG earlier in the process (the demo trains many runs in one process)."""
    from svms.train.trainer import build_model

    base, _ = run(tmp_path, out=tmp_path / "base", max_steps=1)
    cfg = dict(dataset=tmp_path / "unused", phase="1", init=base, max_steps=2, global_batch_size=2,
               tensorboard=False, seed=0)

    def fresh_svms(**kw):
        model, _ = build_model(TrainConfig(out=tmp_path / "x", **{**cfg, **kw}), None)
        return {k: v for k, v in model.state_dict().items() if k.startswith("svms.")}

    torch.rand(1000)
    first = fresh_svms()
    torch.rand(7)
    again, other = fresh_svms(), fresh_svms(seed=1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["svms.stream_heads.0.proj.weight"], other["svms.stream_heads.0.proj.weight"])

    data = SyntheticDataset(tiny_model(svms=True), size=12)
    losses = []
    for name, draws in (("a", 3), ("b", 11)):
        torch.rand(draws)
        train(TrainConfig(out=tmp_path / name, **cfg), data, SyntheticDataset.collate)
        losses.append((tmp_path / name / "metrics.jsonl").read_text())
    assert losses[0] == losses[1]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    original = Gr00tN1d6.forward
    calls = {"n": 0}

    def poisoned(self, batch, **kw):
        out = original(self, batch, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Gr00tN1d6, "forward", poisoned)
    with pytest.raises(SvmsError, match="non-finite loss.*step 3.*checkpoint-2"):
        run(tmp_path, max_steps=4, save_every=2)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    Gr00tN1d6.from_pretrained(tmp_path / "run" / "checkpoint-2")


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    from svms.model import Gr00tN1d6, Gr00tN1d6Config
    from svms.train import TrainConfig
    from svms.train.sampling import SyntheticDataset
    from svms.train import trainer, metrics

    out, kill_at, svms = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    log = metrics.MetricsLogger.log
    def log_then_maybe_die(self, step, record, samples, print_line):
        log(self, step, record, samples, print_line)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    metrics.MetricsLogger.log = log_then_maybe_die
    import dataclasses
    torch.manual_seed(0)
    cfg = dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=svms)
    data = SyntheticDataset(Gr00tN1d6(cfg), size=12)
    trainer.train(TrainConfig(dataset=out, out=out, max_steps=6, save_every=2, global_batch_size=2,
                              phase="1" if svms else "scratch", tensorboard=False, log_every=100),
                  data, SyntheticDataset.collate)
""")


def run_script(out: Path, kill_at: int, svms: bool) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), str(kill_at), "1" if svms else "0"],
                          env=env, capture_output=True, timeout=300).returncode


def test_sigkill_and_resume_reproduces_the_uninterrupted_losses_bitwise(tmp_path):
    svms = True  # covers the baseline path plus the SVMS generator and schedule state
    assert run_script(tmp_path / "straight", 0, svms) == 0
    assert run_script(tmp_path / "killed", 5, svms) == -9  # SIGKILL after step 5, checkpoint-4 on disk
    assert run_script(tmp_path / "killed", 0, svms) == 0  # resumes from checkpoint-4
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in resumed] == [1, 2, 3, 4, 5, 6]
    assert resumed == straight  # every logged value identical, bit for bit


def test_kill_during_checkpoint_write_leaves_the_previous_one_usable(tmp_path, monkeypatch):
    from svms.train import checkpoints

    run(tmp_path, max_steps=2, save_every=2)
    original = checkpoints.torch.save

    def crash(*args, **kw):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoints.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, max_steps=4, save_every=2)
    monkeypatch.setattr(checkpoints.torch, "save", original)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert (tmp_path / "run" / f".tmp-checkpoint-4-{os.getpid()}").exists()  # per process, cleaned on start
    _, lines = run(tmp_path, max_steps=4, save_every=2)  # resumes from checkpoint-2 and finishes
    assert [x["step"] for x in lines] == [1, 2, 3, 4]


def test_augmented_lerobot_run_resumes_with_the_same_images(tmp_path, monkeypatch):
    """The train image transform is drawn per sample position, so an interrupted run that resumes logs
    the losses of the uninterrupted one (a stateful generator would restart and draw other crops)."""
    from svms.data.lerobot import write_synthetic_dataset
    from svms.train import metrics

    write_synthetic_dataset(tmp_path / "ds", (20, 20), hw=(48, 64))
    kw = dict(dataset=tmp_path / "ds", split=None, max_steps=3, save_every=1, global_batch_size=2, log_every=100,
              tensorboard=False, model_override=("shortest_image_edge=56", "random_rotation_angle=10",
                                                 'color_jitter_params={"brightness": 0.3, "hue": 0.05}'))
    train(TrainConfig(out=tmp_path / "straight", **kw))
    log = metrics.MetricsLogger.log

    def log_then_fail(self, step, *args, **kwargs):
        log(self, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt("stopped after step 3")

    monkeypatch.setattr(metrics.MetricsLogger, "log", log_then_fail)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=tmp_path / "resumed", **kw))
    monkeypatch.setattr(metrics.MetricsLogger, "log", log)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [1, 2]
    train(TrainConfig(out=tmp_path / "resumed", **kw))  # resumes from checkpoint-2
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in resumed] == [1, 2, 3]
    assert resumed == straight
    saved = json.loads((tmp_path / "resumed" / "checkpoint-3" / "processor_config.json").read_text())
    assert saved["processor_kwargs"]["random_rotation_angle"] == 10


DDP_SCRIPT = textwrap.dedent("""
    import sys, dataclasses
    from pathlib import Path
    import torch
    from svms.model import Gr00tN1d6, Gr00tN1d6Config
    from svms.train import TrainConfig
    from svms.train.sampling import SyntheticDataset
    from svms.train.trainer import train
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    data = SyntheticDataset(Gr00tN1d6(Gr00tN1d6Config.preset("tiny")), size=8)
    data.collate_batch = None
    train(TrainConfig(dataset=out, out=out, max_steps=3, save_every=3, global_batch_size=4, tensorboard=False,
                      model_override=("diffusion_model_cfg.dropout=0",), log_every=100),
          data, SyntheticDataset.collate)
""")


def test_two_processes_on_cpu_match_one_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-port", "29533", str(script), str(tmp_path / "two")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in two] == [1, 2, 3]
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)


@pytest.mark.parametrize("arm", ["baseline", "svms", "svms-no-sheaf", "svms-no-router", "svms-no-aux"])
def test_every_arm_is_one_flag_and_trains(tmp_path, arm):
    _, lines = run(tmp_path, phase="3" if arm == "baseline" else "1", arm=arm, svms=None, max_steps=1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["arm"] == arm and saved["svms"] == (arm != "baseline")
    model_config = saved["resolved"]["model_config"]
    if arm == "svms-no-router":
        assert model_config["use_router"] is False and lines[-1]["balance_loss"] == 0.0
    if arm == "svms-no-sheaf":
        assert model_config["sheaf_unroll_steps"] == 0 and lines[-1]["sheaf_loss"] == 0.0
    if arm == "svms-no-aux":
        assert model_config["use_aux_losses"] is False and lines[-1]["aux_loss"] == 0.0
    if arm == "svms":
        assert lines[-1]["aux_loss"] > 0 and lines[-1]["balance_loss"] > 0
