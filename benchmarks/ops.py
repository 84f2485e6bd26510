"""Dispatched aten ops per `get_action` and per training step, by module, against NVIDIA's reference.

Run: .venv/bin/python benchmarks/ops.py   (no arguments; a few minutes on 2 CPU cores)

The conditions are design §5's: CPU, bf16, after one warm-up call, the released depths and geometry
(27 ViT layers, 16 LLM layers, 32 DiT blocks, horizon 50, 128-wide state/action, 4 denoising steps)
at narrow widths, batch 1 unpadded, one 252² image (81 image tokens) and 32 text tokens. An op counts as
a kernel unless it is a view or an allocation; a sync op is one that makes a GPU wait for the host
(`_local_scalar_dense` from `item`/`float`/`int`/`bool`, `nonzero`, boolean indexing, `masked_select`,
`repeat_interleave` without a size, `unique`); a host→device copy is a tensor made from Python data
during the call (`torch.tensor(...)`), which an accelerator must upload. The counts do not depend on the
widths, so narrow widths count what the 3B model launches. The training step (fp32, as `svms train` runs on
CPU) counts forward, backward, gradient clipping and the fused AdamW step of the phase-3 trainable set, with
noise and time drawn on the host beforehand as the trainer does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch

from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.opcount import OpCounter

# NVIDIA's reference, counted the same way at the 3B configuration (issue 18's table).
REFERENCE = {"vision tower": 434, "mlp1 + embedding merge": 12, "LLM layers": 912, "LLM rest": 22,
             "SVMS module": None, "SVMS losses": None, "encoders + loop glue": 183,
             "DiT cross block (each, per step)": 22, "DiT self block (each, per step)": 18, "DiT rest": 100,
             "total": 4223, "syncs": 19, "host->device": 28}
BEFORE = {"total": 3942, "syncs": 7, "svms total": 4066, "svms syncs": 8}  # this project before issue 18


def _hook_labels(model: Gr00tN1d6, counter: OpCounter) -> list[Any]:
    """Forward hooks that put a module's ops under its row; returns the handles."""
    def push(name: str):
        return lambda *_: counter.labels.append(name)

    def pop(*_):
        counter.labels.pop()

    rows: list[tuple[torch.nn.Module, str]] = [
        (model.backbone, "mlp1 + embedding merge"), (model.backbone.model.vision_model, "vision tower"),
        (model.backbone.model.mlp1, "mlp1 + embedding merge"),
        (model.backbone.model.language_model.model, "LLM rest"),
        (model.action_head.model, "DiT rest"),
    ]
    rows += [(layer, "LLM layers") for layer in model.backbone.model.language_model.model.layers]
    dit = model.action_head.model
    rows += [(block, "DiT cross block" if dit.is_cross_block(i) else "DiT self block")
             for i, block in enumerate(dit.transformer_blocks)]
    if model.svms is not None:
        rows.append((model.svms, "SVMS module"))
    handles = []
    for module, name in rows:
        handles.append(module.register_forward_pre_hook(push(name)))
        handles.append(module.register_forward_hook(pop))
    # The denoising loop calls these methods, not the modules' forward.
    methods = [(dit, "prepare_denoising", "DiT rest"), (dit, "forward_step", "DiT rest")]
    methods += [(block, "forward_cached", "DiT cross block" if dit.is_cross_block(i) else "DiT self block")
                for i, block in enumerate(dit.transformer_blocks)]
    for obj, attr, name in methods:
        if hasattr(obj, attr):  # (absent in versions before issue 18, which the script can also count)
            handles.append(_MethodLabel(counter, obj, attr, name))
    return handles


class _MethodLabel:
    """Puts the ops of one bound method under a row until `remove()` (the same interface as a hook handle)."""

    def __init__(self, counter: OpCounter, obj: object, attr: str, name: str) -> None:
        self.obj, self.attr = obj, attr
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            with counter.label(name):
                return fn(*a, **k)

        setattr(obj, attr, wrapped)

    def remove(self) -> None:
        delattr(self.obj, self.attr)


@contextlib.contextmanager
def _labelled_functions(counter: OpCounter) -> Iterator[None]:
    """The vision glue (patchify, unshuffle) and the SVMS losses are functions, not modules: wrap them."""
    import svms.model.backbone.eagle as eagle
    import svms.sheaf.module as sheaf_module

    targets = [(eagle, "images_to_tokens", "vision tower")]
    targets += [(sheaf_module, name, "SVMS losses") for name in
                ("normalised_disagreement", "collapse_penalty", "balance_loss", "aux_loss_and_metrics")
                if hasattr(sheaf_module, name)]
    saved = []
    for owner, name, row in targets:
        fn = getattr(owner, name)
        saved.append((owner, name, fn))

        def wrapped(*a, _fn=fn, _row=row, **k):
            with counter.label(_row):
                return _fn(*a, **k)

        setattr(owner, name, wrapped)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def count(model: Gr00tN1d6, fn: Callable[[], object]) -> OpCounter:
    """One warm-up call of `fn`, then the counted one."""
    fn()
    counter = OpCounter("encoders + loop glue")
    handles = _hook_labels(model, counter)
    try:
        with _labelled_functions(counter), counter:
            fn()
    finally:
        for h in handles:
            h.remove()
    return counter


