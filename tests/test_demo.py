"""`svms demo --quick`: the whole study end to end (needs the `sim` extra; the README's set-up installs it)."""

from __future__ import annotations

import importlib.util
import json

import pytest

# find_spec, not importorskip: importing robosuite here would initialise MuJoCo before svms.sim picks
# its offscreen GL back-end.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("robosuite") is None,
                                reason="needs the sim extra (robosuite)")


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
