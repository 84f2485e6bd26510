"""Training checkpoints: `RUN/checkpoint-<step>/` = a loadable model folder + the training state.

A checkpoint is written under a temporary name of its own process (`.tmp-checkpoint-<step>-<pid>`) and
renamed when complete, so a crash or kill during the write leaves the previous checkpoint intact and never a
half-written one under a final name. A write that fails (a full disk) removes its temporary folder. A
checkpoint that cannot be read back is set aside as `checkpoint-<step>.unreadable` (never deleted), so the
previous one is the newest again.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svms.errors import SvmsError
from svms.model.checkpoint import (  # noqa: F401 (where a run's checkpoints are found, re-exported for the trainer)
    TRAINING_STATE,
    UnreadableCheckpointError,
    list_checkpoints,
    newest_checkpoint,
    resolve_init,
)
from svms.train.run_folder import tmp_checkpoint_name


def rng_state(svms_generator: torch.Generator | None) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if svms_generator is not None:
        state["svms"] = svms_generator.get_state()
    return state


def restore_rng(state: dict[str, Any], svms_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 (the legacy global RNG other code may use)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if svms_generator is not None and "svms" in state:
        svms_generator.set_state(state["svms"])


def write_checkpoint(run: Path, step: int, write_model, training_state: dict[str, Any], keep: int) -> Path:
    """Write `checkpoint-<step>` atomically: `write_model(folder)` + the training state; then prune."""
    final = run / f"checkpoint-{step}"
    tmp = run / tmp_checkpoint_name(step)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write_model(tmp)
        torch.save(training_state, tmp / (TRAINING_STATE + ".part"))
    except Exception as err:  # not on KeyboardInterrupt: a killed writer's folder is cleaned on the next start
        full = _disk_full(err, run)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        kept = newest_checkpoint(run)
        raise SvmsError(f"disk full at {tmp}: checkpoint-{step} could not be written ({err}). Its temporary "
                        f"folder was removed; the newest checkpoint is {kept or 'none'}. Free space on that disk "
                        "(or lower --keep-checkpoints) and rerun the same command to resume") from err
    os.replace(tmp / (TRAINING_STATE + ".part"), tmp / TRAINING_STATE)  # marks the folder complete
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _disk_full(err: BaseException, where: Path) -> bool:
    """ENOSPC, however the writer reports it: an OSError, safetensors' "os error 28", or torch.save's bare
    `basic_ios::clear` on a disk with (almost) no space left."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    try:
        return shutil.disk_usage(where).free < 16 * 1024**2
    except OSError:
        return False


def read_training_state(checkpoint: Path) -> dict[str, Any]:
    try:
        return torch.load(checkpoint / TRAINING_STATE, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which and how to recover
        raise UnreadableCheckpointError(f"{checkpoint / TRAINING_STATE} cannot be read ({err}); the checkpoint "
                                        f"{checkpoint} is truncated or corrupt") from err


def set_aside(checkpoint: Path) -> Path:
    """Rename an unreadable checkpoint out of the `checkpoint-<step>` pattern (kept for inspection)."""
    target = checkpoint.with_name(checkpoint.name + ".unreadable")
    n = 1
    while target.exists():
        n += 1
        target = checkpoint.with_name(f"{checkpoint.name}.unreadable-{n}")
    os.replace(checkpoint, target)
    return target
