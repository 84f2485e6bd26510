"""Invariants of `svms.sheaf`: each test fails if the corresponding piece of math is wrong."""

from __future__ import annotations

import pytest
import torch

from svms.sheaf import SheafConfigError, SheafStreams, SheafStreamsConfig

TRIANGLE = ((0, 1), (1, 2), (0, 2))


def small_config(**kw) -> SheafStreamsConfig:
    base = dict(d_model=24, d_stream=12, d_overlap=8, adapter_rank=5, router_hidden=16, dropout=0.0)
    base.update(kw)
    return SheafStreamsConfig(**base)


def build(seed: int = 0, **kw) -> SheafStreams:
    torch.manual_seed(seed)
    return SheafStreams(small_config(**kw))


def dense_coboundary(module: SheafStreams) -> torch.Tensor:
    """delta as a dense (E*d', S*d) matrix, assembled independently of `laplacian()`."""
    c = module.config
    rows = []
    for e, (u, w) in enumerate(c.edges):
        blocks = [torch.zeros(c.d_overlap, c.d_stream) for _ in range(c.n_streams)]
        blocks[u] = blocks[u] + module.maps.dense(2 * e)
        blocks[w] = blocks[w] - module.maps.dense(2 * e + 1)
        rows.append(torch.cat(blocks, dim=1))
    return torch.cat(rows, dim=0)


# -- config -------------------------------------------------------------------------------------
def test_config_defaults_follow_the_design():
    c = SheafStreamsConfig(d_model=2048)
    assert (c.n_streams, c.d_stream, c.d_overlap, c.adapter_rank) == (3, 768, 384, 128)
    assert c.stream_names == ("visual", "temporal", "state")
    assert c.edges == ((0, 1), (1, 2))
    assert c.diffusion_steps == 1 and c.stream_dropout_p == 0.15


@pytest.mark.parametrize("kw, field", [
    (dict(edges=((0, 1),)), "connect"),
    (dict(edges=((0, 0), (1, 2))), "self-loop"),
    (dict(edges=((0, 1), (1, 0), (1, 2))), "twice"),
    (dict(edges=((0, 3), (1, 2))), "outside"),
    (dict(n_streams=1), "at least 2"),
    (dict(stream_names=("a", "b")), "stream_names"),
    (dict(adapter_rank=100), "adapter_rank"),
    (dict(stream_dropout_p=1.0), "stream_dropout_p"),
    (dict(diffusion_steps=-1), "diffusion_steps"),
    (dict(balance_mode="mean"), "balance_mode"),
])
def test_config_rejects_bad_values_with_a_message(kw, field):
    with pytest.raises(SheafConfigError, match=field):
        small_config(**kw)


