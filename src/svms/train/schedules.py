"""Step-dependent weights: learning rate, sheaf-loss weight, aux warm-up, router temperature.

Every schedule is a pure function of the step plus, for the adaptive sheaf weight, the step at which
its ramp started (saved in checkpoints so a resumed run follows the same curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from svms.protocol import SHEAF_MODES


def cosine_lr(step: int, base_lr: float, max_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to 0 at `max_steps` (HF "cosine"). step >= 1."""
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def router_temperature(step: int, start: float, final: float, decay_steps: int) -> float:
    """Linear annealing from `start` to `final` over `decay_steps` optimizer steps."""
    if decay_steps <= 0:
        return final
    frac = min(1.0, (step - 1) / decay_steps)
    return start + (final - start) * frac


def aux_weight(step: int, lambda_aux: float, warmup_steps: int) -> float:
    """Auxiliary-loss weight, ramped linearly from 0 over `warmup_steps`."""
    if warmup_steps <= 0:
        return lambda_aux
    return lambda_aux * min(1.0, step / warmup_steps)


@dataclass
class SheafSchedule:
    """lambda_sheaf(step) for the four modes.

    * `off`: 0. * `fixed`: lambda_max throughout. * `linear`: lambda_min -> lambda_max over the run.
    * `adaptive`: 0 until the ramp starts — at `start_fraction` of the run, or earlier once the
      flow loss (EMA) falls below `flow_threshold` — then lambda_min -> lambda_max over
      `ramp_fraction` of the run, then lambda_max.
    """

    mode: str
    lambda_min: float
    lambda_max: float
    max_steps: int
    flow_threshold: float = 0.4
    start_fraction: float = 0.2
    ramp_fraction: float = 0.3
    ema_decay: float = 0.9
    started_at: int | None = None  # adaptive: the step the ramp began
    flow_ema: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in SHEAF_MODES:
            raise ValueError(f"sheaf schedule mode {self.mode!r} is not one of {SHEAF_MODES}")

    def weight(self, step: int) -> float:
        if self.mode == "off":
            return 0.0
        if self.mode == "fixed":
            return self.lambda_max
        if self.mode == "linear":
            frac = (step - 1) / max(1, self.max_steps - 1)
            return self.lambda_min + (self.lambda_max - self.lambda_min) * frac
        if self.started_at is None and step >= max(1, math.ceil(self.start_fraction * self.max_steps)):
            self.started_at = step
        if self.started_at is None:
            return 0.0
        ramp = max(1, round(self.ramp_fraction * self.max_steps))
        frac = min(1.0, (step - self.started_at) / ramp)
        return self.lambda_min + (self.lambda_max - self.lambda_min) * frac

    @property
    def waits_for_flow_loss(self) -> bool:
        """Whether the next step's weight depends on this step's flow loss (adaptive, not started yet): the
        trainer then reads it at once; otherwise it feeds the losses later, in order, as it logs them."""
        return self.mode == "adaptive" and self.started_at is None

    def observe_flow_loss(self, step: int, flow_loss: float) -> None:
        """Feed the step's flow loss; the adaptive ramp starts at the next step once the EMA is low."""
        if self.mode != "adaptive" or not math.isfinite(flow_loss):
            return
        self.flow_ema = flow_loss if self.flow_ema is None else (
            self.ema_decay * self.flow_ema + (1 - self.ema_decay) * flow_loss)
        if self.started_at is None and self.flow_ema < self.flow_threshold:
            self.started_at = step + 1

    def state_dict(self) -> dict:
        return {"started_at": self.started_at, "flow_ema": self.flow_ema}

    def load_state_dict(self, state: dict) -> None:
        self.started_at, self.flow_ema = state["started_at"], state["flow_ema"]
