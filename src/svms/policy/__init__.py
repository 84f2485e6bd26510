"""Policies: the one batched contract (`Policy`), the GR00T checkpoint policy (model + processor, physical
units), the remote one (`PolicyClient` over the wire, `remote`, `wire`, `flat`) and the helpers that move one
sample in and out of the batched form. `svms.serve` serves a policy, `svms.sim` and `svms.eval` run one."""

from svms.policy.gr00t import Gr00tPolicy, checkpoint_processor
from svms.policy.protocol import INSTRUCTION_KEY, Policy, batch_of_one, first_of_batch
from svms.policy.remote import PolicyClient, parse_address

__all__ = ["INSTRUCTION_KEY", "Gr00tPolicy", "Policy", "PolicyClient", "batch_of_one", "checkpoint_processor",
           "first_of_batch", "parse_address"]
