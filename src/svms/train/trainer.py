"""The training loop, top to bottom: guard and lock the run folder, build, resume, then `train_step` per
optimizer step (`forward_backward_step` per micro-batch, named loss terms), log, checkpoint, and stop cleanly on
a signal. Parallelism, checkpoints, run folders, signals and logging are small helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from svms import seeding
from svms.data.lerobot.meta import load_meta, split_episodes
from svms.data.lerobot.reader import Gr00tLeRobotDataset
from svms.data.modality import normalize_tag
from svms.data.processor import MODEL_CONFIG_FIELDS
from svms.data.processor_files import run_processor, save_processor, with_tag
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.model.checkpoint import UnreadableCheckpointError, read_config, read_state_dict
from svms.train.checkpoints import (
    list_checkpoints,
    newest_checkpoint,
    read_training_state,
    resolve_init,
    restore_rng,
    rng_state,
    set_aside,
    write_checkpoint,
)
from svms.train.config import TrainConfig
from svms.train.distributed import (
    Runtime,
    average_gradients,
    clip_grad_norm,
    full_state,
    load_optimizer_state,
    setup_runtime,
    shard_model,
    teardown_runtime,
)
from svms.train.lora import (
    ADAPTER_DIR,
    Lora,
    adapted_modules,
    apply_lora,
    load_adapter,
    merged_state_dict,
    save_adapter,
)
from svms.train.metrics import MetricsLogger, fetch_records, svms_diagnostics, truncate_metrics
from svms.train.optimizers import build_optimizer
from svms.train.phases import apply_phase, apply_phase_dtypes, set_train_mode, trainable_summary
from svms.train.run_folder import (
    MARKER,
    RunLock,
    check_identity,
    clean_stale_tmp,
    dataset_fingerprint,
    guard_out,
    history_entry,
    identity,
    read_run_config,
    write_run_config,
)
from svms.train.sampling import StepBatchSampler, micro_positions, sample_noise
from svms.train.schedules import SheafSchedule, aux_weight, cosine_lr, router_temperature
from svms.train.stop import StopSignals, TrainingStopped, WorkersStopped

NO_DECAY = ("bias", "norm", "layernorm", "rmsnorm")


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def model_config(cfg: TrainConfig, base: Gr00tN1d6Config) -> Gr00tN1d6Config:
    merged = deep_merge(base.to_dict(), cfg.model_overrides())
    merged["use_sheaf_streams"] = bool(cfg.svms)
    return Gr00tN1d6Config.from_dict(merged)


def run_seed(cfg: TrainConfig) -> int:
    """The global torch seed of a run: --seed, mixed with --data-offset when a phase goes on in the stream (so
    that its dropout masks are not the previous phase's again)."""
    if cfg.data_offset == 0:
        return cfg.seed
    return seeding.seed_int(cfg.seed, "dropout", cfg.data_offset)


def build_model(cfg: TrainConfig, resume: Path | None) -> tuple[Gr00tN1d6, Path | None]:
    """The model to train and the checkpoint it came from (None when built from a preset). The global RNG is
    seeded first in every case: fresh SVMS weights on an N1.6 checkpoint and the dropout masks then depend on
    --seed alone, not on what ran before in the process (a resumed run restores its saved RNG state later)."""
    torch.manual_seed(run_seed(cfg))
    lora_resume = resume is not None and (resume / ADAPTER_DIR).is_dir()
    if resume is not None and not lora_resume:
        return Gr00tN1d6.from_pretrained(resume, ignore_svms_weights=cfg.ignore_svms_weights), resume
    if cfg.init is not None:
        source = resolve_init(cfg.init)
        config = model_config(cfg, read_config(source))
        fields = {f.name for f in dataclasses.fields(Gr00tN1d6Config)} - {"extra"}
        model = Gr00tN1d6.from_pretrained(source, overrides={k: getattr(config, k) for k in fields},
                                          ignore_svms_weights=cfg.ignore_svms_weights)
    else:
        model, source = Gr00tN1d6(model_config(cfg, Gr00tN1d6Config.preset(cfg.preset))), None
    if lora_resume:  # the adapted linears' frozen base as the run built it; every other weight from the checkpoint
        assert resume is not None
        skip = {f"{m}.{kind}" for m in adapted_modules(resume) for kind in ("weight", "bias")}
        model.load_state_dict({k: v for k, v in read_state_dict(resume).items() if k not in skip}, strict=False)
        return model, resume
    return model, source


def processing_source(cfg: TrainConfig, model: Gr00tN1d6, source: Path | None):
    """The processor the run starts from (`svms.data.processor_files.run_processor`): the checkpoint's files
    when resuming or fine-tuning (explicit colour-jitter / rotation overrides apply over them), else the
    model config and the built-in embodiment table."""
    overrides = cfg.model_overrides()
    processing = {name: overrides[field] for name, field in MODEL_CONFIG_FIELDS.items() if field in overrides}
    return run_processor(cfg.embodiment_tag, model.config.to_dict(), source, processing)


def build_dataset(cfg: TrainConfig, model: Gr00tN1d6, source: Path | None = None):
    """The LeRobot dataset, processed as the run's checkpoint `source` says (or, for a fresh model, its
    config), columns picked by key name in that config's order; train image transform unless `--no-augment`,
    seeded by (seed, sample position); checked on one sample before training. Returns the dataset, its
    collator and the processor to save: `source`'s files with the trained tag's config and statistics."""
    base = processing_source(cfg, model, source)
    episodes = split_episodes(load_meta(cfg.dataset), cfg.split, required=False)
    dataset = Gr00tLeRobotDataset(cfg.dataset, cfg.embodiment_tag, settings=base.settings, ids=base.declared_ids,
                                  config=base.configs.get(normalize_tag(cfg.embodiment_tag)), episodes=episodes,
                                  seed=cfg.seed, train_augment=cfg.augment)
    embodiment = dataset.processor.ids[dataset.tag]
    if embodiment >= model.config.max_num_embodiments:
        raise SvmsError(f"embodiment {dataset.tag!r} uses projector slot {embodiment}, but the model has "
                        f"max_num_embodiments = {model.config.max_num_embodiments}")
    dataset[(0, 0)]  # dims, statistics and frames (through the training transform) are checked before any compute
    processor = with_tag(base, dataset.tag, dataset.config, dataset.statistics)
    return dataset, dataset.collator(aux_labels=model.svms is not None), processor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and norm weights (HF's grouping)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name.lower() for k in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else
                [x.to(device, non_blocking=True) for x in v] if isinstance(v, list) else v)
            for k, v in batch.items()}


