"""`svms study`: plans (`plan`), their expansion into jobs (`jobs`), the runner and its launchers (local,
SLURM), the shared cache and `svms demo` (`demo`: the built-in plans `demo` and `demo-quick`)."""

from svms.study.loading import load_plan
from svms.study.plan import Plan, builtin_plans
from svms.study.runner import run_study

__all__ = ["Plan", "builtin_plans", "load_plan", "run_study"]