def narrow_release_config(use_svms: bool) -> Gr00tN1d6Config:
    """The released `n1d6-3b` architecture and depths, every width cut down (counts do not depend on width)."""
    base = Gr00tN1d6Config.preset("n1d6-3b")
    tiny = Gr00tN1d6Config.preset("tiny")
    eagle = json.loads(json.dumps(tiny.eagle_config))
    eagle["vision_config"].update(num_hidden_layers=27, full_attention_indexes=list(range(27)))
    eagle["text_config"].update(num_hidden_layers=16, vocab_size=151680)
    dit = dict(base.diffusion_model_cfg.to_dict(), num_attention_heads=2, attention_head_dim=16, output_dim=64)
    return dataclasses.replace(
        base, eagle_config=eagle, backbone_embedding_dim=64, select_layer=16, hidden_size=64,
        input_embedding_dim=32, diffusion_model_cfg=dit, use_sheaf_streams=use_svms,
        d_stream=32, d_overlap=16, adapter_rank=8,
    )


def unpadded_batch(model: Gr00tN1d6, batch_size: int = 1) -> dict[str, Any]:
    """`dummy_batch` without its left padding and without aux labels: what a policy query carries."""
    batch = model.dummy_batch(batch_size, text_tokens=32, image_size=252)
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    batch.pop("aux_labels", None)
    return batch


def build(use_svms: bool) -> Gr00tN1d6:
    torch.manual_seed(0)
    config = Gr00tN1d6Config.from_dict(narrow_release_config(use_svms).to_dict())
    return Gr00tN1d6(config)


def count_get_action(use_svms: bool) -> OpCounter:
    model = build(use_svms).to(torch.bfloat16).eval()
    batch = unpadded_batch(model)
    gen = torch.Generator().manual_seed(0)
    return count(model, lambda: model.get_action(batch, generator=gen))


def count_train_step(use_svms: bool) -> OpCounter:
    from svms.train.phases import apply_phase
    from svms.train.sampling import sample_noise

    model = build(use_svms)
    apply_phase(model, "3")
    model.train()
    batch = model.dummy_batch(1, text_tokens=32, image_size=252)
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    c = model.config
    # the trainer draws noise and time per sample position on the host (svms.train.sampling.sample_noise)
    noise, t = sample_noise([0], 0, c.action_horizon, c.max_action_dim, model.action_head)

    def step() -> None:
        out = model(batch, noise=noise, t=t)
        loss = out.loss
        if out.svms is not None:
            loss = loss + out.svms.sheaf_loss + out.svms.balance_loss + out.svms.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return count(model, step)


def per_block(counter: OpCounter, steps: int, n_cross: int, n_self: int) -> dict[str, float]:
    rows = dict(counter.kernels)
    rows["DiT cross block (each, per step)"] = rows.pop("DiT cross block", 0) / (steps * n_cross)
    rows["DiT self block (each, per step)"] = rows.pop("DiT self block", 0) / (steps * n_self)
    return rows


ROWS = ("vision tower", "mlp1 + embedding merge", "LLM layers", "LLM rest", "SVMS module", "SVMS losses",
        "encoders + loop glue", "DiT cross block (each, per step)", "DiT self block (each, per step)", "DiT rest")


def main() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = narrow_release_config(False)
    steps, layers = cfg.num_inference_timesteps, cfg.diffusion_model_cfg.num_layers
    n_cross = sum(1 for i in range(layers) if i % 2 == 0)
    print("get_action: CPU, bf16, release depths at narrow widths, batch 1 unpadded, one 252² image "
          f"(81 image tokens), 32 text tokens, {steps} denoising steps, after one warm-up call\n")
    results = {arm: count_get_action(arm == "svms") for arm in ("baseline", "svms")}
    tables = {arm: per_block(c, steps, n_cross, layers - n_cross) for arm, c in results.items()}
    print(f"  {'module':<34} {'reference':>9} {'ours':>8} {'ours+SVMS':>9}")
    for row in ROWS:
        ref = REFERENCE.get(row)
        vals = [tables[arm].get(row, 0) for arm in ("baseline", "svms")]
        print(f"  {row:<34} {'–' if ref is None else ref:>9} " + " ".join(
            f"{v:>8.0f}" if float(v).is_integer() else f"{v:>8.1f}" for v in vals))
    totals = {arm: sum(c.kernels.values()) for arm, c in results.items()}
    syncs = {arm: sum(c.syncs.values()) for arm, c in results.items()}
    host = {arm: sum(c.host.values()) for arm, c in results.items()}
    print(f"  {'get_action total':<34} {REFERENCE['total']:>9} {totals['baseline']:>8} {totals['svms']:>9}")
    print(f"  {'GPU syncs':<34} {REFERENCE['syncs']:>9} {syncs['baseline']:>8} {syncs['svms']:>9}")
    print(f"  {'host->device copies':<34} {'~28':>9} {host['baseline']:>8} {host['svms']:>9}")
    overhead = 100 * (totals["svms"] - totals["baseline"]) / totals["baseline"]
    print(f"  SVMS inference overhead: {overhead:.1f}% of ops; before issue 18: {BEFORE['total']} / "
          f"{BEFORE['syncs']} syncs (SVMS {BEFORE['svms total']} / {BEFORE['svms syncs']})")
    for arm, c in results.items():
        for name, n in sorted(c.sync_names.items()):
            print(f"    {arm} sync: {name} x{n}")
    print("\ntraining step (fp32, phase 3, batch 1 unpadded, forward + backward + clip + fused AdamW)")
    for arm in ("baseline", "svms"):
        c = count_train_step(arm == "svms")
        print(f"  {arm:<9} kernels {sum(c.kernels.values()):>6}  syncs {sum(c.syncs.values()):>3}  "
              f"host->device {sum(c.host.values()):>3}")
        for name, n in sorted(c.sync_names.items()):
            print(f"    sync: {name} x{n}")


if __name__ == "__main__":
    main()
