"""`svms study` with the real job functions on a dataset folder (no simulator): pretraining cached and reused,
phase chains, open-loop evaluation, the comparison report. A couple of optimizer steps per job."""

from __future__ import annotations

import json

import pytest

from svms.cli import main

PLAN = """
name = "e2e"
arms = ["baseline", "svms", "control"]
seeds = [0]

[data]
dataset = "{dataset}"

[model]
preset = "tiny"
overrides = ["shortest_image_edge=56"]

[flags]
tensorboard = false
log_every = 100

[pretrain]
steps = 2
batch = 2

[phases.1]
steps = 1
batch = 2

[phases.2]
steps = 1
batch = 2

[phases.3]
steps = 2
batch = 2

[evaluation]
open_loop_steps = 16
plots = 0
rollouts = "none"
"""


@pytest.mark.slow
def test_study_on_a_dataset_trains_evaluates_and_reports(tmp_path, monkeypatch, capsys):
    from svms.data.lerobot import write_synthetic_dataset

    monkeypatch.setenv("SVMS_CACHE", str(tmp_path / "cache"))
    write_synthetic_dataset(tmp_path / "ds", (20, 20, 20), hw=(48, 64), heldout=1)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(dataset=tmp_path / "ds"))
    out = tmp_path / "study"
    assert main(["study", str(plan), "--out", str(out)]) == 0
    assert "minimum detectable" in (out / "report.md").read_text()
    config = json.loads((out / "pretrain" / "config.json").read_text())
    assert config["phase"] == "scratch"  # the study's copy of the cached pretraining run
    cached = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("pretrain-")]
    assert len(cached) == 1 and (cached[0] / "checkpoint-2").is_dir()
    baseline = json.loads((out / "baseline-seed0" / "config.json").read_text())
    assert baseline["max_steps"] == 4 and baseline["arm"] == "baseline" and baseline["init"] == str(cached[0])
    assert json.loads((out / "control-seed0" / "config.json").read_text())["max_steps"] == 1
    phase3 = json.loads((out / "svms-seed0-phase3" / "config.json").read_text())
    assert phase3["data_offset"] == 4 and phase3["init"] == str(out.resolve() / "svms-seed0-phase2")
    for run in ("baseline-seed0", "svms-seed0-phase3", "control-seed0"):
        assert (out / run / "eval" / "open_loop" / "metrics.json").is_file()

    # a second study of the same pretraining reuses the cached checkpoint
    other = tmp_path / "again"
    assert main(["study", str(plan), "--out", str(other)]) == 0
    state = json.loads((other / ".study" / "jobs" / "pretrain.json").read_text())
    assert state["summary"].startswith("reused cached")
    assert (other / "pretrain" / "metrics.jsonl").read_bytes() == (out / "pretrain" / "metrics.jsonl").read_bytes()
    capsys.readouterr()
