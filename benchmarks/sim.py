"""Simulated data and closed-loop evaluation speed: generation episodes per minute (1 worker against
N workers, measured in the same run) and rollout steps per second with the zero policy.

Run: .venv/bin/python benchmarks/sim.py [--tasks Lift PickPlaceCan Door --episodes 4 --resolution 64]
Generation times include process start-up and environment construction, as a user sees them.
Needs the `sim` extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from svms.sim.check_policies import ZeroPolicy
from svms.sim.generate import generate
from svms.sim.rollout import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", nargs="+", default=["Lift", "PickPlaceCan", "Door"])
    ap.add_argument("--episodes", type=int, default=4, help="per task")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--cameras", nargs="+", default=["res256_image_side_0", "res256_image_wrist_0"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    table = Table("what", "workers", "episodes", "seconds", "episodes/min", "vs 1 worker",
                  title=f"svms.sim at {args.resolution}x{args.resolution}, {len(args.cameras)} cameras")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers}):
            report = generate(Path(tmp) / f"w{workers}", args.tasks, args.episodes, resolution=args.resolution,
                              workers=workers, cameras=args.cameras, progress=False)
            rate = report.episodes_per_minute
            base = base or rate
            table.add_row("generate", str(workers), str(sum(report.episodes.values())),
                          f"{report.seconds:.1f}", f"{rate:.1f}", f"{rate / base:.2f}x")
            rates = ", ".join(f"{t} {report.success_rate(t):.0%}" for t in report.episodes)
            Console().print(f"expert success ({workers} worker(s)): {rates}")
    start = time.perf_counter()
    results = evaluate(ZeroPolicy(), args.tasks, episodes=1, resolution=args.resolution,
                       cameras=args.cameras, progress=False)
    seconds = time.perf_counter() - start
    steps = sum(sum(r.lengths) for r in results)
    table.add_row("rollout (zero policy)", "1", str(len(results)), f"{seconds:.1f}",
                  f"{steps / seconds:.0f} steps/s", "")
    Console().print(table)


if __name__ == "__main__":
    main()
