"""Policies: the one batched contract (`Policy`), the GR00T checkpoint policy (model + processor, physical
units) and the helpers that move one simulator step in and out of the batched form. `svms.serve` serves a
policy, `svms.sim` and `svms.eval` run one."""

from svms.policy.gr00t import Gr00tPolicy, checkpoint_processor
from svms.policy.protocol import INSTRUCTION_KEY, Policy, batch_of_one, first_of_batch

__all__ = ["INSTRUCTION_KEY", "Gr00tPolicy", "Policy", "batch_of_one", "checkpoint_processor", "first_of_batch"]
