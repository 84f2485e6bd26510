"""`SheafStreams`: streams -> sheaf diffusion -> token router -> zero-initialised merge."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svms.sheaf.config import SheafStreamsConfig
from svms.sheaf.losses import aux_loss_and_metrics, collapse_penalty, normalised_disagreement
from svms.sheaf.restriction import RestrictionMaps
from svms.sheaf.router import TokenRouter, balance_loss, drop_streams
from svms.sheaf.streams import StreamHead


@dataclass
class SheafStreamsOutput:
    """What one forward pass returns. Losses are fp32 scalars; `aux_*` are None without labels; every loss
    and diagnostic is None when the pass was asked for the features only (`losses=False`, inference)."""

    features: torch.Tensor  # (B, T, D) refined features (== input at init and at masked tokens)
    streams: torch.Tensor  # (B, T, S, d_stream) stream features after diffusion
    router_weights: torch.Tensor  # (B, T, S), sums to 1 at valid tokens, 0 at masked ones
    alpha: torch.Tensor  # the diffusion step size used
    sheaf_loss: torch.Tensor | None = None  # consistency loss (normalised disagreement + collapse penalty)
    sheaf_residual: torch.Tensor | None = None  # (B,) mean normalised disagreement over each sample's valid tokens
    balance_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    aux_metrics: dict[str, dict[str, torch.Tensor]] | None = None


class SheafStreams(nn.Module):
    """Sheaf-consistent multi-stream refinement of backbone features (see `svms.sheaf`)."""

    def __init__(self, config: SheafStreamsConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.stream_heads = nn.ModuleList(
            StreamHead(c.d_model, c.d_stream, c.dropout) for _ in range(c.n_streams))
        self.maps = RestrictionMaps(c)
        # alpha = sigmoid(alpha_logit) * 2 / lambda_bound: inside (0, 2 / lambda_max(L)) always;
        # starts at the middle of the range.
        self.alpha_logit = nn.Parameter(torch.zeros(()))
        self.router = TokenRouter(c.d_model, c.router_hidden, c.n_streams)
        # Router temperature used when forward() is given none: a training schedule anneals it and a
        # checkpoint keeps the value the policy was trained with.
        self.register_buffer("router_temperature", torch.tensor(1.0))
        self.aux_heads = nn.Linear(c.n_streams * c.d_stream, c.n_streams) if c.use_aux_heads else None
        self.merge = nn.Linear(c.n_streams * c.d_stream, c.d_model)
        nn.init.zeros_(self.merge.weight)
        nn.init.zeros_(self.merge.bias)
        if self.aux_heads is not None:
            # One independent binary classifier per stream: stream i reads only its own features.
            self.register_buffer("aux_block_mask", torch.block_diag(
                *[torch.ones(1, c.d_stream) for _ in range(c.n_streams)]), persistent=False)

    def dropout_generator(self, device: torch.device) -> torch.Generator:
        """A private RNG for stream dropout, seeded from torch's seed without drawing from the global
        RNG, so enabling SVMS does not shift the random draws of the model around it."""
        gen = getattr(self, "_generator", None)
        if gen is None or gen.device != torch.device(device):
            gen = torch.Generator(device=device)
            gen.manual_seed(torch.initial_seed() + 7919)
            self._generator = gen
        return gen

    # -- inspection helpers (public API) --------------------------------------------------------
    def laplacian(self) -> torch.Tensor:
        """Dense sheaf Laplacian (S*d_stream, S*d_stream), stream-major; small sizes only."""
        return self.maps.laplacian()

    def disagreement(self, streams: torch.Tensor) -> torch.Tensor:
        """||delta x||^2 per token: streams (B, T, S, d_stream) -> (B, T)."""
        return self.maps.disagreement(streams)

    def alpha(self) -> torch.Tensor:
        """The diffusion step size, strictly inside (0, 2 / lambda_max(L))."""
        return torch.sigmoid(self.alpha_logit.float()) * 2.0 / self.maps.lambda_max_bound().clamp_min(1e-12)

    def diffuse(self, streams: torch.Tensor, steps: int | None = None,
                alpha: torch.Tensor | float | None = None) -> torch.Tensor:
        """x <- x - alpha L x, `steps` times (default `diffusion_steps`), per token."""
        steps = self.config.diffusion_steps if steps is None else steps
        alpha = self.alpha() if alpha is None else alpha
        for _ in range(steps):
            streams = streams - alpha * self.maps.apply_laplacian(streams)
        return streams

    def embed_streams(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, T, D) -> stream features (B, T, S, d_stream) before diffusion."""
        return torch.stack([head(features) for head in self.stream_heads], dim=-2)

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        aux_labels: torch.Tensor | None = None,
        temperature: float | torch.Tensor | None = None,
        losses: bool = True,
    ) -> SheafStreamsOutput:
        """features (B, T, D); attention_mask (B, T), true/1 = valid; aux_labels (B, T, S) in
        {0, 1, -100}; temperature defaults to the `router_temperature` buffer (1.0 at init), read on the
        device. Masked tokens pass through unchanged and enter no loss. `losses=False` computes the refined
        features only (the same streams, diffusion, router and merge), skipping every loss and diagnostic."""
        c = self.config
        B, T, _ = features.shape
        if attention_mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=features.device)
        else:
            mask = attention_mask.to(torch.bool)
        x0 = self.embed_streams(features)  # (B, T, S, d_stream)
        m = mask.float()
        sheaf = residual = None
        if losses:  # consistency on what the streams produce before the correction
            y_tail, y_head = self.maps.project(x0)  # (B, T, E, d_overlap) each
            ratio = normalised_disagreement(y_tail, y_head, c.eps)  # (B, T)
            tokens = m.sum(1)
            residual = (ratio * m).sum(1) / tokens.clamp_min(1)
            sheaf = (ratio * m).sum() / m.sum().clamp_min(1)
            if c.collapse_weight > 0:
                projections = torch.cat([y_tail, y_head], dim=-2)
                sheaf = sheaf + c.collapse_weight * collapse_penalty(projections, mask, c.overlap_std_floor)

        alpha = self.alpha()
        x = self.diffuse(x0, alpha=alpha)

        if temperature is None:
            temperature = self.router_temperature  # a tensor: no wait for the device
        balance = None
        if c.use_router:
            weights = self.router(features, temperature)  # (B, T, S) fp32
            if losses:
                balance = balance_loss(weights, mask, c.balance_mode)
        else:
            weights = features.new_full((B, T, c.n_streams), 1.0 / c.n_streams, dtype=torch.float32)
            if losses:
                balance = features.new_zeros((), dtype=torch.float32)
        if self.training and c.stream_dropout_p > 0:
            weights = drop_streams(weights, c.stream_dropout_p, self.dropout_generator(weights.device))
        weights = weights * m.unsqueeze(-1)

        mixed = (x * weights.unsqueeze(-1).to(x.dtype)).flatten(-2)  # (B, T, S*d_stream)
        delta = self.merge(mixed) * mask.unsqueeze(-1).to(features.dtype)
        out = SheafStreamsOutput(
            features=features + delta.to(features.dtype), streams=x, router_weights=weights, alpha=alpha,
            sheaf_loss=sheaf, sheaf_residual=residual, balance_loss=balance,
        )
        if losses and aux_labels is not None and self.aux_heads is not None:
            if aux_labels.shape != (B, T, c.n_streams):
                raise ValueError(f"aux_labels must have shape (B, T, S) = {(B, T, c.n_streams)}, "
                                 f"got {tuple(aux_labels.shape)}")
            logits = nn.functional.linear(x.flatten(-2), self.aux_heads.weight * self.aux_block_mask,
                                          self.aux_heads.bias)
            out.aux_loss, out.aux_metrics = aux_loss_and_metrics(logits, aux_labels, mask, c.stream_names)
        return out
