"""The `svms` command: tyro subcommands, each a dataclass whose fields are its flags (`svms.commands`).

Errors a user can cause (`SvmsError`, bad sheaf config values) are printed without a traceback and
exit 1.
"""

from __future__ import annotations

import sys
from dataclasses import make_dataclass
from typing import Annotated, Union

import tyro

from svms.commands.compat import CompatCheck, CompatManifest
from svms.commands.data import DataAuxCoverage, DataConvert, DataInspect, DataStats, DataValidate
from svms.commands.demo import Demo
from svms.commands.eval_compare import EvalCompare
from svms.commands.eval_open_loop import EvalOpenLoop
from svms.commands.memory import Memory
from svms.commands.serve import Serve
from svms.commands.sheaf import SheafDemo
from svms.commands.sim import SimGenerate, SimRollout
from svms.commands.study import Study
from svms.commands.train import Train, expand_svms_flags
from svms.errors import SvmsError


def command_group(name: str, doc: str, members: dict[str, type]) -> type:
    """A tyro subcommand holding nested subcommands (`svms compat check ...`)."""
    choice = Union[tuple(Annotated[cls, tyro.conf.subcommand(n)] for n, cls in members.items())]  # noqa: UP007
    return make_dataclass(name, [("command", tyro.conf.OmitSubcommandPrefixes[choice])],
                          namespace={"run": lambda self: self.command.run(), "__doc__": doc})


COMMANDS: dict[str, type] = {
    "compat": command_group("Compat", "Parity with NVIDIA's reference implementation (fixtures, manifest).",
                            {"check": CompatCheck, "manifest": CompatManifest}),
    "data": command_group("Data", "LeRobot v2 datasets: summary, strict validation, statistics, aux-label coverage.",
                          {"inspect": DataInspect, "validate": DataValidate, "stats": DataStats,
                           "aux-coverage": DataAuxCoverage, "convert": DataConvert}),
    "demo": Demo,
    "eval": command_group("Eval", "Evaluation: open-loop action error, and the baseline-vs-SVMS comparison.",
                          {"open-loop": EvalOpenLoop, "compare": EvalCompare}),
    "memory": Memory,
    "serve": Serve,
    "sheaf-demo": SheafDemo,
    "sim": command_group("Sim", "Simulated RoboCasa-style demonstrations and closed-loop evaluation (robosuite).",
                         {"generate": SimGenerate, "rollout": SimRollout}),
    "study": Study,
    "train": Train,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `svms` console script."""
    from svms.sheaf import SheafConfigError

    argv = expand_svms_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        command = tyro.extras.subcommand_cli_from_dict(
            COMMANDS, args=argv, prog="svms",
            description="GR00T N1.6 with sheaf-based multi-stream (SVMS) refinement.")
        return command.run()
    except (SvmsError, SheafConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
