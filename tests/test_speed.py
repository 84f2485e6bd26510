"""Issue 18's speed work keeps every result: the cached denoising loop equals the per-step one, SVMS at
inference gives the training path's features without its losses, `get_action` makes at most one GPU sync and
no host->device copy (counted on CPU by `svms.opcount`), and the compiled paths equal eager."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.model.action_head import Gr00tActionHead
from svms.model.backbone.vision import patchify, resized_position_embeddings
from svms.opcount import OpCounter
from test_action_head import _batch as head_inputs  # the action head tests' inputs


def tiny_config(**overrides) -> Gr00tN1d6Config:
    return dataclasses.replace(Gr00tN1d6Config.preset("tiny"), **overrides)


def counted(fn) -> OpCounter:
    counter = OpCounter()
    with counter:
        fn()
    return counter


def unpadded(model: Gr00tN1d6, batch_size: int = 1) -> dict:
    batch = model.dummy_batch(batch_size)
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    batch.pop("aux_labels", None)
    return batch


# -- the cached denoising loop ---------------------------------------------------------------------
@pytest.mark.parametrize("alternate", [True, False])
def test_cached_denoising_equals_the_per_step_computation(alternate):
    torch.manual_seed(0)
    head = Gr00tActionHead(tiny_config(use_alternate_vl_dit=alternate)).eval()
    x = head_inputs(head)
    noise = torch.randn(2, head.config.action_horizon, head.config.max_action_dim)
    cached = head.get_action(**x, initial_noise=noise)
    per_step = head.get_action(**x, initial_noise=noise, cached=False)
    torch.testing.assert_close(cached, per_step, rtol=1e-5, atol=1e-5)
    assert (cached - noise).abs().max() > 1e-2  # the loop moved the noise: the comparison is not vacuous
    if alternate:  # the masks reach the cached path: hiding the image tokens changes the action
        hidden = dict(x, backbone_attention_mask=x["backbone_attention_mask"] & ~x["image_mask"])
        assert not torch.allclose(head.get_action(**hidden, initial_noise=noise)[0], cached[0])


def test_cached_denoising_computes_the_step_constants_once():
    torch.manual_seed(0)
    head = Gr00tActionHead(tiny_config()).eval()
    x = head_inputs(head)
    noise = torch.randn(2, head.config.action_horizon, head.config.max_action_dim)
    steps, layers = 4, head.config.diffusion_model_cfg.num_layers
    cached = counted(lambda: head.get_action(**x, initial_noise=noise, num_steps=steps))
    per_step = counted(lambda: head.get_action(**x, initial_noise=noise, num_steps=steps, cached=False))
    # per block and extra step at least the AdaLN modulation's linear and activation are saved
    assert per_step.total_kernels - cached.total_kernels >= 2 * layers * (steps - 1)
    assert cached.total_syncs == 0 and cached.total_host == 0


# -- SVMS at inference -----------------------------------------------------------------------------
def svms_model() -> Gr00tN1d6:
    torch.manual_seed(0)
    model = Gr00tN1d6(tiny_config(use_sheaf_streams=True)).eval()
    with torch.no_grad():  # a trained merge: at init it is zero and every path would agree trivially
        model.svms.merge.weight.normal_(0, 0.05)
    return model


def test_svms_inference_skips_its_losses_and_keeps_the_features():
    model = svms_model()
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 12, model.config.backbone_embedding_dim, generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :3] = False
    labels = torch.randint(0, 2, (2, 12, model.svms.config.n_streams), generator=g)
    with torch.no_grad():
        train = counted(lambda: model.svms(features, mask, labels))
        infer = counted(lambda: model.svms(features, mask, labels, losses=False))
        full, lean = model.svms(features, mask, labels), model.svms(features, mask, labels, losses=False)
    assert torch.equal(lean.features, full.features) and torch.equal(lean.router_weights, full.router_weights)
    assert not torch.equal(lean.features, features)  # the merge changed them
    assert full.sheaf_loss is not None and full.aux_loss is not None
    assert lean.sheaf_loss is None and lean.balance_loss is None and lean.aux_loss is None
    assert infer.total_kernels < train.total_kernels // 2 and infer.total_syncs == 0 < train.total_syncs


def test_svms_get_action_equals_the_training_paths_features():
    model = svms_model()
    batch = model.dummy_batch(2)  # with aux labels, which inference ignores
    action = model.get_action(batch, generator=torch.Generator().manual_seed(3))["action_pred"]
    with torch.no_grad():
        out, features, svms_out = model.encode(model._cast_inputs(batch), losses=True)
        assert svms_out.aux_loss is not None
        expected = model.action_head.get_action(features, out.backbone_attention_mask, out.image_mask,
                                                batch["state"], batch["embodiment_id"],
                                                generator=torch.Generator().manual_seed(3))
    assert torch.equal(action, expected)


# -- syncs and host copies -------------------------------------------------------------------------
@pytest.mark.parametrize("svms", [False, True])
def test_get_action_makes_at_most_one_sync_and_no_host_copy(svms):
    torch.manual_seed(0)
    model = Gr00tN1d6(tiny_config(use_sheaf_streams=svms)).eval()
    batch = unpadded(model)
    model.get_action(batch)  # warm-up: caches are filled here
    counter = counted(lambda: model.get_action(batch, generator=torch.Generator().manual_seed(0)))
    # the one left is transformers' check that no token is padded, which lets the LLM use flash attention
    assert counter.total_syncs <= 1, dict(counter.sync_names)
    assert counter.total_host == 0, dict(counter.host)


def test_the_counter_sees_syncs_and_host_copies():
    x = torch.arange(6.0)
    counter = counted(lambda: (float(x.sum()), x[x > 2], torch.tensor([1, 2]), x.view(2, 3)))
    assert counter.total_syncs == 2 and counter.total_host == 1
    assert counter.total_kernels == 4  # sum, item, gt, index; the view and the host wrap launch nothing


# -- host-side vision shapes -----------------------------------------------------------------------
def test_vision_positions_match_transformers_and_follow_weight_changes():
    torch.manual_seed(0)
    model = Gr00tN1d6(tiny_config()).eval()
    embeddings = model.backbone.model.vision_model.vision_model.embeddings
    images = torch.randn(2, 3, 252, 252)
    patches = patchify(images, 14)

    def both():
        ours = embeddings.patch_embedding(patches) + resized_position_embeddings(embeddings, 2, 18, 18)
        return ours, embeddings(patches, torch.tensor([[18, 18], [18, 18]]))

    with torch.no_grad():
        ours, theirs = both()
        assert torch.equal(ours, theirs)
        embeddings.position_embedding.weight.mul_(2)  # in place: the cached resize must not survive it
        ours2, theirs2 = both()
    assert torch.equal(ours2, theirs2) and not torch.equal(ours2, ours)


# -- compiled paths --------------------------------------------------------------------------------
def small_head() -> Gr00tActionHead:
    torch.manual_seed(0)
    dit = dataclasses.replace(Gr00tN1d6Config.preset("tiny").diffusion_model_cfg, num_layers=2)
    return Gr00tActionHead(tiny_config(diffusion_model_cfg=dit)).eval()


@pytest.mark.slow
def test_compiled_denoising_equals_eager_and_repeats():
    """torch.compile on CPU (gcc): about a minute on a loaded 2-core machine, hence slow."""
    head = small_head()
    x = head_inputs(head)
    eager = head.get_action(**x, generator=torch.Generator().manual_seed(4), num_steps=1)
    head.compile_denoising(cuda_graphs=False)
    first = head.get_action(**x, generator=torch.Generator().manual_seed(4), num_steps=1)
    again = head.get_action(**x, generator=torch.Generator().manual_seed(4), num_steps=1)
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, again)


@pytest.mark.slow
def test_compiled_policy_model_equals_eager():
    """`compile_inference` (what `Gr00tPolicy(compile=True)`, `svms serve --compile` and `svms eval open-loop
    --compile` use) on a one-layer backbone: several minutes of compilation on 2 cores."""
    torch.manual_seed(0)
    eagle = Gr00tN1d6Config.preset("tiny").eagle_config
    eagle = {**eagle, "vision_config": {**eagle["vision_config"], "num_hidden_layers": 1}}
    dit = dataclasses.replace(Gr00tN1d6Config.preset("tiny").diffusion_model_cfg, num_layers=2)
    model = Gr00tN1d6(tiny_config(eagle_config=eagle, select_layer=1, tune_top_llm_layers=1,
                                  diffusion_model_cfg=dit)).eval()
    batch = model.dummy_batch(2)
    eager = model.get_action(batch, generator=torch.Generator().manual_seed(5))["action_pred"]
    model.compile_inference()
    first = model.get_action(batch, generator=torch.Generator().manual_seed(5))["action_pred"]
    again = model.get_action(batch, generator=torch.Generator().manual_seed(5))["action_pred"]
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    assert torch.equal(first, again)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none on this machine")
def test_cuda_graph_denoising_equals_eager_and_recaptures_on_a_new_shape():
    torch.manual_seed(0)
    head = small_head().cuda()
    eager_head = small_head().cuda()
    for s in (10, 14, 10):  # a new token count captures a new graph; the old one is reused
        x = {k: v.cuda() for k, v in head_inputs(head, s=s).items()}
        want = eager_head.get_action(**x, generator=torch.Generator("cuda").manual_seed(6))
        if s == 10 and "_compiled_denoise" not in head.__dict__:
            head.compile_denoising(cuda_graphs=True)
        got = [head.get_action(**x, generator=torch.Generator("cuda").manual_seed(6)) for _ in range(3)]
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
        assert all(torch.equal(g, got[0]) for g in got)
