"""Choosing where to run: the `--device auto|cpu|cuda` rule shared by training, evaluation and serving."""

from __future__ import annotations

import torch

from svms.errors import SvmsError


def resolve_device(device: str, index: int = 0) -> torch.device:
    """`auto` = CUDA when a GPU is visible, else CPU; `cuda` without a GPU is a clear error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise SvmsError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SvmsError("--device cuda was requested but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(f"cuda:{index}") if device == "cuda" else torch.device("cpu")