def agree(runtime: Runtime, flag: bool) -> bool:
    """True on every process when `flag` is True on any (one collective with several processes)."""
    if not runtime.distributed:
        return flag
    return float(runtime.mean(torch.tensor([float(flag)], device=runtime.device))[0]) > 0


def _probe_writable(out: Path, rank: int) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SvmsError(f"--out {out} is not writable ({err}); choose another folder") from err


def open_run_folder(cfg: TrainConfig, runtime: Runtime, reads_dataset: bool
                    ) -> tuple[RunLock | None, dict[str, Any] | None, dict[str, Any] | None]:
    """Guard, create and lock RUN, clean dead processes' temporary checkpoints and check that a run already
    there is this one (the main process decides, every process agrees). Returns the lock, the saved
    config.json (None for a new run) and the record to save (main process only)."""
    lock = saved = now = error = None
    if runtime.main:
        try:
            try:
                init_checkpoint = resolve_init(cfg.init) if cfg.init is not None else None
            except SvmsError:
                init_checkpoint = None  # nothing there to protect; a new run says what is wrong when it loads it
            guard_out(cfg.out, cfg.init, init_checkpoint, cfg.dataset if reads_dataset else None)
            _probe_writable(cfg.out, runtime.rank)
            lock = RunLock(cfg.out).acquire()
            clean_stale_tmp(cfg.out)
            fingerprint = dataset_fingerprint(cfg.dataset) if reads_dataset else None
            now = {**cfg.to_dict(), MARKER: identity(cfg.dataset, fingerprint, cfg.init)}
            saved = read_run_config(cfg.out)
            if saved is not None:
                check_identity(cfg.out, saved, now)
        except SvmsError as err:
            error = err
    if agree(runtime, error is not None):
        if lock is not None:
            lock.release()
        raise error or SvmsError(f"the main process refused --out {cfg.out}; its message says why")
    if not runtime.main:
        _probe_writable(cfg.out, runtime.rank)
    return lock, saved, now


