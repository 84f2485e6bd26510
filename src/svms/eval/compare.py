"""Baseline-vs-SVMS comparison of training runs: load, group by arm and seed, test every SVMS arm.

A run folder (from `svms train`) holds `config.json` (phase, svms, seed, arm), `metrics.jsonl` and, once
evaluated, `eval/open_loop/metrics.json` and `eval/closed_loop/results.json`. Runs are grouped by arm; the
SVMS phases 1 -> 2 -> 3 and the pretraining run from scratch are separate runs of the same arm, so only an
arm's latest phase is compared (earlier ones still show in the training curves). Within it each seed is one
run. Which arm is compared with which comes from the one registry of arms, `svms.protocol.ARMS`: every arm
with the baseline, each ablation (svms-no-sheaf, svms-no-router, svms-no-aux) also with full SVMS when both
were run, and the positive control (the baseline with a quarter of its steps) with the baseline; an arm the
registry does not know is compared with the baseline (a control when its name contains "control"). On

- open-loop MSE and MAE (physical units), overall and per task: the mean per-episode error over the episodes
  every run evaluated, with a seed-and-episode bootstrap CI paired by episode (`stats.paired_bootstrap`);
- closed-loop success per task and pooled over tasks: successes pooled over seeds, Wilson intervals,
  Fisher's exact test and Newcombe's CI of the difference.

Then `svms.eval.power` checks that the study can see an effect (the control must come out regressed; else the
SVMS arms' labels become underpowered) and states the minimum detectable effect.

A run without an eval file contributes nothing to that metric; `CompareResult.notes` says so. Per-task
scopes are the task names of the eval files: for simulated data both open-loop evaluation and rollouts name
the simulated task (Lift, Door, ...), so the scopes of both kinds line up.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svms.errors import SvmsError
from svms.eval import significance as stats
from svms.eval.power import PowerCheck, check_power
from svms.eval.significance import OVERALL
from svms.protocol import ABLATIONS, ARMS, BASELINE, PHASE_ORDER, SVMS
from svms.protocol import arm_role as role

__all__ = ["ABLATIONS", "ARMS", "BASELINE", "SVMS", "CompareResult", "Comparison", "compare", "role"]
OPEN_LOOP_FILE = "eval/open_loop/metrics.json"
CLOSED_LOOP_FILE = "eval/closed_loop/results.json"


@dataclass
class Run:
    """One training run folder and whatever evaluation it has."""

    path: Path
    arm: str
    seed: int
    phase: str
    curve: list[tuple[int, float]]  # (step, flow_loss) from metrics.jsonl
    open_loop: dict[str, Any] | None = None
    closed_loop: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.arm} seed {self.seed} (phase {self.phase}, {self.path})"


@dataclass(frozen=True)
class ArmStat:
    """One arm's value of a metric: mean error with a bootstrap CI, or success rate with a Wilson interval."""

    metric: str
    scope: str
    arm: str
    seeds: tuple[int, ...]
    n: int  # episodes in common (open loop) or trials pooled over seeds (closed loop)
    mean: float
    lo: float
    hi: float
    successes: int | None = None


@dataclass(frozen=True)
class Comparison:
    """Treatment arm - reference arm (the baseline, or full SVMS for an ablation) on one metric and scope, with
    its test and label (`stats.label`, from the treatment arm's point of view)."""

    metric: str
    scope: str
    arm: str
    delta: float
    delta_lo: float
    delta_hi: float
    relative_pct: float
    relative_lo: float | None  # bootstrap CI of the change in % (open loop only)
    relative_hi: float | None
    p: float
    test: str
    label: str
    reference: str = BASELINE
    mde: float | None = None  # minimum detectable effect: % of the reference's error (open loop), points (success)
    test_label: str | None = None  # what the test alone said, before `svms.eval.power` gated the label


def references(arm: str) -> tuple[str, ...]:
    return ARMS[arm].references if arm in ARMS else (BASELINE,)


def pairs(arms) -> list[tuple[str, str]]:
    """(arm, reference) pairs from the registry: every arm against the baseline first, then the ablations
    against full SVMS (when it was run)."""
    arms = list(arms)
    ours = [(arm, ref) for arm in arms if arm != BASELINE for ref in references(arm) if ref in arms]
    return [p for p in ours if p[1] == BASELINE] + [p for p in ours if p[1] != BASELINE]


def primary_arm(arms) -> str:
    """The arm the verdict is about: full SVMS when present, else the first other treatment or ablation, else the
    first arm that is not the baseline."""
    arms = [a for a in arms if a != BASELINE]
    if SVMS in arms:
        return SVMS
    return next((a for a in arms if role(a) in ("treatment", "ablation")), arms[0])


