"""`--optimizer`: torch's AdamW (fused, or multi-tensor as the reference runs it) or bitsandbytes' 8-bit AdamW,
plain or paged, which keeps 2 bytes of state per parameter instead of 8.

bitsandbytes is the optional `quant` extra; without it, or on a device its optimizers cannot run on, the error
says which extra or device is needed. Paged optimizers move their state between GPU and CPU memory, so they
need CUDA.
"""

from __future__ import annotations

from typing import Any

import torch

from svms.errors import SvmsError
from svms.optional import require

OPTIMIZERS = ("adamw", "adamw-foreach", "adamw8bit", "paged-adamw8bit")
EIGHT_BIT = ("adamw8bit", "paged-adamw8bit")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise SvmsError(f"--optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


def _bitsandbytes(name: str, device: torch.device):
    if name == "paged-adamw8bit" and device.type != "cuda":
        raise SvmsError(f"--optimizer paged-adamw8bit pages its state between GPU and CPU memory, so it needs a "
                        f"CUDA GPU (this run is on {device.type}); use --optimizer adamw8bit or adamw here")
    try:
        bnb = require("bitsandbytes", "quant", f"--optimizer {name}", "or use --optimizer adamw")
    except SvmsError:
        raise
    except Exception as err:  # a build that does not load on this machine (no matching CUDA library, ...)
        raise SvmsError(f"--optimizer {name}: bitsandbytes is installed but does not load here ({err}); "
                        "reinstall the `quant` extra for this machine or use --optimizer adamw") from err
    return bnb


def _probe(cls, device: torch.device, name: str) -> None:
    """One 8-bit step on a throwaway tensor large enough for the 8-bit path: a device the library has no
    kernels for fails here, with a message, instead of at the first training step."""
    p = torch.nn.Parameter(torch.zeros(4096 * 2, device=device))
    p.grad = torch.ones_like(p)
    try:
        cls([p], lr=1e-3).step()
    except Exception as err:
        raise SvmsError(f"--optimizer {name}: bitsandbytes cannot run its 8-bit AdamW on {device} ({err}); "
                        "it needs a CUDA GPU (or a bitsandbytes release with kernels for this device); use "
                        "--optimizer adamw here") from err


def build_optimizer(name: str, groups: list[dict[str, Any]] | list[torch.nn.Parameter], lr: float,
                    device: torch.device, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer `name` over `groups` (param groups or a parameter list)."""
    check_optimizer(name)
    if name == "adamw":
        # fused on CPU too: one pass over each tensor instead of ~10, which on a 2-core machine made the tiny
        # model's optimizer step cost as much as its backward pass (measured 0.13 s -> 0.03 s per step)
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay,
                                 fused=device.type in ("cuda", "cpu"))
    if name == "adamw-foreach":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, foreach=True)
    bnb = _bitsandbytes(name, device)
    cls = bnb.optim.PagedAdamW8bit if name == "paged-adamw8bit" else bnb.optim.AdamW8bit
    _probe(cls, device, name)
    return cls(groups, lr=lr, weight_decay=weight_decay)


__all__ = ["EIGHT_BIT", "OPTIMIZERS", "build_optimizer", "check_optimizer"]