def resume_point(cfg: TrainConfig, runtime: Runtime
                 ) -> tuple[Gr00tN1d6, Path | None, dict[str, Any] | None, Path | None]:
    """(model, the checkpoint it came from, training state, resumed checkpoint): the newest readable
    checkpoint of RUN, or a new model. Unreadable newer ones are skipped, saying so, and set aside."""
    skipped: list[tuple[Path, SvmsError]] = []
    found = None
    for _, candidate in reversed(list_checkpoints(cfg.out)):
        try:
            state = read_training_state(candidate)
            model, source = build_model(cfg, candidate)
        except UnreadableCheckpointError as err:
            skipped.append((candidate, err))
            continue
        found = model, source, state, candidate
        break
    if skipped:
        runtime.barrier()  # every process has looked before the main one renames
        if runtime.main:
            fallback = found[3] if found else "a new model (no readable checkpoint left)"
            for bad, err in skipped:
                print(f"{bad} is unreadable ({err}); set aside as {set_aside(bad).name}, resuming from {fallback}",
                      file=sys.stderr, flush=True)
    if found is not None:
        return found
    model, source = build_model(cfg, None)
    return model, source, None, None


LOSS_TERMS = ("loss", "flow_loss", "sheaf_loss", "aux_loss", "balance_loss")  # `loss` is the sum of the others
STOP = len(LOSS_TERMS)  # the stop flag rides in the same reduced tensor: one collective per step
FLOW_OBSERVED = "_flow_observed"  # record key (not logged): the sheaf schedule has seen this step's flow loss


@dataclass
class StepWeights:
    """The schedules at one step."""

    lr: float
    sheaf: float
    aux: float
    balance: float
    temperature: float


@dataclass
class Session:
    """What every step needs, built once by `train`."""

    cfg: TrainConfig
    runtime: Runtime
    model: Gr00tN1d6
    runner: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    sheaf: SheafSchedule
    svms_gen: torch.Generator | None
    processor: Any
    per_process: int
    warmup: int
    aux_warmup: int
    temp_decay: int
    autocast: Any
    signals: StopSignals
    lora: Lora | None = None
    replicated: list[torch.nn.Parameter] = dataclasses.field(default_factory=list)  # FSDP: kept whole, averaged


def step_weights(s: Session, step: int) -> StepWeights:
    cfg, mc = s.cfg, s.model.config
    return StepWeights(lr=cosine_lr(step, cfg.learning_rate, cfg.max_steps, s.warmup), sheaf=s.sheaf.weight(step),
                       aux=aux_weight(step, cfg.lambda_aux, s.aux_warmup), balance=mc.router_balance_weight,
                       temperature=router_temperature(step, mc.router_temp_init, mc.router_temp_final, s.temp_decay))


def forward_backward_step(s: Session, batch: dict[str, Any], step: int, micro: int, w: StepWeights
                          ) -> tuple[dict[str, torch.Tensor], Any]:
    """One micro-batch: forward with its positions' noise, the weighted loss terms, backward of their sum over
    the accumulation. Returns the named terms (`loss` first, their sum) and the model output."""
    cfg, rt, mc = s.cfg, s.runtime, s.model.config
    positions = micro_positions(step, micro, rt.rank, rt.world, s.per_process, cfg.grad_accumulation,
                                cfg.data_offset)
    noise, t = sample_noise(positions, cfg.seed, mc.action_horizon, mc.max_action_dim, s.model.action_head)
    last = micro == cfg.grad_accumulation - 1
    if cfg.fsdp:  # FSDP2: reduce-scatter gradients only after the last micro-batch
        s.model.set_requires_gradient_sync(last)
    sync = (s.runner.no_sync() if rt.distributed and not cfg.fsdp and not last else contextlib.nullcontext())
    with sync:
        with s.autocast:
            out = s.runner(batch, noise=noise.to(rt.device), t=t.to(rt.device))
        terms = {"flow_loss": out.loss.float()}
        if out.svms is not None:
            aux = out.svms.aux_loss if out.svms.aux_loss is not None else out.loss.new_zeros(())
            terms.update(sheaf_loss=w.sheaf * out.svms.sheaf_loss, aux_loss=w.aux * aux,
                         balance_loss=w.balance * out.svms.balance_loss)
        total = sum(terms.values())  # flow + sheaf + aux + balance, in that order
        (total / cfg.grad_accumulation).backward()
    return {"loss": total, **terms}, out


def next_batch(s: Session, loader) -> dict[str, Any]:
    try:
        return next(loader)
    except RuntimeError as err:  # a data worker ended: by the stop signal (process group), or a real failure
        if s.signals.received is None or s.runtime.distributed:
            raise
        raise WorkersStopped(str(err)) from err


