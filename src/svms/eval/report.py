"""`report.md` of a comparison: the verdict as measured (or none, when the positive control was not detected),
whether the study can see an effect (control, minimum detectable effect), one table per metric and scope,
figures, caveats.

`write_report(result, out)` writes `out/report.md`, `out/comparison.json` (the same numbers, machine-readable)
and `out/figures/*.png`; PNGs other tools already put in `out/figures/` (the router heatmap) are embedded too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from svms.eval import significance as stats
from svms.eval.compare import ArmStat, CompareResult, Comparison
from svms.eval.plots import write_figures
from svms.eval.power import PowerCheck
from svms.eval.significance import METRICS, OVERALL
from svms.protocol import BASELINE, SVMS
from svms.protocol import arm_role as role


def write_report(result: CompareResult, out: Path) -> Path:
    """Write report.md, comparison.json and the figures into `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(result, out / "figures")
    others = sorted(p for p in (out / "figures").glob("*.png") if p not in figures)
    (out / "comparison.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    path = out / "report.md"
    path.write_text(render(result, [p.relative_to(out) for p in figures + others]))
    return path


def primary_arm(result: CompareResult) -> str:
    """The arm the verdict is about: full SVMS when present, else the first other treatment or ablation."""
    return result.primary


def _num(x: float | None, sign: str = "") -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:{sign}.4g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1f} %"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3g}")


def headline_power(result: CompareResult) -> PowerCheck | None:
    """The power check the verdict follows: open-loop MSE, else closed-loop success."""
    return result.power_check("open_loop_mse") or result.power_check("success")


def _mde(check: PowerCheck | None) -> str:
    if check is None:
        return "n/a"
    if check.mde is None:
        return "none within reach (too few trials)" if check.metric == "success" else "n/a"
    return f"{check.mde:.1f} points" if check.metric == "success" else f"{check.mde:.1f} %"


def _control_said(result: CompareResult, check: PowerCheck) -> str:
    """'control **regressed** (+30.1 %, 95 % CI ...)' for each control arm of a power check."""
    parts = []
    for arm in check.controls:
        c = result.comparison(check.metric, OVERALL, arm)
        if check.metric == "success":
            change = f"{100 * c.delta:+.1f} points, Fisher p = {_p(c.p)}"
        else:
            change = f"{_pct(c.relative_pct)}, 95 % CI {_pct(c.relative_lo)} to {_pct(c.relative_hi)}"
        parts.append(f"{arm} **{c.label}** ({change})")
    return ", ".join(parts)


def verdict(result: CompareResult) -> str:
    """The verdict on the primary arm as measured, or why there is none: the positive control not detected."""
    arm, check = primary_arm(result), headline_power(result)
    name = "open-loop MSE" if check is not None and check.metric == "open_loop_mse" else "closed-loop success"
    if check is None or check.detected is None:
        ran = [a for a in result.arms if role(a) == "control"]
        why = f"The positive control ({', '.join(ran)}) has no {name} result" if ran else "No positive control"
        return f"{why}: power unknown. " + _measured(result, arm)
    said = f"the positive control came out {_control_said(result, check)} against the baseline on {name}"
    if check.detected:
        return (_measured(result, arm) + f" The study can see an effect: {said}; minimum detectable effect "
                f"{_mde(check)}.")
    if arm in check.controls:  # only the control was run besides the baseline
        return _measured(result, arm) + f" The study cannot see an effect: {said}, not **regressed**."
    return (f"No verdict on {arm}: {said}, not **regressed**, so the study is underpowered for the SVMS comparison "
            f"(minimum detectable effect {_mde(check)}). Add seeds or evaluation episodes, or train longer.")


def _measured(result: CompareResult, arm: str) -> str:
    """One sentence per headline metric of `arm` against the baseline."""
    parts = []
    mse = result.comparison("open_loop_mse", OVERALL, arm)
    if mse is not None:
        b, t = result.stat(mse.metric, OVERALL, BASELINE), result.stat(mse.metric, OVERALL, arm)
        parts.append(f"open-loop MSE **{mse.label}** ({_pct(mse.relative_pct)}, 95 % CI {_pct(mse.relative_lo)} "
                     f"to {_pct(mse.relative_hi)}; {len(t.seeds)} vs {len(b.seeds)} seeds, {t.n} episodes)")
    success = result.comparison("success", OVERALL, arm)
    if success is not None:
        b, t = result.stat("success", OVERALL, BASELINE), result.stat("success", OVERALL, arm)
        parts.append(f"closed-loop success **{success.label}** ({t.successes}/{t.n} = {t.mean:.0%} vs "
                     f"{b.successes}/{b.n} = {b.mean:.0%}, Fisher p = {_p(success.p)})")
    if not parts:
        return f"No measurement compares {arm} with the baseline (see the notes)."
    return f"As measured, {arm} against the baseline: " + "; ".join(parts) + "."


def _error_table(result: CompareResult, metric: str, scope: str) -> list[str]:
    rows = ["| arm | seeds | mean (95 % CI) | Δ vs baseline (95 % CI) | Δ % (95 % CI) | bootstrap p | label |",
            "|---|---|---|---|---|---|---|"]
    for arm in result.arms:
        s = result.stat(metric, scope, arm)
        if s is None:
            continue
        head = f"| {arm} | {_seeds(s)} | {_num(s.mean)} ({_num(s.lo)} to {_num(s.hi)}) |"
        c = result.comparison(metric, scope, arm)
        if c is None:
            rows.append(head + " reference | | | |" if arm == BASELINE else head + " no baseline | | | |")
            continue
        delta = f"{_num(c.delta, '+')} ({_num(c.delta_lo, '+')} to {_num(c.delta_hi, '+')})"
        rows.append(head + f" {delta} | {_pct(c.relative_pct)} ({_pct(c.relative_lo)} to {_pct(c.relative_hi)}) | "
                    f"{_p(c.p)} | {_label(c)} |")
    return rows


def _success_table(result: CompareResult, scope: str) -> list[str]:
    rows = ["| arm | seeds | success | 95 % Wilson | Δ vs baseline (95 % CI, points) | Fisher p | label |",
            "|---|---|---|---|---|---|---|"]
    for arm in result.arms:
        s = result.stat("success", scope, arm)
        if s is None:
            continue
        head = f"| {arm} | {_seeds(s)} | {s.successes}/{s.n} = {_rate(s.mean)} | {_rate(s.lo)} to {_rate(s.hi)} |"
        c = result.comparison("success", scope, arm)
        if c is None:
            rows.append(head + (" reference | | |" if arm == BASELINE else " no baseline | | |"))
            continue
        rows.append(head + f" {100 * c.delta:+.1f} ({100 * c.delta_lo:+.1f} to {100 * c.delta_hi:+.1f}) | "
                    f"{_p(c.p)} | {_label(c)} |")
    return rows


def _ablation_lines(result: CompareResult) -> list[str]:
    """Each ablation against full SVMS, one table row per metric and scope (empty without ablation comparisons)."""
    rows = [c for c in result.comparisons if c.reference == SVMS]
    if not rows:
        return []
    lines = ["", "## Ablations against full SVMS", "",
             "Δ = ablation − full SVMS. **regressed** means removing the component made the policy worse (the "
             "component helps), **improved** that the policy did better without it.", "",
             "| metric | scope | ablation | Δ vs svms (95 % CI) | Δ % (95 % CI) | p | label |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        if c.metric == "success":
            delta = f"{100 * c.delta:+.1f} ({100 * c.delta_lo:+.1f} to {100 * c.delta_hi:+.1f}) points"
        else:
            delta = f"{_num(c.delta, '+')} ({_num(c.delta_lo, '+')} to {_num(c.delta_hi, '+')})"
        rel = _pct(c.relative_pct)
        if c.relative_lo is not None:
            rel += f" ({_pct(c.relative_lo)} to {_pct(c.relative_hi)})"
        lines.append(f"| {METRICS[c.metric]} | {c.scope} | {c.arm} | {delta} | {rel} | {_p(c.p)} | {_label(c)} |")
    return lines


def _diagnostic_lines(result: CompareResult) -> list[str]:
    """The SVMS arms' diagnostics from open-loop evaluation (`svms` in metrics.json), averaged over seeds: sheaf
    residual, router weights on text tokens, auxiliary heads' balanced accuracy (empty without SVMS diagnostics)."""
    rows = []
    for arm, runs in result.arms.items():
        diags = [r.open_loop["svms"] for r in runs if r.open_loop and r.open_loop.get("svms")]
        if not diags:
            continue
        residual = sum(d["sheaf_residual"]["mean"] for d in diags) / len(diags)
        streams = list(next((d["router_mean"].get("text") for d in diags if d["router_mean"].get("text")), {}))
        router = ", ".join(f"{s} {sum(d['router_mean']['text'][s] for d in diags) / len(diags):.2f}" for s in streams)
        auxes = [d["aux"] for d in diags if d.get("aux")]
        aux = ", ".join(f"{s} {sum(a[s]['balanced_accuracy'] for a in auxes) / len(auxes):.2f}"
                        for s in (auxes[0] if auxes else {}))
        rows.append(f"| {arm} | {len(diags)} | {residual:.4g} | {router or 'n/a'} | {aux or 'n/a (no aux heads)'} |")
    if not rows:
        return []
    return ["", "## SVMS diagnostics (open-loop data, mean over seeds)", "",
            "Sheaf residual: normalised disagreement between the streams (0 = a global section). Router: mean weight "
            "per stream on text tokens. Aux: balanced accuracy of each stream's auxiliary head against the "
            "instruction's keyword labels (0.5 = chance).", "",
            "| arm | seeds | sheaf residual | router on text tokens | aux balanced accuracy |",
            "|---|---|---|---|---|", *rows]


def _label(c: Comparison) -> str:
    """The label in bold, with the test's own label when the power gate overrode it."""
    if c.test_label is not None and c.test_label != c.label:
        return f"**{c.label}** (test alone: {c.test_label})"
    return f"**{c.label}**"


def _power_lines(result: CompareResult) -> list[str]:
    """The positive control per metric and the minimum detectable effect for the study's seeds x episodes."""
    if not result.power:
        return []
    lines = ["", "## Can this study see an effect?", "",
             "The positive control is the baseline fine-tune with a quarter of its optimizer steps, worse by "
             "construction: a study that cannot tell it from the baseline cannot tell SVMS from it either.", "",
             "| metric | positive control vs baseline | detected | minimum detectable effect | from |",
             "|---|---|---|---|---|"]
    for check in result.power:
        control = _control_said(result, check) if check.controls else "no control arm"
        detected = {True: "yes", False: "**no**: SVMS labels read underpowered", None: "power unknown"}[check.detected]
        size = (f"{check.seeds} seeds per arm, {check.n} trials" if check.metric == "success"
                else f"{check.seeds} seeds per arm × {check.n} episodes")
        lines.append(f"| {METRICS[check.metric]} | {control} | {detected} | {_mde(check)} | "
                     f"{check.mde_arm} vs baseline, {size} |")
    mse, success = result.power_check("open_loop_mse"), result.power_check("success")
    said = []
    if mse is not None:
        said.append(f"open-loop MSE {_mde(mse)} of the baseline's error ({mse.seeds} seeds × {mse.n} episodes)")
    if success is not None:
        rate = result.stat("success", OVERALL, BASELINE)
        said.append(f"closed-loop success {_mde(success)} (at the baseline's {_rate(rate.mean)} of {rate.n} trials)")
    lines += ["", "Minimum detectable effect (two-sided 5 % test, 80 % power): " + "; ".join(said) + ". Open "
              "loop: 2.80 × the paired bootstrap's standard error of the change in %; closed loop: the two-proportion "
              "z-test's smallest change towards 50 % (Fisher's exact test, which labels success, is a little more "
              "conservative). Smaller true effects are likely to read \"no significant change\" or underpowered."]
    return lines


def _rate(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f} %"


def _seeds(s: ArmStat) -> str:
    return f"{len(s.seeds)} ({', '.join(map(str, s.seeds))})"


def _scope_title(scope: str, stat: ArmStat | None, metric: str) -> str:
    where = "all tasks" if scope == OVERALL else f"task {scope}"
    name = METRICS[metric][0].upper() + METRICS[metric][1:]
    if stat is None or metric == "success":
        return f"{name}, {where}"
    return f"{name}, {where} ({stat.n} episodes evaluated by every run)"


RULES = f"""\
- **improved / regressed**: the difference is significant and favours the arm / the baseline. Open-loop
  error: the 95 % bootstrap CI of (arm − baseline) excludes 0 (lower error is better). Closed-loop success:
  Fisher's exact test gives p < {stats.ALPHA} (higher success is better).
- **no significant change**: not significant; for open-loop error, in addition, the 95 % CI of the change
  lies within ±{stats.EQUIVALENCE_PCT:.0f} % of the baseline, so a change of {stats.EQUIVALENCE_PCT:.0f} % or more is
  ruled out. For success rates it only means p ≥ {stats.ALPHA}: the CI of Δ shows how large a change is still possible.
- **underpowered**: fewer than {stats.MIN_SEEDS} seeds in an arm (a difference cannot then be told apart from the
  5–6 % by which identical runs differ), fewer than {stats.MIN_EPISODES} paired episodes (open loop) or
  {stats.MIN_TRIALS} trials per arm (closed loop), an open-loop CI too wide to rule out a
  {stats.EQUIVALENCE_PCT:.0f} % change, a closed-loop reference that never (or always) succeeds, or — for the
  SVMS arms — a positive control that did not come out regressed on that metric (the label the test alone
  gave is shown beside it). Add seeds or episodes before concluding anything.

Open-loop errors are in physical units, averaged per episode (each episode counts once) over the episodes every
run evaluated. Their CIs resample seeds within each arm and episodes (the same episodes for both arms, so the
comparison is paired), 10,000 times with a fixed seed. Success counts are pooled over seeds; the CI of Δ is
Newcombe's, built from the Wilson intervals. Pooling trials over seeds treats them as independent, which
understates seed-to-seed variation: prefer more seeds to more trials per seed."""


def render(result: CompareResult, figures: list[Path]) -> str:
    lines = ["# Does SVMS help? Baseline vs SVMS", "", f"**Verdict.** {verdict(result)}", *_power_lines(result),
             "", "## Runs", "",
             "| arm | phase | seeds | with open-loop results | with closed-loop results |", "|---|---|---|---|---|"]
    for arm, rs in result.arms.items():
        lines.append(f"| {arm} | {rs[0].phase} | {', '.join(str(r.seed) for r in rs)} | "
                     f"{sum(r.open_loop is not None for r in rs)} | {sum(r.closed_loop is not None for r in rs)} |")
    for metric in METRICS:
        for scope in result.scopes(metric):
            lines += ["", f"## {_scope_title(scope, result.stat(metric, scope, BASELINE), metric)}", ""]
            lines += _success_table(result, scope) if metric == "success" else _error_table(result, metric, scope)
    lines += _ablation_lines(result)
    lines += _diagnostic_lines(result)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.as_posix()})" for p in figures]
    lines += ["", "## Notes on the data", ""]
    lines += [f"- {n}" for n in result.notes] or ["- every compared run has every evaluation"]
    lines += ["", "## How to read the labels", "", RULES, "",
              f"This report makes {len(result.comparisons)} comparisons, each at the 5 % level: about one in "
              "twenty can come out improved or regressed by chance alone. The headline is the verdict above; "
              "per-task and ablation rows are for exploring, not for claims.", ""]
    return "\n".join(lines)
