"""What makes a folder a run of `svms train`, and the guards that keep a run from destroying anything else.

- **Marker.** A run folder is one whose `config.json` holds the key `svms_run` (written by `svms train`,
  with the run's identity); runs written before the marker existed are recognised by `resolved.model_config`
  beside `phase`. `--out` must be empty, missing or such a run, and must neither be, contain nor lie inside the
  `--init` checkpoint or the dataset.
- **Lock.** `RUN/.lock` is held with `fcntl.flock` for the whole run (the kernel drops it when the process
  dies, however it dies), and holds the PID of its holder so a second `svms train` can say who has the folder.
- **Identity.** What decides the numbers (every flag except `RESUMABLE`) must be what the run started with;
  the dataset counts by its fingerprint, so a moved or copied dataset still resumes.
- **Temporary checkpoints** are `.tmp-checkpoint-<step>-<pid>`; those of dead processes are removed on start.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from svms.errors import SvmsError

MARKER = "svms_run"
FORMAT = 1
LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
# Flags that may differ when a run is resumed: they change what a run shows, keeps or how long it goes on,
# not the samples, weights or schedule of the steps already taken. --max-steps extends (or shortens) the run:
# from the resumed step on, the schedules follow the new length (recorded in config.json's svms_run.history).
RESUMABLE = frozenset({"out", "max_steps", "save_every", "keep_checkpoints", "log_every", "tensorboard", "wandb",
                       "num_workers", "device", "grad_checkpointing", "ignore_svms_weights", "resolved"})
CHANGEABLE = RESUMABLE - {"out", "resolved"}  # the resumable flags a user sets (not the folder, not derived state)
_TMP_CHECKPOINT = re.compile(r"^\.tmp-checkpoint-(\d+)(?:-(\d+))?$")
_OWN_LEFTOVERS = re.compile(r"^(\.lock|\.write-test-\d+|\.tmp-checkpoint-\d+(-\d+)?|\.config\.json\.\d+\.tmp)$")


def read_run_config(folder: Path) -> dict[str, Any] | None:
    """The folder's `config.json` if `svms train` wrote it, else None."""
    path = folder / CONFIG_NAME
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(saved, dict):
        return None
    legacy = isinstance(saved.get("resolved"), dict) and "model_config" in saved["resolved"] and "phase" in saved
    return saved if isinstance(saved.get(MARKER), dict) or legacy else None


def _inside(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b)


def guard_out(out: Path, init: Path | None, init_checkpoint: Path | None, dataset: Path | None) -> None:
    """Refuse an `--out` whose use would overwrite or prune what `svms train` did not write."""
    where = out.resolve()
    for flag, path in (("--init", init), ("--init", init_checkpoint), ("--dataset", dataset)):
        if path is None:
            continue
        other = Path(path).resolve()
        if _inside(where, other) or _inside(other, where):
            relation = ("is" if where == other else "is inside" if _inside(where, other) else "contains")
            raise SvmsError(f"--out {out} {relation} the {flag} folder {other}; training there would overwrite its "
                            f"config.json or prune its checkpoints. Choose an --out outside {other} (a new folder)")
    if not where.is_dir():
        return
    foreign = [p.name for p in where.iterdir() if not _OWN_LEFTOVERS.match(p.name)]
    if foreign and read_run_config(where) is None:
        listed = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SvmsError(f"--out {out} is not empty ({listed}) and is not a run of svms train (its config.json was "
                        "not written by svms train), so training there would overwrite those files. Pass a new or "
                        "empty folder as --out; nothing was changed")


class RunLock:
    """An advisory exclusive lock on `RUN/.lock`, held from `acquire` to `release`."""

    def __init__(self, run: Path) -> None:
        self.path = run / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise SvmsError(f"cannot lock {self.path} ({err}); choose an --out on a local disk") from err
            raise SvmsError(f"{self.path.parent} is in use by another svms train (PID {holder} holds "
                            f"{self.path}); wait for it to finish, stop it, or pass another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def tmp_checkpoint_name(step: int) -> str:
    """A checkpoint is written under a per-process temporary name, so no two writers ever share one."""
    return f".tmp-checkpoint-{step}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(run: Path) -> list[Path]:
    """Remove temporary checkpoint folders left by dead processes, by an earlier run in this process and by
    versions that named none; call with the run's lock held (no writer of this run is active). Returns what was
    removed."""
    removed = []
    for child in run.iterdir():
        m = _TMP_CHECKPOINT.match(child.name)
        pid = None if m is None or m.group(2) is None else int(m.group(2))
        if m and child.is_dir() and (pid is None or pid == os.getpid() or not _alive(pid)):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


# ---- identity ------------------------------------------------------------------------------------------------

def dataset_fingerprint(root: Path) -> str | None:
    """A cheap hash of a LeRobot dataset: its meta/ files' bytes and every data/video file's path and size
    (None for a folder without meta/info.json, e.g. a stand-in path of a synthetic dataset)."""
    root = Path(root)
    meta = root / "meta"
    if not (meta / "info.json").is_file():
        return None
    digest = hashlib.sha256()
    for path in sorted(meta.iterdir()):
        if path.is_file():
            digest.update(f"{path.name}\0".encode())
            digest.update(path.read_bytes())
    for sub in ("data", "videos"):
        for path in sorted((root / sub).rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def identity(dataset: Path, fingerprint: str | None, init: Path | None) -> dict[str, Any]:
    """What `config.json`'s `svms_run` records beside the flags: absolute paths and the dataset fingerprint."""
    return {"format": FORMAT, "dataset": str(Path(dataset).resolve()), "dataset_fingerprint": fingerprint,
            "init": None if init is None else str(Path(init).resolve())}


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: run value vs now` for every flag that defines the run and differs (a key the run's version did
    not write cannot differ)."""
    before_id, now_id = saved.get(MARKER) or {}, now[MARKER]
    out = []
    for key, value in now.items():
        if key in RESUMABLE or key == MARKER or key not in saved:
            continue
        if key == "dataset":
            fps = before_id.get("dataset_fingerprint"), now_id["dataset_fingerprint"]
            if None not in fps:
                if fps[0] != fps[1]:
                    out.append(f"dataset: {saved[key]} (fingerprint {fps[0]}) in the run, {value} "
                               f"(fingerprint {fps[1]}) now")
                continue
        if key in ("dataset", "init"):
            before = before_id.get(key, None if saved[key] is None else str(Path(saved[key]).resolve()))
            if before != now_id[key]:
                out.append(f"{key}: {saved[key]} in the run, {value} now")
            continue
        if saved[key] != value:
            out.append(f"{key} = {saved[key]!r} in the run, {value!r} now")
    return out


def check_identity(run: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    diff = differences(saved, now)
    if diff:
        allowed = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(CHANGEABLE))
        raise SvmsError(f"{run} holds a run started with other settings, and resuming it would mix them:\n"
                        + "\n".join(f"  {d}" for d in diff)
                        + f"\nRerun with the run's values to resume it, or pass a new --out for a new run (only "
                        f"{allowed} may change on resume)")


def history_entry(saved: dict[str, Any], now: dict[str, Any], step: int) -> dict[str, Any] | None:
    """The resumable flags that changed at `step` (None when none did), for `svms_run.history`."""
    changed = {k: now[k] for k in sorted(CHANGEABLE) if k in saved and saved[k] != now[k]}
    return {"step": step, **changed} if changed else None


def write_run_config(run: Path, record: dict[str, Any]) -> None:
    """`RUN/config.json`, written to a temporary name and renamed (never half-written)."""
    tmp = run / f".{CONFIG_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run / CONFIG_NAME)
