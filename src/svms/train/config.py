"""`TrainConfig`: every knob of `svms train`, with the phase defaults of the seed's protocol.

Fields left at None take the phase's default (the table in `svms.protocol`, the one registry of phases and
arms), so a flag always wins over a phase and the resolved values are what `RUN/config.json` records.
`--arm NAME` sets the arm's flags from the same registry (the control arm is the baseline's flags: its shorter
budget is the study's).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from svms.errors import SvmsError
from svms.protocol import ARMS, PHASE_DEFAULTS, PHASES
from svms.train.schedules import SHEAF_MODES

FROZEN_DTYPES = ("bf16", "fp32", "mixed")

__all__ = ["ARMS", "FROZEN_DTYPES", "PHASES", "PHASE_DEFAULTS", "TrainConfig"]


@dataclass
class TrainConfig:
    """Fine-tune or train GR00T N1.6 (with or without SVMS) on a LeRobot v2 dataset.

    Resumes automatically from the newest `RUN/checkpoint-<step>/`.
    """

    dataset: Path
    """LeRobot v2 dataset folder (with meta/modality.json)"""
    out: Path
    """run folder: config.json, metrics.jsonl, checkpoint-<step>/, tensorboard/"""
    preset: str = "tiny"
    """model preset when not starting from --init: tiny, n1d6-3b, reference-default"""
    phase: Literal["scratch", "1", "2", "3"] = "scratch"
    """scratch: train everything; 1: SVMS only; 2: + bottom half of the DiT; 3: action head + SVMS + top LLM layers"""
    svms: bool | None = None
    """SVMS on/off (default: on for phases 1-3, off for scratch)"""
    arm: str | None = None
    """comparison arm: baseline, svms, svms-no-sheaf, svms-no-router, svms-no-aux, control (sets --svms and the
    ablation; control trains like baseline, `svms study` gives it fewer steps)"""
    init: Path | None = None
    """a GR00T N1.6 checkpoint folder, or a previous run (its newest checkpoint)"""
    ignore_svms_weights: bool = False
    """train without SVMS from an --init checkpoint that has SVMS weights, dropping them (otherwise an error)"""
    split: str | None = "train"
    """episodes to train on: a split of meta/info.json (all episodes when the dataset has no such split)"""
    embodiment_tag: str = "new_embodiment"
    """projector slot and modality config of the dataset"""
    max_steps: int = 1000
    """optimizer steps"""
    save_every: int = 500
    """checkpoint interval in optimizer steps (one is always written at the end)"""
    keep_checkpoints: int = 3
    """how many of the newest checkpoints to keep"""
    seed: int = 42
    """seeds the model init, data order, flow-matching noise and image augmentation (>= 0)"""
    data_offset: int = 0
    """sample position of the run's first sample in the seeded data stream (0: its start). A phase that goes on
    from a previous phase with the same --seed passes the samples that phase consumed (its steps x global batch),
    so that the phases together see the samples and noise one run of all their steps sees"""
    augment: bool = True
    """train image transform: random crop plus the model config's random_rotation_angle and
    color_jitter_params (--no-augment: the eval transform, centre crop)"""
    global_batch_size: int | None = None
    """samples per optimizer step over all processes (phase default when unset)"""
    grad_accumulation: int = 1
    learning_rate: float | None = None
    """peak learning rate (phase default when unset)"""
    warmup_ratio: float = 0.05
    weight_decay: float = 1e-5
    max_grad_norm: float = 1.0
    lambda_aux: float | None = None
    """auxiliary stream-label loss weight (phase default when unset)"""
    sheaf_schedule: str | None = None
    """adaptive, linear, fixed or off (phase default; scratch: the model config's)"""
    lambda_sheaf_min: float | None = None
    lambda_sheaf_max: float | None = None
    aux_warmup_steps: int | None = None
    """steps over which lambda_aux ramps up (default: 10% of the run)"""
    router_temp_decay_steps: int | None = None
    """steps over which the router temperature anneals (default: the whole run)"""
    optimizer: str = "adamw"
    """adamw (torch's fused AdamW), adamw-foreach (torch's multi-tensor AdamW, the reference's), adamw8bit or
    paged-adamw8bit (bitsandbytes' 8-bit AdamW: 2 bytes of state per parameter instead of 8; the `quant` extra;
    paged needs CUDA)"""
    lora_rank: int | None = None
    """train LoRA adapters of this rank (peft) on --lora-targets instead of their full weights; checkpoints hold
    the merged N1.6 weights plus adapter/ (peft's format)"""
    lora_alpha: float | None = None
    """LoRA scale numerator: updates are scaled by alpha / rank (default: the rank, scale 1)"""
    lora_dropout: float = 0.0
    """dropout on the LoRA branch's input"""
    lora_targets: tuple[str, ...] | None = None
    """what gets adapters: llm (the phase's trained LLM layers: attention + MLP projections), dit (the phase's
    trained DiT blocks: attention + feed-forward), vision (ViT layers, when the phase trains them), or a regular
    expression matched against whole module names (default: llm dit)"""
    fsdp: bool = False
    """under torchrun, shard parameters, gradients and optimizer state over the processes (torch FSDP2
    fully_shard) instead of replicating them (DDP); checkpoints are the same single folder"""
    grad_checkpointing: bool = False
    """recompute DiT block activations in the backward pass (measured: no memory gain at the phase batches)"""
    frozen_dtype: str = "bf16"
    """on CUDA, dtype of frozen weights: bf16, mixed (frozen backbone bf16, action head fp32: the reference)
    or fp32; trainable weights are always fp32 (bf16 autocast). On CPU every weight stays fp32"""
    num_workers: int = 0
    """DataLoader worker processes"""
    log_every: int = 10
    tensorboard: bool = True
    wandb: bool = False
    """also log to Weights & Biases (needs the `tracking` extra and a login)"""
    model_override: tuple[str, ...] = ()
    """model config overrides KEY=JSON, e.g. diffusion_model_cfg.dropout=0 or state_dropout_prob=0.5"""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda"""
    resolved: dict[str, Any] = field(default_factory=dict)
    """filled in by the trainer: the values actually used (written to RUN/config.json)"""

    def __post_init__(self) -> None:
        self.dataset, self.out = Path(self.dataset), Path(self.out)
        self.init = None if self.init is None else Path(self.init)
        self.phase = str(self.phase)
        if self.phase not in PHASES:
            raise SvmsError(f"--phase {self.phase!r}: use one of {', '.join(PHASES)}")
        if self.arm is not None:
            if self.arm not in ARMS:
                raise SvmsError(f"--arm {self.arm!r}: use one of {', '.join(ARMS)}")
            spec = ARMS[self.arm]
            svms, flags, overrides = spec.svms, spec.flags_for(str(self.phase)), spec.overrides
            if self.svms is not None and self.svms != svms:
                raise SvmsError(f"--arm {self.arm} {'needs' if svms else 'excludes'} SVMS; drop --svms/--no-svms")
            self.svms = svms
            for name, value in flags.items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
            self.model_override = tuple(overrides) + tuple(x for x in self.model_override if x not in overrides)
        if self.svms is None:
            self.svms = self.phase != "scratch"
        if self.arm is None:
            self.arm = "svms" if self.svms else "baseline"
        if not self.svms and self.phase in ("1", "2"):
            raise SvmsError(f"--phase {self.phase} trains the SVMS streams, so it cannot run with --no-svms; "
                            "use --phase 3 --no-svms for the baseline fine-tune or --phase scratch")
        defaults = PHASE_DEFAULTS[self.phase]
        for name, value in defaults.items():
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)
        for name in ("max_steps", "save_every", "keep_checkpoints", "grad_accumulation", "log_every"):
            if getattr(self, name) < 1:
                raise SvmsError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lambda_aux", "lambda_sheaf_min", "lambda_sheaf_max", "weight_decay", "warmup_ratio",
                     "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SvmsError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise SvmsError(f"--frozen-dtype {self.frozen_dtype!r}: use one of {', '.join(FROZEN_DTYPES)}")
        if not isinstance(self.augment, bool):
            raise SvmsError(f"augment = {self.augment!r}: use true or false (--augment / --no-augment)")
        if self.seed < 0:
            raise SvmsError(f"--seed must be >= 0, got {self.seed}")
        if self.data_offset < 0:
            raise SvmsError(f"--data-offset must be >= 0 (a sample position), got {self.data_offset}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise SvmsError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.sheaf_schedule is not None and self.sheaf_schedule not in SHEAF_MODES:
            raise SvmsError(f"--sheaf-schedule {self.sheaf_schedule!r}: use one of {', '.join(SHEAF_MODES)}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise SvmsError(f"--global-batch-size must be >= 1, got {self.global_batch_size}")
        self._check_memory_options()
        self.model_overrides()  # validate the syntax early

    def _check_memory_options(self) -> None:
        # imported here: they import torch and peft, and the CLI builds these flags (and --help) without them
        from svms.train.lora import DEFAULT_TARGETS, check_targets
        from svms.train.optimizers import EIGHT_BIT, check_optimizer

        check_optimizer(self.optimizer)
        if self.lora_rank is None:
            given = [f"--lora-{n}" for n in ("alpha", "targets") if getattr(self, f"lora_{n}") is not None]
            given += ["--lora-dropout"] if self.lora_dropout else []
            if given:
                raise SvmsError(f"{', '.join(given)} without --lora-rank: add --lora-rank R (e.g. 32) to train LoRA "
                                "adapters, or drop them")
        else:
            if self.lora_rank < 1:
                raise SvmsError(f"--lora-rank must be >= 1 (the adapters' rank, e.g. 32), got {self.lora_rank}")
            if self.lora_alpha is not None and self.lora_alpha <= 0:
                raise SvmsError(f"--lora-alpha must be > 0, got {self.lora_alpha}")
            if not 0 <= self.lora_dropout < 1:
                raise SvmsError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
            self.lora_targets = tuple(self.lora_targets or DEFAULT_TARGETS)
            check_targets(self.lora_targets)
        if self.fsdp and self.optimizer in EIGHT_BIT:
            raise SvmsError(f"--fsdp with --optimizer {self.optimizer}: bitsandbytes' 8-bit update does not take "
                            "FSDP's sharded parameters; use --optimizer adamw with --fsdp, or 8-bit AdamW without it")
        if self.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise SvmsError("--fsdp shards the model over processes, so it needs several: start it with "
                            "`torchrun --nproc-per-node N -m svms.cli train ... --fsdp` (N >= 2), or drop --fsdp")

    def per_process_batch(self, world_size: int) -> int:
        """Micro-batch per process; the global batch must split evenly."""
        assert self.global_batch_size is not None
        share = self.grad_accumulation * world_size
        if self.global_batch_size % share:
            raise SvmsError(f"--global-batch-size {self.global_batch_size} is not divisible by "
                            f"grad-accumulation x processes = {self.grad_accumulation} x {world_size}; "
                            f"use a multiple of {share}")
        return self.global_batch_size // share

    def model_overrides(self) -> dict[str, Any]:
        """`--model-override` as a nested dict of model-config values."""
        result: dict[str, Any] = {}
        for item in self.model_override:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise SvmsError(f"--model-override {item!r}: write KEY=VALUE, e.g. state_dropout_prob=0.5")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw  # a bare string such as adaptive
            node = result
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return result

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in d.items()}