# -- Laplacian ----------------------------------------------------------------------------------
@pytest.mark.parametrize("edges", [None, TRIANGLE])
def test_laplacian_is_symmetric_psd_and_equals_dense_coboundary_gram(edges):
    m = build(edges=edges).double()
    L = m.laplacian()
    delta = dense_coboundary(m).double()
    torch.testing.assert_close(L, delta.T @ delta, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(L, L.T, rtol=0, atol=1e-12)
    evals = torch.linalg.eigvalsh(L)
    assert evals.min() > -1e-10 * evals.max()
    assert evals.max() > 0


def test_laplacian_matches_the_low_rank_operators():
    m = build(edges=TRIANGLE)
    x = torch.randn(3, 4, 3, 12)
    L = m.laplacian()
    flat = x.reshape(3, 4, -1)
    torch.testing.assert_close(m.maps.apply_laplacian(x).reshape(3, 4, -1), flat @ L.T, rtol=1e-4, atol=1e-4)
    energy = torch.einsum("bti,ij,btj->bt", flat, L, flat)
    torch.testing.assert_close(m.disagreement(x), energy, rtol=1e-4, atol=1e-4)


def test_lambda_bound_is_an_upper_bound_on_the_spectrum():
    for seed in range(5):
        for edges in (None, TRIANGLE):
            m = build(seed=seed, edges=edges)
            lam = torch.linalg.eigvalsh(m.laplacian().double())[-1]
            bound = m.maps.lambda_max_bound().double()
            assert lam <= bound * (1 + 1e-6)
            assert bound <= 2 * 3 * lam  # not uselessly loose (degree <= 2 here)


@pytest.mark.parametrize("change", ["fused adamw", "foreach adamw", "in place", "load_state_dict", "to double"])
def test_cached_lambda_bound_follows_every_change_of_the_maps(change):
    m = build(seed=3)
    with torch.no_grad():  # inference: the bound is cached while nothing changes
        before = m.maps.lambda_max_bound().clone()
        assert m.maps.lambda_max_bound() is m.maps.lambda_max_bound()
    if change.endswith("adamw"):
        opt = torch.optim.AdamW(m.maps.parameters(), lr=0.5, fused=change == "fused adamw" or None,
                                foreach=change == "foreach adamw" or None)
        m.maps.lambda_max_bound()  # a training forward (gradients on) comes before every optimizer step
        for p in m.maps.parameters():
            p.grad = -torch.ones_like(p)  # grows every entry: the spectrum grows
        opt.step()  # fused AdamW does not bump the version counters
    elif change == "in place":
        with torch.no_grad():
            m.maps.P.mul_(2.0)
    elif change == "load_state_dict":
        m.load_state_dict(build(seed=4).state_dict())
    else:
        m = m.double()
    fresh = m.maps._lambda_max_bound()
    if change == "to double":  # same value, computed again in float64
        with torch.no_grad():
            assert m.maps.lambda_max_bound().dtype == torch.float64
    else:
        assert not torch.allclose(fresh, before)
    with torch.no_grad():
        torch.testing.assert_close(m.maps.lambda_max_bound(), fresh)


def test_lambda_bound_is_recomputed_with_gradients_on_and_registers_no_global_hook():
    from torch.optim import optimizer

    m = build(seed=3)
    first, second = m.maps.lambda_max_bound(), m.maps.lambda_max_bound()
    assert first is not second and torch.equal(first, second) and not first.requires_grad
    with torch.no_grad():
        cached = m.maps.lambda_max_bound()
    m.train()
    with torch.no_grad():
        assert m.maps.lambda_max_bound() is not cached  # train() dropped the cache
    hooks = list(optimizer._global_optimizer_post_hooks.values()) + list(optimizer._global_optimizer_pre_hooks.values())
    assert not any(getattr(h, "__module__", "").startswith("svms") for h in hooks)


# -- global sections ------------------------------------------------------------------------------
def test_global_sections_from_the_kernel_are_fixed_by_diffusion():
    m = build(edges=TRIANGLE).double()
    evals, evecs = torch.linalg.eigh(m.laplacian())
    kernel = evecs[:, evals < 1e-9 * evals[-1]]
    assert kernel.shape[1] > 0
    x = (kernel @ torch.randn(kernel.shape[1], 2, dtype=torch.float64)).T.reshape(2, 1, 3, 12)
    assert m.disagreement(x).max() < 1e-12
    torch.testing.assert_close(m.diffuse(x, steps=5), x, rtol=0, atol=1e-10)


def test_global_sections_of_shared_maps_constant_sections_are_fixed():
    m = build(edges=TRIANGLE)
    with torch.no_grad():  # the same map on every incidence: equal stream features agree
        m.maps.P.copy_(m.maps.P[0:1].expand_as(m.maps.P))
        m.maps.Q.copy_(m.maps.Q[0:1].expand_as(m.maps.Q))
    x = torch.randn(2, 3, 1, 12).expand(2, 3, 3, 12).contiguous()
    assert m.disagreement(x).max() < 1e-8
    torch.testing.assert_close(m.diffuse(x, steps=3), x, rtol=0, atol=1e-6)
    # ...while a non-constant input is changed: the correction is not a no-op.
    y = torch.randn(2, 3, 3, 12)
    assert (m.diffuse(y) - y).abs().max() > 1e-2


# -- diffusion ------------------------------------------------------------------------------------
@pytest.mark.parametrize("edges", [None, TRIANGLE])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diffusion_energy_never_increases(edges, seed):
    m = build(seed=seed, edges=edges)
    x = torch.randn(4, 6, 3, 12, dtype=torch.float64)
    m = m.double()
    e = m.disagreement(x)
    for _ in range(10):
        x = m.diffuse(x, steps=1)
        e_next = m.disagreement(x)
        assert (e_next <= e * (1 + 1e-9) + 1e-12).all()
        e = e_next


@pytest.mark.parametrize("edges", [None, TRIANGLE])
def test_diffusion_energy_non_increasing_at_the_top_of_alpha_range(edges):
    m = build(seed=3, edges=edges).double()
    lam = torch.linalg.eigvalsh(m.laplacian())[-1]
    with torch.no_grad():
        m.alpha_logit.fill_(30.0)  # sigmoid -> 1: alpha = 2 / lambda_bound
    assert 0 < m.alpha() < 2 / lam
    x = torch.randn(8, 5, 3, 12, dtype=torch.float64)
    for alpha in (m.alpha(), 2 / lam * (1 - 1e-9)):
        e0 = m.disagreement(x)
        e1 = m.disagreement(m.diffuse(x, steps=1, alpha=alpha))
        assert (e1 <= e0 * (1 + 1e-9)).all()
    # Beyond the stable range the energy of the top eigenvector grows: the bound is what protects.
    top = torch.linalg.eigh(m.laplacian())[1][:, -1].reshape(1, 1, 3, 12)
    assert m.disagreement(m.diffuse(top, steps=1, alpha=2.5 / lam)) > m.disagreement(top)


def test_alpha_starts_strictly_inside_the_stable_range():
    m = build()
    lam = torch.linalg.eigvalsh(m.laplacian().double())[-1]
    a = m.alpha().double()
    assert 0 < a < 2 / lam
    assert a > 0.1 / lam  # a real correction, not a vanishing rescale


def test_diffusion_reduces_disagreement_substantially():
    m = build(seed=1)
    x = torch.randn(4, 16, 3, 12)
    before, after = m.disagreement(x), m.disagreement(m.diffuse(x, steps=1))
    assert (after.sum() / before.sum()) < 0.9


# -- consistency loss -----------------------------------------------------------------------------
def test_consistency_loss_invariant_to_shrinking_the_maps():
    m = build()
    m.eval()
    h, mask = torch.randn(2, 30, 24), torch.ones(2, 30, dtype=torch.bool)
    before = m(h, mask).sheaf_loss
    with torch.no_grad():
        m.maps.P.mul_(0.1 ** 0.5)
        m.maps.Q.mul_(0.1 ** 0.5)  # every F scaled by 0.1
    after = m(h, mask).sheaf_loss
    assert after >= before - 1e-5


def test_consistency_loss_penalises_constant_maps():
    m = build()
    m.eval()
    h, mask = torch.randn(2, 30, 24), torch.ones(2, 30, dtype=torch.bool)
    healthy = m(h, mask).sheaf_loss
    x0 = m.embed_streams(h)
    # Constant section: maps that see only a direction all streams share and that never varies
    # across tokens (the LayerNorm bias direction) make every edge agree on a constant.
    with torch.no_grad():
        for head in m.stream_heads:
            head.norm.weight.zero_()
            head.norm.bias.fill_(1.0)
    x_const = m.embed_streams(h)
    assert torch.allclose(x_const, torch.ones_like(x0))
    with torch.no_grad():
        m.maps.P.copy_(m.maps.P[0:1].expand_as(m.maps.P))
        m.maps.Q.copy_(m.maps.Q[0:1].expand_as(m.maps.Q))
    out = m(h, mask)
    assert out.sheaf_residual.max() < 1e-6  # perfect "agreement"...
    assert out.sheaf_loss > healthy  # ...is still penalised


def test_consistency_loss_penalises_rank_collapse():
    m = build()
    m.eval()
    h, mask = torch.randn(2, 40, 24), torch.ones(2, 40, dtype=torch.bool)
    healthy = m(h, mask).sheaf_loss
    with torch.no_grad():  # every map keeps one shared rank-1 direction
        u = torch.randn(8)
        v = torch.randn(12)
        m.maps.P.zero_()
        m.maps.Q.zero_()
        m.maps.P[:, :, 0] = u
        m.maps.Q[:, :, 0] = v
        for head in m.stream_heads[1:]:
            head.load_state_dict(m.stream_heads[0].state_dict())
    out = m(h, mask)
    assert out.sheaf_residual.max() < 1e-6
    assert out.sheaf_loss > healthy


# -- router, masks ---------------------------------------------------------------------------------
def test_router_weights_are_a_distribution_per_valid_token_and_zero_at_masked():
    m = build(stream_dropout_p=0.5)
    h = torch.randn(3, 7, 24)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    for train in (True, False):
        m.train(train)
        w = m(h, mask).router_weights
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1)[mask], torch.ones(int(mask.sum())))
        assert (w[~mask] == 0).all()