@dataclass
class CompareResult:
    runs: list[Run]
    arms: dict[str, list[Run]]  # the compared runs: each arm's latest phase, one per seed
    stats: list[ArmStat] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    power: list[PowerCheck] = field(default_factory=list)  # filled by `svms.eval.power.check_power`

    @property
    def primary(self) -> str:
        return primary_arm(self.arms)

    def power_check(self, metric: str) -> PowerCheck | None:
        return next((p for p in self.power if p.metric == metric), None)

    def stat(self, metric: str, scope: str, arm: str) -> ArmStat | None:
        return next((s for s in self.stats if (s.metric, s.scope, s.arm) == (metric, scope, arm)), None)

    def comparison(self, metric: str, scope: str, arm: str, reference: str = BASELINE) -> Comparison | None:
        return next((c for c in self.comparisons
                     if (c.metric, c.scope, c.arm, c.reference) == (metric, scope, arm, reference)), None)

    def scopes(self, metric: str) -> list[str]:
        return list(dict.fromkeys(s.scope for s in self.stats if s.metric == metric))

    def to_json(self) -> dict[str, Any]:
        """Everything but the raw eval files; nan -> null so that the file is strict JSON."""
        runs = [{"path": str(r.path), "arm": r.arm, "seed": r.seed, "phase": r.phase,
                 "compared": any(r is c for c in self.arms.get(r.arm, [])),
                 "open_loop": r.open_loop is not None, "closed_loop": r.closed_loop is not None} for r in self.runs]
        return _finite({"runs": runs, "arms": {a: [r.seed for r in rs] for a, rs in self.arms.items()},
                        "stats": [asdict(s) for s in self.stats],
                        "comparisons": [asdict(c) for c in self.comparisons], "notes": self.notes,
                        "power": [asdict(p) for p in self.power],
                        "minimum_detectable_effect": {p.metric: {"value": p.mde,
                                                                 "unit": "points" if p.metric == "success" else "%",
                                                                 "arm": p.mde_arm, "seeds": p.seeds, "n": p.n}
                                                      for p in self.power}})


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def compare(run_dirs: list[Path] | tuple[Path, ...], resamples: int = 10_000, seed: int = 0) -> CompareResult:
    """Load the runs and compare every arm with the baseline; SvmsError when there is nothing to compare."""
    if not run_dirs:
        raise SvmsError("no runs given: pass the run folders written by `svms train` (baseline and SVMS arms)")
    notes: list[str] = []
    runs = [load_run(Path(p), notes) for p in run_dirs]
    result = CompareResult(runs=runs, arms=group_arms(runs, notes), notes=notes)
    _open_loop(result, resamples, seed)
    _closed_loop(result)
    if not result.comparisons:
        have = "; ".join(f"{arm}: {sum(r.open_loop is not None for r in rs)} open-loop, "
                         f"{sum(r.closed_loop is not None for r in rs)} closed-loop" for arm, rs in result.arms.items())
        raise SvmsError(f"nothing to compare: the baseline and at least one other arm need results of the same kind "
                        f"({OPEN_LOOP_FILE} from `svms eval open-loop --out RUN/eval/open_loop`, or "
                        f"{CLOSED_LOOP_FILE} from `svms sim rollout`); runs with results per arm: {have}")
    check_power(result)
    return result


def load_run(path: Path, notes: list[str]) -> Run:
    """Read config.json, metrics.jsonl and the eval files of one run folder."""
    config = _read_json(path / "config.json", f"{path} is not a run folder written by `svms train`")
    for key in ("phase", "seed"):
        if config.get(key) is None:
            raise SvmsError(f"{path / 'config.json'} has no {key!r}; runs are compared by arm, seed and phase, "
                            "so retrain it with `svms train` or add the field")
    if config.get("arm") is None and config.get("svms") is None:
        raise SvmsError(f"{path / 'config.json'} has neither 'arm' nor 'svms': cannot tell which arm it belongs to")
    arm = config.get("arm") or ("svms" if config["svms"] else BASELINE)
    run = Run(path=path, arm=str(arm), seed=int(config["seed"]), phase=str(config["phase"]),
              curve=_read_curve(path / "metrics.jsonl", notes))
    if (path / OPEN_LOOP_FILE).is_file():
        run.open_loop = _read_json(path / OPEN_LOOP_FILE, "")
        _require(run.open_loop, ("episodes",), path / OPEN_LOOP_FILE)
        for episode in run.open_loop["episodes"]:
            _require(episode, ("episode_index", "mse", "mae"), path / OPEN_LOOP_FILE, "an episode")
    if (path / CLOSED_LOOP_FILE).is_file():
        run.closed_loop = _read_json(path / CLOSED_LOOP_FILE, "")
        _require(run.closed_loop, ("tasks",), path / CLOSED_LOOP_FILE)
        for task, res in run.closed_loop["tasks"].items():
            _require(res, ("episodes", "successes"), path / CLOSED_LOOP_FILE, f"task {task}")
    return run


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise SvmsError(f"{path} does not exist" + (f": {hint}" if hint else ""))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SvmsError(f"{path} is not valid JSON ({err}); rewrite it with the command that produced it") from err
    if not isinstance(data, dict):
        raise SvmsError(f"{path} must hold a JSON object")
    return data