def train_step(s: Session, loader, step: int) -> tuple[dict[str, Any], bool]:
    """One optimizer step over `grad_accumulation` micro-batches; returns its metrics record and whether every
    process is to stop after it (a signal arrived on any). The record's values stay on the device (tensors)
    until `MetricsBuffer.flush` fetches a group of them: no step waits for the device to log."""
    cfg, rt, model = s.cfg, s.runtime, s.model
    w = step_weights(s, step)
    for group in s.optimizer.param_groups:
        group["lr"] = w.lr
    if model.svms is not None:
        model.svms.router_temperature.fill_(w.temperature)
    sums = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64, device=rt.device)  # LOSS_TERMS means, STOP
    diagnostics: dict[str, Any] = {}
    for micro in range(cfg.grad_accumulation):
        batch = to_device(next_batch(s, loader), rt.device)
        terms, out = forward_backward_step(s, batch, step, micro, w)
        values = torch.stack([v.detach().to(torch.float64) for v in terms.values()])
        sums[: len(values)] += values / cfg.grad_accumulation
        if out.svms is not None and rt.main and micro == 0:
            diagnostics = svms_diagnostics(out.svms, batch["input_ids"] == model.backbone.image_token_index,
                                           batch["attention_mask"].bool(), model.svms.config.stream_names)
    if s.replicated:  # under FSDP: the parameters it cannot shard
        average_gradients(s.replicated, rt.world)
    grad_norm = clip_grad_norm(s.params, cfg.max_grad_norm)
    stop = False
    if rt.distributed:  # every process must agree to stop after the same step: one collective, read here
        sums[STOP] = float(s.signals.received is not None)
        sums = rt.mean(sums.to(rt.device))  # NCCL reduces device tensors only
        stop = float(sums[STOP]) > 0
    means = dict(zip(LOSS_TERMS, sums.unbind(), strict=False))
    observed = s.sheaf.waits_for_flow_loss
    if observed:  # the adaptive ramp reads this step's loss before the next step
        s.sheaf.observe_flow_loss(step, float(means["flow_loss"]))
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    record: dict[str, Any] = {"step": step, "loss": means["loss"], "flow_loss": means["flow_loss"]}
    if model.svms is not None:
        record.update(sheaf_loss=means["sheaf_loss"], aux_loss=means["aux_loss"], balance_loss=means["balance_loss"],
                      lambda_sheaf=w.sheaf, lambda_aux=w.aux, router_temperature=w.temperature)
    record.update(lr=w.lr, grad_norm=grad_norm.detach(), **diagnostics)
    record[FLOW_OBSERVED] = observed
    return record, stop


class MetricsBuffer:
    """Step records not yet written: `flush` fetches them in one device->host copy, checks them and writes
    one `metrics.jsonl` line per step, in order. Flushed every `--log-every` steps and before every checkpoint,
    so every line up to step N is on disk before `checkpoint-N` appears."""

    def __init__(self, s: Session, logger: MetricsLogger) -> None:
        self.s, self.logger = s, logger
        self.pending: list[tuple[dict[str, Any], bool]] = []  # (record, flow loss still to observe)

    def add(self, record: dict[str, Any]) -> None:
        observed = record.pop(FLOW_OBSERVED)
        self.pending.append((record, not observed))

    def flush(self) -> None:
        cfg = self.s.cfg
        pending, self.pending = self.pending, []
        records = fetch_records([r for r, _ in pending])
        for record, (_, observe) in zip(records, pending, strict=True):
            step = record["step"]
            if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                kept = newest_checkpoint(cfg.out)
                raise SvmsError(
                    f"non-finite loss or gradient at step {step} (loss {record['loss']}, grad norm "
                    f"{record['grad_norm']}); the run stopped without saving. The last good checkpoint is "
                    f"{kept if kept else 'none (no checkpoint yet)'}. Lower --learning-rate, check the dataset "
                    "for NaN/Inf (svms data validate), or resume from that checkpoint."
                )
            if observe:
                self.s.sheaf.observe_flow_loss(step, record["flow_loss"])
            self.logger.log(step, record, cfg.global_batch_size,
                            print_line=step % cfg.log_every == 0 or step == cfg.max_steps)


