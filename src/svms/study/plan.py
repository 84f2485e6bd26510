"""A study plan: what `svms study PLAN` trains and evaluates, read from TOML and checked before anything runs.

A plan names the data (a dataset folder and embodiment tag, or simulated tasks to generate), the model (a preset
pretrained from scratch first, or an `init` checkpoint such as a local copy of nvidia/GR00T-N1.6-3B), the arms
(from `svms.protocol.ARMS`; baseline and a control are required), the seeds, per phase the steps, batch,
learning rate and any other `svms train` flag, the evaluation and the launcher. Every number lives in the plan
file (`svms/study/plans/*.toml` for the built-in ones), none in code. The dataclasses check their values at
construction; `load_plan` also rejects unknown keys and wrong types, naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svms.errors import SvmsError
from svms.model.presets import PRESETS
from svms.protocol import ARMS, SVMS_PHASES
from svms.sim.tasks import TASKS
from svms.study.toml_table import Table
from svms.train.config import TrainConfig

BUILTIN = Path(__file__).with_name("plans")
LAUNCHERS = ("local", "slurm")

# TrainConfig fields the study sets per job, and the plan key that sets them instead.
RESERVED_FLAGS = {
    "dataset": "[data] dataset", "out": "the study (run folders)", "phase": "the arm's phases",
    "svms": "the arm", "arm": "arms", "init": "[model] init", "preset": "[model] preset",
    "model_override": "[model] overrides", "max_steps": "steps", "global_batch_size": "batch",
    "learning_rate": "learning_rate", "seed": "seeds", "data_offset": "the study (phases chain)",
    "embodiment_tag": "[data] embodiment_tag", "resolved": "the trainer",
}


# Bumped whenever `svms sim generate` writes different data for the same arguments. 2: continuous end-effector
# quaternions through scipy, state keys in the release's order. 3: episode seeds from `svms.seeding`'s scheme.
SIM_DATA_VERSION = 3


@dataclass(frozen=True)
class Data:
    """A dataset folder (and optionally another for open-loop evaluation), or simulated tasks to generate."""

    dataset: Path | None = None
    eval_dataset: Path | None = None
    embodiment_tag: str = "new_embodiment"
    sim_tasks: tuple[str, ...] = ()
    episodes: int = 0  # per task, held-out ones included
    heldout: int = 0  # per task
    resolution: int = 64
    cameras: tuple[str, ...] = ()
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if (self.dataset is None) == (not self.sim_tasks):
            raise SvmsError("[data]: name either dataset = \"DIR\" (a LeRobot v2 folder) or sim_tasks = [...] "
                            "(robosuite tasks to generate), exactly one")
        if self.dataset is not None:
            return

        for task in self.sim_tasks:
            if task not in TASKS:
                raise SvmsError(f"[data] sim_tasks: unknown task {task!r}; use some of {', '.join(TASKS)}")
        if self.episodes < 2 or not 1 <= self.heldout < self.episodes:
            raise SvmsError(f"[data] episodes = {self.episodes}, heldout = {self.heldout}: generate at least 2 "
                            "episodes per task and hold out at least 1 but fewer than episodes")
        if self.resolution < 16 or self.workers < 1 or self.seed < 0:
            raise SvmsError("[data] resolution must be >= 16, workers >= 1 and seed >= 0")

    def key(self) -> str:
        """The cache key of generated data: everything `svms sim generate` is given, and the version of what it
        writes (`SIM_DATA_VERSION`), so data written by an older generator are never reused."""
        spec: list[Any] = [list(self.sim_tasks), self.episodes, self.heldout, self.resolution, list(self.cameras)]
        if self.seed:
            spec.append(self.seed)
        spec.append(SIM_DATA_VERSION)
        return hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Model:
    """A preset (pretrained from scratch by the study) or a checkpoint to start every arm from."""

    preset: str | None = None
    init: Path | None = None
    overrides: tuple[str, ...] = ()  # model-config KEY=JSON (`svms train --model-override`)

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.init is None):
            raise SvmsError("[model]: name either preset = \"tiny\" (with a [pretrain] table) or init = \"CKPT\" "
                            "(e.g. a local copy of nvidia/GR00T-N1.6-3B), exactly one")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise SvmsError(f"[model] preset: unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        for item in self.overrides:
            if "=" not in item or item.startswith("="):
                raise SvmsError(f"[model] overrides: {item!r} is not KEY=JSON, e.g. \"shortest_image_edge=112\"")


@dataclass(frozen=True)
class Stage:
    """One training stage: pretraining from scratch or a fine-tuning phase."""

    where: str  # its TOML table, for errors
    steps: int
    batch: int
    learning_rate: float | None = None  # None: the phase default of `svms.protocol.PHASE_DEFAULTS`
    flags: dict[str, Any] = field(default_factory=dict)  # more `svms train` flags for this stage
    seed: int = 0  # pretraining only: its seed (fine-tunes take the plan's seeds)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise SvmsError(f"[{self.where}] steps and batch must be >= 1, got {self.steps} and {self.batch}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise SvmsError(f"[{self.where}] learning_rate must be > 0, got {self.learning_rate}")
        if self.seed < 0:
            raise SvmsError(f"[{self.where}] seed must be >= 0, got {self.seed}")
        check_flags(self.flags, f"{self.where}.flags")


@dataclass(frozen=True)
class Evaluation:
    """After training, each arm's last phase: open-loop error on `split`, and `rollouts` episodes per task in
    simulation (None: no simulator, e.g. RoboCasa data)."""

    split: str = "heldout"
    open_loop_steps: int = 200
    plots: int = 1
    rollouts: int | None = None
    rollout_tasks: tuple[str, ...] = ()  # default: the plan's sim_tasks
    rollout_seed: int = 1000
    videos_per_task: int = 1
    n_action_steps: int = 8

    def __post_init__(self) -> None:
        if self.rollouts is not None and self.rollouts < 1:
            raise SvmsError(f"[evaluation] rollouts = {self.rollouts}: use a count >= 1 or \"none\"")
        if self.open_loop_steps < 1 or self.plots < 0 or self.videos_per_task < 0 or self.n_action_steps < 1:
            raise SvmsError("[evaluation] open_loop_steps and n_action_steps must be >= 1, plots and "
                            "videos_per_task >= 0")


@dataclass(frozen=True)
class Launcher:
    """Where jobs run: `local` (this machine; `svms study --gpus` runs one job per GPU) or `slurm` (submitit:
    one SLURM job per study job, with `afterok` dependencies)."""

    kind: str = "local"
    partition: str | None = None
    time_min: int = 240  # per job
    gpus: int = 1  # per training/evaluation job
    cpus: int = 8
    mem_gb: float | None = None
    additional: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account = "x"}

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise SvmsError(f"[launcher] kind: {self.kind!r} is not a launcher; use one of {', '.join(LAUNCHERS)}")
        if self.time_min < 1 or self.gpus < 0 or self.cpus < 1:
            raise SvmsError("[launcher] time must be >= 1 minute, gpus >= 0 and cpus >= 1")


@dataclass(frozen=True)
class Plan:
    name: str
    data: Data
    model: Model
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    phases: dict[str, Stage]  # "1", "2", "3"
    pretrain: Stage | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # every training job, pretraining included
    evaluation: Evaluation = Evaluation()
    launcher: Launcher = Launcher()
    description: str = ""
    source: str = ""  # the file it came from (not part of its identity)

    def __post_init__(self) -> None:
        for arm in self.arms:
            if arm not in ARMS:
                raise SvmsError(f"arms: unknown arm {arm!r}; use some of {', '.join(ARMS)}")
        if len(set(self.arms)) != len(self.arms):
            raise SvmsError(f"arms: {list(self.arms)} names an arm twice; list each once")
        if "baseline" not in self.arms:
            raise SvmsError("arms: the baseline is missing; every arm is compared with it, so add \"baseline\"")
        if not any(ARMS[a].role == "control" for a in self.arms):
            controls = [a for a, arm in ARMS.items() if arm.role == "control"]
            raise SvmsError(f"arms: no control arm; add {controls[0]!r} (worse by construction: the study shows "
                            "it can detect an effect only if the report labels it regressed)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise SvmsError(f"seeds: {list(self.seeds)}: list one or more distinct seeds >= 0")
        if sorted(self.phases) != sorted(SVMS_PHASES):
            raise SvmsError(f"[phases]: has {sorted(self.phases)}; define [phases.1], [phases.2] and [phases.3] "
                            "(the baseline's phase-3 budget is the sum of their steps)")
        if (self.pretrain is None) != (self.model.preset is None):
            raise SvmsError("[pretrain]: needed with [model] preset (a fresh model is pretrained from scratch "
                            "first) and not allowed with [model] init (the checkpoint is the starting point)")
        if self.evaluation.rollouts is not None and not (self.evaluation.rollout_tasks or self.data.sim_tasks):
            raise SvmsError("[evaluation] rollouts: there are no sim_tasks to roll out; set rollout_tasks = [...] "
                            "or rollouts = \"none\"")
        check_flags(self.flags, "flags")
        for stage in [*self.phases.values(), *([self.pretrain] if self.pretrain else [])]:
            for name in stage.flags:
                if name in self.flags:
                    raise SvmsError(f"[{stage.where}.flags] {name}: also set in [flags]; keep one")
        for arm in self.arms:  # an arm's own flag (svms-no-aux: lambda_aux = 0) must not be overridden
            for name in {n for phase in ARMS[arm].phases for n in ARMS[arm].flags_for(phase)}:
                for where, flags in [("flags", self.flags)] + [(f"{s.where}.flags", s.flags)
                                                               for s in self.phases.values()]:
                    if name in flags:
                        raise SvmsError(f"[{where}] {name}: the arm {arm} sets it (its ablation); remove it "
                                        "from the plan or drop that arm")

    def check_paths(self) -> None:
        """The folders the plan names exist (separate from construction: a plan can be read elsewhere)."""
        for key, path in (("dataset", self.data.dataset), ("eval_dataset", self.data.eval_dataset)):
            if path is not None and not (path / "meta" / "info.json").is_file():
                raise SvmsError(f"[data] {key}: {path} is not a LeRobot v2 dataset (no meta/info.json); "
                                "fix the path (relative paths are relative to the current folder)")
        if self.model.init is not None and not self.model.init.exists():
            raise SvmsError(f"[model] init: {self.model.init} does not exist; download the checkpoint there "
                            "(e.g. `huggingface-cli download nvidia/GR00T-N1.6-3B --local-dir DIR`) or fix the path")

    def identity(self) -> dict[str, Any]:
        """What determines the study's results: everything but the launcher and the file name."""
        d = dataclasses.asdict(self)
        d.pop("launcher"), d.pop("source"), d.pop("description")
        return json.loads(json.dumps(d, default=str))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def check_flags(flags: dict[str, Any], where: str) -> None:
    """Plan flags are `svms train` options (TrainConfig fields) of the right type, not ones the study sets."""
    hints = typing.get_type_hints(TrainConfig)
    for name, value in flags.items():
        if name in RESERVED_FLAGS:
            raise SvmsError(f"[{where}] {name}: set by the study; use {RESERVED_FLAGS[name]} instead")
        if name not in hints:
            import difflib

            near = difflib.get_close_matches(name, sorted(set(hints) - set(RESERVED_FLAGS)), n=1)
            raise SvmsError(f"[{where}] {name}: not an `svms train` option"
                            + (f"; did you mean {near[0]}?" if near else "; see `svms train --help`"))
        if not _fits(value, hints[name]):
            raise SvmsError(f"[{where}] {name}: {value!r} does not fit `svms train --{name.replace('_', '-')}` "
                            f"({_hint_name(hints[name])})")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if args and origin not in (tuple, list, dict):  # a union such as int | None
        return any(_fits(value, a) for a in args if a is not type(None))
    if origin in (tuple, list):
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    return False


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("pathlib.", "")


