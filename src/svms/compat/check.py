"""`svms compat check DIR`: recognise a fixture folder by its content and run its checker."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from svms.compat.tolerance import CompatRow
from svms.errors import SvmsError

MODEL_FILES = ("config.json", "weights.safetensors", "io.safetensors")
PROCESSOR_FILES = ("prompt.json", "images.json", "state_action.json")

# kind -> "module:function" of its checker; a kind missing here is reported as not implemented.
CHECKERS: dict[str, str] = {
    "action_head": "svms.compat.action_head:check_action_head_fixture",
    "backbone": "svms.compat.backbone:check_backbone_fixture",
    "processor": "svms.compat.processor:check_processor_fixture",
}


def fixture_kind(folder: Path) -> str:
    """`action_head`, `backbone` or `processor`, from the files the folder holds."""
    if not folder.is_dir():
        raise SvmsError(f"{folder} is not a directory; pass a fixture folder such as "
                        "fixtures/gr00t_n1d6/action_head_tiny or fixtures/gr00t_n1d6/processor.")
    if all((folder / f).is_file() for f in PROCESSOR_FILES):
        return "processor"
    if all((folder / f).is_file() for f in MODEL_FILES):
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as err:
            raise SvmsError(f"{folder / 'config.json'} is not valid JSON ({err}).") from err
        return "backbone" if "eagle_config" in config else "action_head"
    raise SvmsError(
        f"{folder} is not a fixture folder: a model fixture holds {', '.join(MODEL_FILES)}; a processor "
        f"fixture holds {', '.join(PROCESSOR_FILES)}. Found: "
        f"{', '.join(sorted(p.name for p in folder.iterdir())[:10]) or 'nothing'}."
    )


def checker_for(kind: str) -> Callable[[Path], list[CompatRow]]:
    if kind not in CHECKERS:
        raise SvmsError(f"checking {kind} fixtures is not implemented yet; implemented: "
                        f"{', '.join(sorted(CHECKERS))}.")
    module, func = CHECKERS[kind].split(":")
    return getattr(importlib.import_module(module), func)


def check_fixture(folder: Path) -> tuple[str, list[CompatRow]]:
    """Run the checker of the folder's kind; returns the kind and one row per case and tensor."""
    kind = fixture_kind(folder)
    return kind, checker_for(kind)(folder)
