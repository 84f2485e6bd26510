"""`svms demo`: the plan of each variant, and `--quick` end to end (needs the `sim` extra; the README's set-up
installs it)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from svms.demo import FULL, QUICK, demo_plan, fine_tunes
from svms.eval.compare import ABLATIONS as ABLATION_ARMS

# find_spec, not importorskip: importing robosuite here would initialise MuJoCo before svms.sim picks
# its offscreen GL back-end.
needs_sim = pytest.mark.skipif(importlib.util.find_spec("robosuite") is None, reason="needs the sim extra (robosuite)")


def test_default_plans_compare_baseline_and_svms():
    assert demo_plan() == FULL and demo_plan(quick=True) == QUICK
    assert QUICK.arms == FULL.arms == ("baseline", "svms")
    assert [j.name for j in fine_tunes(QUICK)] == ["baseline-seed0", "svms-seed0-phase1", "svms-seed0-phase2",
                                                   "svms-seed0-phase3"]


@pytest.mark.parametrize("quick", [True, False])
def test_ablations_add_arms_with_the_same_budgets_and_seeds(quick):
    plan = demo_plan(quick=quick, ablations=True)
    assert plan.arms == ("baseline", "svms", *ABLATION_ARMS) == ("baseline", "svms", "svms-no-sheaf",
                                                                 "svms-no-router", "svms-no-aux")
    jobs = fine_tunes(plan)
    for arm in plan.arms:
        runs = [j for j in jobs if j.arm == arm]
        assert sorted({j.seed for j in runs}) == list(plan.seeds)
        for seed in plan.seeds:
            mine = [j for j in runs if j.seed == seed]
            assert sum(j.steps for j in mine) == sum(j.steps for j in jobs if j.arm == "baseline" and j.seed == seed)
            assert [j.evaluate for j in mine][-1] and sum(j.evaluate for j in mine) == 1
            if arm != "baseline":  # phases 1 -> 2 -> 3, each from the previous one, where it left the data
                assert [j.phase for j in mine] == ["1", "2", "3"]
                assert [j.init for j in mine] == [None, mine[0].name, mine[1].name]
                consumed = [range(j.data_offset, j.data_offset + j.steps * plan.batch) for j in mine]
                assert [p for r in consumed for p in r] == list(range(sum(j.steps for j in mine) * plan.batch))
    # everything else (data, pretraining, evaluation sizes) is the plan without ablations
    assert plan.data_key() == demo_plan(quick=quick).data_key()


@needs_sim
def test_quick_demo_writes_the_report(tmp_path, monkeypatch, capsys):
    from svms.cli import main

    monkeypatch.setenv("SVMS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Verdict" in report and "Open-loop MSE" in report and "Closed-loop success" in report
    for figure in ("open_loop_error", "closed_loop_success", "training_curves", "router_heatmap"):
        assert (out / "figures" / f"{figure}.png").is_file(), figure
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison  # machine-readable results beside the report
    assert "report:" in capsys.readouterr().out
    # the tiny baseline trained from scratch on the generated data learns: its loss falls
    losses = [json.loads(x)["loss"] for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    # the data are cached: a second run reuses them
    assert list((tmp_path / "cache").iterdir())


@needs_sim
@pytest.mark.slow
def test_quick_demo_with_ablations(tmp_path, monkeypatch):
    from svms.cli import main

    monkeypatch.setenv("SVMS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--ablations", "--out", str(out)]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["arms"]) == {"baseline", "svms", *ABLATION_ARMS}
    pairs = {(c["arm"], c["reference"]) for c in comparison["comparisons"]}
    assert {(arm, "baseline") for arm in ("svms", *ABLATION_ARMS)} | {(arm, "svms") for arm in ABLATION_ARMS} <= pairs
    assert "## Ablations against full SVMS" in (out / "report.md").read_text()
