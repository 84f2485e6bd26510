"""Where training metrics go: `RUN/metrics.jsonl` (one object per optimizer step), TensorBoard, W&B,
and a console line with losses, learning rate, throughput and ETA."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from svms.optional import require
from svms.sheaf import SheafStreamsOutput

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(run: Path, last_step: int) -> None:
    """Drop lines after `last_step` (a resumed run rewrites nothing up to its checkpoint)."""
    path = run / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a kill
    path.write_text("".join(line + "\n" for line in kept))


def svms_diagnostics(out: SheafStreamsOutput, image_mask: torch.Tensor, valid: torch.Tensor,
                     names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Sheaf residual, alpha, router mean weight and entropy per stream and token type, aux metrics: 0-dim
    tensors, left on the device (masked means, no boolean indexing); a NaN means "no such token" and
    `fetch_records` drops it."""
    d: dict[str, torch.Tensor] = {"svms/sheaf_residual": out.sheaf_residual.detach().mean(),
                                  "svms/alpha": out.alpha.detach()}
    w = out.router_weights.detach().float()  # (B, T, S)
    entropy = -(w.clamp_min(1e-12).log() * w).sum(-1)  # (B, T)
    for kind, mask in (("all", valid), ("image", valid & image_mask), ("text", valid & ~image_mask)):
        m = mask.to(w.dtype)
        count = m.sum()
        d[f"router/{kind}/entropy"] = (entropy * m).sum() / count  # NaN when there is no such token
        means = (w * m[..., None]).sum(dim=(0, 1)) / count  # (S,)
        for i, name in enumerate(names):
            d[f"router/{kind}/{name}"] = means[i]
    for name, m in (out.aux_metrics or {}).items():
        for key in ("accuracy", "balanced_accuracy"):
            d[f"aux/{name}/{key}"] = m[key]
    return d


def fetch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with each tensor value replaced by its float, all fetched in one device->host copy;
    non-finite diagnostics (keys with a '/') are dropped, as a step without such tokens has none."""
    tensors = [v for r in records for v in r.values() if torch.is_tensor(v)]
    if not tensors:
        return [dict(r) for r in records]
    device = tensors[0].device
    values = iter(torch.stack([t.detach().to(device, torch.float64).reshape(()) for t in tensors]).tolist())
    out = []
    for record in records:
        fetched = {k: next(values) if torch.is_tensor(v) else v for k, v in record.items()}
        out.append({k: v for k, v in fetched.items() if "/" not in k or math.isfinite(v)})
    return out


class MetricsLogger:
    """Writes each step's metrics; only the main process logs."""

    def __init__(self, run: Path, enabled: bool, tensorboard: bool, wandb: bool, max_steps: int,
                 start_step: int, config: dict[str, Any]) -> None:
        self.enabled, self.max_steps, self.start_step = enabled, max_steps, start_step
        self.file = (run / METRICS_FILE).open("a") if enabled else None
        self.tb = None
        self.wandb = None
        self.t0 = time.perf_counter()
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=start_step + 1)
            except ImportError:
                warnings.warn("TensorBoard is not installed: no event files (install svms-gr00t[tracking] or "
                              "pass --no-tensorboard)", stacklevel=2)
        if enabled and wandb:
            wandb_module = require("wandb", "tracking", "--wandb")
            self.wandb = wandb_module.init(project="svms-gr00t", dir=str(run), config=config, resume="allow")

    def log(self, step: int, record: dict[str, Any], samples: int, print_line: bool) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(record, step=step)
        if print_line:
            elapsed = time.perf_counter() - self.t0
            done = step - self.start_step
            eta = elapsed / max(1, done) * (self.max_steps - step)
            terms = " ".join(f"{k} {record[k]:.4f}" for k in ("flow_loss", "sheaf_loss", "aux_loss", "balance_loss")
                             if k in record)
            print(f"step {step}/{self.max_steps}  loss {record['loss']:.4f}  {terms}  lr {record['lr']:.2e}  "
                  f"{samples * done / max(elapsed, 1e-9):.1f} samples/s  ETA {eta:.0f}s", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
