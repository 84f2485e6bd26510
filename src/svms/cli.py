"""The `svms` command: tyro subcommands, each a dataclass whose fields are its flags.

Errors a user can cause (`SvmsError`, bad sheaf config values) are printed without a traceback
and exit 1.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Annotated, Union

import tyro

from svms.errors import SvmsError


@dataclass
class SheafDemo:
    """Train SheafStreams on a synthetic routing task and print how it learns (seconds on a CPU)."""

    steps: int = 300
    """optimizer steps"""
    d_model: int = 64
    """width of the synthetic backbone features"""
    n_streams: int = 3
    """streams (and token types to route)"""
    seed: int = 0
    log_every: int = 50

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        from svms.sheaf.toy import baseline_mse, run_toy

        console = Console()
        identity = baseline_mse(self.d_model, self.n_streams, seed=self.seed)
        console.print(f"task: move each token by its type's linear map; identity (SVMS at init) "
                      f"error = {identity:.4f}")
        table = Table("step", "task mse", "vs identity", "sheaf loss", "residual", "alpha",
                      "own-stream weight", "aux bal. acc (min)")

        def log(r) -> None:
            table.add_row(str(r.step), f"{r.task_mse:.4f}", f"{r.task_mse / identity:.2f}x",
                          f"{r.sheaf_loss:.3f}", f"{r.residual:.4f}", f"{r.alpha:.4f}",
                          f"{r.own_stream_weight:.2f}", f"{min(r.aux_balanced_accuracy.values()):.2f}")
            console.print(f"step {r.step}/{self.steps}  task mse {r.task_mse:.4f}", highlight=False)

        run_toy(steps=self.steps, d_model=self.d_model, n_streams=self.n_streams, seed=self.seed,
                log_every=self.log_every, on_log=log)
        console.print(table)
        return 0


@dataclass
class CompatCheck:
    """Compare our implementation with a reference fixture folder (model or processor).

    Prints one line per case and tensor (max |d| or mismatch count, pass/fail); exits 1 if any fails.
    """

    folder: Annotated[Path, tyro.conf.Positional]
    """a fixture folder: action_head_tiny, action_head_tiny_dit, backbone_tiny or processor layouts"""

    def run(self) -> int:
        from svms.compat.check import check_fixture

        kind, rows = check_fixture(self.folder)
        for row in rows:
            print(row.format())
        failed = sum(not r.passed for r in rows)
        print(f"{kind} fixture {self.folder}: {len(rows) - failed}/{len(rows)} passed")
        if not rows:
            raise SvmsError(f"{self.folder}: the fixture holds no case to compare.")
        return 1 if failed else 0


def command_group(name: str, doc: str, members: dict[str, type]) -> type:
    """A tyro subcommand holding nested subcommands (`svms compat check ...`)."""
    choice = Union[tuple(Annotated[cls, tyro.conf.subcommand(n)] for n, cls in members.items())]  # noqa: UP007
    group = make_dataclass(name, [("command", tyro.conf.OmitSubcommandPrefixes[choice])],
                           namespace={"run": lambda self: self.command.run(), "__doc__": doc})
    return group


@dataclass
class CompatManifest:
    """Print the model's state dict as `name [shape]` lines (built on the meta device, no weights)."""

    preset: str = "n1d6-3b"
    """model preset: n1d6-3b (the released checkpoint), reference-default or tiny"""
    svms: bool = False
    """include the SVMS module's entries (prefix svms.)"""

    def run(self) -> int:
        import dataclasses

        from svms.compat.manifest import format_manifest, state_dict_manifest
        from svms.model import Gr00tN1d6Config

        config = dataclasses.replace(Gr00tN1d6Config.preset(self.preset), use_sheaf_streams=self.svms)
        print(format_manifest(state_dict_manifest(config)))
        return 0


COMMANDS: dict[str, type] = {
    "compat": command_group("Compat", "Parity with NVIDIA's reference implementation (fixtures, manifest).",
                            {"check": CompatCheck, "manifest": CompatManifest}),
    "sheaf-demo": SheafDemo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `svms` console script."""
    from svms.sheaf import SheafConfigError

    command = tyro.extras.subcommand_cli_from_dict(
        COMMANDS, args=argv, prog="svms",
        description="GR00T N1.6 with sheaf-based multi-stream (SVMS) refinement.")
    try:
        return command.run()
    except (SvmsError, SheafConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
