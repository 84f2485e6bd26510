"""Where a study's jobs run.

- `LocalLauncher`: one process per job (`python -m svms.study.job SPEC`, forked from a server that imported
  torch once), in the runner's process group, so killing the group stops them all. One at a time by default;
  with GPUs given (`svms study --gpus 0,1`) one job per GPU in parallel, each with its `CUDA_VISIBLE_DEVICES`,
  a job starting once its dependencies are done.
- `SlurmLauncher`: submitit, one SLURM job per study job with the plan's partition, time, GPUs and CPUs,
  dependencies as `afterok`. `cluster="local"` swaps in submitit's local executor (same code path, no
  cluster): the tests use it.

Both raise SvmsError when a job fails, after the jobs already running have ended.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from svms.errors import SvmsError
from svms.optional import require
from svms.study.job import main, run_forked
from svms.study.jobs import Job
from svms.study.plan import Launcher
from svms.study.state import log_path, read_json, state_path, update_state

POLL_S = 0.2
BEAT_S = 15.0  # how often a running job's latest progress line is shown


def latest_progress(log: Path) -> str | None:
    """The last `step N/M ... ETA ...` line `svms train` wrote to a job's log (None before the first)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    lines = [x.strip() for x in tail.splitlines() if x.strip().startswith("step ")]
    return lines[-1] if lines else None
PRELOAD = ["torch", "svms.train.trainer", "svms.eval.open_loop", "svms.eval.report"]  # never the simulator


class Progress(Protocol):
    def started(self, job: Job, where: str) -> None: ...

    def finished(self, job: Job, state: dict[str, Any]) -> None: ...

    def failed(self, job: Job) -> None: ...

    def beat(self, job: Job, line: str) -> None: ...


def failure(out: Path, job: Job, state: dict[str, Any], rc: int | None, log: Path | None = None) -> SvmsError:
    log = log or log_path(out, job.name)
    tail = ""
    if log.is_file():
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        tail = "\n  " + "\n  ".join(lines[-8:])
    return SvmsError(f"job {job.name} failed (exit status {rc}; {state.get('error') or 'no error recorded'}); "
                     f"its log is {log}:{tail}\nFix the cause and rerun the same command: finished jobs are kept.")


