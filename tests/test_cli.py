"""The `svms` command: help, a working subcommand, and clean errors."""

from __future__ import annotations

import pytest

from svms.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "sheaf-demo" in capsys.readouterr().out


def test_sheaf_demo_learns_the_toy_task(capsys):
    assert main(["sheaf-demo", "--steps", "60", "--log-every", "30"]) == 0
    out = capsys.readouterr().out
    assert "step 60/60" in out


def test_toy_task_error_falls_below_the_identity():
    from svms.sheaf.toy import baseline_mse, run_toy

    reports = run_toy(steps=120, log_every=120)
    assert reports[-1].task_mse < 0.5 * baseline_mse()
    assert reports[-1].own_stream_weight > 1 / 3


def test_bad_config_value_is_a_clean_error(capsys):
    assert main(["sheaf-demo", "--n-streams", "1", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "n_streams" in err and "Traceback" not in err


def test_demo_help_offers_ablations(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--ablations" in out and "--quick" in out
