"""`svms study` runner: the output-folder guard, resume after SIGKILL at a random point, the local launcher with
parallel GPUs and the SLURM launcher through submitit's local executor.

The jobs are stubs (`SVMS_STUDY_STUB=SECONDS`: each job process sleeps and writes a file into each of its
outputs), so the runner, its launchers and the job processes run their real code in seconds; the real job
functions run in `test_study_e2e.py` and `svms demo --quick` (test_demo.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svms.cli import main
from svms.errors import SvmsError
from svms.study import load_plan, run_study
from svms.study.jobs import expand
from svms.study.state import MARKER, read_json, state_path

ROOT = Path(__file__).resolve().parents[1]

PLAN = """
name = "stubbed"
arms = ["baseline", "svms", "control"]
seeds = [{seeds}]

[data]
dataset = "{dataset}"

[model]
preset = "tiny"

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
steps = 1
batch = 2

[evaluation]
rollouts = "none"

[launcher]
kind = "{launcher}"
gpus = 0
cpus = 1
time = 5
"""


def write_plan(tmp_path: Path, seeds: str = "0", launcher: str = "local", name: str = "plan.toml") -> Path:
    dataset = tmp_path / "ds"
    (dataset / "meta").mkdir(parents=True, exist_ok=True)
    (dataset / "meta" / "info.json").write_text("{}")
    path = tmp_path / name
    path.write_text(PLAN.format(seeds=seeds, dataset=dataset, launcher=launcher))
    return path


@pytest.fixture
def stub(monkeypatch, tmp_path):
    monkeypatch.setenv("SVMS_STUDY_STUB", "0.2")
    monkeypatch.setenv("SVMS_CACHE", str(tmp_path / "cache"))


def states(out: Path) -> dict[str, dict]:
    folder = out / ".study" / "jobs"
    return {p.stem: read_json(p) for p in folder.glob("*.json")} if folder.is_dir() else {}


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def assert_dependency_order(out: Path) -> None:
    s = states(out)
    for name, state in s.items():
        assert state["state"] == "done", (name, state)
        for dep in state["deps"]:
            assert state["start_time"] >= s[dep]["end_time"], (name, dep)


# -- the output-folder guard -------------------------------------------------------------------------------


def test_demo_refuses_a_foreign_folder_and_leaves_every_file(tmp_path, capsys):
    out = tmp_path / "checkout"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "is not empty and is not a study folder" in capsys.readouterr().err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [".git", "notes.txt"]


def test_study_cli_refuses_a_foreign_folder(tmp_path, stub, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["study", str(write_plan(tmp_path)), "--out", str(out)]) == 1
    assert "not a study folder" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_another_plan_is_refused_naming_both(tmp_path, stub):
    out = tmp_path / "out"
    run_study(load_plan(write_plan(tmp_path)), out)
    marker = (out / MARKER).read_bytes()
    before = snapshot(out)
    other = load_plan(write_plan(tmp_path, seeds="0, 1", name="other.toml"))
    with pytest.raises(SvmsError) as err:
        run_study(other, out)
    assert "'stubbed'" in str(err.value) and "plan.toml" in str(err.value) and "other.toml" in str(err.value)
    assert (out / MARKER).read_bytes() == marker and snapshot(out) == before


def test_an_empty_existing_folder_is_accepted(tmp_path, stub):
    out = tmp_path / "empty"
    out.mkdir()
    report = run_study(load_plan(write_plan(tmp_path)), out)
    assert report.is_file() and (out / MARKER).is_file()


# -- resume after SIGKILL ------------------------------------------------------------------------------------


def test_rerun_after_sigkill_skips_finished_jobs_and_keeps_their_files(tmp_path):
    plan = write_plan(tmp_path, seeds="0, 1")
    out = tmp_path / "out"
    env = dict(os.environ, SVMS_STUDY_STUB="0.1", SVMS_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT / "src"))
    command = [sys.executable, "-m", "svms.cli", "study", str(plan), "--out", str(out)]
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    target = random.Random().randint(1, 8)  # kill once a random number of the 18 jobs have finished, + a bit
    deadline = time.time() + 120
    while time.time() < deadline and sum(s["state"] == "done" for s in states(out).values()) < target:
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.3))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {name for name, s in states(out).items() if s["state"] == "done"}
    assert finished and "compare" not in finished
    kept = {}
    for name in finished:
        for rel in read_json(state_path(out, name))["outputs"]:
            kept.update({f"{rel}/{k}": v for k, v in snapshot(out / rel).items()} if (out / rel).is_dir() else
                        {rel: ((out / rel).stat().st_mtime_ns, (out / rel).read_bytes())})
        kept[f"state/{name}"] = (state_path(out, name).stat().st_mtime_ns, state_path(out, name).read_bytes())

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"{len(finished)} finished earlier and kept" in rerun.stdout
    for key, (mtime, data) in kept.items():
        path = state_path(out, key[6:]) if key.startswith("state/") else out / key
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), key
    assert (out / "report.md").is_file()
    assert_dependency_order(out)
    assert all(states(out)[name]["attempts"] == 1 for name in finished)


# -- launchers ---------------------------------------------------------------------------------------------


def test_local_launcher_runs_one_job_per_gpu_in_parallel(tmp_path, stub, capsys):
    out = tmp_path / "out"
    run_study(load_plan(write_plan(tmp_path, seeds="0, 1")), out, gpus=("7", "9"))
    s = states(out)
    devices = {state["cuda_visible_devices"] for state in s.values()}
    assert devices == {"7", "9"}
    spans = sorted((state["start_time"], state["end_time"]) for state in s.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # two jobs overlapped
    assert_dependency_order(out)
    printed = capsys.readouterr().out
    assert "on GPU 7" in printed and "on GPU 9" in printed and "ETA" in printed


def test_progress_lines_name_the_job_count_and_eta(tmp_path, stub, capsys):
    run_study(load_plan(write_plan(tmp_path)), tmp_path / "out")
    lines = capsys.readouterr().out.splitlines()
    jobs = len(expand(load_plan(write_plan(tmp_path)), tmp_path / "out"))
    assert any(x.startswith(f"[study 3/{jobs}] training ") and " done in " in x and "; ETA " in x for x in lines)
    assert lines[-1].startswith("[study] report: ")


def test_failed_job_stops_the_study_with_its_log_and_resumes_after_the_fix(tmp_path, monkeypatch, stub):
    plan = load_plan(write_plan(tmp_path))
    out = tmp_path / "out"
    monkeypatch.setenv("SVMS_STUDY_STUB", "not-a-number")
    with pytest.raises(SvmsError, match=r"job pretrain failed .*its log is .*pretrain\.log"):
        run_study(plan, out)
    assert states(out)["pretrain"]["state"] == "failed"
    monkeypatch.setenv("SVMS_STUDY_STUB", "0.1")
    assert run_study(plan, out).is_file()
    assert states(out)["pretrain"]["attempts"] == 2


def test_slurm_launcher_through_submitits_local_executor(tmp_path, stub):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    plan = load_plan(write_plan(tmp_path, launcher="slurm"))
    assert run_study(plan, out, cluster="local").is_file()
    s = states(out)
    assert all(state["launcher"] == "submitit-local" and state["job_id"] for state in s.values())
    assert_dependency_order(out)


def test_slurm_jobs_carry_the_plans_resources_and_afterok_dependencies(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from svms.study.launchers import SlurmLauncher

    bin_dir = tmp_path / "bin"  # submitit's SLURM executor looks for srun on PATH
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    text = write_plan(tmp_path, launcher="slurm").read_text().replace("gpus = 0", "gpus = 2\npartition = \"a100\"")
    (tmp_path / "plan.toml").write_text(text)
    plan = load_plan(tmp_path / "plan.toml")
    job = next(j for j in expand(plan, tmp_path / "out") if j.name == "svms-seed0-phase2")
    executor = SlurmLauncher(plan.launcher, "slurm")._executor(tmp_path / "out", job, ["123", "456"])
    params = executor._executor.parameters
    assert params["partition"] == "a100" and params["gpus_per_node"] == 2 and params["cpus_per_task"] == 1
    assert params["time"] == 5 and params["additional_parameters"]["dependency"] == "afterok:123:456"


def test_gpus_flag_is_checked(tmp_path, stub, capsys):
    assert main(["study", str(write_plan(tmp_path)), "--out", str(tmp_path / "o"), "--gpus", "0,,1"]) == 1
    assert "--gpus '0,,1'" in capsys.readouterr().err


def test_job_records_state_command_and_log(tmp_path, stub):
    out = tmp_path / "out"
    run_study(load_plan(write_plan(tmp_path)), out)
    state = json.loads(state_path(out, "baseline-seed0").read_text())
    assert state["state"] == "done" and state["rc"] == 0
    assert state["command"][-3:] == ["-m", "svms.study.job", str(state_path(out, "baseline-seed0"))]
    assert state["started"] and state["finished"] and state["duration_s"] > 0
    assert (out / ".study" / "logs" / "baseline-seed0.log").is_file()
    assert (out / "baseline-seed0" / "stub.txt").is_file()  # the run folder is a direct child of the study


def test_a_running_jobs_latest_training_progress_is_shown(tmp_path, capsys):
    """Long jobs (pretraining) are not silent: the runner shows the newest `step N/M ... ETA` line of the log."""
    from svms.study.jobs import Job
    from svms.study.launchers import latest_progress
    from svms.study.runner import Progress

    log = tmp_path / "pretrain.log"
    assert latest_progress(log) is None  # no log yet
    log.write_text("=== start\nstep 50/600  loss 0.9  ETA 4m\nnoise\n" + "x" * 5000
                   + "\nstep 100/600  loss 0.7  ETA 3m\n")
    assert latest_progress(log) == "step 100/600  loss 0.7  ETA 3m"
    job = Job("pretrain", "pretrain", {}, (), ("pretrain",))
    progress = Progress([job], {}, 1, inline=True)
    progress.started(job, "")
    progress.beat(job, latest_progress(log))
    progress.finished(job, {"state": "done", "summary": "600 steps"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].strip() == "step 100/600  loss 0.7  ETA 3m"
    assert lines[-1].startswith("[study 1/1] pretraining ... done in")  # the job's line again, not glued on
