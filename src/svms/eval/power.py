"""Can the study see an effect? The positive control, the minimum detectable effect, and the labels they gate.

A study that cannot tell the baseline from a copy of it made worse on purpose (the control arm: the baseline
fine-tune with a quarter of its steps, `svms.protocol`) cannot tell SVMS from the baseline either. So, per
metric (open-loop MSE, open-loop MAE, closed-loop success), on all tasks:

- **detected**: every control arm's comparison with the baseline is labelled regressed;
- **not detected**: every comparison of an SVMS arm (the treatment and the ablations, in every scope and against
  either reference) on that metric is labelled underpowered; `Comparison.test_label` keeps what the test alone
  said. The report's verdict follows open-loop MSE (closed-loop success when there is no open-loop result);
- **no control** on that metric: the labels stand and the report says "no positive control: power unknown".

Floor and ceiling (closed loop): when the reference arm succeeded in none (or all) of its trials in a scope, a
"no significant change" says nothing (a policy that never succeeds cannot be seen to get worse), so that label
becomes underpowered and a note says the reference has not learned the task (or is at the ceiling).

Minimum detectable effect (MDE), two-sided 5 % test with 80 % power, for the study's seeds x episodes or trials:
the primary arm's comparison with the baseline (full SVMS, else the first other arm); open loop
`stats.mde_relative` = 2.80 x the paired bootstrap's standard error of the change in % of the baseline's error,
closed loop `stats.mde_two_proportions` at the baseline's success rate and trials, in points.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from svms.eval.significance import METRICS, NO_CHANGE, OVERALL, REGRESSED, UNDERPOWERED
from svms.protocol import BASELINE
from svms.protocol import arm_role as role

if TYPE_CHECKING:  # the results this module checks; `compare` calls it
    from svms.eval.compare import CompareResult

GATED_ROLES = ("treatment", "ablation")


@dataclass(frozen=True)
class PowerCheck:
    """Whether the study can see an effect on one metric (all tasks), from `svms.eval.power`."""

    metric: str
    controls: tuple[str, ...]  # control arms compared with the baseline on this metric
    control_labels: tuple[str, ...]
    detected: bool | None  # every control regressed; None without a control
    mde: float | None  # % of the baseline's error (open loop) or points (success), of `mde_arm` vs baseline
    mde_arm: str | None
    seeds: int  # fewest seeds of the two arms of that comparison
    n: int  # paired episodes (open loop) or the baseline's trials (success)


def check_power(result: CompareResult) -> None:
    """Apply the floor rule, then the control gate, and fill `result.power` (one PowerCheck per metric)."""
    _floor(result)
    for metric in METRICS:
        against = [c for c in result.comparisons
                   if c.metric == metric and c.scope == OVERALL and c.reference == BASELINE]
        if not against:
            continue
        controls = [c for c in against if role(c.arm) == "control"]
        detected = all(c.label == REGRESSED for c in controls) if controls else None
        chosen = next((c for c in against if c.arm == result.primary), against[0])
        base, arm = result.stat(metric, OVERALL, BASELINE), result.stat(metric, OVERALL, chosen.arm)
        mde = chosen.mde if chosen.mde is not None and math.isfinite(chosen.mde) else None
        result.power.append(PowerCheck(metric, tuple(c.arm for c in controls), tuple(c.label for c in controls),
                                       detected, mde, chosen.arm, min(len(base.seeds), len(arm.seeds)), base.n))
        missing = [a for a in result.arms if role(a) == "control" and a not in {c.arm for c in controls}]
        if missing:
            result.notes.append(f"{METRICS[metric]}: the control arm(s) {', '.join(missing)} have no result, so "
                                "they cannot show whether the study detects an effect on it")
        if detected is False:
            _gate(result, metric, controls)


def _gate(result: CompareResult, metric: str, controls) -> None:
    """The control was not detected on `metric`: no SVMS arm gets a verdict on it."""
    gated = 0
    for k, c in enumerate(result.comparisons):
        if c.metric == metric and role(c.arm) in GATED_ROLES and c.label != UNDERPOWERED:
            result.comparisons[k] = dataclasses.replace(c, label=UNDERPOWERED)
            gated += 1
    said = ", ".join(f"{c.arm} came out {c.label!r}" for c in controls)
    result.notes.append(f"{METRICS[metric]}: the positive control was not detected ({said} against the baseline, "
                        f"not {REGRESSED!r}): the study is underpowered for the SVMS comparison on it, so "
                        f"{gated} SVMS label(s) on it read {UNDERPOWERED!r} (the tests' own labels are under "
                        "test_label in comparison.json). Add seeds or evaluation episodes, or train longer.")


def _floor(result: CompareResult) -> None:
    """Closed-loop 'no significant change' against a reference that never (or always) succeeds -> underpowered."""
    noted = set()
    for k, c in enumerate(result.comparisons):
        if c.metric != "success":
            continue
        ref = result.stat("success", c.scope, c.reference)
        if ref is None or ref.successes not in (0, ref.n) or c.label != NO_CHANGE:
            continue
        result.comparisons[k] = dataclasses.replace(c, label=UNDERPOWERED)
        if (c.scope, c.reference) not in noted:
            noted.add((c.scope, c.reference))
            state = "has not learned the task" if ref.successes == 0 else "is at the ceiling"
            where = "all tasks" if c.scope == OVERALL else f"task {c.scope}"
            result.notes.append(f"closed-loop success, {where}: {c.reference} succeeded in {ref.successes}/{ref.n} "
                                f"trials, so it {state} and a lack of difference means nothing; those comparisons "
                                f"read {UNDERPOWERED!r}")
