"""`svms demo`: the whole baseline-vs-SVMS study on a CPU, end to end, with no downloads.

1. Simulated RoboCasa-style demonstrations (robosuite), cached and reused across runs.
2. A tiny GR00T N1.6 pretrained from scratch on the train split (the shared starting point).
3. From that checkpoint, per seed: the baseline fine-tune (phase 3, no SVMS) and the SVMS protocol
   (phases 1 -> 2 -> 3) with the same total number of optimizer steps; with `--ablations` also the
   protocol of each ablation arm (svms-no-sheaf, svms-no-router, svms-no-aux) with the same budget.
4. Open-loop error on the held-out episodes and closed-loop success in simulation for every arm.
5. `svms eval compare`: OUT/report.md and OUT/figures/*.png.

The tiny model sees 112-pixel images (the processor's `shortest_image_edge`), which keeps a CPU
run within minutes; everything else is the code path of full-size runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from svms.eval.compare import ABLATIONS, BASELINE, SVMS


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    tasks: tuple[str, ...]
    episodes: int  # per task, including held-out ones
    heldout: int  # per task
    resolution: int
    cameras: tuple[str, ...]
    pretrain_steps: int
    finetune_steps: int  # per arm and seed (SVMS: split over its three phases)
    batch: int
    seeds: tuple[int, ...]
    rollout_episodes: int  # per task and run
    image_edge: int = 112
    arms: tuple[str, ...] = (BASELINE, SVMS)  # baseline: phase 3 only; SVMS arms: phases 1 -> 2 -> 3

    def data_key(self) -> str:
        spec = json.dumps([self.tasks, self.episodes, self.heldout, self.resolution, self.cameras])
        return hashlib.sha1(spec.encode()).hexdigest()[:10]


QUICK = DemoPlan(tasks=("Lift",), episodes=6, heldout=2, resolution=64,
                 cameras=("res256_image_side_0", "res256_image_wrist_0"), pretrain_steps=120, finetune_steps=60,
                 batch=4, seeds=(0,), rollout_episodes=3)
FULL = DemoPlan(tasks=("Lift", "Door"), episodes=16, heldout=5, resolution=64,
                cameras=("res256_image_side_0", "res256_image_wrist_0"), pretrain_steps=300, finetune_steps=90,
                batch=8, seeds=(0, 1), rollout_episodes=5)


def demo_plan(quick: bool = False, ablations: bool = False) -> DemoPlan:
    """The plan of `svms demo [--quick] [--ablations]`: ablations add arms, with the SVMS arm's budgets and seeds."""
    plan = QUICK if quick else FULL
    return replace(plan, arms=plan.arms + ABLATIONS) if ablations else plan


@dataclass(frozen=True)
class FineTune:
    """One fine-tuning run of the demo, from the pretrained checkpoint or the previous phase's run."""

    name: str  # run folder under OUT
    arm: str
    phase: str
    seed: int
    steps: int
    init: str | None  # the previous phase's run folder; None: the pretrained checkpoint
    evaluate: bool  # the arm's last phase: evaluated open- and closed-loop
    data_offset: int = 0  # where in the seeded data stream the run starts (samples the earlier phases consumed)


