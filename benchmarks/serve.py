"""Policy-server overhead: `get_action` round trip through `svms serve` (ZeroMQ + msgpack, a separate process
on the same machine) against the same call in-process, with the tiny model, 1 and 3 cameras at 256x256,
batch 1; then requests/s of one client querying back to back for `--duration` seconds.

Run: .venv/bin/python benchmarks/serve.py [--repeats 30 --duration 30 --wire npy]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from svms.data import MODALITY_CONFIGS
from svms.policy import Gr00tPolicy
from svms.serve import PolicyClient, encode
from svms.testing import ROBOCASA_DIMS, make_tiny_checkpoint

TAG = "robocasa_panda_omron"


def observation(config, language_key: str, size: int) -> dict:
    rng = np.random.default_rng(0)
    return {"video": {k: rng.integers(0, 256, (1, 1, size, size, 3), dtype=np.uint8)
                      for k in config.video.modality_keys},
            "state": {k: rng.uniform(-1, 1, (1, 1, ROBOCASA_DIMS[k])).astype(np.float32)
                      for k in config.state.modality_keys},
            "language": {language_key: [["pick the bowl and place it in the sink"]]}}


def median_ms(fns, repeats: int) -> list[float]:
    """Median wall time of each function, calls interleaved so that load from elsewhere hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeats + 1):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            if i:  # the first round warms up
                out.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def start_server(checkpoint: Path, port: int, wire: str) -> subprocess.Popen:
    code = ("import sys; from pathlib import Path; from svms.commands.serve import Serve; "
            f"sys.exit(Serve(Path({str(checkpoint)!r}), port={port}, wire={wire!r}).run())")
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of back-to-back requests")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--port", type=int, default=5599)
    ap.add_argument("--wire", default="npy", choices=["npy", "msgpack-numpy"])
    args = ap.parse_args()

    table = Table("cameras", "request", "in-process ms", "served ms", "overhead ms", "served / in-process",
                  title=f"get_action, tiny model on CPU, batch 1, {args.size}x{args.size}, wire {args.wire}")
    throughput = ""
    with tempfile.TemporaryDirectory() as tmp:
        base = MODALITY_CONFIGS[TAG]
        for cameras in (1, 3):
            video = dataclasses.replace(base.video, modality_keys=base.video.modality_keys[:cameras])
            checkpoint = make_tiny_checkpoint(Path(tmp) / f"cam{cameras}",
                                              modality=dataclasses.replace(base, video=video))
            policy = Gr00tPolicy.from_checkpoint(checkpoint, device="cpu")
            obs = observation(policy.get_modality_config(), policy.language_key, args.size)
            server = start_server(checkpoint, args.port, args.wire)
            try:
                with PolicyClient(port=args.port, timeout_s=120, wire=args.wire) as client:
                    while not client.ping(timeout_s=1):
                        pass
                    local, served = median_ms([lambda: policy.get_action(obs),  # noqa: B023
                                               lambda: client.get_action(obs)], args.repeats)  # noqa: B023
                    size_kib = len(encode({"data": {"observation": obs}})) / 1024
                    table.add_row(str(cameras), f"{size_kib:.0f} KiB", f"{local:.1f}", f"{served:.1f}",
                                  f"{served - local:.1f}", f"{served / local:.2f}x")
                    if cameras == 3:
                        count, start = 0, time.perf_counter()
                        while time.perf_counter() - start < args.duration:
                            client.get_action(obs)
                            count += 1
                        seconds = time.perf_counter() - start
                        throughput = (f"3 cameras, one client back to back: {count / seconds:.1f} requests/s "
                                      f"over {seconds:.0f} s ({count} requests)")
                    client.kill()
                server.wait(timeout=30)
            finally:
                server.kill()
    console = Console()
    console.print(table)
    console.print(throughput)


if __name__ == "__main__":
    main()
