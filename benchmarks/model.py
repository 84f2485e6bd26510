"""GR00T N1.6 with and without SVMS: parameter counts, CPU step and get_action times, CUDA memory.

Run: .venv/bin/python benchmarks/model.py [--repeats 3] [--skip-mid] [--latency-preset tiny]
1. Parameter counts per submodule of `n1d6-3b` (meta device, no memory) against the reference
   manifest, and the SVMS overhead in %.
2. CPU forward+backward and get_action time for `tiny` and a mid-size config, baseline vs SVMS in
   the same run (ratio).
3. On CUDA (when available): `n1d6-3b` random-init, bf16 autocast training step at batch 8 (peak
   memory), then `get_action` latency like NVIDIA's: one GR1 observation (one 256² camera, batch 1,
   unpadded) under `inference_mode`, bf16, eager and compiled (`compile_inference`: torch.compile + CUDA
   graphs), as data processing + backbone + action head medians and the end-to-end median, beside NVIDIA's
   published H100 figures (77 ms eager: data 4 + backbone 23 + action head 49; 38 ms with torch.compile).
   `--latency-preset tiny` runs the same latency table on CPU at tiny size (a check of the code path).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from svms.model import Gr00tN1d6, Gr00tN1d6Config
from timing import median_time

MANIFEST = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gr00t_n1d6" / "manifest_n1d6_3b.json"
GROUP_DEPTH = {"backbone": 3, "action_head": 2, "svms": 1}


def group_counts(model: torch.nn.Module) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():  # tied parameters counted once
        top = name.split(".")[0]
        counts[".".join(name.split(".")[: GROUP_DEPTH[top]])] += p.numel()
    return dict(counts)


def parameter_table() -> None:
    config = dataclasses.replace(Gr00tN1d6Config.preset("n1d6-3b"), use_sheaf_streams=True)
    with torch.device("meta"):
        model = Gr00tN1d6(config)
    ours = group_counts(model)
    ref_total = None
    ref: dict[str, int] = defaultdict(int)
    if MANIFEST.is_file():
        manifest = json.loads(MANIFEST.read_text())
        tied = {t for e in manifest["entries"] for t in e.get("shares_storage_with", [])
                if e["name"] < t}
        for e in manifest["entries"]:
            if e["name"] in tied:
                continue
            top = e["name"].split(".")[0]
            n = 1
            for s in e["shape"]:
                n *= s
            ref[".".join(e["name"].split(".")[: GROUP_DEPTH[top]])] += n
        ref_total = sum(ref.values())
    print("Parameters at n1d6-3b (meta device) vs the reference manifest")
    print(f"  {'group':<40} {'ours':>15} {'reference':>15}  match")
    for name, n in ours.items():
        r = ref.get(name)
        print(f"  {name:<40} {n:>15,d} {'' if r is None else f'{r:,d}':>15}  "
              f"{'' if r is None else ('yes' if r == n else 'NO')}")
    base = sum(n for k, n in ours.items() if not k.startswith("svms"))
    svms = sum(n for k, n in ours.items() if k.startswith("svms"))
    print(f"  {'baseline total':<40} {base:>15,d} {ref_total or 0:>15,d}  "
          f"{'yes' if base == ref_total else 'NO'}")
    print(f"  SVMS adds {svms:,d} parameters = {100 * svms / base:.3f}% of the baseline\n")


def mid_config() -> Gr00tN1d6Config:
    """Between tiny and 3B: 256-wide LLM (4 layers), 8-block DiT of width 384."""
    tiny = Gr00tN1d6Config.preset("tiny")
    eagle = json.loads(json.dumps(tiny.eagle_config))
    eagle["vision_config"].update(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                  num_attention_heads=4)
    eagle["text_config"].update(hidden_size=256, intermediate_size=768, num_attention_heads=8, head_dim=32)
    return dataclasses.replace(
        tiny, backbone_embedding_dim=256, eagle_config=eagle, hidden_size=256, input_embedding_dim=384,
        diffusion_model_cfg={"num_layers": 8, "num_attention_heads": 8, "attention_head_dim": 48,
                             "output_dim": 256},
        d_stream=256, d_overlap=128, adapter_rank=64,
    )


def cpu_table(repeats: int, skip_mid: bool) -> None:
    print(f"CPU, {torch.get_num_threads()} threads, batch 4, one 224x224 image per sample, "
          f"median of {repeats}")
    print(f"  {'config':<8} {'arm':<9} {'fwd+bwd ms':>11} {'ratio':>6} {'get_action ms':>14} {'ratio':>6}")
    configs = [("tiny", Gr00tN1d6Config.preset("tiny"))] + ([] if skip_mid else [("mid", mid_config())])
    for name, config in configs:
        results = {}
        for arm, use in (("baseline", False), ("svms", True)):
            torch.manual_seed(0)
            model = Gr00tN1d6(dataclasses.replace(config, use_sheaf_streams=use))
            batch = model.dummy_batch(4, image_size=224)

            def step(model=model, batch=batch) -> None:
                model.train()
                out = model(batch)
                loss = out.loss if out.svms is None else (out.loss + out.svms.sheaf_loss + out.svms.aux_loss
                                                          + out.svms.balance_loss)
                model.zero_grad(set_to_none=True)
                loss.backward()

            def act(model=model, batch=batch) -> None:
                model.eval()
                model.get_action(batch)

            results[arm] = (median_time(step, repeats), median_time(act, repeats))
        for arm, (t_step, t_act) in results.items():
            b_step, b_act = results["baseline"]
            print(f"  {name:<8} {arm:<9} {1000 * t_step:>11.1f} {t_step / b_step:>6.2f} "
                  f"{1000 * t_act:>14.1f} {t_act / b_act:>6.2f}")
    print()


def cuda_table(batch_size: int) -> None:
    if not torch.cuda.is_available():
        print("CUDA: not available on this machine; skipped (run on a GPU for n1d6-3b memory and latency)")
        return
    name = torch.cuda.get_device_name()
    print(f"CUDA ({name}), n1d6-3b random init, backbone bf16 + trainable fp32, bf16 autocast")
    for arm, use in (("baseline", False), ("svms", True)):
        config = dataclasses.replace(Gr00tN1d6Config.preset("n1d6-3b"), use_sheaf_streams=use)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Gr00tN1d6(config, backbone_dtype=torch.bfloat16)
        batch = model.dummy_batch(batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(batch)
            loss = out.loss if out.svms is None else out.loss + out.svms.sheaf_loss + out.svms.balance_loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
        del opt, params, out, loss
        model = model.to(torch.bfloat16).eval()
        one = {k: (v[:1] if torch.is_tensor(v) else v[:1]) for k, v in batch.items()}

        def act(model=model, one=one) -> None:
            model.get_action(one)
            torch.cuda.synchronize()

        latency = median_time(act, 10)
        print(f"  {arm:<9} train step batch {batch_size}: peak {peak:6.1f} GiB   "
              f"get_action (padded dummy batch 1, 4 steps): {1000 * latency:6.1f} ms")
        del model, batch, one, act  # act's defaults hold the model
        torch.cuda.empty_cache()


NVIDIA_H100_MS = {"data": 4.0, "backbone": 23.0, "action head": 49.0, "total": 77.0, "compiled total": 38.0}
RELEASE_PROCESSOR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real_checkpoint"


def latency_policy(preset: str, device: torch.device, use_svms: bool):
    """A random-init model of `preset` (release padded sizes) with the release's processor, for GR1."""
    from svms.data.processor_files import load_processor
    from svms.policy import Gr00tPolicy

    config = Gr00tN1d6Config.preset(preset)
    release = Gr00tN1d6Config.preset("n1d6-3b")
    config = dataclasses.replace(config, use_sheaf_streams=use_svms, max_state_dim=release.max_state_dim,
                                 max_action_dim=release.max_action_dim, action_horizon=release.action_horizon)
    torch.manual_seed(0)
    with torch.device(device):
        model = Gr00tN1d6(config, backbone_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    return Gr00tPolicy(model, load_processor(RELEASE_PROCESSOR), "gr1", seed=0)


def gr1_observation(policy) -> dict:
    config = policy.get_modality_config()
    normalizer = policy.processor.normalizer(policy.tag)
    edge = policy.processor.settings.shortest_image_edge
    rng = np.random.default_rng(0)
    return {
        "video": {k: rng.integers(0, 256, (1, 1, edge, edge, 3), dtype=np.uint8) for k in config.video.modality_keys},
        "state": {lay.key: rng.standard_normal((1, 1, lay.raw_dim)).astype(np.float32)
                  for lay in normalizer.state_layout},
        "language": {policy.language_key: [["pick up the apple and place it on the plate"]]},
    }


def latency_table(preset: str, device: torch.device, repeats: int) -> None:
    """Data processing, backbone, action head and end-to-end medians of `get_action`, eager and compiled."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"get_action latency, {preset}, {where}, batch 1 unpadded (GR1: one camera), 4 steps, inference_mode; "
          f"NVIDIA H100: {NVIDIA_H100_MS['total']:.0f} ms eager, {NVIDIA_H100_MS['compiled total']:.0f} ms compiled")
    print(f"  {'arm':<9} {'mode':<9} {'data ms':>8} {'backbone':>9} {'head':>7} {'sum':>7} {'end-to-end':>11}")
    print(f"  {'NVIDIA':<9} {'eager':<9} {NVIDIA_H100_MS['data']:>8.1f} {NVIDIA_H100_MS['backbone']:>9.1f} "
          f"{NVIDIA_H100_MS['action head']:>7.1f} {NVIDIA_H100_MS['total']:>7.1f} {'':>11}")
    for arm in ("baseline", "svms"):
        policy = latency_policy(preset, device, arm == "svms")
        model = policy.model
        observation = gr1_observation(policy)
        for mode in ("eager", "compiled"):
            if mode == "compiled":
                model.compile_inference()
            with torch.inference_mode():
                batch, _ = policy.prepare(observation)
                cast = model._cast_inputs(batch)
                out, features, _ = model.encode(cast, losses=False)

                def data(policy=policy, observation=observation) -> None:
                    policy.prepare(observation)
                    sync()

                def backbone(model=model, cast=cast) -> None:
                    model.encode(cast, losses=False)
                    sync()

                def head(model=model, out=out, features=features, cast=cast, gen=policy.generator) -> None:
                    model.action_head.get_action(features, out.backbone_attention_mask, out.image_mask,
                                                 cast["state"], cast["embodiment_id"], generator=gen)
                    sync()

                def whole(policy=policy, observation=observation) -> None:
                    policy.get_action(observation)
                    sync()

                times = [median_time(fn, repeats) * 1000 for fn in (data, backbone, head, whole)]
            print(f"  {arm:<9} {mode:<9} {times[0]:>8.1f} {times[1]:>9.1f} {times[2]:>7.1f} {sum(times[:3]):>7.1f} "
                  f"{times[3]:>11.1f}")
        del policy, model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-mid", action="store_true", help="only the tiny config on CPU")
    ap.add_argument("--cuda-batch", type=int, default=8)
    ap.add_argument("--latency-preset", default=None,
                    help="run the latency table on CPU at this preset (tiny); on CUDA it runs at n1d6-3b")
    args = ap.parse_args()
    if args.latency_preset is not None:
        latency_table(args.latency_preset, torch.device("cpu"), args.repeats)
        return
    parameter_table()
    cpu_table(args.repeats, args.skip_mid)
    cuda_table(args.cuda_batch)
    if torch.cuda.is_available():
        latency_table("n1d6-3b", torch.device("cuda"), 20)


if __name__ == "__main__":
    main()
