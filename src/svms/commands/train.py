"""`svms train`."""

from __future__ import annotations

from dataclasses import dataclass

from svms.train.config import TrainConfig


@dataclass
class Train(TrainConfig):
    """Train or fine-tune GR00T N1.6 with or without SVMS, in phases (scratch, 1, 2, 3).

    Resumes automatically from the newest RUN/checkpoint-<step>/. Multi-GPU or multi-process:
    `torchrun --nproc-per-node N -m svms.cli train ...`. `--svms` / `--no-svms` switch SVMS.
    """

    def run(self) -> int:
        from svms.train.trainer import train

        final = train(self)
        print(f"final checkpoint: {final}")
        return 0


def expand_svms_flags(argv: list[str]) -> list[str]:
    """`--svms` / `--no-svms` (flags) -> `--svms True|False` (tyro's form for an optional bool)."""
    out = []
    for arg in argv:
        if arg == "--svms":
            out += ["--svms", "True"]
        elif arg == "--no-svms":
            out += ["--svms", "False"]
        else:
            out.append(arg)
    return out
