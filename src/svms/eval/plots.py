"""The comparison report's figures (matplotlib, Agg backend, PNG): the same arm has the same colour everywhere.

- `open_loop_error.png`: open-loop MSE and MAE per arm (mean, 95 % bootstrap CI) and their paired change vs the
  baseline;
- `closed_loop_success.png`: success rate per task and arm with 95 % Wilson intervals;
- `training_curves.png`: flow loss against optimizer step, one panel per phase, one line per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from svms.eval.compare import CompareResult, Run
from svms.eval.significance import EQUIVALENCE_PCT, METRICS, OVERALL
from svms.protocol import ARMS

FIGURES = ("open_loop_error.png", "closed_loop_success.png", "training_curves.png")
MAX_POINTS = 400  # longer curves are shown as a running mean so that seeds stay readable



def _yerr(mean: float, lo: float, hi: float) -> list[list[float]]:
    """Error-bar lengths below and above the mean; never negative (a bootstrap CI of one seed can sit a
    rounding error off its mean)."""
    return [[max(0.0, mean - lo)], [max(0.0, hi - mean)]]

def arm_color(arm: str, arms: list[str]) -> tuple[float, ...]:
    """tab10 colour: the known arms keep theirs across reports, other arms take the next ones."""
    import matplotlib

    names = list(ARMS) + [a for a in arms if a not in ARMS]
    return matplotlib.colormaps["tab10"](names.index(arm) % 10)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(result: CompareResult, figures: Path) -> list[Path]:
    """Write the figures that have data into `figures/`; returns their paths."""
    figures.mkdir(parents=True, exist_ok=True)
    written = [plot_open_loop(result, figures / FIGURES[0]), plot_success(result, figures / FIGURES[1]),
               plot_training_curves(result.runs, figures / FIGURES[2])]
    return [p for p in written if p is not None]


def plot_open_loop(result: CompareResult, path: Path) -> Path | None:
    """Top: each arm's mean error and CI. Bottom: the paired change vs the baseline, which is what is tested
    (arm CIs include episode difficulty, so they overlap even when every episode improves)."""
    metrics = [m for m in ("open_loop_mse", "open_loop_mae") if result.stat(m, OVERALL, "baseline")]
    if not metrics:
        return None
    plt = _pyplot()
    arms = list(result.arms)
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.5 * len(metrics), 6.8), squeeze=False)
    for col, metric in enumerate(metrics):
        top, bottom = axes[0][col], axes[1][col]
        for i, arm in enumerate(arms):
            s = result.stat(metric, OVERALL, arm)
            c = result.comparison(metric, OVERALL, arm)
            if s is not None:
                top.errorbar([i], [s.mean], yerr=_yerr(s.mean, s.lo, s.hi), fmt="o", capsize=6,
                             color=arm_color(arm, arms))
            if c is not None and c.relative_lo is not None:
                bottom.errorbar([i], [c.relative_pct], yerr=_yerr(c.relative_pct, c.relative_lo, c.relative_hi),
                                fmt="o", capsize=6, color=arm_color(arm, arms))
                bottom.annotate(c.label, (i, c.relative_hi), textcoords="offset points", xytext=(0, 6),
                                ha="center", fontsize=7)
        top.set_title(f"{METRICS[metric]}, mean and 95 % CI")
        top.set_ylabel("physical units")
        bottom.axhline(0.0, color="black", lw=0.8)
        bottom.axhspan(-EQUIVALENCE_PCT, EQUIVALENCE_PCT, color="grey", alpha=0.12, lw=0)
        bottom.set_title(f"change vs baseline, paired 95 % CI (band ±{EQUIVALENCE_PCT:.0f} %)")
        bottom.set_ylabel("%")
        for ax in (top, bottom):
            ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_success(result: CompareResult, path: Path) -> Path | None:
    scopes = result.scopes("success")
    if not scopes:
        return None
    plt = _pyplot()
    scopes = [s for s in scopes if s != OVERALL] + [OVERALL]  # the pooled group last
    arms = [a for a in result.arms if any(result.stat("success", s, a) for s in scopes)]
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(scopes) * len(arms)), 4.0))
    for j, arm in enumerate(arms):
        for i, scope in enumerate(scopes):
            s = result.stat("success", scope, arm)
            if s is None:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            ax.bar(x, s.mean, width * 0.9, color=arm_color(arm, list(result.arms)), label=arm if i == 0 else None)
            ax.errorbar([x], [s.mean], yerr=_yerr(s.mean, s.lo, s.hi), fmt="none", ecolor="black",
                        capsize=3)
            ax.text(x, 0.01, f"{s.successes}/{s.n}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(scopes)), ["all tasks" if s == OVERALL else s for s in scopes])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title("Closed-loop success with 95 % Wilson intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _smooth(values: np.ndarray) -> tuple[np.ndarray, int]:
    window = max(1, len(values) // MAX_POINTS)
    if window == 1:
        return values, 1
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def plot_training_curves(runs: list[Run], path: Path) -> Path | None:
    runs = [r for r in runs if r.curve]
    if not runs:
        return None
    plt = _pyplot()
    phases = sorted({r.phase for r in runs}, key=lambda p: (p != "scratch", p))
    arms = list(dict.fromkeys(r.arm for r in runs))
    fig, axes = plt.subplots(1, len(phases), figsize=(4.5 * len(phases), 3.6), squeeze=False)
    windows = set()
    for ax, phase in zip(axes[0], phases, strict=True):
        labelled = set()
        for run in sorted((r for r in runs if r.phase == phase), key=lambda r: (r.arm, r.seed)):
            steps, loss = (np.array(v) for v in zip(*run.curve, strict=True))
            smooth, window = _smooth(loss)
            windows.add(window)
            ax.plot(steps[window - 1:], smooth, color=arm_color(run.arm, arms), lw=1, alpha=0.8,
                    label=None if run.arm in labelled else run.arm)
            labelled.add(run.arm)
        ax.set_title(f"phase {phase}")
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("flow loss" + (" (running mean)" if max(windows) > 1 else "") + ", one line per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
