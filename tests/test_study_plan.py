"""`svms study` plans: loading, the errors a bad plan gives before anything runs, and the job expansion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from svms.cli import main
from svms.errors import SvmsError
from svms.protocol import ARMS
from svms.study import builtin_plans, load_plan
from svms.study.jobs import arm_stints, expand
from svms.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
arms = ["baseline", "svms", "control"]
seeds = [0, 1]

[data]
dataset = "{dataset}"

[model]
preset = "tiny"
overrides = ["shortest_image_edge=56"]

[flags]
tensorboard = false

[pretrain]
steps = 3
batch = 2

[phases.1]
steps = 4
batch = 2
learning_rate = 1e-4

[phases.2]
steps = 4
batch = 3

[phases.3]
steps = 8
batch = 2
[phases.3.flags]
lambda_sheaf_max = 0.2

[evaluation]
rollouts = "none"
"""


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "ds"
    (folder / "meta").mkdir(parents=True)
    (folder / "meta" / "info.json").write_text("{}")
    return folder


def write(tmp_path: Path, text: str, dataset: Path, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("{dataset}", str(dataset)))
    return path


def edited(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new)


def test_builtin_plans_load_and_include_a_control():
    assert {"demo", "demo-quick"} <= set(builtin_plans())
    for name in ("demo", "demo-quick"):
        plan = load_plan(name)
        assert plan.name == name and "baseline" in plan.arms and "control" in plan.arms
        assert plan.data.sim_tasks and plan.pretrain is not None and plan.evaluation.rollouts


def test_full_size_plan_is_the_seed_protocol():
    plan = load_plan(ROOT / "plans" / "robocasa-n1d6-3b.toml", check_paths=False)
    assert [plan.phases[p].batch for p in ("1", "2", "3")] == [16, 12, 8]
    assert len(plan.seeds) == 3 and plan.launcher.kind == "slurm" and plan.model.init is not None
    assert set(plan.arms) == set(ARMS) - {"svms-lora"} and plan.data.embodiment_tag == "robocasa_panda_omron"


