"""The training loop, top to bottom: build, resume, then for each optimizer step draw micro-batches,
weight the losses, step, log, checkpoint. Parallelism, checkpoints and logging are small helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from svms.data.modality import normalize_tag
from svms.data.processor_files import save_processor
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.model.checkpoint import read_config
from svms.train.checkpoints import (
    newest_checkpoint,
    read_training_state,
    resolve_init,
    restore_rng,
    rng_state,
    write_checkpoint,
)
from svms.train.config import TrainConfig
from svms.train.data import StepBatchSampler, micro_positions, sample_noise
from svms.train.distributed import Runtime, setup_runtime, teardown_runtime
from svms.train.metrics import MetricsLogger, svms_diagnostics, truncate_metrics
from svms.train.phases import apply_phase, apply_phase_dtypes, set_train_mode, trainable_summary
from svms.train.schedules import SheafSchedule, aux_weight, cosine_lr, router_temperature

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
    return int(np.random.SeedSequence([cfg.seed, cfg.data_offset]).generate_state(1, np.uint64)[0] >> 1)


def build_model(cfg: TrainConfig, resume: Path | None) -> tuple[Gr00tN1d6, Path | None]:
    """The model to train and the checkpoint it came from (None when built from a preset). The global RNG is
    seeded first in every case: fresh SVMS weights on an N1.6 checkpoint and the dropout masks then depend on
    --seed alone, not on what ran before in the process (a resumed run restores its saved RNG state later)."""
    torch.manual_seed(run_seed(cfg))
    if resume is not None:
        return Gr00tN1d6.from_pretrained(resume), resume
    if cfg.init is not None:
        source = resolve_init(cfg.init)
        config = model_config(cfg, read_config(source))
        fields = {f.name for f in dataclasses.fields(Gr00tN1d6Config)} - {"extra"}
        return Gr00tN1d6.from_pretrained(source, overrides={k: getattr(config, k) for k in fields}), source
    return Gr00tN1d6(model_config(cfg, Gr00tN1d6Config.preset(cfg.preset))), None


def processing_source(cfg: TrainConfig, model: Gr00tN1d6, source: Path | None):
    """The processor the run starts from (`svms.data.processor_files.run_processor`): the checkpoint's files
    when resuming or fine-tuning (explicit colour-jitter / rotation overrides apply over them), else the
    model config and the built-in embodiment table."""
    from svms.data.processor import MODEL_CONFIG_FIELDS
    from svms.data.processor_files import run_processor

    overrides = cfg.model_overrides()
    processing = {name: overrides[field] for name, field in MODEL_CONFIG_FIELDS.items() if field in overrides}
    return run_processor(cfg.embodiment_tag, model.config.to_dict(), source, processing)


def build_dataset(cfg: TrainConfig, model: Gr00tN1d6, source: Path | None = None):
    """The LeRobot dataset, processed as the run's checkpoint `source` says (or, for a fresh model, its
    config), columns picked by key name in that config's order; train image transform unless `--no-augment`,
    seeded by (seed, sample position); checked on one sample before training. Returns the dataset, its
    collator and the processor to save: `source`'s files with the trained tag's config and statistics."""
    from svms.data.lerobot.meta import load_meta, split_episodes
    from svms.data.lerobot.reader import Gr00tLeRobotDataset
    from svms.data.processor_files import with_tag

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


def check_run_folder(cfg: TrainConfig, runtime: Runtime) -> Path | None:
    """Create RUN (or say why not); on resume, refuse a run started with other phase/model flags."""
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        probe = cfg.out / f".write-test-{runtime.rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SvmsError(f"--out {cfg.out} is not writable ({err}); choose another folder") from err
    resume = newest_checkpoint(cfg.out)
    saved = cfg.out / "config.json"
    if resume is not None and saved.is_file():
        before, now = json.loads(saved.read_text()), cfg.to_dict()
        for key in ("phase", "svms", "preset", "embodiment_tag", "model_override", "seed", "data_offset"):
            if before.get(key, now[key]) != now[key]:  # a key the run's version did not write cannot differ
                raise SvmsError(f"{cfg.out} holds a run started with {key} = {before.get(key)!r}, not "
                                f"{now[key]!r}; resume it with the same flags or use a new --out")
    return resume


def train(cfg: TrainConfig, dataset: Dataset | None = None, collate_fn=None, processor=None) -> Path:
    """Run (or resume) training; returns the final checkpoint folder. `dataset`/`collate_fn` replace
    the LeRobot dataset (smoke tests, benchmarks); a dataset is indexed with (index, sample position)
    pairs (`StepBatchSampler`)."""
    runtime = setup_runtime(cfg.device)
    try:
        return _train(cfg, runtime, dataset, collate_fn, processor)
    finally:
        teardown_runtime(runtime)


def _train(cfg: TrainConfig, runtime: Runtime, dataset, collate_fn, processor) -> Path:
    per_process = cfg.per_process_batch(runtime.world)
    resume = check_run_folder(cfg, runtime)
    model, source = build_model(cfg, resume)
    if dataset is None:
        dataset, collate_fn, processor = build_dataset(cfg, model, source)
    apply_phase(model, cfg.phase)
    if runtime.device.type == "cuda":  # bf16 autocast there: frozen weights need not be fp32
        apply_phase_dtypes(model, cfg.frozen_dtype)
    model.action_head.model.gradient_checkpointing = cfg.grad_checkpointing
    model.to(runtime.device)
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
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                                  # fused on CPU too: one pass over each tensor instead of ~10, which on a
                                  # 2-core machine made the tiny model's optimizer step cost as much as its
                                  # backward pass (measured 0.13 s -> 0.03 s per step)
                                  fused=runtime.device.type in ("cuda", "cpu"))
    svms_gen = model.svms.dropout_generator(runtime.device) if model.svms is not None else None

    start_step = 0
    if resume is not None:
        state = read_training_state(resume)
        start_step = state["step"]
        optimizer.load_state_dict(state["optimizer"])
        sheaf.load_state_dict(state["sheaf_schedule"])
        restore_rng(state["rng"], svms_gen)
    if runtime.main:
        cfg.resolved = {"model_config": mc.to_dict(), "init_from": None if source is None else str(source),
                        "world_size": runtime.world, "per_process_batch": per_process,
                        "trainable_parameters": trainable_summary(model)}
        (cfg.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        truncate_metrics(cfg.out, start_step)
    if start_step >= cfg.max_steps:
        return resume
    logger = MetricsLogger(cfg.out, runtime.main, cfg.tensorboard, cfg.wandb, cfg.max_steps, start_step,
                           cfg.to_dict())
    runner = (DistributedDataParallel(model, find_unused_parameters=True) if runtime.distributed else model)
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

    def save(step: int) -> Path:
        def write_model(folder: Path) -> None:
            model.save_pretrained(folder)
            if processor is not None:
                save_processor(processor, folder)

        state = {"step": step, "optimizer": optimizer.state_dict(), "sheaf_schedule": sheaf.state_dict(),
                 "rng": rng_state(svms_gen)}
        path = cfg.out / f"checkpoint-{step}"
        if runtime.main:
            path = write_checkpoint(cfg.out, step, write_model, state, cfg.keep_checkpoints)
        runtime.barrier()
        return path

    last = resume
    set_train_mode(model, cfg.phase)
    for step in range(start_step + 1, cfg.max_steps + 1):
        lr = cosine_lr(step, cfg.learning_rate, cfg.max_steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        lam_sheaf, lam_aux = sheaf.weight(step), aux_weight(step, cfg.lambda_aux, aux_warmup)
        temperature = router_temperature(step, mc.router_temp_init, mc.router_temp_final, temp_decay)
        if model.svms is not None:
            model.svms.router_temperature.fill_(temperature)
        sums = torch.zeros(5, dtype=torch.float64)
        diagnostics: dict[str, float] = {}
        for micro in range(cfg.grad_accumulation):
            batch = to_device(next(loader), runtime.device)
            positions = micro_positions(step, micro, runtime.rank, runtime.world, per_process, cfg.grad_accumulation,
                                        cfg.data_offset)
            noise, t = sample_noise(positions, cfg.seed, mc.action_horizon, mc.max_action_dim, model.action_head)
            sync = (runner.no_sync() if runtime.distributed and micro < cfg.grad_accumulation - 1
                    else contextlib.nullcontext())
            with sync:
                with autocast:
                    out = runner(batch, noise=noise.to(runtime.device), t=t.to(runtime.device))
                terms = [out.loss.float()]
                if out.svms is not None:
                    aux = out.svms.aux_loss if out.svms.aux_loss is not None else out.loss.new_zeros(())
                    terms += [lam_sheaf * out.svms.sheaf_loss, lam_aux * aux,
                              mc.router_balance_weight * out.svms.balance_loss]
                total = sum(terms)
                (total / cfg.grad_accumulation).backward()
            values = [float(total.detach())] + [float(x.detach()) for x in terms]
            sums[: len(values)] += torch.tensor(values, dtype=torch.float64) / cfg.grad_accumulation
            if out.svms is not None and runtime.main and micro == 0:
                diagnostics = svms_diagnostics(out.svms, batch["input_ids"] == model.backbone.image_token_index,
                                               batch["attention_mask"].bool(), model.svms.config.stream_names)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        sums = runtime.mean(sums)
        if not (math.isfinite(float(sums[0])) and math.isfinite(float(grad_norm))):
            logger.close()
            kept = newest_checkpoint(cfg.out)
            raise SvmsError(
                f"non-finite loss or gradient at step {step} (loss {float(sums[0])}, grad norm "
                f"{float(grad_norm)}); the run stopped without saving. The last good checkpoint is "
                f"{kept if kept else 'none (no checkpoint yet)'}. Lower --learning-rate, check the dataset "
                "for NaN/Inf (svms data validate), or resume from that checkpoint."
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sheaf.observe_flow_loss(step, float(sums[1]))
        record: dict[str, Any] = {"step": step, "loss": float(sums[0]), "flow_loss": float(sums[1])}
        if model.svms is not None:
            record.update(sheaf_loss=float(sums[2]), aux_loss=float(sums[3]), balance_loss=float(sums[4]),
                          lambda_sheaf=lam_sheaf, lambda_aux=lam_aux, router_temperature=temperature)
        record.update(lr=lr, grad_norm=float(grad_norm), **diagnostics)
        logger.log(step, record, cfg.global_batch_size,
                   print_line=step % cfg.log_every == 0 or step == cfg.max_steps)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            last = save(step)
    logger.close()
    return last
