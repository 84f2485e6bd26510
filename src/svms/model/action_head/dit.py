"""The diffusion transformer that turns [state token, action tokens] into velocity features (spec §3.6–3.9).

Module and parameter names follow the reference (diffusers-style: `norm1.linear`, `attn1.to_q`,
`ff.net.0.proj`, `timestep_encoder.timestep_embedder.linear_1`, ...), so checkpoints load unchanged.
Block i self-attends when i is odd and cross-attends to the VL features when i is even. `DiT` lets the
cross blocks see every VL token (padding included); `AlternateVLDiT` restricts them, alternately, to text
and to image tokens, always AND-ed with the padding mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from svms.model.config import DiTConfig

BLOCK_NORM_EPS = 1e-5
OUTPUT_NORM_EPS = 1e-6
TIMESTEP_CHANNELS = 256


def timestep_projection(buckets: torch.Tensor, channels: int = TIMESTEP_CHANNELS) -> torch.Tensor:
    """Diffusers-style sinusoid, cosines first, frequencies exp(-ln(1e4)·i/(half − 1)).

    buckets (B,) -> (B, channels) float32.
    """
    half = channels // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=buckets.device)
    phase = buckets.float().unsqueeze(-1) * torch.exp(exponent / (half - 1)).unsqueeze(0)  # (B, half)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEncoder(nn.Module):
    """Bucket -> `temb` (B, D), computed once per DiT call and shared by every block and the output head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(TIMESTEP_CHANNELS, dim)

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        proj = timestep_projection(buckets).to(self.timestep_embedder.linear_1.weight.dtype)
        return self.timestep_embedder(proj)


