"""Reading one TOML table of a plan strictly: every key is known, typed and named in errors.

A plan is user input, so a typo must not be ignored silently (a misspelt `learing_rate` would otherwise train
with the default): `Table.done()` rejects what no `take` asked for, with the closest known key as the fix.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

from svms.errors import SvmsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

MISSING = object()
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "a table"}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise SvmsError(f"plan {path} does not exist; pass a TOML file or a built-in plan name") from err
    except tomllib.TOMLDecodeError as err:
        raise SvmsError(f"{path}: not valid TOML ({err}); fix the syntax at that line") from err


def type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)


class Table:
    """One table of the plan (`where` is its TOML name, "" for the top level)."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data, self.where, self.taken = data, where, set()

    def key_name(self, key: str) -> str:
        return f"[{self.where}] {key}" if self.where else key

    def error(self, key: str, problem: str) -> SvmsError:
        return SvmsError(f"{self.key_name(key)}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = MISSING, items: type | None = None) -> Any:
        """The value of `key`, checked to be of `kind` (a list's elements of `items`); `default` when absent."""
        self.taken.add(key)
        if key not in self.data:
            if default is MISSING:
                raise self.error(key, f"missing; add it ({type_name(kind)})")
            return default
        value = self.data[key]
        if not type_ok(value, kind):
            raise self.error(key, f"{value!r} is not {type_name(kind)}")
        if items is not None and isinstance(value, list):
            for item in value:
                if not type_ok(item, items):
                    raise self.error(key, f"element {item!r} is not {type_name(items)}")
        return value

    def table(self, key: str, required: bool = False) -> Table | None:
        value = self.take(key, dict, MISSING if required else None)
        if value is None:
            return None
        return Table(value, f"{self.where}.{key}" if self.where else key)

    def done(self) -> None:
        """Reject the keys nothing took (typos), suggesting the nearest known one."""
        for key in self.data:
            if key not in self.taken:
                near = difflib.get_close_matches(key, sorted(self.taken), n=1)
                fix = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(sorted(self.taken))}"
                raise self.error(key, f"unknown key; {fix}")
