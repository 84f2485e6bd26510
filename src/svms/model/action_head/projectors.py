"""Per-embodiment layers: every robot (embodiment id) owns its own projector weights.

The weights are stored as `W` (categories, in, out) and `b` (categories, out), the transpose of
`nn.Linear`, because the reference applies them with a batched matmul `x @ W[id]` (spec §2.4, §3.3).
Samples of one batch may belong to different embodiments.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CategorySpecificLinear(nn.Module):
    """`x @ W[id] + b[id]` with each sample's own (in, out) matrix. `init` "release" draws W from the
    release's fixed N(0, 0.02²) whatever the fan-in; "fan_in" from N(0, 1/in_dim), which keeps a signal's
    scale through the layer (`Gr00tN1d6Config.projector_init`)."""

    def __init__(self, num_categories: int, in_dim: int, out_dim: int, init: str = "release") -> None:
        super().__init__()
        std = in_dim ** -0.5 if init == "fan_in" else 0.02
        self.W = nn.Parameter(std * torch.randn(num_categories, in_dim, out_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, out_dim))

    def forward(self, x: torch.Tensor, category_ids: torch.Tensor) -> torch.Tensor:
        # x (B, T, in), category_ids (B,) -> (B, T, out). index_select, not W[category_ids]: the same forward, but
        # its backward sums the samples of one embodiment in a fixed order, where advanced indexing's
        # (index_put_ with accumulate) adds them from several CPU threads at once and the result then varies in
        # the last bit from run to run.
        return (torch.bmm(x, self.W.index_select(0, category_ids))
                + self.b.index_select(0, category_ids).unsqueeze(1))


class CategorySpecificMLP(nn.Module):
    """Two per-embodiment linears with a ReLU between: the state encoder and the action decoder."""

    def __init__(self, num_categories: int, in_dim: int, hidden_dim: int, out_dim: int,
                 init: str = "release") -> None:
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, in_dim, hidden_dim, init)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, out_dim, init)

    def forward(self, x: torch.Tensor, category_ids: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x, category_ids)), category_ids)


def bucket_sinusoid(buckets: torch.Tensor, dim: int) -> torch.Tensor:
    """Action-encoder timestep features: [sin, cos] (sines first), frequencies exp(-i·ln(1e4)/(dim/2)).

    Differs from the DiT's timestep projection (divisor dim/2, not dim/2 − 1; sines first), spec §12.3.
    buckets (B, T) integer -> (B, T, dim) float32.
    """
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float32, device=buckets.device) * (math.log(10000.0) / half)
    phase = buckets.unsqueeze(-1).float() * torch.exp(exponent)  # (B, T, half)
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    """Noisy action chunk + diffusion bucket -> one token per action step (spec §3.4)."""

    def __init__(self, num_categories: int, action_dim: int, hidden_dim: int, init: str = "release") -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.W1 = CategorySpecificLinear(num_categories, action_dim, hidden_dim, init)
        self.W2 = CategorySpecificLinear(num_categories, 2 * hidden_dim, hidden_dim, init)
        self.W3 = CategorySpecificLinear(num_categories, hidden_dim, hidden_dim, init)

    def forward(self, actions: torch.Tensor, buckets: torch.Tensor | None,
                category_ids: torch.Tensor, time_features: torch.Tensor | None = None) -> torch.Tensor:
        # actions (B, H, A), buckets (B,) int -> (B, H, D); `time_features` (D,) replaces the buckets when
        # every sample shares one (the denoising loop computes them once for all its steps)
        a = self.W1(actions, category_ids)  # (B, H, D)
        if time_features is None:
            steps = buckets.unsqueeze(1).expand(-1, actions.shape[1])  # (B, H): same bucket at every step
            enc = bucket_sinusoid(steps, self.hidden_dim).to(a.dtype)  # (B, H, D)
        else:
            enc = time_features.to(a.dtype).expand_as(a)
        h = F.silu(self.W2(torch.cat([a, enc], dim=-1), category_ids))
        return self.W3(h, category_ids)
