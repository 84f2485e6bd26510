"""`svms eval compare`: the baseline-vs-SVMS report from several training runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tyro

if TYPE_CHECKING:
    from rich.table import Table

    from svms.eval.compare import CompareResult


@dataclass
class EvalCompare:
    """Compare baseline and SVMS runs (several seeds each) on open-loop error and closed-loop success.

    Each RUN is a `svms train` folder; its `eval/open_loop/metrics.json` (`svms eval open-loop`) and
    `eval/closed_loop/results.json` (`svms sim rollout`) are used when present. Every arm (baseline, svms,
    svms-no-sheaf, svms-no-router, svms-no-aux, control) is tested against the baseline, and each ablation also
    against full SVMS, with confidence intervals and labelled improved / regressed / no significant change /
    underpowered. The positive control (the baseline with a quarter of its steps) must come out regressed;
    when it does not, the SVMS arms' labels read underpowered and there is no verdict. The report states the
    minimum detectable effect. Writes OUT/report.md, OUT/comparison.json and OUT/figures/*.png. Runs without
    seed or arm in config.json, fewer than two arms, or no results to compare are errors.
    """

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """run folders written by `svms train`"""
    out: Path
    """output folder for report.md, comparison.json and figures/"""

    def run(self) -> int:
        from rich.console import Console

        from svms.eval.compare import compare
        from svms.eval.report import verdict, write_report

        result = compare(self.runs)
        path = write_report(result, self.out)
        console = Console(width=160)
        console.print(comparison_table(result))
        console.print(verdict(result).replace("**", ""))
        console.print(f"report: {path}")
        return 0


LABEL_STYLE = {"improved": "green", "regressed": "red", "no significant change": "yellow", "underpowered": "dim"}


def comparison_table(result: CompareResult) -> Table:
    """One row per comparison: metric, scope, arm, its reference arm, change with its CI, p and the label."""
    from rich.table import Table

    from svms.eval.significance import METRICS

    table = Table(title="Each arm against the baseline (ablations also against full SVMS)")
    for name in ("metric", "scope", "arm", "vs", "Δ (95 % CI)", "Δ %", "p", "label"):
        table.add_column(name, justify="right" if name in ("Δ %", "p") else "left")
    for c in result.comparisons:
        scale, unit = (100.0, " pt") if c.metric == "success" else (1.0, "")
        style = LABEL_STYLE.get(c.label, "")
        change = f"{scale * c.delta:+.4g}{unit} ({scale * c.delta_lo:+.4g} to {scale * c.delta_hi:+.4g})"
        p = "< 0.001" if c.p < 0.001 else f"{c.p:.3g}"
        table.add_row(METRICS[c.metric], c.scope, c.arm, c.reference, change, f"{c.relative_pct:+.1f}", p,
                      f"[{style}]{c.label}[/{style}]" if style else c.label)
    return table