def save_checkpoint(s: Session, step: int, rng: dict[str, Any] | None = None) -> Path:
    """`RUN/checkpoint-<step>`: the model folder, the processor files and the training state (main process
    writes, every process waits for it); `rng` is the RNG state to record when not the current one. Under
    FSDP the shards are gathered first (every process takes part) into one standard checkpoint; with LoRA
    its weights are merged and the adapter is saved beside them (`svms.train.lora`)."""
    weights, optimizer_state = full_state(s.model, s.optimizer, s.cfg.fsdp)

    def write_model(folder: Path) -> None:
        s.model.save_pretrained(folder, state_dict=merged_state_dict(weights, s.lora.scaling) if s.lora else weights)
        if s.lora is not None:
            save_adapter(s.lora, weights, folder)
        if s.processor is not None:
            save_processor(s.processor, folder)

    state = {"step": step, "optimizer": optimizer_state, "sheaf_schedule": s.sheaf.state_dict(),
             "rng": rng_state(s.svms_gen) if rng is None else rng}
    path = s.cfg.out / f"checkpoint-{step}"
    if s.runtime.main:
        path = write_checkpoint(s.cfg.out, step, write_model, state, s.cfg.keep_checkpoints)
    s.runtime.barrier()
    return path


def stopped(s: Session, step: int, checkpoint: Path | None, saved: bool) -> TrainingStopped:
    where = (f"checkpoint written to {checkpoint}" if saved else
             f"nothing new to save; the newest checkpoint is {checkpoint or 'none'}")
    return TrainingStopped(f"stopped by {s.signals.name} after step {step}: {where}. Rerun the same command to "
                           "resume", s.signals.received or signal.SIGTERM)


def train(cfg: TrainConfig, dataset: Dataset | None = None, collate_fn=None, processor=None) -> Path:
    """Run (or resume) training; returns the final checkpoint folder. `dataset`/`collate_fn` replace
    the LeRobot dataset (smoke tests, benchmarks); a dataset is indexed with (index, sample position)
    pairs (`StepBatchSampler`). SIGTERM/SIGINT end it after the current step with a checkpoint
    (`TrainingStopped`, `svms.train.stop`)."""
    runtime = setup_runtime(cfg.device)
    signals = StopSignals().install()
    lock = None
    try:
        cfg.per_process_batch(runtime.world)  # a bad batch split is refused before anything is written
        lock, saved, record = open_run_folder(cfg, runtime, reads_dataset=dataset is None)
        return _train(cfg, runtime, signals, saved, record, dataset, collate_fn, processor)
    finally:
        signals.uninstall()
        if lock is not None:
            lock.release()
        teardown_runtime(runtime)


