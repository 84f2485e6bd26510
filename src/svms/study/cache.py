"""The cache of what studies share: generated demonstrations and pretraining runs (`.cache/svms/`).

An entry appears under its final name only once complete: it is built in a `.tmp-` sibling (a killed build
resumes there: `svms train` resumes from its newest checkpoint) and renamed, under a lock, so a kill never
leaves a half entry that a later study would reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def cache_dir() -> Path:
    """`$SVMS_CACHE`, else the repository root's `.cache/svms` (the current folder's when installed as a wheel)."""
    if os.environ.get("SVMS_CACHE"):
        return Path(os.environ["SVMS_CACHE"]).resolve()
    root = ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()
    return (root / ".cache" / "svms").resolve()


def key_of(spec: Any) -> str:
    """A short hash of everything that determines an entry (JSON-able)."""
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created): two studies building one entry take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None]) -> bool:
    """Make `final` with `build(tmp)` unless it exists; False when it was reused."""
    with locked(final.parent / f".{final.name}.lock"):
        if final.exists():
            return False
        tmp = final.parent / f".tmp-{final.name}"
        build(tmp)
        os.replace(tmp, final)
        return True
