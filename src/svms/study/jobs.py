"""A plan expanded into jobs: data generation, pretraining, per seed and arm the phase chain, evaluations of
each arm's last phase, and the comparison, each a process of its own, listed in an order that respects
their dependencies.

Budgets (`svms.protocol.ARMS`): an SVMS arm runs phases 1 -> 2 -> 3 with each phase's steps, and each phase
after the first starts at `--data-offset` = the samples its predecessors consumed (steps x batch), so the
phases together see one seeded stream; a single-phase arm (the baseline) gets the sum of the three phases'
steps at phase 3's batch; an arm's `step_fraction` scales its steps (the control: a quarter of the
baseline's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svms.model.config import Gr00tN1d6Config
from svms.protocol import ARMS, SVMS_PHASES
from svms.study.cache import cache_dir, key_of
from svms.study.plan import Plan

VERBS = {"generate": "generating data", "pretrain": "pretraining", "train": "training",
         "open_loop": "evaluating open-loop", "closed_loop": "evaluating closed-loop", "compare": "comparing"}
PRETRAIN_RUN = "pretrain"  # the study folder's copy of the pretraining run (config.json, metrics.jsonl)


@dataclass(frozen=True)
class Job:
    name: str  # unique in the study; also its state file's name
    kind: str  # a key of VERBS
    args: dict[str, Any]  # JSON-able arguments of the job function (svms.study.job)
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # what it writes in the study folder
    gpu: bool = True  # needs an accelerator (SLURM: gets the plan's gpus)

    @property
    def label(self) -> str:
        if self.kind in ("open_loop", "closed_loop"):
            return f"{VERBS[self.kind]} {Path(self.args['run']).name}"
        if self.kind == "generate":
            return f"{VERBS[self.kind]} {Path(self.args['out']).name}"
        return VERBS[self.kind] + (" -> report.md" if self.kind == "compare" else
                                   "" if self.kind == "pretrain" else f" {self.name}")

    @property
    def weight(self) -> float:
        """Its size for the ETA: optimizer steps for training, 1 otherwise."""
        return float(self.args.get("train", self.args).get("max_steps", 1))


@dataclass(frozen=True)
class Stint:
    """One training run of an arm: a phase with its steps and where it starts in the data stream."""

    phase: str
    steps: int
    batch: int
    data_offset: int


def arm_stints(plan: Plan, arm: str) -> list[Stint]:
    spec = ARMS[arm]
    total = sum(plan.phases[p].steps for p in SVMS_PHASES)
    stints, offset = [], 0
    for phase in spec.phases:
        base = total if len(spec.phases) == 1 else plan.phases[phase].steps
        steps = max(1, round(spec.step_fraction * base))
        stints.append(Stint(phase, steps, plan.phases[phase].batch, offset))
        offset += steps * plan.phases[phase].batch
    return stints


# `svms train` flags that change what a run shows or keeps, never its weights (resume is bitwise): left out of
# the pretraining cache key, so showing more progress does not retrain a cached checkpoint.
PRESENTATION_FLAGS = frozenset({"log_every", "tensorboard", "wandb", "save_every", "keep_checkpoints",
                                "num_workers"})


def run_name(arm: str, seed: int, phase: str) -> str:
    return f"{arm}-seed{seed}" if len(ARMS[arm].phases) == 1 else f"{arm}-seed{seed}-phase{phase}"


def data_folder(plan: Plan) -> Path:
    return plan.data.dataset if plan.data.dataset is not None else cache_dir() / f"demo-data-{plan.data.key()}"


@dataclass
class _Builder:
    plan: Plan
    out: Path
    jobs: list[Job] = field(default_factory=list)

    def add(self, job: Job) -> Job:
        self.jobs.append(job)
        return job

    def train_args(self, stage_flags: dict[str, Any], **kw: Any) -> dict[str, Any]:
        args = {**self.plan.flags, **stage_flags, "dataset": str(data_folder(self.plan)),
                "embodiment_tag": self.plan.data.embodiment_tag}
        args.update({k: v for k, v in kw.items() if v is not None})
        return args


def expand(plan: Plan, out: Path) -> list[Job]:
    """Every job of the plan, dependencies before dependents."""
    b = _Builder(plan, Path(out).resolve())
    data_deps: tuple[str, ...] = ()
    if plan.data.sim_tasks:
        d = plan.data
        b.add(Job("data", "generate", {"out": str(data_folder(plan)), "tasks": list(d.sim_tasks),
                                       "episodes": d.episodes, "heldout": d.heldout, "resolution": d.resolution,
                                       "cameras": list(d.cameras), "seed": d.seed, "workers": d.workers},
                  gpu=False))
        data_deps = ("data",)
    init, init_deps = (str(plan.model.init) if plan.model.init else None), data_deps
    if plan.pretrain is not None:
        p = plan.pretrain
        train = b.train_args(p.flags, phase="scratch", preset=plan.model.preset,
                             model_override=list(plan.model.overrides), max_steps=p.steps,
                             global_batch_size=p.batch, learning_rate=p.learning_rate, seed=p.seed)
        data_id = plan.data.key() if plan.data.sim_tasks else str(plan.data.dataset)
        determining = {k: v for k, v in train.items() if k not in PRESENTATION_FLAGS and k != "dataset"}
        # the preset's content, not only its name: a preset changed by a new version must not reuse old weights
        determining["preset_config"] = Gr00tN1d6Config.preset(plan.model.preset).to_dict() if plan.model.preset \
            else None
        cached = cache_dir() / f"pretrain-{key_of({'data': data_id, 'train': determining})}"
        b.add(Job("pretrain", "pretrain", {"train": train, "cache": str(cached),
                                           "copy_to": str(b.out / PRETRAIN_RUN)},
                  data_deps, (PRETRAIN_RUN,)))
        init, init_deps = str(cached), ("pretrain",)

    finals: list[str] = []
    runs = [PRETRAIN_RUN] if plan.pretrain is not None else []
    for seed in plan.seeds:
        for arm in plan.arms:
            prev, deps = init, init_deps
            for k, stint in enumerate(arm_stints(plan, arm)):
                name = run_name(arm, seed, stint.phase)
                stage = plan.phases[stint.phase]
                first = k == 0 and plan.model.init is not None  # a released checkpoint: apply the overrides
                args = b.train_args(stage.flags, phase=stint.phase, arm=arm, init=prev,
                                    model_override=list(plan.model.overrides) if first else None,
                                    max_steps=stint.steps, global_batch_size=stint.batch,
                                    learning_rate=stage.learning_rate, seed=seed, data_offset=stint.data_offset,
                                    out=str(b.out / name))
                b.add(Job(name, "train", args, deps, (name,)))
                runs.append(name)
                prev, deps = str(b.out / name), (name,)
            finals.append(Path(prev).name)

    ev, evals = plan.evaluation, []
    eval_data = plan.data.eval_dataset or data_folder(plan)
    for name in finals:
        run = b.out / name
        evals.append(b.add(Job(f"open-loop-{name}", "open_loop", {
            "run": str(run), "dataset": str(eval_data), "out": str(run / "eval" / "open_loop"), "split": ev.split,
            "steps": ev.open_loop_steps, "plots": ev.plots, "embodiment_tag": plan.data.embodiment_tag},
            (name,), (f"{name}/eval/open_loop",))).name)
    if ev.rollouts is not None:
        for name in finals:
            run = b.out / name
            evals.append(b.add(Job(f"closed-loop-{name}", "closed_loop", {
                "run": str(run), "tasks": list(ev.rollout_tasks or plan.data.sim_tasks), "episodes": ev.rollouts,
                "seed": ev.rollout_seed, "resolution": plan.data.resolution, "cameras": list(plan.data.cameras),
                "videos_per_task": ev.videos_per_task, "n_action_steps": ev.n_action_steps,
                "out": str(run / "eval" / "closed_loop")}, (name,), (f"{name}/eval/closed_loop",))).name)
    deps = tuple(dict.fromkeys([*(j.name for j in b.jobs if j.kind in ("train", "pretrain")), *evals]))
    b.add(Job("compare", "compare", {"runs": [str(b.out / r) for r in runs], "out": str(b.out)}, deps,
              ("report.md",), gpu=False))
    return b.jobs
