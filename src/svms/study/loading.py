"""Loading a plan file: its keys and types (`svms.study.plan`), then every job it expands to checked by
`svms train`'s own validation, so an invalid plan fails before anything runs."""

from __future__ import annotations

from pathlib import Path

from svms.errors import SvmsError
from svms.study.jobs import expand
from svms.study.plan import Plan, plan_from_table, plan_path
from svms.study.toml_table import Table, read_toml
from svms.train.config import TrainConfig


def load_plan(spec: str | Path, arms_extra: tuple[str, ...] = (), check_paths: bool = True) -> Plan:
    """Read and check a plan; `arms_extra` appends arms (`svms demo --ablations`). SvmsError names file and key."""
    path = plan_path(spec)
    try:
        plan = plan_from_table(Table(read_toml(path)), path, arms_extra)
        if check_paths:
            plan.check_paths()
        check_train_values(plan)
        return plan
    except SvmsError as err:
        if str(err).startswith(f"{path}:"):
            raise
        raise SvmsError(f"{path}: {err}") from err


def check_train_values(plan: Plan) -> None:
    """Every training job's options pass `svms train`'s own checks (values such as a sheaf schedule's name)."""
    for job in expand(plan, Path("study")):
        if job.kind in ("train", "pretrain"):
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in job.args.get("train", job.args).items()}
            try:
                TrainConfig(**{"out": "study", **args})
            except SvmsError as err:
                raise SvmsError(f"{err} (in the `svms train` options of job {job.name}: fix [flags] or "
                                f"[phases.N.flags])") from err
