"""`svms study`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from svms.errors import SvmsError


def parse_gpus(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return ()
    gpus = tuple(x.strip() for x in spec.split(","))
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise SvmsError(f"--gpus {spec!r}: list distinct GPU ids separated by commas, e.g. --gpus 0,1")
    return gpus


@dataclass
class Study:
    """The whole baseline-vs-SVMS protocol from a plan: data (a dataset folder or simulated tasks), pretraining
    or a checkpoint, per seed and arm the phase chain, evaluations, then OUT/report.md. Each job runs as its own
    process (locally or as SLURM jobs, per the plan's [launcher]); rerunning the same command resumes, skipping
    finished jobs. An --out that exists and is not this plan's study is refused untouched."""

    plan: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PLAN")]
    """a plan TOML file, or a built-in plan: demo, demo-quick"""
    out: Path | None = None
    """study folder (default runs/<plan name>)"""
    gpus: str | None = None
    """local launcher: GPU ids to run one job per GPU in parallel, e.g. 0,1 (default: one job at a time)"""
    dry_run: bool = False
    """check the plan and print its jobs (steps, batch, data offset, dependencies) without running anything"""

    def run(self) -> int:
        from svms.study import load_plan, run_study
        from svms.study.state import check_folder

        plan = load_plan(self.plan)
        out = self.out or Path("runs") / plan.name
        if self.dry_run:
            print_jobs(plan, out)
            return 0
        check_folder(out.resolve(), plan)  # refuse a foreign --out before anything else
        if plan.data.sim_tasks:
            from svms.sim.tasks import import_simulator

            import_simulator()  # fail now, with the install hint, if robosuite/mujoco are missing
        report = run_study(plan, out, parse_gpus(self.gpus))
        print(f"open {report}")
        return 0


def print_jobs(plan, out: Path) -> None:
    """One line per job of the plan, in the order the local launcher runs them."""
    from svms.study.jobs import expand

    jobs = expand(plan, out)
    print(f"plan {plan.name} (digest {plan.digest()}), {len(jobs)} jobs into {out.resolve()}:")
    for k, job in enumerate(jobs, 1):
        args = job.args.get("train", job.args)
        sizes = ""
        if "max_steps" in args:
            sizes = (f": phase {args['phase']}, {args['max_steps']} steps x batch {args['global_batch_size']}"
                     f"{', data offset ' + str(args['data_offset']) if args.get('data_offset') else ''}"
                     f"{', lr ' + str(args['learning_rate']) if args.get('learning_rate') else ''}")
        after = f" (after {', '.join(job.deps)})" if job.deps and len(job.deps) <= 3 else (
            f" (after {len(job.deps)} jobs)" if job.deps else "")
        print(f"  {k:3d}. {job.label}{sizes}{after}")
