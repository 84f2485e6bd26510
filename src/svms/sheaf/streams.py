"""Stream heads: each stream's own view of every token."""

from __future__ import annotations

import torch
from torch import nn


class StreamHead(nn.Module):
    """h (.., D) -> s (.., d_stream): projection, residual MLP, LayerNorm."""

    def __init__(self, d_model: int, d_stream: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_stream)
        self.mlp = nn.Sequential(
            nn.LayerNorm(d_stream),
            nn.Linear(d_stream, d_stream),
            nn.GELU(approximate="tanh"),
            nn.Linear(d_stream, d_stream),
            nn.Dropout(dropout),
        )
        self.norm = nn.LayerNorm(d_stream)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.proj(h)
        return self.norm(s + self.mlp(s))
