"""The one registry of the study's phases and arms: pure data, imports nothing of ours.

`svms train` (flags per arm, phase defaults), `svms eval compare` (which arm is compared with which) and
`svms study` (which jobs an arm needs) all read it, so adding an arm is one entry here.

Phases (the seed's protocol; `svms train --phase`):

| phase   | trains                                         | lambda_aux | sheaf schedule       | lr    | batch |
|---------|------------------------------------------------|-----------:|----------------------|-------|------:|
| scratch | everything (tiny models on CPU)                |        0.3 | model config's       | 3e-4  |     8 |
| 1       | SVMS only                                      |        0.5 | off (lambda 0)       | 1e-4  |    16 |
| 2       | SVMS + bottom half of the DiT blocks           |        0.3 | adaptive 0.01 -> 0.1 | 5e-5  |    12 |
| 3       | action head + SVMS + the tuned top LLM layers  |        0.2 | fixed 0.1            | 1e-5  |     8 |

Arms: the baseline fine-tune (phase 3 without SVMS), the SVMS protocol (phases 1 -> 2 -> 3), its ablations
(one component off, compared with the baseline and with full SVMS) and the positive control (the baseline
fine-tune with a quarter of its optimizer steps: worse by construction, so a study that cannot tell it from
the baseline cannot tell SVMS from it either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How the sheaf loss weight is scheduled over training (`svms train --sheaf-schedule`, the model config's
#: `sheaf_schedule_mode`).
SHEAF_MODES = ("adaptive", "linear", "fixed", "off")
PHASES = ("scratch", "1", "2", "3")
PHASE_ORDER = {phase: k for k, phase in enumerate(PHASES)}
SVMS_PHASES = ("1", "2", "3")

PHASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "scratch": {"lambda_aux": 0.3, "sheaf_schedule": None, "learning_rate": 3e-4, "global_batch_size": 8},
    "1": {"lambda_aux": 0.5, "sheaf_schedule": "off", "learning_rate": 1e-4, "global_batch_size": 16},
    "2": {"lambda_aux": 0.3, "sheaf_schedule": "adaptive", "learning_rate": 5e-5, "global_batch_size": 12},
    "3": {"lambda_aux": 0.2, "sheaf_schedule": "fixed", "learning_rate": 1e-5, "global_batch_size": 8},
}


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison.

    `svms`, `flags` (TrainConfig field values) and `overrides` (model-config KEY=JSON) are what
    `svms train --arm NAME` sets (`phase_flags`: more flags for one phase, e.g. LoRA in phase 3 only); `phases`
    the fine-tuning phases the arm runs in order; `step_fraction` the
    share of the baseline's optimizer-step budget it gets; `references` the arms it is compared with."""

    name: str
    role: str  # baseline, treatment, ablation or control
    svms: bool
    phases: tuple[str, ...]
    flags: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    step_fraction: float = 1.0
    references: tuple[str, ...] = ()
    phase_flags: dict[str, dict[str, Any]] = field(default_factory=dict)

    def flags_for(self, phase: str) -> dict[str, Any]:
        """The TrainConfig values this arm sets in `phase`."""
        return {**self.flags, **self.phase_flags.get(phase, {})}


BASELINE = "baseline"
SVMS = "svms"
CONTROL = "control"

ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm(BASELINE, "baseline", False, ("3",)),
    Arm(SVMS, "treatment", True, SVMS_PHASES, references=(BASELINE,)),
    Arm("svms-no-sheaf", "ablation", True, SVMS_PHASES, {"sheaf_schedule": "off"}, ("sheaf_unroll_steps=0",),
        references=(BASELINE, SVMS)),
    Arm("svms-no-router", "ablation", True, SVMS_PHASES, {}, ("use_router=false",), references=(BASELINE, SVMS)),
    Arm("svms-no-aux", "ablation", True, SVMS_PHASES, {"lambda_aux": 0.0}, ("use_aux_losses=false",),
        references=(BASELINE, SVMS)),
    Arm(CONTROL, "control", False, ("3",), step_fraction=0.25, references=(BASELINE,)),
    # The SVMS protocol with phase 3 as LoRA (rank 32 on llm + dit): the fine-tune that fits a 24 GB card.
    Arm("svms-lora", "treatment", True, SVMS_PHASES, references=(BASELINE, SVMS),
        phase_flags={"3": {"lora_rank": 32}}),
)}

ABLATIONS = tuple(name for name, arm in ARMS.items() if arm.role == "ablation")


def arm_role(arm: str) -> str:
    """baseline, treatment, ablation or control: the registry's, else a control when the name says so."""
    if arm in ARMS:
        return ARMS[arm].role
    return "control" if CONTROL in arm else "treatment"