def fine_tunes(plan: DemoPlan) -> list[FineTune]:
    """The runs in training order: per seed, the baseline (phase 3, all steps), then each SVMS arm's phases
    1 -> 2 -> 3 (a third of the steps each), so that every arm has the same optimizer-step budget. Each phase
    goes on in the data stream where the previous one stopped, so every arm of a seed trains on the same
    samples with the same flow-matching noise, in the same order: the comparison is paired down to the batch."""
    third = max(1, plan.finetune_steps // 3)
    jobs = []
    for seed in plan.seeds:
        for arm in plan.arms:
            if arm == BASELINE:
                jobs.append(FineTune(f"baseline-seed{seed}", arm, "3", seed, 3 * third, None, True))
                continue
            init = None
            for k, phase in enumerate(("1", "2", "3")):
                name = f"{arm}-seed{seed}-phase{phase}"
                jobs.append(FineTune(name, arm, phase, seed, third, init, phase == "3", k * third * plan.batch))
                init = name
    return jobs


def cache_dir() -> Path:
    return Path(os.environ.get("SVMS_CACHE", ".cache/svms"))


def _log(start: float, message: str) -> None:
    print(f"[demo {time.perf_counter() - start:6.1f}s] {message}", flush=True)


def _train(out: Path, data: Path, start: float, **kw) -> Path:
    from svms.train import TrainConfig
    from svms.train.trainer import train

    cfg = TrainConfig(dataset=data, out=out, tensorboard=False, log_every=10**6, save_every=10**6,
                      keep_checkpoints=1, **kw)
    final = train(cfg)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    _log(start, f"trained {out.name}: {last['step']} steps, loss {last['loss']:.4f}")
    return final


def _evaluate(run: Path, data: Path, plan: DemoPlan, start: float) -> None:
    from svms.eval.open_loop import run_open_loop
    from svms.sim.policies import load_policy
    from svms.sim.rollout import evaluate

    metrics = run_open_loop(run, data, run / "eval" / "open_loop", split="heldout", plots=1)
    policy = load_policy(run, seed=0, device="cpu")
    results = evaluate(policy, plan.tasks, plan.rollout_episodes, seed=1000, resolution=plan.resolution,
                       cameras=getattr(policy, "cameras", plan.cameras), out=run / "eval" / "closed_loop",
                       videos_per_task=1, progress=False)
    successes = sum(r.successes for r in results)
    total = sum(r.episodes for r in results)
    _log(start, f"evaluated {run.name}: open-loop MSE {metrics['overall']['mse']:.4f}, "
                f"closed-loop success {successes}/{total}")


def run_demo(out: Path, quick: bool = False, ablations: bool = False) -> Path:
    """Run the study into `out`; returns the report path."""
    from svms.eval.compare import compare
    from svms.eval.report import verdict, write_report
    from svms.sim.generate import generate
    from svms.sim.tasks import import_simulator

    import_simulator()  # fail now, with the install hint, if robosuite/mujoco are missing
    plan = demo_plan(quick, ablations)
    start = time.perf_counter()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # a demo is rerun from its cached data, never resumed half-way
    out.mkdir(parents=True)
    data = cache_dir() / f"demo-data-{plan.data_key()}"
    if not (data / "meta" / "info.json").is_file():
        _log(start, f"generating {plan.episodes} demonstrations per task of {', '.join(plan.tasks)} into {data}")
        report = generate(data, plan.tasks, plan.episodes, seed=0, resolution=plan.resolution, workers=2,
                          cameras=plan.cameras, overwrite=True, progress=False, heldout=plan.heldout)
        _log(start, f"generated {sum(report.episodes.values())} episodes ({report.episodes_per_minute:.1f}/min)")
    else:
        _log(start, f"reusing cached demonstrations {data}")

    base = _train(out / "pretrain", data, start, phase="scratch", preset="tiny", max_steps=plan.pretrain_steps,
                  global_batch_size=plan.batch, model_override=(f"shortest_image_edge={plan.image_edge}",), seed=0)
    jobs = fine_tunes(plan)
    checkpoints: dict[str | None, Path] = {None: base}
    for job in jobs:
        checkpoints[job.name] = _train(out / job.name, data, start, phase=job.phase, arm=job.arm,
                                       init=checkpoints[job.init], max_steps=job.steps, data_offset=job.data_offset,
                                       global_batch_size=plan.batch, seed=job.seed, learning_rate=1e-4)
    for job in jobs:
        if job.evaluate:
            _evaluate(out / job.name, data, plan, start)
    runs = [out / job.name for job in jobs]
    heatmaps = sorted(out.glob("svms-seed*-phase3/eval/open_loop/figures/router_heatmap.png"))
    if heatmaps:
        (out / "figures").mkdir(exist_ok=True)
        shutil.copy(heatmaps[0], out / "figures" / "router_heatmap.png")
    result = compare([out / "pretrain", *runs])
    report = write_report(result, out)
    _log(start, f"report: {report}")
    print(verdict(result))
    return report

