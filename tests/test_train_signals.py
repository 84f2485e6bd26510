"""`svms train` under SIGTERM / SIGINT (issue 16, case 4): the step finishes, a checkpoint is written, the exit
status is 143 / 130, the resumed run logs what an uninterrupted one logs; a second signal ends it at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from svms.train.checkpoints import TRAINING_STATE, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]

# The real CLI (`svms train`), on the synthetic tiny dataset instead of a LeRobot folder.
SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import torch
    from svms.cli import main
    from svms.model import Gr00tN1d6, Gr00tN1d6Config
    from svms.train import trainer
    from svms.train.sampling import SyntheticDataset

    if __name__ == "__main__":  # spawned data workers import this file too
        torch.manual_seed(0)
        config = dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=True)
        data = SyntheticDataset(Gr00tN1d6(config), size=12)
        trainer.build_dataset = lambda cfg, model, source=None: (data, SyntheticDataset.collate, None)
        sys.exit(main(["train", *sys.argv[1:]]))
""")


def start(tmp: Path, out: Path, *flags: str) -> subprocess.Popen:
    script = tmp / "train_script.py"
    script.write_text(SCRIPT)
    args = ["--dataset", str(tmp / "unused"), "--out", str(out), "--phase", "1", "--max-steps", "8",
            "--save-every", "2", "--global-batch-size", "2", "--no-tensorboard", "--log-every", "1", *flags]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=open(out.with_suffix(".err"), "w"), start_new_session=True, text=True)


def wait_for_steps(out: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        path = out / "metrics.jsonl"
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {n}: {out.with_suffix('.err').read_text()[-2000:]}")


def steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_to_the_process_group_saves_the_step_and_the_resume_is_bitwise(tmp_path):
    """The cluster's time limit: SIGTERM to every process, data workers included."""
    straight = start(tmp_path, tmp_path / "straight")
    stopped = start(tmp_path, tmp_path / "stopped", "--num-workers", "1")
    wait_for_steps(tmp_path / "stopped", 2, stopped)
    os.killpg(stopped.pid, signal.SIGTERM)
    assert stopped.wait(240) == 143
    err = (tmp_path / "stopped.err").read_text()
    done = steps(tmp_path / "stopped")[-1]
    assert 2 <= done < 8 and "Traceback" not in err
    # (written now, or at `done` already when the workers' end left the next step without samples)
    line = next(x for x in err.splitlines() if x.startswith("stopped by SIGTERM"))
    assert line.startswith(f"stopped by SIGTERM after step {done}: ") and f"stopped/checkpoint-{done}." in line
    assert [s for s, _ in list_checkpoints(tmp_path / "stopped")][-1] == done
    assert straight.wait(240) == 0
    resumed = start(tmp_path, tmp_path / "stopped")
    assert resumed.wait(240) == 0, (tmp_path / "stopped.err").read_text()[-2000:]
    assert steps(tmp_path / "stopped") == list(range(1, 9))
    assert (tmp_path / "stopped" / "metrics.jsonl").read_text() == (tmp_path / "straight" / "metrics.jsonl").read_text()


def test_sigint_exits_130_with_a_checkpoint(tmp_path):
    proc = start(tmp_path, tmp_path / "run")
    wait_for_steps(tmp_path / "run", 1, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(240) == 130
    err = (tmp_path / "run.err").read_text()
    assert "KeyboardInterrupt" not in err and "stopped by SIGINT after step" in err
    done = steps(tmp_path / "run")[-1]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")][-1] == done


def test_a_second_signal_ends_the_run_at_once_keeping_complete_checkpoints(tmp_path):
    proc = start(tmp_path, tmp_path / "run")
    wait_for_steps(tmp_path / "run", 3, proc)  # checkpoint-2 exists
    proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 60
    while "SIGTERM received" not in (tmp_path / "run.err").read_text() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(240) == -signal.SIGTERM  # the default action: no step finished, nothing more written
    kept = list_checkpoints(tmp_path / "run")
    assert kept and all((path / TRAINING_STATE).is_file() and (path / "model.safetensors").is_file()
                        for _, path in kept)
