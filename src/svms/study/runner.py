"""`svms study PLAN`: claim the study folder, expand the plan into jobs, run the unfinished ones in dependency
order with a launcher, and print per job what it did and how long the rest should take.

Rerunning the same command resumes: jobs recorded done are skipped and their files left as they are; an
unfinished job starts again (`svms train` resumes from the run's newest checkpoint). Only one runner works
on a study folder at a time.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from svms.errors import SvmsError
from svms.study.jobs import Job, expand
from svms.study.launchers import make_launcher
from svms.study.plan import Plan
from svms.study.state import STATE_DIR, claim_folder, load_states


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """`[study 3/14] training svms-seed0-phase2 ... done in 41 s (loss ...); ETA ~5 min`. The ETA is measured:
    seconds per unit of work (optimizer steps for training) of each kind of job finished so far, in this run
    or an earlier one, times the work left, over the parallel slots."""

    def __init__(self, jobs: list[Job], states: dict[str, dict[str, Any]], slots: int, inline: bool) -> None:
        self.jobs, self.states, self.slots = jobs, states, max(1, slots)
        self.index = {job.name: k + 1 for k, job in enumerate(jobs)}
        self.running: dict[str, float] = {}
        self.inline = inline  # one job at a time: start and end on one line
        self.beaten: set[str] = set()  # jobs whose progress lines broke that line

    def _tag(self, job: Job) -> str:
        return f"[study {self.index[job.name]}/{len(self.jobs)}]"

    def started(self, job: Job, where: str) -> None:
        self.running[job.name] = time.time()
        text = f"{self._tag(job)} {job.label}{f' on {where}' if where else ''} ..."
        print(text, end="" if self.inline else "\n", flush=True)

    def finished(self, job: Job, state: dict[str, Any]) -> None:
        self.states[job.name] = state
        start = self.running.pop(job.name, time.time())
        summary = state.get("summary") or ""
        short = summary if len(summary) < 100 and "\n" not in summary else ""
        head = f"{self._tag(job)} {job.label} ..."  # the job's line again after progress lines broke it
        if self.inline:
            head = f"\n{head}" if job.name in self.beaten else ""
        print(f"{head} done in {_duration(time.time() - start)}{f' ({short})' if short else ''}; "
              f"ETA {self.eta()}", flush=True)

    def beat(self, job: Job, line: str) -> None:
        """A running job's latest progress line, indented under its job line."""
        self.beaten.add(job.name)
        print(f"\n    {line}" if self.inline else f"    {job.name}: {line}", end="" if self.inline else "\n",
              flush=True)

    def failed(self, job: Job) -> None:
        self.running.pop(job.name, None)
        print(f"{'' if self.inline else f'{self._tag(job)} {job.label} ...'} failed", flush=True)

    def eta(self) -> str:
        rates: dict[str, list[float]] = {}
        for job in self.jobs:
            s = self.states.get(job.name, {})
            if s.get("state") == "done" and s.get("duration_s") is not None:
                r = rates.setdefault(job.kind, [0.0, 0.0])
                r[0] += s["duration_s"]
                r[1] += job.weight
        left = [j for j in self.jobs if self.states.get(j.name, {}).get("state") != "done"]
        if not left:
            return "0 s"
        total = sum(r[0] for r in rates.values()) / max(1.0, sum(r[1] for r in rates.values()))
        seconds = 0.0
        for job in left:
            r = rates.get(job.kind)
            if r is None and job.kind in ("train", "pretrain"):
                return "unknown until a training job has finished"
            rate = r[0] / r[1] if r else total
            elapsed = time.time() - self.running.get(job.name, time.time())
            seconds += max(0.0, rate * job.weight - elapsed)
        return f"~{_duration(seconds / min(self.slots, len(left)))}"


class _RunnerLock:
    """One runner per study folder: a second one is refused instead of racing the first."""

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_DIR / "runner.lock"

    def __enter__(self) -> _RunnerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")  # noqa: SIM115 (held for the runner's life)
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip()
            self.handle.close()
            raise SvmsError(f"another `svms study` runs into {self.path.parents[1]} ({holder}); wait for it or "
                            "stop it, then rerun") from None
        self.handle.truncate(0)
        self.handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def run_study(plan: Plan, out: Path, gpus: tuple[str, ...] = (), cluster: str | None = None) -> Path:
    """Run (or resume) the study of `plan` in `out`; returns OUT/report.md. `cluster` overrides submitit's
    cluster for a slurm plan ("local": submitit's local executor)."""
    out = Path(out).resolve()
    launcher = make_launcher(plan.launcher, gpus, cluster)  # a missing extra fails before the folder is made
    claim_folder(out, plan)
    with _RunnerLock(out):
        jobs = expand(plan, out)
        states = load_states(out, jobs)
        done = {name for name, s in states.items() if s["state"] == "done"}
        kept = [j.name for j in jobs if j.name in done]
        listed = ", ".join(kept) if len(kept) <= 6 else ", ".join(kept[:5]) + f", ... {kept[-1]}"
        print(f"[study] plan {plan.name} (digest {plan.digest()}) into {out}: {len(jobs)} jobs"
              + (f", {len(done)} finished earlier and kept ({listed})" if done else ""), flush=True)
        local = plan.launcher.kind == "local"
        progress = Progress(jobs, states, len(gpus) if local and gpus else 1, inline=local and len(gpus) <= 1)
        launcher.run(out, jobs, done, progress)
        verdict = progress.states["compare"].get("summary")
        if verdict:
            print(verdict)
    report = out / "report.md"
    print(f"[study] report: {report}")
    return report
