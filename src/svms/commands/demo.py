"""`svms demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Demo:
    """The whole baseline-vs-SVMS study on a CPU: simulated demonstrations (cached), a tiny GR00T N1.6
    pretrained from scratch, baseline and SVMS (phases 1->2->3) fine-tunes with equal step budgets,
    open-loop error on held-out episodes, closed-loop success in simulation, and the comparison
    report (OUT/report.md, OUT/figures/). About 9 minutes on 2 cores from a cold cache; --quick about 2.
    --ablations adds the arms svms-no-sheaf, svms-no-router and svms-no-aux (same budgets, seeds and data), each
    compared with the baseline and with full SVMS."""

    out: Path = Path("runs/demo")
    """output folder (replaced on every run; the generated data are cached in .cache/svms)"""
    quick: bool = False
    """one task, one seed, fewer steps: the CI-sized run"""
    ablations: bool = False
    """also train and evaluate the ablation arms svms-no-sheaf, svms-no-router, svms-no-aux"""

    def run(self) -> int:
        from svms.demo import run_demo

        report = run_demo(self.out, self.quick, self.ablations)
        print(f"open {report}")
        return 0