def builtin_plans() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.toml"))


def plan_path(spec: str | Path) -> Path:
    """A plan argument: a TOML file, or a built-in plan's name (`demo`, `demo-quick`)."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        return path
    if (BUILTIN / f"{spec}.toml").is_file():
        return BUILTIN / f"{spec}.toml"
    raise SvmsError(f"plan {spec!r} is neither a TOML file nor a built-in plan; use a path or one of "
                    f"{', '.join(builtin_plans())}")


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser().resolve()


def _stage(table: Table, where: str, with_seed: bool = False) -> Stage:
    flags = table.take("flags", dict, {})
    stage = Stage(where, table.take("steps", int), table.take("batch", int),
                  table.take("learning_rate", float, None), flags,
                  table.take("seed", int, 0) if with_seed else 0)
    table.done()
    return stage


def plan_from_table(top: Table, path: Path, arms_extra: tuple[str, ...]) -> Plan:
    """A plan from its parsed TOML table (`svms.study.loading.load_plan` reads the file and checks the jobs)."""
    name = top.take("name", str, path.stem)
    description = top.take("description", str, "")
    arms = tuple(top.take("arms", list, items=str)) + tuple(arms_extra)
    seeds = tuple(top.take("seeds", list, items=int))
    flags = top.take("flags", dict, {})

    t = top.table("data", required=True)
    data = Data(dataset=_path(t.take("dataset", str, None)), eval_dataset=_path(t.take("eval_dataset", str, None)),
                embodiment_tag=t.take("embodiment_tag", str, "new_embodiment"),
                sim_tasks=tuple(t.take("sim_tasks", list, [], items=str)), episodes=t.take("episodes", int, 0),
                heldout=t.take("heldout", int, 0), resolution=t.take("resolution", int, 64),
                cameras=tuple(t.take("cameras", list, [], items=str)), seed=t.take("seed", int, 0),
                workers=t.take("workers", int, 2))
    t.done()

    t = top.table("model", required=True)
    model = Model(preset=t.take("preset", str, None), init=_path(t.take("init", str, None)),
                  overrides=tuple(t.take("overrides", list, [], items=str)))
    t.done()

    t = top.table("pretrain")
    pretrain = _stage(t, "pretrain", with_seed=True) if t is not None else None

    phases_table = top.table("phases", required=True)
    phases = {}
    for key in list(phases_table.data):
        sub = phases_table.table(key)
        if key not in SVMS_PHASES:
            raise phases_table.error(key, f"not a fine-tuning phase; use {', '.join(SVMS_PHASES)}")
        phases[key] = _stage(sub, f"phases.{key}")
    phases_table.done()

    t = top.table("evaluation")
    evaluation = Evaluation()
    if t is not None:
        rollouts = t.take("rollouts", (int, str), None)
        if isinstance(rollouts, str) and rollouts != "none":
            raise t.error("rollouts", f"{rollouts!r}: use a number of episodes per task or \"none\"")
        evaluation = Evaluation(split=t.take("split", str, "heldout"),
                                open_loop_steps=t.take("open_loop_steps", int, 200),
                                plots=t.take("plots", int, 1), rollouts=None if rollouts == "none" else rollouts,
                                rollout_tasks=tuple(t.take("rollout_tasks", list, [], items=str)),
                                rollout_seed=t.take("rollout_seed", int, 1000),
                                videos_per_task=t.take("videos_per_task", int, 1),
                                n_action_steps=t.take("n_action_steps", int, 8))
        t.done()

    t = top.table("launcher")
    launcher = Launcher()
    if t is not None:
        launcher = Launcher(kind=t.take("kind", str, "local"), partition=t.take("partition", str, None),
                            time_min=_minutes(t), gpus=t.take("gpus", int, 1), cpus=t.take("cpus", int, 8),
                            mem_gb=t.take("mem_gb", float, None), additional=t.take("additional", dict, {}))
        t.done()
    top.done()
    return Plan(name=name, data=data, model=model, arms=arms, seeds=seeds, phases=phases, pretrain=pretrain,
                flags=flags, evaluation=evaluation, launcher=launcher, description=description, source=str(path))


def _minutes(t: Table) -> int:
    """`time`: minutes, or SLURM's "H:MM:SS" / "D-H:MM:SS"."""
    value = t.take("time", (int, str), 240)
    if isinstance(value, int):
        return value
    days, _, rest = value.rpartition("-")
    parts = rest.split(":")
    if len(parts) != 3 or not all(x.isdigit() for x in parts) or not (days.isdigit() or not days):
        raise t.error("time", f"{value!r}: use minutes (240) or \"H:MM:SS\" (\"1-00:00:00\" for a day)")
    h, m, s = (int(x) for x in parts)
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
