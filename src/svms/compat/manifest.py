"""The state-dict manifest (`name [shape]` per entry) of a model config, built without weights."""

from __future__ import annotations

import torch

from svms.model.config import Gr00tN1d6Config
from svms.model.policy import Gr00tN1d6


def state_dict_manifest(config: Gr00tN1d6Config) -> list[tuple[str, list[int]]]:
    """Every state-dict entry of `Gr00tN1d6(config)` in order, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = Gr00tN1d6(config)
    return [(name, list(t.shape)) for name, t in model.state_dict().items()]


def format_manifest(entries: list[tuple[str, list[int]]]) -> str:
    return "\n".join(f"{name} [{', '.join(str(s) for s in shape)}]" for name, shape in entries)