def test_router_is_token_level_and_temperature_sharpens():
    m = build()
    m.eval()
    with torch.no_grad():
        m.router.net[-1].weight.normal_(0, 1.0)
    h = torch.randn(1, 6, 24)
    w = m(h).router_weights
    assert (w[0, 0] - w[0, 1]).abs().max() > 1e-3  # tokens get their own weights
    h2 = h.clone()
    h2[0, 5] = torch.randn(24)
    w2 = m(h2).router_weights
    torch.testing.assert_close(w2[0, :5], w[0, :5])  # one token's change touches only itself
    hot, cold = m(h, temperature=5.0).router_weights, m(h, temperature=0.2).router_weights
    assert cold.max(-1).values.mean() > hot.max(-1).values.mean()


def test_balance_loss_zero_when_balanced_positive_when_not():
    m = build()
    m.eval()
    h = torch.randn(2, 5, 24)
    with torch.no_grad():
        m.router.net[-1].weight.zero_()
        m.router.net[-1].bias.zero_()
    assert m(h).balance_loss.abs() < 1e-6
    with torch.no_grad():
        m.router.net[-1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    assert m(h).balance_loss > 0.1


def test_masked_tokens_enter_no_loss_and_pass_through():
    m = build()
    m.eval()
    with torch.no_grad():
        m.merge.weight.normal_()
    h = torch.randn(2, 8, 24)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    labels = torch.randint(0, 2, (2, 8, 3))
    a = m(h, mask, labels)
    h2, labels2 = h.clone(), labels.clone()
    h2[~mask] = 100 * torch.randn(int((~mask).sum()), 24)
    labels2[~mask] = 1 - labels2[~mask]
    b = m(h2, mask, labels2)
    for name in ("sheaf_loss", "balance_loss", "aux_loss"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)
    torch.testing.assert_close(a.sheaf_residual, b.sheaf_residual)
    assert torch.equal(b.features[~mask], h2[~mask])
    assert (b.features[mask] != h2[mask]).any()


# -- identity, gradients ---------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_identity_at_init(train):
    m = SheafStreams(SheafStreamsConfig(d_model=64, d_stream=32, d_overlap=16, adapter_rank=8, dropout=0.2))
    m.train(train)
    h = torch.randn(2, 9, 64)
    assert torch.equal(m(h, torch.ones(2, 9, dtype=torch.bool)).features, h)


def test_gradients_reach_every_parameter():
    m = build(edges=TRIANGLE)
    m.train()
    h = torch.randn(2, 10, 24)
    labels = torch.randint(0, 2, (2, 10, 3))
    out = m(h, torch.ones(2, 10, dtype=torch.bool), labels)
    (out.features.pow(2).mean() + out.sheaf_loss + out.aux_loss + out.balance_loss).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradients_reach_streams_through_the_features_once_merge_is_trained():
    m = build()
    with torch.no_grad():
        m.merge.weight.normal_(0, 0.1)
    m(torch.randn(2, 4, 24)).features.sum().backward()
    for name in ("stream_heads.0.proj.weight", "maps.P", "alpha_logit", "router.net.1.weight"):
        assert m.get_parameter(name).grad.abs().sum() > 0, name


# -- aux -------------------------------------------------------------------------------------------
def test_aux_loss_ignores_minus_100_and_reports_balanced_accuracy():
    m = build()
    m.eval()
    h = torch.randn(2, 6, 24)
    labels = torch.randint(0, 2, (2, 6, 3))
    base = m(h, aux_labels=labels)
    flipped = labels.clone()
    flipped[0, :3, 1] = 1 - flipped[0, :3, 1]
    ignored_a, ignored_b = labels.clone(), flipped.clone()
    ignored_a[0, :3, 1] = -100
    ignored_b[0, :3, 1] = -100
    torch.testing.assert_close(m(h, aux_labels=ignored_a).aux_loss, m(h, aux_labels=ignored_b).aux_loss)
    assert not torch.allclose(base.aux_loss, m(h, aux_labels=flipped).aux_loss)
    assert m(h).aux_loss is None
    # Balanced accuracy: a classifier answering "0" on rare positives scores 0.5, accuracy 0.9.
    with torch.no_grad():
        m.aux_heads.weight.zero_()
        m.aux_heads.bias.fill_(-5.0)
    h10 = torch.randn(1, 10, 24)
    rare = torch.zeros(1, 10, 3, dtype=torch.long)
    rare[0, 0, :] = 1
    metrics = m(h10, aux_labels=rare).aux_metrics["visual"]
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)


