"""RoboCasa-style instructions for the simulated tasks, with varied phrasing per task.

RoboCasa's instructions are short imperative sentences naming the object and where it goes
("pick the can from the counter and place it in the bin"). Several templates per task keep a
policy from keying on one exact string; which template an episode gets is drawn from its seed.
"""

from __future__ import annotations

import numpy as np

from svms.sim.tasks import task_spec

_PICK_PLACE = (
    "pick the {obj} from the counter and place it in the bin",
    "pick up the {obj} and put it in the bin",
    "move the {obj} from the left bin to the right bin",
    "place the {obj} in the bin on the right",
    "grab the {obj} and drop it into the other bin",
)

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "Lift": (
        "pick up the red cube",
        "lift the cube from the counter",
        "pick the cube up off the counter",
        "grab the red block and lift it",
    ),
    "Stack": (
        "stack the red cube on the green cube",
        "pick the red block and place it on top of the green block",
        "put the red cube on the green cube",
        "place the small cube on the larger cube",
    ),
    "Door": (
        "open the door",
        "pull the door open",
        "open the cabinet door by its handle",
        "pull the handle to open the door",
    ),
    **{f"PickPlace{obj.capitalize()}": tuple(t.format(obj=obj) for t in _PICK_PLACE)
       for obj in ("milk", "bread", "cereal", "can")},
}


def instructions(task: str) -> tuple[str, ...]:
    """Every phrasing of `task`'s instruction (an unknown task is an error listing the valid ones)."""
    return INSTRUCTIONS[task_spec(task).name]


def instruction(task: str, rng: np.random.Generator) -> str:
    """One phrasing of `task`'s instruction, drawn with `rng`."""
    options = instructions(task)
    return options[int(rng.integers(len(options)))]