class AdaLayerNorm(nn.Module):
    """Non-affine LayerNorm modulated by `temb`; the modulation splits as (scale, shift), scale first."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)  # (B, D) each
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    def modulation(self, silu_temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + scale, shift), each (..., 1, D), from an already activated `temb` (..., D)."""
        scale, shift = self.linear(silu_temb).chunk(2, dim=-1)
        return (1 + scale).unsqueeze(-2), shift.unsqueeze(-2)

    def modulated(self, x: torch.Tensor, scale1: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * scale1 + shift


class Attention(nn.Module):
    """Multi-head attention with biases; keys/values come from `context` (cross) or the queries (self)."""

    def __init__(self, dim: int, kv_dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(kv_dim, inner)
        self.to_v = nn.Linear(kv_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, heads, L, head_dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `context` (B, S, kv_dim), split into heads: (B, heads, S, head_dim) each."""
        return self._split(self.to_k(context)), self._split(self.to_v(context))

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        # x (B, L, D), context (B, S, kv_dim), key_mask (B, S) bool, True = may attend. Queries first: the
        # order in which backward sums the three projections' gradients into a shared input.
        q = self._split(self.to_q(x))
        return self._attend(q, *self.keys_values(context), key_mask)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
               ) -> torch.Tensor:
        """Queries from x (B, L, D) against already split keys and values."""
        return self._attend(self._split(self.to_q(x)), k, v, key_mask)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
                ) -> torch.Tensor:
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, L, head_dim)
        out = out.transpose(1, 2).flatten(2)  # (B, L, inner)
        return self.to_out[1](self.to_out[0](out))


class GELUTanhProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, final_dropout: bool, mult: int = 4) -> None:
        super().__init__()
        layers = [GELUTanhProjection(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim)]
        if final_dropout:
            layers.append(nn.Dropout(dropout))
        self.net = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """AdaLN -> attention -> residual -> LN -> feed-forward -> residual (spec §3.7; no gates)."""

    def __init__(self, cfg: DiTConfig, kv_dim: int) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.norm1 = AdaLayerNorm(dim)
        self.attn1 = Attention(dim, kv_dim, cfg.num_attention_heads, cfg.attention_head_dim, cfg.dropout)
        # final_dropout adds a second dropout on the attention branch (and one at the end of the FF).
        self.attn_dropout = nn.Dropout(cfg.dropout) if cfg.final_dropout else nn.Identity()
        self.norm3 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, elementwise_affine=False)
        self.ff = FeedForward(dim, cfg.dropout, cfg.final_dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x, temb)
        x = x + self.attn_dropout(self.attn1(h, h if context is None else context, key_mask))
        return x + self.ff(self.norm3(x))

    def forward_cached(self, x: torch.Tensor, scale1: torch.Tensor, shift: torch.Tensor,
                       keys_values: tuple[torch.Tensor, torch.Tensor] | None, key_mask: torch.Tensor | None
                       ) -> torch.Tensor:
        """`forward` with the modulation and, in a cross block, the keys and values computed beforehand."""
        h = self.norm1.modulated(x, scale1, shift)
        if keys_values is None:
            attn = self.attn1(h, h, None)
        else:
            attn = self.attn1.attend(h, *keys_values, key_mask)
        x = x + self.attn_dropout(attn)
        return x + self.ff(self.norm3(x))


@dataclass
class DenoisingCache:
    """What every denoising step of one `get_action` call shares, computed once for all of them: the
    samples of a step share its time bucket, and the VL features and masks do not change across steps."""

    block_modulation: list[tuple[torch.Tensor, torch.Tensor]]  # per block: (1 + scale, shift), (steps, 1, 1, D)
    output_modulation: tuple[torch.Tensor, torch.Tensor]  # the output head's (1 + scale, shift), same shapes
    keys_values: list[tuple[torch.Tensor, torch.Tensor] | None]  # per block: cross-attention K, V (None: self)
    key_masks: list[torch.Tensor | None]  # per block: (B, S) bool, None = every token


class DiT(nn.Module):
    """Even blocks cross-attend to all VL tokens without any mask; odd blocks self-attend."""

    def __init__(self, cfg: DiTConfig, cross_attention_dim: int) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(cfg, cross_attention_dim if self.is_cross_block(i) else dim)
            for i in range(cfg.num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, eps=OUTPUT_NORM_EPS, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, cfg.output_dim)
        # Recompute each block's activations in the backward pass (memory for compute; training only).
        self.gradient_checkpointing = False

    @staticmethod
    def is_cross_block(index: int) -> bool:
        return index % 2 == 0

    def key_masks(self, attention_mask: torch.Tensor, image_mask: torch.Tensor) -> list[torch.Tensor | None]:
        """Which VL tokens each block may attend to (None = all; self blocks always None)."""
        return [None] * len(self.transformer_blocks)

    def key_mask(self, index: int, attention_mask: torch.Tensor,
                 image_mask: torch.Tensor) -> torch.Tensor | None:
        """Which VL tokens block `index` may attend to (None = all)."""
        return self.key_masks(attention_mask, image_mask)[index]

    def forward(self, tokens: torch.Tensor, vl: torch.Tensor, buckets: torch.Tensor,
                attention_mask: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        # tokens (B, L, D), vl (B, S, D_vl), buckets (B,), masks (B, S) bool -> (B, L, output_dim)
        temb = self.timestep_encoder(buckets)  # (B, D)
        masks = self.key_masks(attention_mask, image_mask)
        x = tokens
        for i, block in enumerate(self.transformer_blocks):
            args = (x, temb, vl, masks[i]) if self.is_cross_block(i) else (x, temb, None, None)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)  # shift first here (spec §3.9)
        return self.proj_out_2(self.norm_out(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))

    def prepare_denoising(self, vl: torch.Tensor, buckets: torch.Tensor, attention_mask: torch.Tensor,
                          image_mask: torch.Tensor) -> DenoisingCache:
        """The step-independent parts of `forward` for the steps at `buckets` (steps,), one bucket per step
        shared by the whole batch: `forward_step(tokens, cache, k)` then equals `forward(tokens, vl,
        buckets[k] for every sample, ...)` up to float rounding."""
        silu_temb = F.silu(self.timestep_encoder(buckets))  # (steps, D)
        modulation = [block.norm1.modulation(silu_temb[:, None]) for block in self.transformer_blocks]
        shift, scale = self.proj_out_1(silu_temb).chunk(2, dim=-1)
        out_mod = ((1 + scale)[:, None, None], shift[:, None, None])
        kv = [block.attn1.keys_values(vl) if self.is_cross_block(i) else None
              for i, block in enumerate(self.transformer_blocks)]
        return DenoisingCache(modulation, out_mod, kv, self.key_masks(attention_mask, image_mask))

    def forward_step(self, tokens: torch.Tensor, cache: DenoisingCache, step: int) -> torch.Tensor:
        """`forward` at denoising step `step` of a `prepare_denoising` cache: tokens (B, L, D) -> (B, L, out)."""
        x = tokens
        for i, block in enumerate(self.transformer_blocks):
            scale1, shift = cache.block_modulation[i]
            x = block.forward_cached(x, scale1[step], shift[step], cache.keys_values[i], cache.key_masks[i])
        scale1, shift = cache.output_modulation
        return self.proj_out_2(self.norm_out(x) * scale1[step] + shift[step])


class AlternateVLDiT(DiT):
    """Cross block i attends to text tokens when i % (2n) == 0, else to image tokens (n = text period)."""

    def __init__(self, cfg: DiTConfig, cross_attention_dim: int, attend_text_every_n_blocks: int) -> None:
        super().__init__(cfg, cross_attention_dim)
        self.attend_text_every_n_blocks = attend_text_every_n_blocks

    def attends_text(self, index: int) -> bool:
        return index % (2 * self.attend_text_every_n_blocks) == 0

    def key_masks(self, attention_mask: torch.Tensor, image_mask: torch.Tensor) -> list[torch.Tensor | None]:
        text, image = ~image_mask & attention_mask, image_mask & attention_mask  # built once, shared by blocks
        return [(text if self.attends_text(i) else image) if self.is_cross_block(i) else None
                for i in range(len(self.transformer_blocks))]
