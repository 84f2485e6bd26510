"""One study job in its own process: `python -m svms.study.job OUT/.study/jobs/NAME.json` (the local launcher)
or `main(path)` inside a SLURM job (submitit). Same code either way.

The job takes its lock (a duplicate of it waits, then finds it done), waits until its dependencies are done
(SLURM's `afterok` already ensures it; submitit's local executor starts everything at once), records
running/done/failed in its state file and runs the job function of its kind. `SVMS_STUDY_STUB=SECONDS` (the
runner's tests) replaces every job function with a stub that sleeps and writes a file into each output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from svms.errors import SvmsError
from svms.study.cache import build_once, locked
from svms.study.state import now, read_json, update_state

POLL_S = 0.5


def main(spec: str | Path) -> str:
    """Run one job (its state file's path); returns its summary, raises when it fails."""
    path = Path(spec).resolve()
    out = path.parents[2]
    with locked(path.with_suffix(".lock")):
        state = read_json(path)
        if state["state"] == "done":
            return state.get("summary", "")
        _wait_for(out, state)
        update_state(out, state["name"], state="running", started=now(), start_time=time.time(),
                     attempts=state.get("attempts", 0) + 1, pid=os.getpid(), host=os.uname().nodename,
                     cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), error=None)
        try:
            stub = os.environ.get("SVMS_STUDY_STUB")
            summary = _stub(out, state, float(stub)) if stub else KINDS[state["kind"]](**state["args"])
        except BaseException as err:
            update_state(out, state["name"], state="failed", finished=now(), error=f"{type(err).__name__}: {err}")
            raise
        end = time.time()
        start = read_json(path)["start_time"]
        update_state(out, state["name"], state="done", finished=now(), end_time=end, duration_s=end - start,
                     summary=summary)
        return summary


def _wait_for(out: Path, state: dict[str, Any]) -> None:
    for dep in state["deps"]:
        dep_path = out / ".study" / "jobs" / f"{dep}.json"
        while (dep_state := read_json(dep_path)["state"]) != "done":
            if dep_state == "failed":
                raise SvmsError(f"job {state['name']} needs {dep}, which failed; see {out / '.study' / 'logs'}")
            time.sleep(POLL_S)


def _stub(out: Path, state: dict[str, Any], seconds: float) -> str:
    time.sleep(seconds)
    for rel in state["outputs"]:
        where = out / rel
        if where.suffix:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_text(f"stub {state['name']}\n")
        else:
            where.mkdir(parents=True, exist_ok=True)
            (where / "stub.txt").write_text(f"stub {state['name']}\n")
    return f"stub (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})"


# -- the job functions (imports inside: a job imports only what it uses) -----------------------------------


def generate_data(out: str, tasks: list[str], episodes: int, heldout: int, resolution: int, cameras: list[str],
                  seed: int, workers: int) -> str:
    from svms.sim.generate import generate

    def build(tmp: Path) -> None:
        kw = {"cameras": tuple(cameras)} if cameras else {}
        generate(tmp, tasks, episodes, seed=seed, resolution=resolution, workers=workers, overwrite=True,
                 progress=False, heldout=heldout, **kw)

    made = build_once(Path(out), build)
    return f"{'generated' if made else 'reused cached'} {out}"


def _config(kw: dict[str, Any]):
    from svms.train import TrainConfig

    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


def _last_loss(run: Path) -> str:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return f"{last.get('step', 0)} steps, loss {last.get('loss', float('nan')):.4f}"


def pretrain(train: dict[str, Any], cache: str, copy_to: str) -> str:
    """Pretraining from scratch, cached: trained in a temporary folder and renamed when done; the study keeps
    a copy of the run's config.json and metrics.jsonl."""
    from svms.train.trainer import train as run_training

    made = build_once(Path(cache), lambda tmp: run_training(_config({**train, "out": tmp})))
    dest = Path(copy_to)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.jsonl"):
        shutil.copyfile(Path(cache) / name, dest / f".{name}.tmp")
        os.replace(dest / f".{name}.tmp", dest / name)
    (dest / "checkpoint.txt").write_text(f"{cache}\n")
    return f"{'trained' if made else 'reused cached'} {cache}: {_last_loss(dest)}"


def train_run(**kw: Any) -> str:
    from svms.train.trainer import train

    train(_config(kw))
    return _last_loss(Path(kw["out"]))


def open_loop(run: str, dataset: str, out: str, split: str, steps: int, plots: int, embodiment_tag: str) -> str:
    from svms.eval.open_loop import run_open_loop

    metrics = run_open_loop(Path(run), Path(dataset), Path(out), split=split, steps=steps, plots=plots,
                            embodiment_tag=embodiment_tag)
    return f"open-loop MSE {metrics['overall']['mse']:.4f}"


def closed_loop(run: str, tasks: list[str], episodes: int, seed: int, resolution: int, cameras: list[str],
                videos_per_task: int, n_action_steps: int, out: str) -> str:
    from svms.policy.protocol import cameras as policy_cameras
    from svms.sim.check_policies import load_policy
    from svms.sim.rollout import evaluate

    policy = load_policy(run, seed=0)
    results = evaluate(policy, tasks, episodes, seed=seed, n_action_steps=n_action_steps, resolution=resolution,
                       cameras=policy_cameras(policy) or cameras, out=out,
                       videos_per_task=videos_per_task, progress=False)
    return f"closed-loop success {sum(r.successes for r in results)}/{sum(r.episodes for r in results)}"


def compare_runs(runs: list[str], out: str) -> str:
    from svms.eval.compare import compare
    from svms.eval.report import verdict, write_report

    study = Path(out)
    heatmaps = sorted(study.glob("svms-seed*-phase3/eval/open_loop/figures/router_heatmap.png"))
    if heatmaps:
        (study / "figures").mkdir(exist_ok=True)
        shutil.copy(heatmaps[0], study / "figures" / "router_heatmap.png")
    result = compare([Path(r) for r in runs])
    write_report(result, study)
    return verdict(result)


KINDS = {"generate": generate_data, "pretrain": pretrain, "train": train_run, "open_loop": open_loop,
         "closed_loop": closed_loop, "compare": compare_runs}


def run_forked(spec: str, log: str, env: dict[str, str], cwd: str) -> None:
    """The local launcher's job process: `python -m svms.study.job SPEC` with the runner's environment (plus
    CUDA_VISIBLE_DEVICES), its output appended to the job's log."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)
    code = cli([spec])
    sys.stdout.flush(), sys.stderr.flush()
    sys.exit(code)


def cli(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m svms.study.job OUT/.study/jobs/NAME.json", file=sys.stderr)
        return 2
    try:
        summary = main(argv[0])
    except SvmsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    print(f"done: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
