"""`svms demo`: the whole baseline-vs-SVMS study on a CPU, end to end, with no downloads; the short form of
`svms study demo` (`--quick`: `demo-quick`). The built-in plans (`svms/study/plans/demo*.toml`) hold every number.

1. Simulated RoboCasa-style demonstrations (robosuite), cached and reused across runs.
2. A tiny GR00T N1.6 pretrained from scratch on the train split (the shared starting point), cached too.
3. From that checkpoint, per seed: the baseline fine-tune (phase 3, no SVMS), the SVMS protocol (phases
   1 -> 2 -> 3) with the same total number of optimizer steps, and the control (the baseline with a quarter of
   its steps); with `--ablations` also the protocol of each ablation arm with the same budget.
4. Open-loop error on the held-out episodes and closed-loop success in simulation for every arm.
5. `svms eval compare`: OUT/report.md and OUT/figures/*.png.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from svms.protocol import ABLATIONS
from svms.sim.tasks import import_simulator
from svms.study.loading import load_plan
from svms.study.plan import Plan
from svms.study.runner import run_study
from svms.study.state import check_folder


def demo_plan(quick: bool = False, ablations: bool = False) -> Plan:
    """The plan of `svms demo [--quick] [--ablations]`: ablations add arms, with the SVMS arm's budgets and seeds."""
    plan = load_plan("demo-quick" if quick else "demo", arms_extra=ABLATIONS if ablations else ())
    return replace(plan, name=f"{plan.name}-ablations") if ablations else plan


def run_demo(out: Path | None = None, quick: bool = False, ablations: bool = False,
             gpus: tuple[str, ...] = ()) -> Path:
    """Run (or resume) the demo into `out` (default runs/<plan name>: demo, demo-quick, demo-ablations, ...);
    returns the report path."""
    plan = demo_plan(quick, ablations)
    out = Path("runs") / plan.name if out is None else Path(out)
    check_folder(Path(out).resolve(), plan)  # refuse a foreign --out before anything else
    import_simulator()  # fail now, with the install hint, if robosuite/mujoco are missing
    return run_study(plan, out, gpus)
