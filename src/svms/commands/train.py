"""`svms train`."""

from __future__ import annotations

from dataclasses import dataclass

from svms.train.config import TrainConfig


@dataclass
class Train(TrainConfig):
    """Train or fine-tune GR00T N1.6 with or without SVMS, in phases (scratch, 1, 2, 3).

    Resumes automatically from the newest RUN/checkpoint-<step>/ (same flags; --max-steps, --save-every,
    --log-every and other presentation flags may change). --out must be new, empty or a run of svms train.
    SIGTERM / SIGINT: the current step finishes, a checkpoint is saved, exit 143 / 130 (a second signal stops at
    once). Multi-GPU or multi-process: `torchrun --nproc-per-node N -m svms.cli train ...`. `--svms` /
    `--no-svms` switch SVMS.
    """

    def run(self) -> int:
        import sys

        from svms.train.stop import TrainingStopped
        from svms.train.trainer import train

        try:
            final = train(self)
        except TrainingStopped as stop:
            print(stop, file=sys.stderr, flush=True)
            return stop.exit_code
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
