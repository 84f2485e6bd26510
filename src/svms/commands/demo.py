"""`svms demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Demo:
    """The whole baseline-vs-SVMS study on a CPU (short for `svms study demo`, --quick: `svms study demo-quick`):
    simulated demonstrations and a tiny GR00T N1.6 pretrained from scratch (both cached in .cache/svms), the
    baseline, SVMS (phases 1->2->3) and the control (the baseline with a quarter of its steps) fine-tunes, open-loop
    error on held-out episodes, closed-loop success in simulation, and the comparison report (OUT/report.md,
    OUT/figures/). --ablations adds the arms svms-no-sheaf, svms-no-router and svms-no-aux (same budgets, seeds and
    data), each compared with the baseline and with full SVMS. Rerunning the same command resumes; an --out that
    is not this demo's study is refused untouched."""

    out: Path | None = None
    """study folder (default runs/demo, runs/demo-quick, runs/demo-ablations, ...; rerun to resume; another
    plan's study or a foreign folder is refused)"""
    quick: bool = False
    """one task, one seed, fewer steps: the CI-sized run"""
    ablations: bool = False
    """also train and evaluate the ablation arms svms-no-sheaf, svms-no-router, svms-no-aux"""

    def run(self) -> int:
        from svms.study.demo import run_demo

        report = run_demo(self.out, self.quick, self.ablations)
        print(f"open {report}")
        return 0