@pytest.mark.parametrize("old,new,message", [
    ("learning_rate = 1e-4", "learing_rate = 1e-4",
     "[phases.1] learing_rate: unknown key; did you mean learning_rate?"),
    ("steps = 3\n", "steps = \"3\"\n", "[pretrain] steps: '3' is not an integer"),
    ("steps = 3\n", "steps = 0\n", "[pretrain] steps and batch must be >= 1"),
    ('"baseline", ', "", "arms: the baseline is missing"),
    (', "control"]', "]", "arms: no control arm; add 'control'"),
    ('"svms",', '"svms", "svms-no-wings",', "arms: unknown arm 'svms-no-wings'"),
    ("[evaluation]", "[launcher]\nkind = \"pbs\"\n[evaluation]", "[launcher] kind: 'pbs' is not a launcher"),
    ("[evaluation]", "[launcher]\ntime = \"4h\"\n[evaluation]", "[launcher] time: '4h'"),
    ("seeds = [0, 1]", "seeds = [0, 0]", "seeds: [0, 0]"),
    ("lambda_sheaf_max = 0.2", "lambda_sheaf_mx = 0.2", "[phases.3.flags] lambda_sheaf_mx: not an `svms train` "
                                                      "option; did you mean lambda_sheaf_max?"),
    ("lambda_sheaf_max = 0.2", "lambda_sheaf_max = \"high\"", "[phases.3.flags] lambda_sheaf_max: 'high' does not fit"),
    ("lambda_sheaf_max = 0.2", "max_steps = 5", "[phases.3.flags] max_steps: set by the study; use steps"),
    ("tensorboard = false", "sheaf_schedule = \"sometimes\"", "sheaf-schedule 'sometimes'"),
    ("tensorboard = false", "lambda_aux = 0.1", "[flags] lambda_aux: the arm svms-no-aux sets it"),
    ("[phases.3]\n", "[phases.4]\nsteps = 1\nbatch = 1\n[phases.3]\n", "[phases] 4: not a fine-tuning phase"),
    ("[pretrain]\nsteps = 3\nbatch = 2\n", "", "[pretrain]: needed with [model] preset"),
    ('preset = "tiny"', 'preset = "huge"', "[model] preset: unknown preset 'huge'"),
    ('rollouts = "none"', "rollouts = 5", "[evaluation] rollouts: there are no sim_tasks"),
    ('rollouts = "none"', 'rollouts = "all"', "[evaluation] rollouts: 'all'"),
    ('rollouts = "none"', 'rollouts = "none"\n[data.extra]\nx = 1', "[data] extra: unknown key"),
])
def test_bad_plans_name_the_key_and_the_fix(tmp_path, dataset, old, new, message):
    text = edited(old, new)
    if "svms-no-aux" in message:
        text = text.replace('"control"]', '"control", "svms-no-aux"]')
    path = write(tmp_path, text, dataset)
    with pytest.raises(SvmsError) as err:
        load_plan(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_bad_plan_fails_on_the_cli_before_anything_runs(tmp_path, dataset, capsys):
    path = write(tmp_path, edited("learning_rate = 1e-4", "learing_rate = 1e-4"), dataset)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "did you mean learning_rate?" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_dataset_and_syntax_errors_are_clear(tmp_path, dataset):
    with pytest.raises(SvmsError, match=r"\[data\] dataset: .* is not a LeRobot v2 dataset"):
        load_plan(write(tmp_path, TINY, tmp_path / "nowhere"))
    with pytest.raises(SvmsError, match="not valid TOML"):
        load_plan(write(tmp_path, TINY + "\n[[[", dataset))
    with pytest.raises(SvmsError, match="neither a TOML file nor a built-in plan; use a path or one of demo"):
        load_plan("no-such-plan")


def test_jobs_chain_phases_with_offsets_and_give_the_control_a_quarter(tmp_path, dataset):
    plan = load_plan(write(tmp_path, TINY, dataset))
    jobs = {j.name: j for j in expand(plan, tmp_path / "out")}
    out = (tmp_path / "out").resolve()
    for seed in (0, 1):
        base = jobs[f"baseline-seed{seed}"].args
        assert base["max_steps"] == 4 + 4 + 8 and base["phase"] == "3" and base["global_batch_size"] == 2
        assert base["lambda_sheaf_max"] == 0.2 and base["tensorboard"] is False  # phase 3's and common flags
        control = jobs[f"control-seed{seed}"]
        assert control.args["max_steps"] == 4 and control.args["arm"] == "control"  # 16 steps x 0.25
        assert control.args["init"] == base["init"] == jobs["pretrain"].args["cache"]
        chain = [jobs[f"svms-seed{seed}-phase{p}"] for p in ("1", "2", "3")]
        assert [j.args["data_offset"] for j in chain] == [0, 4 * 2, 4 * 2 + 4 * 3]
        assert [j.args["global_batch_size"] for j in chain] == [2, 3, 2]
        assert chain[0].args["learning_rate"] == 1e-4 and "learning_rate" not in chain[1].args  # phase default
        assert chain[1].deps == (chain[0].name,) and chain[1].args["init"] == str(out / chain[0].name)
        assert all(j.args["seed"] == seed for j in chain)
        assert jobs[f"open-loop-svms-seed{seed}-phase3"].deps == (chain[2].name,)
    assert "closed-loop-baseline-seed0" not in jobs  # rollouts = "none"
    assert jobs["pretrain"].args["train"]["model_override"] == ["shortest_image_edge=56"]
    names = list(jobs)
    for job in jobs.values():  # listed after every dependency
        assert all(names.index(d) < names.index(job.name) for d in job.deps)
    assert set(jobs["compare"].deps) == set(names) - {"compare"}
    assert [s.steps for s in arm_stints(plan, "control")] == [4]


def test_pretraining_cache_key_follows_what_determines_it(tmp_path, dataset):
    def key(text):
        return expand(load_plan(write(tmp_path, text, dataset)), tmp_path / "out")[0].args["cache"]

    assert key(TINY) == key(TINY.replace('name = "tiny"', 'name = "other"').replace("seeds = [0, 1]", "seeds = [5]"))
    assert key(TINY) != key(edited("steps = 3\n", "steps = 4\n"))
    assert key(TINY) != key(edited("shortest_image_edge=56", "shortest_image_edge=64"))
    assert key(TINY) == key(edited("tensorboard = false\n", "tensorboard = false\nlog_every = 7\n"))  # shows only
    assert key(TINY) != key(edited("tensorboard = false\n", "tensorboard = false\nmax_grad_norm = 0.5\n"))


def test_pretraining_cache_key_follows_the_presets_content(tmp_path, dataset, monkeypatch):
    """A new version that changes what the `tiny` preset builds must not reuse weights cached by the old one."""
    import svms.model.presets as presets

    before = expand(load_plan(write(tmp_path, TINY, dataset)), tmp_path / "out")[0].args["cache"]
    monkeypatch.setitem(presets.PRESETS, "tiny", {**presets.PRESETS["tiny"], "projector_init": "release"})
    assert expand(load_plan(write(tmp_path, TINY, dataset)), tmp_path / "out")[0].args["cache"] != before


def test_data_key_changes_with_the_generator_version(monkeypatch):
    """Data written by an older `svms sim generate` are never reused: the key holds the generator's version."""
    import svms.study.plan as plan_module

    data = load_plan("demo-quick").data
    before = data.key()
    monkeypatch.setattr(plan_module, "SIM_DATA_VERSION", plan_module.SIM_DATA_VERSION + 1)
    assert data.key() != before
    assert replace(data, episodes=data.episodes + 1).key() != data.key()


def test_train_takes_the_control_arm_from_the_registry(tmp_path):
    from svms.train import PHASE_DEFAULTS, TrainConfig

    cfg = TrainConfig(dataset=tmp_path, out=tmp_path / "run", phase="3", arm="control")
    assert cfg.arm == "control" and cfg.svms is False and cfg.learning_rate == PHASE_DEFAULTS["3"]["learning_rate"]
    assert cfg.max_steps == TrainConfig(dataset=tmp_path, out=tmp_path, phase="3", arm="baseline").max_steps
    with pytest.raises(SvmsError, match="--arm control excludes SVMS"):
        TrainConfig(dataset=tmp_path, out=tmp_path, phase="3", arm="control", svms=True)


def test_slurm_plan_without_submitit_names_the_extra(tmp_path, dataset, monkeypatch):
    import sys

    from svms.study import run_study

    monkeypatch.setitem(sys.modules, "submitit", None)
    plan = load_plan(write(tmp_path, TINY + '\n[launcher]\nkind = "slurm"\n', dataset))
    with pytest.raises(SvmsError, match=r"svms-gr00t\[slurm\]"):
        run_study(plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_jobs_and_creates_nothing(tmp_path, dataset, capsys):
    path = write(tmp_path, TINY, dataset)
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "training svms-seed1-phase3: phase 3, 8 steps x batch 2, data offset 20" in printed
    assert "training control-seed0: phase 3, 4 steps x batch 2" in printed
    assert not (tmp_path / "out").exists()


def test_plan_sets_memory_options_per_phase_and_the_lora_arm_adapts_phase_3_only(tmp_path, dataset):
    text = edited('arms = ["baseline", "svms", "control"]', 'arms = ["baseline", "svms", "svms-lora", "control"]')
    text = text.replace("lambda_sheaf_max = 0.2", 'lambda_sheaf_max = 0.2\noptimizer = "adamw-foreach"')
    jobs = {j.name: j for j in expand(load_plan(write(tmp_path, text, dataset)), tmp_path / "out")}
    configs = {p: TrainConfig(**{**jobs[f"svms-lora-seed0-phase{p}"].args, "out": tmp_path / p})
               for p in ("1", "2", "3")}
    assert [configs[p].lora_rank for p in ("1", "2", "3")] == [None, None, 32]
    assert configs["3"].lora_targets == ("llm", "dit") and configs["3"].svms
    assert [configs[p].optimizer for p in ("1", "2", "3")] == ["adamw", "adamw", "adamw-foreach"]
    plain = TrainConfig(**{**jobs["svms-seed0-phase3"].args, "out": tmp_path / "s"})
    assert plain.lora_rank is None and plain.optimizer == "adamw-foreach"
    with pytest.raises(SvmsError, match="the arm svms-lora sets it"):
        load_plan(write(tmp_path, text.replace("[flags]\n", "[flags]\nlora_rank = 8\n"), dataset, "bad.toml"))
    plan = load_plan(ROOT / "plans" / "robocasa-n1d6-3b-24gb.toml", check_paths=False)
    assert "svms-lora" in plan.arms and plan.phases["3"].flags["optimizer"] == "adamw8bit"