def _require(data: dict[str, Any], keys: tuple[str, ...], path: Path, where: str = "the file") -> None:
    for key in keys:
        if key not in data:
            raise SvmsError(f"{path}: {where} has no {key!r} field; rerun the evaluation that wrote it")


def _read_curve(path: Path, notes: list[str]) -> list[tuple[int, float]]:
    """(step, flow_loss) pairs; unparsable lines (a run killed mid-write) are skipped and noted."""
    if not path.is_file():
        notes.append(f"{path} is missing: that run has no training curve")
        return []
    curve, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if row.get("step") is not None and row.get("flow_loss") is not None:
            curve.append((int(row["step"]), float(row["flow_loss"])))
    if bad:
        notes.append(f"{path}: skipped {bad} line(s) that are not JSON")
    return curve


def group_arms(runs: list[Run], notes: list[str]) -> dict[str, list[Run]]:
    """arm -> its runs of the arm's latest phase, one per seed, baseline first."""
    order = {arm: i for i, arm in enumerate(ARMS)}
    by_arm: dict[str, list[Run]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    arms: dict[str, list[Run]] = {}
    for arm in sorted(by_arm, key=lambda a: (order.get(a, len(ARMS)), a)):
        latest = max(by_arm[arm], key=lambda r: PHASE_ORDER.get(r.phase, -1)).phase
        earlier = [r for r in by_arm[arm] if r.phase != latest]
        if earlier:
            notes.append(f"{arm}: compared at phase {latest}; {len(earlier)} run(s) of earlier phases "
                         f"({', '.join(sorted({r.phase for r in earlier}))}) appear in the training curves only")
        kept = sorted((r for r in by_arm[arm] if r.phase == latest), key=lambda r: r.seed)
        for a, b in zip(kept, kept[1:], strict=False):
            if a.seed == b.seed:
                raise SvmsError(f"two runs of arm {arm}, phase {latest} have seed {a.seed}: {a.path} and {b.path}; "
                                "pass each run once (seeds tell the repeats of an arm apart)")
        arms[arm] = kept
    if BASELINE not in arms:
        raise SvmsError(f"no baseline run among {', '.join(arms)}: add a run trained with --no-svms (arm baseline)")
    if len(arms) < 2:
        raise SvmsError("only the baseline arm was given: add SVMS runs (arm svms or an ablation) to compare with it")
    phases = {arm: rs[0].phase for arm, rs in arms.items()}
    if len(set(phases.values())) > 1:
        notes.append("arms are compared at different phases: " + ", ".join(f"{a} {p}" for a, p in phases.items()))
    return arms


def _open_loop(result: CompareResult, resamples: int, seed: int) -> None:
    """Open-loop MSE / MAE per arm and comparisons, on the episodes that every evaluated run shares."""
    runs = [r for rs in result.arms.values() for r in rs]
    evaluated = [r for r in runs if r.open_loop is not None]
    for run in runs:
        if run.open_loop is None:
            result.notes.append(f"{run.name}: no {OPEN_LOOP_FILE}, so no open-loop error")
    if not evaluated:
        return
    episodes = {id(r): {int(e["episode_index"]): e for e in r.open_loop["episodes"]} for r in evaluated}
    common = sorted(set.intersection(*(set(e) for e in episodes.values())))
    union = set.union(*(set(e) for e in episodes.values()))
    if len(common) < len(union):
        result.notes.append(f"open loop: {len(union) - len(common)} episode(s) were not evaluated by every run "
                            f"and are left out; {len(common)} remain")
    for key, label_ in (("dataset", "datasets"), ("split", "splits"), ("action_horizon", "action horizons")):
        values = sorted({str(r.open_loop.get(key)) for r in evaluated})
        if len(values) > 1:
            result.notes.append(f"open loop: runs used different {label_} ({', '.join(values)}); episodes are "
                                "paired by index, which assumes the same data")
    splits = {r.open_loop.get("split") for r in evaluated}
    if splits - {"heldout"}:
        result.notes.append(f"open loop: split {', '.join(sorted(map(str, splits)))}, not only held-out episodes")
    first = episodes[id(evaluated[0])]
    tasks = sorted({str(first[i].get("task", "")) for i in common})
    scopes = [OVERALL] + (tasks if len(tasks) > 1 else [])
    for key in ("mse", "mae"):
        metric = f"open_loop_{key}"
        for scope in scopes:
            cols = [i for i in common if scope == OVERALL or str(first[i].get("task", "")) == scope]
            if not cols:
                continue
            matrices = {arm: np.array([[float(episodes[id(r)][i][key]) for i in cols] for r in rs
                                       if r.open_loop is not None]).reshape(-1, len(cols))
                        for arm, rs in result.arms.items()}
            for arm, rs in result.arms.items():
                if len(matrices[arm]):
                    b = stats.bootstrap_mean(matrices[arm], resamples, seed)
                    result.stats.append(ArmStat(metric, scope, arm, _seeds(rs, "open_loop"), len(cols),
                                                b.estimate, b.lo, b.hi))
            for arm, reference in pairs(result.arms):
                base, treat = matrices[reference], matrices[arm]
                if not len(treat) or not len(base):
                    continue
                diff, rel = stats.paired_bootstrap(base, treat, resamples, seed)
                verdict = stats.label(seeds=(len(base), len(treat)), n=len(cols), min_n=stats.MIN_EPISODES,
                                      delta=diff.estimate, ci=(rel.lo, rel.hi), higher_is_better=False,
                                      equivalence=(-stats.EQUIVALENCE_PCT, stats.EQUIVALENCE_PCT))
                result.comparisons.append(Comparison(metric, scope, arm, diff.estimate, diff.lo, diff.hi,
                                                     rel.estimate, rel.lo, rel.hi, diff.p,
                                                     "paired bootstrap over seeds and episodes", verdict, reference,
                                                     stats.mde_relative(rel.se), verdict))


def _seeds(runs: list[Run], kind: str) -> tuple[int, ...]:
    return tuple(r.seed for r in runs if getattr(r, kind) is not None)


def _closed_loop(result: CompareResult) -> None:
    """Success per task and pooled over tasks: counts pooled over seeds, Wilson intervals, Fisher tests."""
    by_task: dict[str, dict[str, list[tuple[int, int, int]]]] = {}  # task -> arm -> [(seed, successes, trials)]
    for arm, rs in result.arms.items():
        for run in rs:
            if run.closed_loop is None:
                result.notes.append(f"{run.name}: no {CLOSED_LOOP_FILE}, so no closed-loop success")
                continue
            for task, res in run.closed_loop["tasks"].items():
                k, n = int(res["successes"]), int(res["episodes"])
                if not 0 <= k <= n:
                    raise SvmsError(f"{run.path / CLOSED_LOOP_FILE}: task {task} has {k} successes in {n} episodes")
                by_task.setdefault(task, {}).setdefault(arm, []).append((run.seed, k, n))
    scopes: dict[str, dict[str, list[tuple[int, int, int]]]] = {OVERALL: {}}
    for task in sorted(by_task):
        for arm, rows in by_task[task].items():
            scopes[OVERALL].setdefault(arm, []).extend(rows)
        if len(by_task) > 1:
            scopes[task] = by_task[task]
    for scope, per_arm in scopes.items():
        counts = {}  # arm -> (successes, trials, seeds)
        for arm in result.arms:
            if arm not in per_arm:
                continue
            rows = per_arm[arm]
            k, n, seeds = sum(r[1] for r in rows), sum(r[2] for r in rows), tuple(sorted({r[0] for r in rows}))
            counts[arm] = (k, n, len(seeds))
            lo, hi = stats.wilson_interval(k, n)
            result.stats.append(ArmStat("success", scope, arm, seeds, n, k / n if n else math.nan, lo, hi, k))
        for arm, reference in pairs(result.arms):
            if arm not in counts or reference not in counts or not counts[arm][1] or not counts[reference][1]:
                continue
            (kt, nt, st), (kb, nb, sb) = counts[arm], counts[reference]
            p = stats.fisher_exact(((kt, nt - kt), (kb, nb - kb)))
            delta = kt / nt - kb / nb
            ci = stats.newcombe_interval(kt, nt, kb, nb)
            verdict = stats.label(seeds=(sb, st), n=min(nb, nt), min_n=stats.MIN_TRIALS, delta=delta, ci=ci,
                                  higher_is_better=True, p=p)
            mde = 100.0 * stats.mde_two_proportions(kb / nb, nb, nt)
            result.comparisons.append(Comparison("success", scope, arm, delta, ci[0], ci[1],
                                                 stats.relative_change(kt / nt, kb / nb), None, None, p,
                                                 "Fisher exact, trials pooled over seeds", verdict, reference,
                                                 mde, verdict))
