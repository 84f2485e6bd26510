"""Token-level router: per-token stream weights, load balancing and stream dropout."""

from __future__ import annotations

import torch
from torch import nn


class TokenRouter(nn.Module):
    """Weights (B, T, S) from each token's own feature: softmax(logits / temperature)."""

    def __init__(self, d_model: int, hidden: int, n_streams: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"),
            nn.Linear(hidden, n_streams),
        )

    def forward(self, h: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
        """A tensor temperature (the module's buffer, set from validated schedules) is not checked: reading
        it would make the host wait for the device."""
        if not torch.is_tensor(temperature) and temperature <= 0:
            raise ValueError(f"router temperature must be > 0, got {temperature}")
        return torch.softmax(self.net(h).float() / temperature, dim=-1)


def balance_loss(weights: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """How far stream usage over the valid tokens is from uniform (0 when balanced).

    `kl`: KL(mean weights || uniform) = sum_i p_i log(S p_i).
    `switch`: S * sum_i f_i p_i with f_i the fraction of tokens whose top stream is i (Switch
    Transformer); its minimum is 1, so 1 is subtracted to make balance read 0.
    """
    n_streams = weights.shape[-1]
    m = mask.to(weights.dtype).unsqueeze(-1)  # (B, T, 1)
    count = m.sum().clamp_min(1.0)
    mean_w = (weights * m).sum(dim=(0, 1)) / count  # (S,)
    if mode == "kl":
        return (mean_w * (mean_w.clamp_min(1e-12) * n_streams).log()).sum()
    top = nn.functional.one_hot(weights.argmax(-1), n_streams).to(weights.dtype)
    frac = (top * m).sum(dim=(0, 1)) / count
    return n_streams * (frac * mean_w).sum() - 1.0


def drop_streams(weights: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each (token, stream) weight with probability p and renormalise per token.

    A token whose streams would all be dropped keeps its weights unchanged, so every token still
    sums to 1 and no token loses its signal.
    """
    if p <= 0:
        return weights
    keep = torch.rand(weights.shape, device=weights.device, generator=generator) >= p
    kept = weights * keep
    total = kept.sum(-1, keepdim=True)
    ok = total > 0
    return torch.where(ok, kept / torch.where(ok, total, torch.ones_like(total)), weights)

