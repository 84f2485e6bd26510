"""SheafStreams at the seed sizes: parameter overhead and forward+backward / inference time.

Run: .venv/bin/python benchmarks/sheaf.py [--batch 4 --tokens 300 --repeats 5] [--device cuda]
Prints the parameter count as a % of the released 2,975,968,192-parameter GR00T N1.6 model
(target <= 1%) and the time of SheafStreams against a single Linear(D, D) measured in the same run:
forward+backward at --batch, and the inference forward (eval, no grad, batch 1) with the step-size
bound `lambda_max_bound` timed on its own. On CUDA the timings synchronise and run in bf16 autocast.
"""

from __future__ import annotations

import argparse

import torch

from svms.device import resolve_device
from svms.sheaf import SheafStreams, SheafStreamsConfig
from timing import median_time

N1D6_3B_PARAMS = 2_975_968_192


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = SheafStreamsConfig(d_model=args.d_model)
    module = SheafStreams(config).to(device).train()
    groups: dict[str, int] = {}
    for name, p in module.named_parameters():
        groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + p.numel()
    total = sum(groups.values())
    print(f"SheafStreams at D={config.d_model}, d_stream={config.d_stream}, d_overlap={config.d_overlap}, "
          f"rank={config.adapter_rank}, S={config.n_streams}, edges={config.edges}")
    for name, n in groups.items():
        print(f"  {name:<14} {n:>12,d}")
    print(f"  {'total':<14} {total:>12,d}  = {100 * total / N1D6_3B_PARAMS:.3f}% of GR00T N1.6-3B "
          f"({N1D6_3B_PARAMS:,d}); target <= 1%")

    B, T, D = args.batch, args.tokens, args.d_model
    h = torch.randn(B, T, D, device=device, requires_grad=True)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    labels = torch.randint(0, 2, (B, T, config.n_streams), device=device)
    linear = torch.nn.Linear(D, D).to(device)
    cuda = device.type == "cuda"

    def timed(fn):
        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                fn()
            if cuda:
                torch.cuda.synchronize()
        return median_time(run, args.repeats)

    def sheaf_step() -> None:
        out = module(h, mask, labels)
        (out.features.mean() + out.sheaf_loss + out.aux_loss + out.balance_loss).backward()

    t_sheaf = timed(sheaf_step)
    t_linear = timed(lambda: linear(h).mean().backward())
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nforward+backward, B={B} T={T} D={D}, {where}, median of {args.repeats}:")
    print(f"  {'Linear(D, D)':<14} {1000 * t_linear:9.2f} ms   1.00x")
    print(f"  {'SheafStreams':<14} {1000 * t_sheaf:9.2f} ms   {t_sheaf / t_linear:.2f}x")

    module.eval()
    one, one_mask = h[:1].detach(), mask[:1]
    with torch.no_grad():
        t_infer = timed(lambda: module(one, one_mask))
        t_bound = timed(module.maps.lambda_max_bound)
        t_linear = timed(lambda: linear(one))
    print(f"inference forward, B=1 T={T}, eval, no grad:")
    print(f"  {'Linear(D, D)':<14} {1000 * t_linear:9.2f} ms   1.00x")
    print(f"  {'SheafStreams':<14} {1000 * t_infer:9.2f} ms   {t_infer / t_linear:.2f}x"
          f"   (of which lambda_max_bound {1000 * t_bound:.2f} ms)")


if __name__ == "__main__":
    main()
