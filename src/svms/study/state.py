"""What a study folder records about itself: the marker that makes it a study, and one state file per job.

`OUT/.svms-study.json` is written first, before anything else in the folder: it names the plan and its
digest. A folder that exists, is not empty and has no marker is not ours and is refused untouched; a study
of another plan is refused too (naming both), so rerunning a command only ever resumes its own study.
Nothing here deletes anything.

`OUT/.study/jobs/<name>.json` holds a job's spec and state: pending, running, done or failed, with
timestamps, the command, the exit status and a one-line summary. Files are replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from svms.errors import SvmsError
from svms.study.jobs import Job
from svms.study.plan import Plan

MARKER = ".svms-study.json"
STATE_DIR = ".study"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def check_folder(out: Path, plan: Plan) -> bool:
    """Whether `out` already is this plan's study; SvmsError when it may not become one. Changes nothing."""
    digest = plan.digest()
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise SvmsError(f"--out {out} is a file, not a folder; choose another --out")
    if marker.is_file():
        try:
            mine = read_json(marker)
        except (OSError, json.JSONDecodeError) as err:
            raise SvmsError(f"{marker} cannot be read ({err}); choose another --out") from err
        if mine.get("digest") != digest:
            raise SvmsError(
                f"--out {out} holds the study of plan {mine.get('plan')!r} (digest {mine.get('digest')}, from "
                f"{mine.get('source')}), not of plan {plan.name!r} (digest {digest}, from {plan.source}); rerun "
                "with the same plan to resume it, or choose another --out (nothing was changed)")
        return True
    # a marker's temporary file alone is a kill while claiming the folder: still ours to claim
    foreign = [p for p in out.iterdir() if not p.name.startswith(f".{MARKER}.")] if out.exists() else []
    if foreign:
        raise SvmsError(f"--out {out} exists, is not empty and is not a study folder (no {MARKER}); a study "
                        "never writes into or deletes a folder it did not create. Choose a new or empty --out "
                        "(nothing was changed)")
    return False


def claim_folder(out: Path, plan: Plan) -> None:
    """Make `out` this plan's study folder (the marker first), or refuse leaving it as it is."""
    if check_folder(out, plan):
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"plan": plan.name, "digest": plan.digest(), "source": plan.source,
                              "created": now(), "identity": plan.identity()})


def state_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / "jobs" / f"{name}.json"


def log_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / "logs" / f"{name}.log"


def load_states(out: Path, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Each job's state file, written as pending when new or unfinished (a done job's file is left alone)."""
    states = {}
    for job in jobs:
        path = state_path(out, job.name)
        state = read_json(path) if path.is_file() else None
        if state is None or state.get("state") != "done":
            previous = state or {}
            state = {"name": job.name, "kind": job.kind, "label": job.label, "args": job.args,
                     "deps": list(job.deps), "outputs": list(job.outputs), "gpu": job.gpu, "state": "pending",
                     "attempts": previous.get("attempts", 0), "history": previous.get("history", [])[-5:]}
            if previous.get("state") in ("running", "failed", "submitted"):
                state["history"].append({k: previous.get(k) for k in ("state", "started", "rc", "error")})
            write_json(path, state)
        states[job.name] = state
    return states


def update_state(out: Path, name: str, **changes: Any) -> dict[str, Any]:
    path = state_path(out, name)
    state = read_json(path)
    state.update(changes)
    write_json(path, state)
    return state


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
