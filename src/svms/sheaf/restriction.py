"""Low-rank restriction maps on the stream graph: coboundary, Laplacian, disagreement, diffusion.

Incidence k = 2e is the tail u of edge e = (u, w), k = 2e + 1 its head w. Each incidence holds
F_k = P_k Q_k^T with P_k (d_overlap, r) and Q_k (d_stream, r), so applying a map to a token costs
O((d_stream + d_overlap) r) and the dense Laplacian is never formed in the hot path.
"""

from __future__ import annotations

import torch
from torch import nn

from svms.sheaf.config import SheafStreamsConfig


class RestrictionMaps(nn.Module):
    """All F_{v<e} of the sheaf, with the operators built from them."""

    def __init__(self, config: SheafStreamsConfig) -> None:
        super().__init__()
        self.config = config
        n_inc = 2 * config.n_edges
        r = config.adapter_rank
        # Scaled so that F x has about unit variance per overlap coordinate for unit-variance x.
        self.P = nn.Parameter(torch.randn(n_inc, config.d_overlap, r) / r**0.5)
        self.Q = nn.Parameter(torch.randn(n_inc, config.d_stream, r) / config.d_stream**0.5)
        tails = [u for u, _ in config.edges]
        heads = [w for _, w in config.edges]
        self.register_buffer("tails", torch.tensor(tails, dtype=torch.long), persistent=False)
        self.register_buffer("heads", torch.tensor(heads, dtype=torch.long), persistent=False)
        self._bound_cache: tuple[tuple, torch.Tensor] | None = None

    def dense(self, k: int) -> torch.Tensor:
        """F_k as a dense (d_overlap, d_stream) matrix (inspection and tests)."""
        return self.P[k] @ self.Q[k].T

    def project(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F_{u<e} x_u and F_{w<e} x_w for every edge: two (..., E, d_overlap) tensors."""
        x_tail = streams.index_select(-2, self.tails)  # (..., E, d_stream)
        x_head = streams.index_select(-2, self.heads)
        P, Q = self.P.to(streams.dtype), self.Q.to(streams.dtype)
        y_tail = torch.einsum("...er,eor->...eo", torch.einsum("...ei,eir->...er", x_tail, Q[0::2]), P[0::2])
        y_head = torch.einsum("...er,eor->...eo", torch.einsum("...ei,eir->...er", x_head, Q[1::2]), P[1::2])
        return y_tail, y_head

    def coboundary(self, streams: torch.Tensor) -> torch.Tensor:
        """(delta x)_e = F_{u<e} x_u - F_{w<e} x_w: (..., S, d_stream) -> (..., E, d_overlap)."""
        y_tail, y_head = self.project(streams)
        return y_tail - y_head

    def coboundary_adjoint(self, y: torch.Tensor, n_streams: int) -> torch.Tensor:
        """delta^T y: (..., E, d_overlap) -> (..., S, d_stream)."""
        P, Q = self.P.to(y.dtype), self.Q.to(y.dtype)
        g_tail = torch.einsum("...er,eir->...ei", torch.einsum("...eo,eor->...er", y, P[0::2]), Q[0::2])
        g_head = torch.einsum("...er,eir->...ei", torch.einsum("...eo,eor->...er", y, P[1::2]), Q[1::2])
        out = y.new_zeros(*y.shape[:-2], n_streams, self.config.d_stream)
        out = out.index_add(-2, self.tails, g_tail)
        return out.index_add(-2, self.heads, -g_head)

    def apply_laplacian(self, streams: torch.Tensor) -> torch.Tensor:
        """L x = delta^T delta x per token, from the low-rank factors."""
        return self.coboundary_adjoint(self.coboundary(streams), streams.shape[-2])

    def disagreement(self, streams: torch.Tensor) -> torch.Tensor:
        """Energy ||delta x||^2 = x^T L x per token: (..., S, d_stream) -> (...)."""
        return self.coboundary(streams).float().pow(2).sum(dim=(-2, -1))

    def laplacian(self) -> torch.Tensor:
        """Dense L (S*d_stream, S*d_stream), stream-major blocks; for small sizes only."""
        cfg = self.config
        d = cfg.d_stream
        L = self.P.new_zeros(cfg.n_streams * d, cfg.n_streams * d)
        for e, (u, w) in enumerate(cfg.edges):
            F_u, F_w = self.dense(2 * e), self.dense(2 * e + 1)
            L[u * d:(u + 1) * d, u * d:(u + 1) * d] += F_u.T @ F_u
            L[w * d:(w + 1) * d, w * d:(w + 1) * d] += F_w.T @ F_w
            L[u * d:(u + 1) * d, w * d:(w + 1) * d] -= F_u.T @ F_w
            L[w * d:(w + 1) * d, u * d:(u + 1) * d] -= F_w.T @ F_u
        return L

    def lambda_max_bound(self) -> torch.Tensor:
        """A rigorous upper bound on lambda_max(L), cheap enough for every forward pass.

        ||delta x||^2 <= sum_e 2(||F_u||^2 ||x_u||^2 + ||F_w||^2 ||x_w||^2), hence
        lambda_max(L) <= 2 max_v sum_{e ni v} ||F_{v<e}||_2^2. The spectral norm of P Q^T equals
        that of R_P R_Q^T (r x r) from the QR factorisations of P and Q.

        It enters the step size alpha as a constant (no gradient to P, Q): it is a safeguard that keeps the
        diffusion inside its stable range, not something to optimise; its gradient would let training shrink
        the maps to enlarge the step.

        The factorisations cost more than the rest of an inference pass (13.7 of 20.5 ms on an H100), so a call
        where no gradient flows (grad mode off: `get_action`, evaluation) caches the bound, keyed on P's and Q's
        storage, version counters, dtype and device. A call with gradients on (training) computes it afresh and
        drops the cache, as does `train()`: an optimizer step, which needs gradients from such a call first,
        never outlives it, even a fused AdamW step that leaves the version counters as they were.
        """
        P, Q = self.P, self.Q
        if torch.is_grad_enabled():
            self._bound_cache = None
            with torch.no_grad():
                return self._lambda_max_bound()
        key = (P.data_ptr(), Q.data_ptr(), P._version, Q._version, P.dtype, P.device)
        if self._bound_cache is not None and self._bound_cache[0] == key:
            return self._bound_cache[1]
        bound = self._lambda_max_bound()
        self._bound_cache = (key, bound)
        return bound

    def train(self, mode: bool = True) -> RestrictionMaps:
        self._bound_cache = None
        return super().train(mode)

    def _lambda_max_bound(self) -> torch.Tensor:
        dtype = torch.float64 if self.P.dtype == torch.float64 else torch.float32
        with torch.autocast(self.P.device.type, enabled=False):
            R_p = torch.linalg.qr(self.P.to(dtype), mode="r").R
            R_q = torch.linalg.qr(self.Q.to(dtype), mode="r").R
            sigma_sq = torch.linalg.matrix_norm(R_p @ R_q.transpose(-1, -2), ord=2).pow(2)  # (2E,)
        per_vertex = sigma_sq.new_zeros(self.config.n_streams)
        per_vertex.index_add_(0, self.tails, sigma_sq[0::2])
        per_vertex.index_add_(0, self.heads, sigma_sq[1::2])
        return 2.0 * per_vertex.max()
