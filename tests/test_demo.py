"""`svms demo`: the plan of each variant, and `--quick` end to end (needs the `sim` extra; the README's set-up
installs it)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from svms.protocol import ABLATIONS as ABLATION_ARMS
from svms.study import job
from svms.study.demo import demo_plan
from svms.study.jobs import arm_stints, expand

# find_spec, not importorskip: importing robosuite here would initialise MuJoCo before svms.sim picks
# its offscreen GL back-end.
needs_sim = pytest.mark.skipif(importlib.util.find_spec("robosuite") is None, reason="needs the sim extra (robosuite)")


def test_default_plans_compare_baseline_svms_and_the_control(tmp_path):
    quick, full = demo_plan(quick=True), demo_plan()
    assert quick.name == "demo-quick" and full.name == "demo"
    assert quick.arms == full.arms == ("baseline", "svms", "control")
    trains = [j.name for j in expand(quick, tmp_path) if j.kind == "train"]
    assert trains == ["baseline-seed0", "svms-seed0-phase1", "svms-seed0-phase2", "svms-seed0-phase3", "control-seed0"]


@pytest.mark.parametrize("quick", [True, False])
def test_ablations_add_arms_with_the_same_budgets_and_seeds(quick, tmp_path):
    plan = demo_plan(quick=quick, ablations=True)
    assert plan.arms == ("baseline", "svms", "control", *ABLATION_ARMS)
    assert ABLATION_ARMS == ("svms-no-sheaf", "svms-no-router", "svms-no-aux")
    jobs = [j for j in expand(plan, tmp_path) if j.kind == "train"]
    baseline = sum(s.steps for s in arm_stints(plan, "baseline"))
    for arm in plan.arms:
        runs = [j for j in jobs if j.args["arm"] == arm]
        assert sorted({j.args["seed"] for j in runs}) == list(plan.seeds)
        for seed in plan.seeds:
            mine = [j for j in runs if j.args["seed"] == seed]
            steps = sum(j.args["max_steps"] for j in mine)
            assert steps == (round(baseline / 4) if arm == "control" else baseline)
            if arm not in ("baseline", "control"):  # phases 1 -> 2 -> 3, each from the previous one, where it left
                assert [j.args["phase"] for j in mine] == ["1", "2", "3"]
                assert [j.args["init"] for j in mine][1:] == [str(tmp_path.resolve() / j.name) for j in mine[:2]]
                consumed = [range(j.args["data_offset"], j.args["data_offset"] + j.args["max_steps"]
                                  * j.args["global_batch_size"]) for j in mine]
                assert [p for r in consumed for p in r] == list(range(sum(len(r) for r in consumed)))
    # everything else (data, pretraining, evaluation sizes) is the plan without ablations
    assert plan.data.key() == demo_plan(quick=quick).data.key()
    assert expand(plan, tmp_path)[1].args == expand(demo_plan(quick=quick), tmp_path)[1].args  # same pretraining


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
    # machine-readable results beside the report: every arm's seed, and each arm against the baseline
    assert comparison["arms"] == {"baseline": [0], "svms": [0], "control": [0]}
    against_baseline = {(c["arm"], c["metric"]) for c in comparison["comparisons"] if c["reference"] == "baseline"}
    assert {("svms", "open_loop_mse"), ("control", "open_loop_mse")} <= against_baseline
    for c in comparison["comparisons"]:
        assert c["delta_lo"] <= c["delta"] <= c["delta_hi"], c
    printed = capsys.readouterr().out
    assert "report:" in printed and "[study 3/" in printed and "ETA" in printed
    # the tiny baseline trained from scratch on the generated data learns: its loss falls
    pretrain = json.loads((out / "pretrain" / "config.json").read_text())
    assert pretrain["phase"] == "scratch"
    losses = [json.loads(x)["loss"] for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    # the data and the pretrained checkpoint are cached, and another study with the same plan reuses both untouched
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert cached == ["demo", "pretrain"]
    def stamps():
        return {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"}

    before_reuse = stamps()
    for name, function in (("data", job.generate_data), ("pretrain", job.pretrain)):
        args = json.loads((out / ".study" / "jobs" / f"{name}.json").read_text())["args"]
        if name == "pretrain":
            args["copy_to"] = str(tmp_path / "another-study" / "pretrain")
        assert function(**args).startswith("reused cached"), name
    assert stamps() == before_reuse
    assert "control" in comparison["arms"]
    assert (out / "control-seed0" / "eval" / "closed_loop" / "results.json").is_file()
    # rerunning the same command skips every finished job and rewrites nothing
    def files():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "runner.lock"}

    before = files()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert files() == before


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
