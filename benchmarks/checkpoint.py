"""Checkpoint write and load at full size: save_pretrained then from_pretrained, timed, with an exactness check.

Run: .venv/bin/python benchmarks/checkpoint.py [--preset n1d6-3b] [--device cuda] [--dtype bf16]
Builds a random-weight model (the released layout when the preset is n1d6-3b), writes it as sharded
safetensors in `--dtype` (the release stores bf16), loads it back on `--device` through the path a user's
`--init` takes, and checks that every tensor and one `get_action` come back identical. Prints seconds,
GB written and GB/s. n1d6-3b needs ~12 GB of host memory in fp32 (use a GPU machine); tiny runs anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from svms.device import resolve_device
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.model.checkpoint import load_pretrained

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--svms", action="store_true", help="include the SVMS streams")
    args = ap.parse_args()
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    config = dataclasses.replace(Gr00tN1d6Config.preset(args.preset), use_sheaf_streams=args.svms)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = Gr00tN1d6(config).to(dtype).eval()
    build = time.perf_counter() - t0
    batch = model.dummy_batch(1)
    noise = torch.randn(1, config.action_horizon, config.max_action_dim, device=device, dtype=dtype)
    with torch.no_grad():
        before = model.get_action(batch, initial_noise=noise)["action_pred"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        t0 = time.perf_counter()
        model.save_pretrained(folder)
        save = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        expected = model.state_dict()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        loaded, report = load_pretrained(Gr00tN1d6, folder, device=device, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        load = time.perf_counter() - t0
        loaded.eval()
        state = loaded.state_dict()
        differ = [k for k, v in expected.items() if k in state and not torch.equal(v, state[k])]
        with torch.no_grad():
            after = loaded.get_action(batch, initial_noise=noise)["action_pred"]
    print(f"{args.preset} ({sum(v.numel() for v in expected.values()):,d} elements), {args.dtype}, "
          f"on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}")
    print(f"  build {build:6.1f} s   save {save:6.1f} s ({size / 1e9:.2f} GB, {size / 1e9 / save:.2f} GB/s)   "
          f"load {load:6.1f} s ({size / 1e9 / load:.2f} GB/s)")
    print(f"  load report: {report.summary()}")
    print(f"  tensors that differ after the round trip: {len(differ)}"
          f"{' (' + ', '.join(differ[:5]) + ')' if differ else ''}")
    print(f"  get_action identical after reload: {torch.equal(before, after)} "
          f"(max |diff| {float((before - after).abs().max()):.3g})")


if __name__ == "__main__":
    main()