def _train(cfg: TrainConfig, runtime: Runtime, signals: StopSignals, saved: dict[str, Any] | None,
           record: dict[str, Any] | None, dataset, collate_fn, processor) -> Path:
    per_process = cfg.per_process_batch(runtime.world)
    model, source, state, resume = resume_point(cfg, runtime)
    if dataset is None:
        dataset, collate_fn, processor = build_dataset(cfg, model, source)
    apply_phase(model, cfg.phase)
    lora = None
    if cfg.lora_rank is not None:
        assert cfg.lora_targets is not None
        lora = apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.phase)
        if lora is not None and resume is not None:
            load_adapter(model, resume)
        if runtime.main:
            print(lora.summary() if lora is not None else
                  f"LoRA: phase {cfg.phase} trains none of the layers of {' '.join(cfg.lora_targets)}; it trains "
                  "as without LoRA", file=sys.stderr, flush=True)
    if runtime.device.type == "cuda":  # bf16 autocast there: frozen weights need not be fp32
        apply_phase_dtypes(model, cfg.frozen_dtype)
    model.action_head.model.gradient_checkpointing = cfg.grad_checkpointing
    model.to(runtime.device)
    replicated = shard_model(model) if cfg.fsdp else []
    mc = model.config
    warmup = math.ceil(cfg.warmup_ratio * cfg.max_steps)
    sheaf = SheafSchedule(cfg.sheaf_schedule or mc.sheaf_schedule_mode,
                          mc.lambda_sheaf_min if cfg.lambda_sheaf_min is None else cfg.lambda_sheaf_min,
                          mc.lambda_sheaf_max if cfg.lambda_sheaf_max is None else cfg.lambda_sheaf_max,
                          cfg.max_steps, flow_threshold=mc.sheaf_delay_until_diffusion)
    aux_warmup = max(1, cfg.max_steps // 10) if cfg.aux_warmup_steps is None else cfg.aux_warmup_steps
    temp_decay = cfg.max_steps if cfg.router_temp_decay_steps is None else cfg.router_temp_decay_steps
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SvmsError(f"phase {cfg.phase} leaves no parameter trainable for this model")
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay), cfg.learning_rate,
                                runtime.device)
    svms_gen = model.svms.dropout_generator(runtime.device) if model.svms is not None else None

    start_step = 0
    if state is not None:
        start_step = state["step"]
        load_optimizer_state(model, optimizer, state["optimizer"], cfg.fsdp)
        sheaf.load_state_dict(state["sheaf_schedule"])
        restore_rng(state["rng"], svms_gen)
    if start_step >= cfg.max_steps:  # nothing to train: the run folder stays exactly as it is
        if runtime.main:
            print(f"{cfg.out} is already at step {start_step} (--max-steps {cfg.max_steps}): nothing to train",
                  file=sys.stderr, flush=True)
        return resume
    if runtime.main:
        cfg.resolved = {"model_config": mc.to_dict(), "init_from": None if source is None else str(source),
                        "world_size": runtime.world, "per_process_batch": per_process,
                        "trainable_parameters": trainable_summary(model)}
        if lora is not None:
            cfg.resolved["lora"] = {"modules": len(lora.modules), "trainable": lora.trainable,
                                    "trainable_without_lora": lora.full_trainable}
        record = {**cfg.to_dict(), MARKER: record[MARKER]}
        history = list(((saved or {}).get(MARKER) or {}).get("history", [])) if start_step else []
        change = history_entry(saved, record, start_step) if saved is not None and start_step else None
        record[MARKER]["history"] = history + ([change] if change else [])
        write_run_config(cfg.out, record)
        truncate_metrics(cfg.out, start_step)
    logger = MetricsLogger(cfg.out, runtime.main, cfg.tensorboard, cfg.wandb, cfg.max_steps, start_step,
                           cfg.to_dict())
    runner = (DistributedDataParallel(model, find_unused_parameters=True) if runtime.distributed and not cfg.fsdp
              else model)
    signals.ignore_in_children()  # spawned data workers leave stopping to this process
    sampler = StepBatchSampler(len(dataset), cfg.seed, start_step, cfg.max_steps, runtime.rank, runtime.world,
                               per_process, cfg.grad_accumulation, cfg.data_offset)
    # Its own generator: creating the loader must not draw from the global RNG a resumed run restores.
    loader = iter(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=cfg.num_workers,
                             pin_memory=runtime.device.type == "cuda",
                             # fork after video decoding can deadlock (PyAV); spawned workers start clean
                             multiprocessing_context="spawn" if cfg.num_workers else None,
                             generator=torch.Generator().manual_seed(cfg.seed + start_step)))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if runtime.device.type == "cuda"
                else contextlib.nullcontext())
    signals.restore_handlers()
    s = Session(cfg, runtime, model, runner, optimizer, params, sheaf, svms_gen, processor, per_process, warmup,
                aux_warmup, temp_decay, autocast, signals, lora, replicated)

    last = resume
    set_train_mode(model, cfg.phase)
    buffer = MetricsBuffer(s, logger)
    try:
        if agree(runtime, signals.received is not None):  # a signal while the run was being set up
            raise stopped(s, start_step, last, saved=False)
        for step in range(start_step + 1, cfg.max_steps + 1):
            rng_before = rng_state(svms_gen) if cfg.num_workers else None  # what checkpoint-(step - 1) holds
            try:
                metrics, stop = train_step(s, loader, step)
            except WorkersStopped as err:  # the signal ended the data workers too: keep every finished step
                done = step - 1
                buffer.flush()
                if done > start_step and last != cfg.out / f"checkpoint-{done}":
                    last = save_checkpoint(s, done, rng_before)
                    raise stopped(s, done, last, saved=True) from err
                raise stopped(s, done, last, saved=False) from err
            stop = stop if runtime.distributed else signals.received is not None  # one process: at once
            buffer.add(metrics)
            save = step % cfg.save_every == 0 or step == cfg.max_steps or stop
            if save or step % cfg.log_every == 0:
                buffer.flush()
            if save:
                last = save_checkpoint(s, step)
            if stop:
                raise stopped(s, step, last, saved=True)
    finally:
        with contextlib.suppress(Exception):
            buffer.flush()  # steps finished before an error still get their lines
        logger.close()
    return last
