"""`svms compat check` and `svms compat manifest`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from svms.errors import SvmsError


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
