"""SVMS: sheaf-consistent multi-stream refinement of token features, for any backbone.

Pure torch; imports nothing else from `svms`.

Definitions and shapes (B batch, T tokens, D model width, S streams, E edges, d = d_stream,
d' = d_overlap, r = adapter_rank):

* Streams. Stream i maps each token's feature h (D) to s_i (d): Linear, residual MLP, LayerNorm.
  Stacked: x (B, T, S, d); `x.reshape(B, T, S*d)` is the stream-major layout of `laplacian()`.
* Sheaf on the stream graph (vertices = streams, `edges` = (u, w) pairs). Each incidence (v, e)
  has a restriction map F_{v<e} = P Q^T : R^d -> R^d' of rank r. Coboundary
  (delta x)_e = F_{u<e} x_u - F_{w<e} x_w; Laplacian L = delta^T delta (symmetric PSD; its kernel
  is the global sections); disagreement energy E(x) = ||delta x||^2 = x^T L x.
* Consistency loss = mean over valid tokens of ||delta x||^2 / sum_e(||F_u x_u||^2 + ||F_w x_w||^2)
  (invariant to scaling the maps, so shrinking them cannot lower it) + `collapse_weight` *
  (a per-coordinate standard-deviation floor and a decorrelation term on the maps' outputs across
  tokens, so constant or rank-collapsed maps are penalised). Computed on the streams before
  diffusion: it teaches the streams to agree, rather than rewarding the correction.
* Diffusion: x <- x - alpha L x, `diffusion_steps` times, from the low-rank factors (never the dense
  L). alpha = sigmoid(a) * 2 / lambda_bound with lambda_bound = 2 max_v sum_{e ni v} ||F_{v<e}||^2 >=
  lambda_max(L), so alpha stays in (0, 2 / lambda_max) and the energy never increases
  (eigen-wise lambda (1 - alpha lambda)^2 <= lambda).
* Router: weights (B, T, S) = softmax(MLP(h_t) / temperature) per token; balance loss KL(mean
  weights || uniform) (or Switch-style); stream dropout in training, renormalised per token.
* Merge: h + W_out [w_1 s_1, ..., w_S s_S] with W_out zero-initialised: identity at init.
* Auxiliary heads: one binary classifier per stream on its own diffused features; labels -100 are
  ignored; accuracy and balanced accuracy per stream.

Invariants and the tests that check them (tests/test_sheaf.py):
L symmetric PSD and equal to a dense delta^T delta -> test_laplacian_*; global sections are fixed
by diffusion -> test_global_sections_*; energy non-increasing (also at the top of alpha's range) ->
test_diffusion_energy_*; consistency loss scale-invariant and penalising collapse ->
test_consistency_*; router weights a distribution per valid token, masked tokens in no loss ->
test_router_*, test_masked_*; identity at init -> test_identity_at_init; gradients reach every
parameter -> test_gradients_*; aux loss ignores -100 -> test_aux_*; graphs and S = 2..5 ->
test_graphs_*; determinism and bf16 autocast -> test_determinism, test_bf16_autocast.
"""

from svms.sheaf.config import SheafConfigError, SheafStreamsConfig
from svms.sheaf.module import SheafStreams, SheafStreamsOutput

__all__ = ["SheafConfigError", "SheafStreams", "SheafStreamsConfig", "SheafStreamsOutput"]
