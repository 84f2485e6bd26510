"""Can the study see an effect? The positive control gates the SVMS labels; the minimum detectable effect (MDE)
matches closed forms and shrinks with seeds x episodes; a closed-loop baseline that never succeeds says nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from svms.eval import significance as stats
from svms.eval.compare import compare, pairs, role
from svms.eval.report import verdict, write_report


def make_run(root: Path, arm: str, seed: int, *, scale: float = 1.0, episodes: int = 20, seed_sd: float = 0.02,
             episode_sd: float = 0.05, errors=None, success: tuple[int, int] | None = None,
             open_loop: bool = True) -> Path:
    """A run folder whose per-episode MSE = difficulty x scale x run factor x noise (or exactly `errors`)."""
    run = root / f"{arm}-seed{seed}"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"phase": "3", "seed": seed, "arm": arm, "svms": arm != "baseline"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "flow_loss": scale / s}) + "\n"
                                               for s in range(1, 6)))
    if open_loop:
        rng = np.random.default_rng([seed, *arm.encode()])
        difficulty = np.random.default_rng(7).lognormal(0.0, 0.5, episodes)  # the same episodes in every arm
        if errors is None:
            errors = difficulty * scale * (1 + seed_sd * rng.standard_normal()) * (
                1 + episode_sd * rng.standard_normal(episodes))
        rows = [{"episode_index": i, "task": "Lift", "mse": float(e), "mae": float(e) ** 0.5}
                for i, e in enumerate(errors)]
        (run / "eval/open_loop").mkdir()
        (run / "eval/open_loop/metrics.json").write_text(json.dumps({"split": "heldout", "episodes": rows}))
    if success is not None:
        k, n = success
        (run / "eval/closed_loop").mkdir()
        (run / "eval/closed_loop/results.json").write_text(json.dumps({"tasks": {"Lift": {"successes": k,
                                                                                           "episodes": n}}}))
    return run


def study(root: Path, *, control: float | None, svms: float = 0.8, seeds: int = 3, **kw) -> list[Path]:
    runs = [make_run(root, "baseline", s, **kw) for s in range(seeds)]
    runs += [make_run(root, "svms", s, scale=svms, **kw) for s in range(seeds)]
    if control is not None:
        runs += [make_run(root, "control", s, scale=control, **kw) for s in range(seeds)]
    return runs


def label(result, arm="svms", metric="open_loop_mse", scope="overall", reference="baseline"):
    return result.comparison(metric, scope, arm, reference).label


# --- the registry decides who is compared with whom --------------------------------------------------------------

def test_pairs_and_roles_come_from_the_protocol_registry():
    assert role("baseline") == "baseline" and role("svms") == "treatment" and role("svms-no-aux") == "ablation"
    assert role("control") == "control" and role("control-half") == "control" and role("my-arm") == "treatment"
    arms = ["baseline", "svms", "svms-no-sheaf", "control"]
    assert pairs(arms) == [("svms", "baseline"), ("svms-no-sheaf", "baseline"), ("control", "baseline"),
                           ("svms-no-sheaf", "svms")]
    assert pairs(["baseline", "svms-no-sheaf"]) == [("svms-no-sheaf", "baseline")]  # no full SVMS to compare with


# --- the positive control --------------------------------------------------------------------------------------

def test_detected_control_lets_svms_have_a_verdict(tmp_path):
    result = compare(study(tmp_path, control=1.3))
    assert label(result, "control") == "regressed" and label(result, "control", "open_loop_mae") == "regressed"
    assert label(result) == "improved"
    check = result.power_check("open_loop_mse")
    assert check.detected is True and check.controls == ("control",) and check.mde_arm == "svms"
    text = verdict(result)
    assert text.startswith("As measured, svms against the baseline: open-loop MSE **improved**")
    assert "The study can see an effect: the positive control came out control **regressed**" in text
    report = write_report(result, tmp_path / "out").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| control |") and "**" in line]
    assert len(rows) == 2 and all("**regressed**" in row for row in rows)  # MSE and MAE tables
    data = json.loads((tmp_path / "out/comparison.json").read_text())
    assert data["minimum_detectable_effect"]["open_loop_mse"]["unit"] == "%"
    assert data["minimum_detectable_effect"]["open_loop_mse"]["value"] == pytest.approx(check.mde)
    assert [p["detected"] for p in data["power"]] == [True, True]


def test_undetected_control_means_no_verdict_on_svms(tmp_path):
    """The control is as good as the baseline: the study cannot see a known effect, so SVMS gets no label."""
    runs = study(tmp_path, control=1.0)
    runs += [make_run(tmp_path, "svms-no-aux", s, scale=1.0) for s in range(3)]
    result = compare(runs)
    assert label(result, "control") == "no significant change"
    assert result.power_check("open_loop_mse").detected is False
    svms = result.comparison("open_loop_mse", "overall", "svms")
    assert svms.label == "underpowered" and svms.test_label == "improved"
    assert label(result, "svms-no-aux", reference="svms") == "underpowered"
    assert label(result, "control") == "no significant change"  # the control itself is not gated
    text = verdict(result)
    assert text.startswith("No verdict on svms: the positive control came out control **no significant change**")
    assert "underpowered for the SVMS comparison" in text and "minimum detectable effect" in text
    report = write_report(result, tmp_path / "out").read_text()
    assert "**underpowered** (test alone: improved)" in report
    assert any("positive control was not detected" in n for n in result.notes)
    data = json.loads((tmp_path / "out/comparison.json").read_text())
    assert {c["label"] for c in data["comparisons"] if c["arm"] != "control"} == {"underpowered"}


def test_without_a_control_power_is_unknown_and_labels_stand(tmp_path):
    result = compare(study(tmp_path, control=None))
    assert label(result) == "improved"
    assert result.power_check("open_loop_mse").detected is None
    assert verdict(result).startswith("No positive control: power unknown. As measured, svms")


def test_control_without_the_headline_metric_leaves_power_unknown(tmp_path):
    runs = [make_run(tmp_path, "baseline", s, success=(5, 10)) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, scale=0.8) for s in range(2)]
    runs += [make_run(tmp_path, "control", s, success=(0, 10), open_loop=False) for s in range(2)]
    result = compare(runs)
    assert label(result) == "improved" and result.power_check("open_loop_mse").detected is None
    assert verdict(result).startswith("The positive control (control) has no open-loop MSE result: power unknown.")
    assert any("control arm(s) control have no result" in n for n in result.notes)


def test_control_gates_each_metric_on_its_own(tmp_path):
    """Detected on open-loop error, not on success (10/20 vs 10/20): only the success labels lose their verdict."""
    runs = [make_run(tmp_path, "baseline", s, success=(5, 10)) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, scale=0.8, success=(10, 10)) for s in range(2)]
    runs += [make_run(tmp_path, "control", s, scale=1.3, success=(5, 10)) for s in range(2)]
    result = compare(runs)
    assert label(result) == "improved" and result.power_check("open_loop_mse").detected
    success = result.comparison("success", "overall", "svms")
    assert (success.test_label, success.label) == ("improved", "underpowered")
    assert result.power_check("success").detected is False
    assert "closed-loop success **underpowered**" in verdict(result)


def test_closed_loop_baseline_that_never_succeeds_says_nothing(tmp_path):
    """0/20 in every arm: not "no significant change" but underpowered, with a note that the baseline has not
    learned; the control cannot regress from zero either, so the closed-loop control is not detected."""
    runs = [make_run(tmp_path, arm, s, success=(0, 10), open_loop=False)
            for arm in ("baseline", "svms", "control") for s in range(2)]
    result = compare(runs)
    for arm in ("svms", "control"):
        c = result.comparison("success", "overall", arm)
        assert c.test_label == "no significant change" and c.label == "underpowered"
    assert any("baseline succeeded in 0/20 trials, so it has not learned the task" in n for n in result.notes)
    assert result.power_check("success").detected is False
    assert verdict(result).startswith("No verdict on svms") and "closed-loop success" in verdict(result)
    assert result.power_check("success").mde == pytest.approx(100 * stats.mde_two_proportions(0.0, 20, 20))


def test_a_real_closed_loop_effect_at_the_floor_is_still_detected(tmp_path):
    runs = [make_run(tmp_path, "baseline", s, success=(0, 10), open_loop=False) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, success=(9, 10), open_loop=False) for s in range(2)]
    assert label(compare(runs), metric="success") == "improved"


# --- minimum detectable effect -----------------------------------------------------------------------------------

@pytest.mark.parametrize("episodes", [20, 80])
def test_open_loop_mde_matches_the_closed_form(tmp_path, episodes):
    """Baseline error 1 on every episode and seed, SVMS 1 ± 0.1 alternating (the same in every seed): seed
    resampling changes nothing, the bootstrap SE of the change is 100·0.1/√n %, the MDE 2.80 times that."""
    sigma = 0.1
    treat = 1.0 + sigma * np.where(np.arange(episodes) % 2 == 0, 1.0, -1.0)
    runs = [make_run(tmp_path, "baseline", s, errors=np.ones(episodes)) for s in range(2)]
    runs += [make_run(tmp_path, "svms", s, errors=treat) for s in range(2)]
    check = compare(runs).power_check("open_loop_mse")
    expected = (stats.Z_95 + stats.Z_POWER) * 100 * sigma / math.sqrt(episodes)
    assert check.mde == pytest.approx(expected, rel=0.03)
    assert (check.seeds, check.n) == (2, episodes)


def test_open_loop_mde_shrinks_with_seeds_and_episodes(tmp_path):
    def mde(seeds, episodes):
        root = tmp_path / f"{seeds}x{episodes}"
        return compare(study(root, control=1.3, seeds=seeds, episodes=episodes)).power_check("open_loop_mse").mde

    small, more_episodes, more_both = mde(2, 10), mde(2, 60), mde(6, 60)
    assert small > more_episodes > more_both > 0


def test_two_proportion_mde_known_values():
    # textbook sample size: 50 % vs 65 % needs 170 trials per arm at alpha 0.05, power 0.8 (no continuity correction)
    assert stats.mde_two_proportions(0.5, 170, 170) == pytest.approx(0.15, abs=0.002)
    assert stats.mde_two_proportions(0.8, 170, 170) == pytest.approx(stats.mde_two_proportions(0.2, 170, 170))
    assert stats.mde_two_proportions(0.3, 20, 20) > stats.mde_two_proportions(0.3, 80, 80)
    assert 0 < stats.mde_two_proportions(0.0, 20, 20) < 0.5  # from a floor of 0 % an increase is still detectable
    assert math.isnan(stats.mde_two_proportions(0.0, 3, 3))  # 3/3 vs 0/3 is not significant by Fisher: nothing is
    d = stats.mde_two_proportions(0.4, 50, 60)
    p1, pbar = 0.4 + d, (50 * 0.4 + 60 * (0.4 + d)) / 110  # d solves the power equation (to the grid's step)
    needed = (stats.Z_95 * math.sqrt(pbar * (1 - pbar) * (1 / 50 + 1 / 60))
              + stats.Z_POWER * math.sqrt(0.4 * 0.6 / 50 + p1 * (1 - p1) / 60))
    assert d == pytest.approx(needed, abs=1e-3)


def test_report_states_the_mde_in_both_units(tmp_path):
    runs = [make_run(tmp_path, "baseline", s, success=(4, 10)) for s in range(2)]
    runs += [make_run(tmp_path, arm, s, scale=sc, success=(k, 10))
             for arm, sc, k in (("svms", 0.8, 5), ("control", 1.3, 0)) for s in range(2)]
    result = compare(runs)
    report = write_report(result, tmp_path / "out").read_text()
    lines = [line for line in report.splitlines() if line.startswith("Minimum detectable effect")]
    assert len(lines) == 1
    mse, success = result.power_check("open_loop_mse"), result.power_check("success")
    assert f"open-loop MSE {mse.mde:.1f} % of the baseline's error (2 seeds × 20 episodes)" in lines[0]
    assert f"closed-loop success {success.mde:.1f} points (at the baseline's 40 % of 20 trials)" in lines[0]
    assert success.mde == pytest.approx(100 * stats.mde_two_proportions(0.4, 20, 20))
    assert "minimum detectable effect" in report  # the table header, which checks look for
