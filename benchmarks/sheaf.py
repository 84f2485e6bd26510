"""SheafStreams at the seed sizes: parameter overhead and CPU forward+backward time.

Run: .venv/bin/python benchmarks/sheaf.py [--batch 4 --tokens 300 --repeats 5]
Prints the parameter count as a % of the released 2,975,969,728-parameter GR00T N1.6 model
(target <= 1%) and the time of SheafStreams against a single Linear(D, D) measured in the same run.
"""

from __future__ import annotations

import argparse

import torch

from svms.sheaf import SheafStreams, SheafStreamsConfig
from timing import median_time

N1D6_3B_PARAMS = 2_975_969_728


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = SheafStreamsConfig(d_model=args.d_model)
    module = SheafStreams(config).train()
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
    h = torch.randn(B, T, D, requires_grad=True)
    mask = torch.ones(B, T, dtype=torch.bool)
    labels = torch.randint(0, 2, (B, T, config.n_streams))
    linear = torch.nn.Linear(D, D)

    def sheaf_step() -> None:
        out = module(h, mask, labels)
        (out.features.mean() + out.sheaf_loss + out.aux_loss + out.balance_loss).backward()

    def linear_step() -> None:
        linear(h).mean().backward()

    t_sheaf = median_time(sheaf_step, args.repeats)
    t_linear = median_time(linear_step, args.repeats)
    print(f"\nCPU forward+backward, B={B} T={T} D={D}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}:")
    print(f"  {'Linear(D, D)':<14} {1000 * t_linear:9.1f} ms   1.00x")
    print(f"  {'SheafStreams':<14} {1000 * t_sheaf:9.1f} ms   {t_sheaf / t_linear:.2f}x")


if __name__ == "__main__":
    main()
