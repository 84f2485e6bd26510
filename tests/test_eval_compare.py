"""`svms eval compare` on synthetic runs with known answers: statistics, labels, report, figures, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tyro

from svms.commands.eval_compare import EvalCompare
from svms.errors import SvmsError
from svms.eval import significance as stats
from svms.eval.compare import compare
from svms.eval.report import write_report

TASKS = ("Lift", "Stack")
N_EPISODES = 20
DIFFICULTY = np.random.default_rng(123).lognormal(0.0, 0.5, N_EPISODES)  # shared by all arms: pairing removes it


def make_run(root: Path, arm: str, seed: int, *, scale: float = 1.0, seed_sd: float = 0.02,
             episode_sd: float = 0.05, phase: str = "3", success: dict[str, tuple[int, int]] | None = None,
             open_loop: bool = True, data_seed: int = 0, offset: float | None = None) -> Path:
    """A run folder: config, a short flow-loss curve, per-episode errors = difficulty x scale x noise."""
    run = root / f"{arm}-{phase}-s{seed}"
    run.mkdir(parents=True)
    config = {"phase": phase, "svms": arm != "baseline", "seed": seed, "arm": arm, "lambda_aux": 0.3,
              "sheaf_schedule": "adaptive", "model_override": [], "resolved": {}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0 / s, "flow_loss": scale / s, "lr": 1e-4}) + "\n" for s in range(1, 31)))
    rng = np.random.default_rng([data_seed, seed, *arm.encode()])
    if open_loop:
        run_factor = offset if offset is not None else 1.0 + seed_sd * rng.standard_normal()
        episodes = []
        for i in range(N_EPISODES):
            mse = float(DIFFICULTY[i] * scale * run_factor * (1 + episode_sd * rng.standard_normal()))
            episodes.append({"episode_index": 100 + i, "task": TASKS[i % 2], "mse": mse, "mae": mse ** 0.5,
                             "n_steps": 64, "per_key": {}})
        metrics = {"checkpoint": str(run / "checkpoint-30"), "dataset": "sim", "split": "heldout",
                   "action_horizon": 16, "steps": 64, "overall": {}, "per_key": {}, "per_task": {},
                   "episodes": episodes, "svms": None}
        (run / "eval/open_loop").mkdir(parents=True)
        (run / "eval/open_loop/metrics.json").write_text(json.dumps(metrics))
    if success is not None:
        tasks = {t: {"episodes": n, "successes": k, "success_rate": k / n,
                     "wilson_95": list(stats.wilson_interval(k, n)), "mean_length": 50.0, "per_episode": []}
                 for t, (k, n) in success.items()}
        (run / "eval/closed_loop").mkdir(parents=True)
        (run / "eval/closed_loop/results.json").write_text(json.dumps({"checkpoint": "x", "tasks": tasks}))
    return run


def label_of(result, metric: str, scope: str = "overall", arm: str = "svms", reference: str = "baseline") -> str:
    return result.comparison(metric, scope, arm, reference).label


# --- statistics against hand-checked values ---------------------------------------------------------------------

def test_wilson_interval_known_values():
    assert stats.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_fisher_exact_known_values():
    assert stats.fisher_exact(((8, 2), (1, 5))) == pytest.approx(0.0350, abs=5e-5)  # = 0.034965, as in R / scipy
    assert stats.fisher_exact(((1, 5), (8, 2))) == stats.fisher_exact(((8, 2), (1, 5)))
    assert stats.fisher_exact(((18, 2), (6, 14))) < 0.05
    assert stats.fisher_exact(((10, 10), (11, 9))) == pytest.approx(1.0)
    assert stats.fisher_exact(((0, 0), (0, 0))) == 1.0


def test_newcombe_and_relative_change():
    lo, hi = stats.newcombe_interval(18, 20, 6, 20)
    assert lo < 0.6 < hi and lo > 0
    assert stats.relative_change(80.0, 100.0) == pytest.approx(-20.0)
    assert np.isnan(stats.relative_change(1.0, 0.0))


def test_label_rules():
    common = {"min_n": 10, "higher_is_better": False, "equivalence": (-10.0, 10.0)}
    assert stats.label(seeds=(3, 3), n=20, delta=-0.2, ci=(-25.0, -15.0), **common) == stats.IMPROVED
    assert stats.label(seeds=(3, 3), n=20, delta=0.2, ci=(15.0, 25.0), **common) == stats.REGRESSED
    assert stats.label(seeds=(3, 3), n=20, delta=0.0, ci=(-4.0, 4.0), **common) == stats.NO_CHANGE
    assert stats.label(seeds=(3, 3), n=20, delta=0.0, ci=(-14.0, 4.0), **common) == stats.UNDERPOWERED
    assert stats.label(seeds=(1, 3), n=20, delta=-0.2, ci=(-25.0, -15.0), **common) == stats.UNDERPOWERED
    assert stats.label(seeds=(3, 3), n=5, delta=-0.2, ci=(-25.0, -15.0), **common) == stats.UNDERPOWERED
    rate = {"min_n": 20, "higher_is_better": True}
    assert stats.label(seeds=(2, 2), n=20, delta=0.6, ci=(0.3, 0.8), p=0.0002, **rate) == stats.IMPROVED
    assert stats.label(seeds=(2, 2), n=20, delta=-0.6, ci=(-0.8, -0.3), p=0.0002, **rate) == stats.REGRESSED
    assert stats.label(seeds=(2, 2), n=20, delta=0.05, ci=(-0.25, 0.35), p=1.0, **rate) == stats.NO_CHANGE


# --- comparisons of synthetic runs with known answers ------------------------------------------------------------

def test_known_improvement_is_improved(tmp_path):
    runs = [make_run(tmp_path, "baseline", s) for s in range(3)]
    runs += [make_run(tmp_path, "svms", s, scale=0.8) for s in range(3)]
    result = compare(runs)
    assert label_of(result, "open_loop_mse") == "improved"
    assert label_of(result, "open_loop_mae") == "improved"
    mse = next(c for c in result.comparisons if c.metric == "open_loop_mse" and c.scope == "overall")
    assert mse.relative_pct == pytest.approx(-20.0, abs=3.0)
    assert mse.relative_lo < mse.relative_pct < mse.relative_hi < 0
    assert {c.scope for c in result.comparisons if c.metric == "open_loop_mse"} == {"overall", *TASKS}


@pytest.mark.parametrize("data_seed", [0, 1, 2])
def test_noise_is_no_significant_change(tmp_path, data_seed):
    runs = [make_run(tmp_path, arm, s, data_seed=data_seed) for arm in ("baseline", "svms") for s in range(3)]
    result = compare(runs)
    assert label_of(result, "open_loop_mse") == "no significant change"


def test_one_seed_per_arm_is_underpowered(tmp_path):
    result = compare([make_run(tmp_path, "baseline", 0), make_run(tmp_path, "svms", 0, scale=0.8)])
    assert label_of(result, "open_loop_mse") == "underpowered"


def test_seed_spread_is_not_taken_for_an_effect(tmp_path):
    """SVMS is 4.5 % better on every episode, but seeds of one arm differ by 20 %: not an improvement."""
    runs = [make_run(tmp_path, "baseline", s, offset=o, episode_sd=0.0) for s, o in enumerate((1.0, 1.1, 1.2))]
    runs += [make_run(tmp_path, "svms", s, offset=o, episode_sd=0.0) for s, o in enumerate((0.95, 1.05, 1.15))]
    assert label_of(compare(runs), "open_loop_mse") == "underpowered"


def test_success_rates(tmp_path):
    runs = [make_run(tmp_path, "baseline", s, success={"Lift": (3, 10)}, open_loop=False) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, success={"Lift": (9, 10)}, open_loop=False) for s in range(2)]
    runs += [make_run(tmp_path, "svms-no-aux", s, success={"Lift": (5 + s, 10)}, open_loop=False) for s in range(2)]
    result = compare(runs)
    svms = next(c for c in result.comparisons if c.arm == "svms")
    assert svms.p < 0.05 and svms.p == pytest.approx(stats.fisher_exact(((18, 2), (6, 14))))
    assert svms.label == "improved"
    baseline = result.stat("success", "overall", "baseline")
    assert (baseline.successes, baseline.n) == (6, 20)
    assert (baseline.lo, baseline.hi) == pytest.approx(stats.wilson_interval(6, 20))
    same = [make_run(tmp_path / "b", "baseline", s, success={"Lift": (5 + s, 10)}, open_loop=False) for s in range(2)]
    same += [make_run(tmp_path / "b", "svms", s, success={"Lift": (5, 10)}, open_loop=False) for s in range(2)]
    assert label_of(compare(same), "success") == "no significant change"  # 10/20 vs 11/20


def test_per_task_and_pooled_success(tmp_path):
    runs = [make_run(tmp_path, "baseline", s, success={"Lift": (5, 10), "Stack": (2, 10)}) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, success={"Lift": (10, 10), "Stack": (3, 10)}) for s in range(2)]
    result = compare(runs)
    assert result.scopes("success") == ["overall", "Lift", "Stack"]
    assert result.stat("success", "overall", "svms").successes == 26
    assert label_of(result, "success", "Lift") == "improved"
    assert label_of(result, "success", "Stack") == "no significant change"


def test_ablations_are_compared_with_the_baseline_and_with_full_svms(tmp_path):
    """SVMS is 20 % better; without the sheaf the gain is gone (regressed vs SVMS), without aux it stays."""
    runs = [make_run(tmp_path, "baseline", s) for s in range(3)]
    runs += [make_run(tmp_path, "svms", s, scale=0.8) for s in range(3)]
    runs += [make_run(tmp_path, "svms-no-sheaf", s) for s in range(3)]
    runs += [make_run(tmp_path, "svms-no-aux", s, scale=0.8) for s in range(3)]
    result = compare(runs)
    assert label_of(result, "open_loop_mse", arm="svms-no-sheaf") == "no significant change"
    assert label_of(result, "open_loop_mse", arm="svms-no-sheaf", reference="svms") == "regressed"
    assert label_of(result, "open_loop_mse", arm="svms-no-aux") == "improved"
    assert label_of(result, "open_loop_mse", arm="svms-no-aux", reference="svms") == "no significant change"
    assert result.comparison("open_loop_mse", "overall", "svms", "svms") is None
    text = write_report(result, tmp_path / "out").read_text()
    ablations = text.split("## Ablations against full SVMS")[1].split("\n## ")[0]
    assert "| open-loop MSE | overall | svms-no-sheaf |" in ablations and "**regressed**" in ablations
    assert "As measured, svms against the baseline" in text


def test_open_and_closed_loop_share_task_scopes(tmp_path):
    """Open-loop episodes and rollouts both name simulated tasks (Lift, Stack): one scope per task for both."""
    runs = [make_run(tmp_path, arm, s, success={"Lift": (5, 10), "Stack": (2, 10)})
            for arm in ("baseline", "svms") for s in range(2)]
    result = compare(runs)
    assert result.scopes("open_loop_mse") == result.scopes("success") == ["overall", "Lift", "Stack"]


def test_missing_eval_and_earlier_phases_are_noted(tmp_path):
    runs = [make_run(tmp_path, "baseline", 0, phase="scratch", open_loop=False)]
    runs += [make_run(tmp_path, "baseline", s) for s in range(2)]
    runs += [make_run(tmp_path, "svms", 0, phase=p, open_loop=False) for p in ("1", "2")]
    runs += [make_run(tmp_path, "svms", s, scale=0.8, open_loop=s < 2) for s in range(3)]
    result = compare(runs)
    assert [r.seed for r in result.arms["svms"]] == [0, 1, 2]
    assert result.stat("open_loop_mse", "overall", "svms").seeds == (0, 1)
    assert any("svms seed 2" in n and "no eval/open_loop/metrics.json" in n for n in result.notes)
    assert any(n.startswith("svms: compared at phase 3") for n in result.notes)
    assert any(n.startswith("baseline: compared at phase 3") for n in result.notes)


# --- report, figures, command -----------------------------------------------------------------------------------

def test_report_and_figures_are_written(tmp_path, capsys):
    runs = [make_run(tmp_path / "runs", "baseline", s, success={"Lift": (3, 10)}) for s in range(3)]
    runs += [make_run(tmp_path / "runs", "svms", s, scale=0.8, success={"Lift": (9, 10)}) for s in range(3)]
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures/router_heatmap.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # written by open-loop eval
    assert EvalCompare(runs=tuple(runs), out=out).run() == 0
    text = (out / "report.md").read_text()
    assert "As measured, svms against the baseline: open-loop MSE **improved**" in text
    assert "closed-loop success **improved** (27/30" in text
    for name in ("open_loop_error", "closed_loop_success", "training_curves", "router_heatmap"):
        assert f"(figures/{name}.png)" in text
        assert (out / f"figures/{name}.png").read_bytes().startswith(b"\x89PNG")
    data = json.loads((out / "comparison.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in json"))
    assert {c["label"] for c in data["comparisons"]} == {"improved"}
    printed = capsys.readouterr().out
    assert "report:" in printed and "improved" in printed


def test_report_averages_svms_diagnostics_over_seeds(tmp_path):
    runs = [make_run(tmp_path, arm, s) for arm in ("baseline", "svms") for s in range(2)]
    for seed, run in enumerate(runs[2:]):  # the svms runs: residual 0.2 / 0.4, aux visual 0.6 / 0.8
        path = run / "eval/open_loop/metrics.json"
        metrics = json.loads(path.read_text())
        metrics["svms"] = {
            "router_mean": {"text": {"visual": 0.5, "temporal": 0.3 - 0.1 * seed, "state": 0.2 + 0.1 * seed}},
            "sheaf_residual": {"mean": 0.2 * (seed + 1)},
            "aux": {"visual": {"balanced_accuracy": 0.6 + 0.2 * seed}, "state": {"balanced_accuracy": 0.5}},
        }
        path.write_text(json.dumps(metrics))
    text = write_report(compare(runs), tmp_path / "out").read_text()
    section = text.split("## SVMS diagnostics")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| svms") or line.startswith("| baseline")]
    assert rows == ["| svms | 2 | 0.3 | visual 0.50, temporal 0.25, state 0.25 | visual 0.70, state 0.50 |"]


def test_cli_takes_runs_positionally(tmp_path):
    cmd = tyro.cli(EvalCompare, args=[str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    assert cmd.runs == (tmp_path / "a", tmp_path / "b") and cmd.out == tmp_path / "o"


def test_report_without_closed_loop(tmp_path):
    runs = [make_run(tmp_path, arm, s) for arm in ("baseline", "svms") for s in range(2)]
    path = write_report(compare(runs), tmp_path / "out")
    text = path.read_text()
    assert "closed-loop" not in text.split("## Notes")[0].split("**Verdict.**")[1].split("\n")[0]
    assert not (tmp_path / "out/figures/closed_loop_success.png").exists()
    assert "no eval/closed_loop/results.json" in text


@pytest.mark.parametrize(("setup", "message"), [
    (lambda root: [], "no runs given"),
    (lambda root: [make_run(root, "baseline", s) for s in range(2)], "only the baseline arm"),
    (lambda root: [make_run(root, "svms", s) for s in range(2)] + [make_run(root, "svms-no-aux", 0)],
     "no baseline run"),
    (lambda root: [make_run(root, "baseline", 0, open_loop=False), make_run(root, "svms", 0, open_loop=False)],
     "nothing to compare"),
    (lambda root: [make_run(root, "baseline", 0), make_run(root / "again", "baseline", 0),
                   make_run(root, "svms", 0)], "have seed 0"),
    (lambda root: [root / "missing", make_run(root, "svms", 0)], "is not a run folder"),
])
def test_bad_inputs(tmp_path, setup, message):
    with pytest.raises(SvmsError, match=message):
        compare(setup(tmp_path))


def test_eval_file_without_a_field(tmp_path):
    run = make_run(tmp_path, "svms", 0)
    metrics = json.loads((run / "eval/open_loop/metrics.json").read_text())
    del metrics["episodes"][3]["mse"]
    (run / "eval/open_loop/metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SvmsError, match="an episode has no 'mse' field"):
        compare([make_run(tmp_path, "baseline", 0), run])


def test_run_without_seed(tmp_path):
    run = make_run(tmp_path, "baseline", 0)
    config = json.loads((run / "config.json").read_text())
    del config["seed"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(SvmsError, match="has no 'seed'"):
        compare([run, make_run(tmp_path, "svms", 0)])
