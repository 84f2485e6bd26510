"""Phased SVMS fine-tuning (`svms train`): config and phase defaults (`config`), schedules, the
training loop (`trainer.train`), checkpoints and resume, multi-process runs, metrics, memory estimates."""

from svms.train.config import PHASE_DEFAULTS, TrainConfig

__all__ = ["PHASE_DEFAULTS", "TrainConfig"]
