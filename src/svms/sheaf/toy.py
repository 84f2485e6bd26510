"""A synthetic task that shows `SheafStreams` learning: `svms sheaf-demo`.

Tokens come in S types. A token's feature is its type's embedding plus noise, and the target is
the feature moved by a type-specific linear map, so the module must route each type to a stream
that learned that map. Auxiliary labels mark each token's type. Pure torch, seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from svms.sheaf.config import SheafStreamsConfig
from svms.sheaf.module import SheafStreams


@dataclass
class ToyReport:
    """Metrics of one logged step."""

    step: int
    task_mse: float
    sheaf_loss: float
    residual: float
    balance_loss: float
    alpha: float
    own_stream_weight: float  # mean router weight on the stream of the token's own type
    aux_balanced_accuracy: dict[str, float]


def _toy_problem(seed: int, d_model: int, n_streams: int):
    """The generator, each type's embedding (S, D) and each type's linear map (S, D, D)."""
    gen = torch.Generator().manual_seed(seed)
    types_emb = torch.randn(n_streams, d_model, generator=gen)
    maps = 0.3 * torch.randn(n_streams, d_model, d_model, generator=gen) / d_model**0.5
    return gen, types_emb, maps


def _toy_batch(gen: torch.Generator, types_emb: torch.Tensor, maps: torch.Tensor, batch: int, tokens: int):
    n_types, d = types_emb.shape
    kind = torch.randint(0, n_types, (batch, tokens), generator=gen)
    h = types_emb[kind] + 0.5 * torch.randn(batch, tokens, d, generator=gen)
    target = h + torch.einsum("btij,btj->bti", maps[kind], h)
    mask = torch.rand(batch, tokens, generator=gen) > 0.1
    labels = torch.nn.functional.one_hot(kind, n_types)
    return h, mask, labels, kind, target


def run_toy(
    steps: int = 300,
    d_model: int = 64,
    n_streams: int = 3,
    batch: int = 16,
    tokens: int = 32,
    seed: int = 0,
    lambda_sheaf: float = 0.1,
    lambda_aux: float = 0.3,
    log_every: int = 50,
    on_log: Callable[[ToyReport], None] | None = None,
) -> list[ToyReport]:
    """Train on the toy task; return (and pass to `on_log`) a report every `log_every` steps."""
    torch.manual_seed(seed)
    gen, types_emb, maps = _toy_problem(seed, d_model, n_streams)
    config = SheafStreamsConfig(d_model=d_model, n_streams=n_streams, d_stream=32, d_overlap=16,
                                adapter_rank=8, router_hidden=32, dropout=0.0)
    module = SheafStreams(config)
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    reports = []
    for step in range(1, steps + 1):
        module.train()
        h, mask, labels, kind, target = _toy_batch(gen, types_emb, maps, batch, tokens)
        temperature = 2.0 - 1.5 * min(1.0, step / max(1, steps))
        out = module(h, mask, labels, temperature=temperature)
        task = ((out.features - target).pow(2).mean(-1) * mask).sum() / mask.sum()
        loss = task + lambda_sheaf * out.sheaf_loss + lambda_aux * out.aux_loss + 0.01 * out.balance_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            module.eval()
            with torch.no_grad():
                h, mask, labels, kind, target = _toy_batch(gen, types_emb, maps, batch, tokens)
                ev = module(h, mask, labels, temperature=temperature)
                mse = float(((ev.features - target).pow(2).mean(-1) * mask).sum() / mask.sum())
                own = ev.router_weights.gather(-1, kind.unsqueeze(-1)).squeeze(-1)[mask].mean()
            report = ToyReport(
                step=step, task_mse=mse, sheaf_loss=float(ev.sheaf_loss),
                residual=float(ev.sheaf_residual.mean()),
                balance_loss=float(ev.balance_loss), alpha=float(ev.alpha), own_stream_weight=float(own),
                aux_balanced_accuracy={k: float(v["balanced_accuracy"]) for k, v in ev.aux_metrics.items()},
            )
            reports.append(report)
            if on_log is not None:
                on_log(report)
    return reports


def baseline_mse(d_model: int = 64, n_streams: int = 3, batch: int = 16, tokens: int = 32,
                 seed: int = 0) -> float:
    """The task error of the identity (what SheafStreams computes at initialisation)."""
    gen, types_emb, maps = _toy_problem(seed, d_model, n_streams)
    h, mask, _, _, target = _toy_batch(gen, types_emb, maps, batch, tokens)
    return float(((h - target).pow(2).mean(-1) * mask).sum() / mask.sum())