def test_aux_all_ignored_gives_zero_loss_with_a_graph():
    m = build()
    out = m(torch.randn(1, 4, 24), aux_labels=torch.full((1, 4, 3), -100))
    assert out.aux_loss == 0 and out.aux_loss.requires_grad


# -- graphs, determinism, precision ----------------------------------------------------------------
@pytest.mark.parametrize("n_streams", [2, 3, 4, 5])
@pytest.mark.parametrize("complete", [False, True])
def test_graphs_any_connected_graph_and_stream_count(n_streams, complete):
    edges = tuple((i, j) for i in range(n_streams) for j in range(i + 1, n_streams)) if complete else None
    m = build(n_streams=n_streams, edges=edges).double()
    out = m(torch.randn(2, 5, 24, dtype=torch.float64), aux_labels=torch.randint(0, 2, (2, 5, n_streams)))
    assert out.router_weights.shape == (2, 5, n_streams)
    assert set(out.aux_metrics) == set(m.config.stream_names)
    L = m.laplacian()
    evals = torch.linalg.eigvalsh(L)
    assert L.shape == (n_streams * 12,) * 2 and evals.min() > -1e-10 * evals.max()
    x = torch.randn(3, 1, n_streams, 12, dtype=torch.float64)
    assert (m.disagreement(m.diffuse(x)) <= m.disagreement(x)).all()


def test_determinism_under_a_seed():
    h = torch.randn(2, 5, 24)
    outs = []
    for _ in range(2):
        m = build(seed=7, stream_dropout_p=0.3)
        m.train()
        with torch.no_grad():
            m.merge.weight.normal_()
        torch.manual_seed(11)
        outs.append(m(h).features)
    assert torch.equal(outs[0], outs[1])


def test_bf16_autocast_runs():
    m = build()
    h = torch.randn(2, 5, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(h, aux_labels=torch.randint(0, 2, (2, 5, 3)))
        loss = out.sheaf_loss + out.aux_loss + out.balance_loss + out.features.float().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert out.sheaf_loss.dtype == torch.float32


def test_without_router_every_stream_gets_equal_weight():
    m = build(use_router=False).eval()  # (stream dropout still applies in training)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    out = m(torch.randn(2, 5, 24), mask)
    torch.testing.assert_close(out.router_weights[mask], torch.full((int(mask.sum()), 3), 1 / 3))
    assert out.balance_loss == 0