class LocalLauncher:
    def __init__(self, gpus: tuple[str, ...] = ()) -> None:
        self.slots: list[str | None] = list(gpus) or [None]

    def run(self, out: Path, jobs: list[Job], done: set[str], progress: Progress) -> None:
        pending = [j for j in jobs if j.name not in done]
        running: dict[str, tuple[_Forked, str | None, Job]] = {}
        failed: SvmsError | None = None
        previous = signal.signal(signal.SIGTERM, _raise_exit)
        shown: dict[str, str | None] = {}
        next_beat = time.time() + BEAT_S
        try:
            while pending or running:
                if time.time() >= next_beat:  # long jobs (pretraining) show their steps, loss and ETA
                    next_beat = time.time() + BEAT_S
                    for name, (_, _, job) in running.items():
                        line = latest_progress(log_path(out, name))
                        if line and line != shown.get(name):
                            shown[name] = line
                            progress.beat(job, line)
                free = [s for s in self.slots if s not in {slot for _, slot, _ in running.values()}]
                for job in list(pending):
                    if failed is not None or not free:
                        break
                    if all(d in done for d in job.deps):
                        slot = free.pop(0)
                        running[job.name] = (self._start(out, job, slot), slot, job)
                        pending.remove(job)
                        progress.started(job, "" if slot is None else f"GPU {slot}")
                if failed is not None and not running:
                    raise failed
                if not running and pending:  # nothing can start: a dependency is missing from the list
                    raise SvmsError(f"jobs {', '.join(j.name for j in pending)} wait for jobs that never ran")
                time.sleep(POLL_S)
                for name, (proc, _, job) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del running[name]
                    state = read_json(state_path(out, name))
                    if rc == 0 and state["state"] == "done":
                        state = update_state(out, name, rc=0)
                        done.add(name)
                        progress.finished(job, state)
                    else:
                        if state["state"] != "failed":
                            state = update_state(out, name, state="failed", rc=rc)
                        else:
                            state = update_state(out, name, rc=rc)
                        progress.failed(job)
                        failed = failed or failure(out, job, state, rc)
        finally:
            signal.signal(signal.SIGTERM, previous)
            for proc, _, _ in running.values():  # interrupted: stop our jobs (they resume on the next run)
                proc.terminate()
            for proc, _, _ in running.values():
                proc.wait()

    @staticmethod
    def _start(out: Path, job: Job, slot: str | None) -> _Forked:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        command = [sys.executable, "-m", "svms.study.job", str(state_path(out, job.name))]
        update_state(out, job.name, command=command, launcher="local", gpu_slot=slot)
        log = log_path(out, job.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        return _Forked(command[-1], log, env)


class _Forked:
    """A job process forked from a server that imported torch and the job modules once (about 5 s a job
    saved on 2 cores): the same as `python -m svms.study.job SPEC`, with its environment and output file."""

    _context = None

    def __init__(self, spec: str, log: Path, env: dict[str, str]) -> None:
        if _Forked._context is None:
            _Forked._context = multiprocessing.get_context("forkserver")
            _Forked._context.set_forkserver_preload(PRELOAD)
        self.process = _Forked._context.Process(target=run_forked, args=(spec, str(log), env, os.getcwd()),
                                                daemon=False)
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def wait(self) -> int | None:
        self.process.join()
        return self.process.exitcode


def _raise_exit(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


class SlurmLauncher:
    def __init__(self, launcher: Launcher, cluster: str = "slurm") -> None:
        submitit = require("submitit", "slurm", '[launcher] kind = "slurm"')
        self.submitit, self.launcher, self.cluster = submitit, launcher, cluster

    def _executor(self, out: Path, job: Job, after: list[str]):
        la = self.launcher
        executor = self.submitit.AutoExecutor(folder=out / ".study" / "slurm", cluster=self.cluster)
        extra = dict(la.additional)
        if after:
            extra["dependency"] = "afterok:" + ":".join(after)
        executor.update_parameters(name=f"svms-{job.name}", timeout_min=la.time_min, cpus_per_task=la.cpus,
                                   gpus_per_node=la.gpus if job.gpu else 0, mem_gb=la.mem_gb,
                                   slurm_partition=la.partition, slurm_additional_parameters=extra)
        return executor

    def run(self, out: Path, jobs: list[Job], done: set[str], progress: Progress) -> None:
        submitted: dict[str, Any] = {}
        for job in jobs:  # listed dependencies first, so every dependency already has an id
            if job.name in done:
                continue
            after = [submitted[d].job_id for d in job.deps if d in submitted]
            handle = self._executor(out, job, after).submit(main, str(state_path(out, job.name)))
            submitted[job.name] = handle
            update_state(out, job.name, state="submitted", launcher=f"submitit-{self.cluster}",
                         command=f"submitit job {handle.job_id} (python -m svms.study.job)", job_id=handle.job_id)
            progress.started(job, f"SLURM job {handle.job_id}" if self.cluster == "slurm" else "submitit")
        try:
            while submitted:
                time.sleep(POLL_S)
                for name, handle in list(submitted.items()):
                    if not handle.done():
                        continue
                    del submitted[name]
                    job = next(j for j in jobs if j.name == name)
                    state = read_json(state_path(out, name))
                    if state["state"] == "done":
                        done.add(name)
                        progress.finished(job, state)
                        continue
                    progress.failed(job)
                    for other in submitted.values():  # SLURM would keep the dependents pending forever
                        other.cancel(check=False)
                    submitted.clear()
                    raise failure(out, job, state, None, Path(handle.paths.stderr))
        except KeyboardInterrupt:
            for handle in submitted.values():
                handle.cancel(check=False)
            raise


def make_launcher(launcher: Launcher, gpus: tuple[str, ...] = (), cluster: str | None = None):
    if launcher.kind == "slurm":
        if gpus:
            raise SvmsError("--gpus is for the local launcher; on SLURM set [launcher] gpus in the plan")
        return SlurmLauncher(launcher, cluster or "slurm")
    return LocalLauncher(gpus)
