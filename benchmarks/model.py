"""GR00T N1.6 with and without SVMS: parameter counts, CPU step and get_action times, CUDA memory.

Run: .venv/bin/python benchmarks/model.py [--repeats 3] [--skip-mid]
1. Parameter counts per submodule of `n1d6-3b` (meta device, no memory) against the reference
   manifest, and the SVMS overhead in %.
2. CPU forward+backward and get_action time for `tiny` and a mid-size config, baseline vs SVMS in
   the same run (ratio).
3. On CUDA (when available): `n1d6-3b` random-init, bf16 autocast training step at batch 8 (peak
   memory) and bf16 get_action latency (the reference's H100 eager figure: 77 ms end to end).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

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
              f"get_action (batch 1, 4 steps): {1000 * latency:6.1f} ms")
        del model, batch, one, act  # act's defaults hold the model
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-mid", action="store_true", help="only the tiny config on CPU")
    ap.add_argument("--cuda-batch", type=int, default=8)
    args = ap.parse_args()
    parameter_table()
    cpu_table(args.repeats, args.skip_mid)
    cuda_table(args.cuda_batch)


if __name__ == "__main__":
    main()
