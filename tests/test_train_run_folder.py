"""Run folders that never lose work (issue 16): `--out` guards, one run per folder, resume identity, unreadable
checkpoints, a full disk, SVMS weights that would be dropped."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from svms.cli import main
from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.model.checkpoint import UnreadableCheckpointError
from svms.train import TrainConfig
from svms.train import checkpoints as ckpts
from svms.train.checkpoints import list_checkpoints, write_checkpoint
from svms.train.run_folder import MARKER, clean_stale_tmp, dataset_fingerprint, guard_out
from svms.train.sampling import SyntheticDataset
from svms.train.trainer import build_model, train


def tiny(svms: bool = False) -> Gr00tN1d6:
    torch.manual_seed(0)
    return Gr00tN1d6(dataclasses.replace(Gr00tN1d6Config.preset("tiny"), use_sheaf_streams=svms))


@pytest.fixture(scope="module")
def data() -> SyntheticDataset:
    return SyntheticDataset(tiny(), size=12)


def run(tmp: Path, data, **kw) -> Path:
    cfg = dict(dataset=tmp / "unused", out=tmp / "run", max_steps=2, save_every=2, global_batch_size=2,
               tensorboard=False, log_every=100)
    return train(TrainConfig(**{**cfg, **kw}), data, SyntheticDataset.collate)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*argv: str) -> int:
    return main(["train", "--max-steps", "1", "--no-tensorboard", *argv])


# -- --out guards (cases 1, 2) ------------------------------------------------------------------------------------
def test_out_holding_files_train_did_not_write_is_refused_and_left_untouched(tmp_path, capsys):
    user = tmp_path / "U"
    (user / "checkpoint-1").mkdir(parents=True)
    (user / "config.json").write_text('{"mine": true}\n')
    (user / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.9}\n')
    (user / "checkpoint-1" / "results.csv").write_text("a,b\n1,2\n")
    before = snapshot(user)
    assert cli("--dataset", str(tmp_path / "ds"), "--out", str(user)) == 1
    err = capsys.readouterr().err
    assert f"--out {user} is not empty" in err and "not a run of svms train" in err and "Traceback" not in err
    assert snapshot(user) == before


def test_empty_folders_and_train_s_own_leftovers_are_accepted(tmp_path):
    guard_out(tmp_path / "missing", None, None, None)
    (tmp_path / "empty").mkdir()
    guard_out(tmp_path / "empty", None, None, None)
    left = tmp_path / "left"
    (left / ".tmp-checkpoint-3-12345").mkdir(parents=True)
    (left / ".lock").write_text("12345\n")
    guard_out(left, None, None, None)  # a run killed before it wrote config.json


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("init") / "CK"
    tiny().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("where", ["init itself", "inside init", "contains init", "dataset", "inside dataset"])
def test_out_that_is_contains_or_lies_inside_init_or_the_dataset_is_refused(tmp_path, checkpoint, capsys, where):
    dataset = tmp_path / "ds"
    (dataset / "meta").mkdir(parents=True)
    out = {"init itself": checkpoint, "inside init": checkpoint / "run", "contains init": checkpoint.parent,
           "dataset": dataset, "inside dataset": dataset / "run"}[where]
    before = snapshot(checkpoint.parent)
    assert cli("--init", str(checkpoint), "--dataset", str(dataset), "--out", str(out)) == 1
    err = capsys.readouterr().err
    flag = "--dataset" if "dataset" in where else "--init"
    assert f"--out {out}" in err and f"the {flag} folder" in err and "Choose an --out outside" in err
    assert snapshot(checkpoint.parent) == before
    Gr00tN1d6.from_pretrained(checkpoint)  # still loads (it used to lose its config.json)


# -- identity (case 7) --------------------------------------------------------------------------------------------
def test_rerun_with_other_flags_is_refused_and_nothing_is_rewritten(tmp_path, data):
    final = run(tmp_path, data)
    before = snapshot(tmp_path / "run")
    for kw, listed in (({"learning_rate": 0.5}, "learning_rate = 0.0003 in the run, 0.5 now"),
                       ({"global_batch_size": 4}, "global_batch_size = 2 in the run, 4 now"),
                       ({"dataset": tmp_path / "other"}, f"dataset: {tmp_path / 'unused'} in the run")):
        with pytest.raises(SvmsError, match="holds a run started with other settings") as err:
            run(tmp_path, data, **kw)
        assert listed in str(err.value) and "--max-steps" in str(err.value)
    assert run(tmp_path, data) == final  # the same flags: nothing to train, nothing rewritten
    assert snapshot(tmp_path / "run") == before
    run(tmp_path, data, max_steps=3, log_every=1)  # extending is allowed, and recorded
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_steps"] == 3 and saved[MARKER]["history"] == [{"step": 2, "log_every": 1, "max_steps": 3}]


def test_dataset_fingerprint_follows_content_not_place(tmp_path):
    ds = tmp_path / "ds"
    (ds / "meta").mkdir(parents=True)
    (ds / "data" / "chunk-000").mkdir(parents=True)
    (ds / "meta" / "info.json").write_text('{"fps": 20}')
    (ds / "meta" / "stats.json").write_text('{"state": {}}')
    (ds / "data" / "chunk-000" / "episode_000000.parquet").write_bytes(b"x" * 100)
    first = dataset_fingerprint(ds)
    shutil.copytree(ds, tmp_path / "copy")
    assert dataset_fingerprint(tmp_path / "copy") == first
    (tmp_path / "copy" / "meta" / "stats.json").write_text('{"state": {"mean": [1]}}')
    assert dataset_fingerprint(tmp_path / "copy") != first
    (ds / "data" / "chunk-000" / "episode_000000.parquet").write_bytes(b"x" * 101)
    assert dataset_fingerprint(ds) != first
    assert dataset_fingerprint(tmp_path / "unused") is None


# -- one run per folder (case 8) ----------------------------------------------------------------------------------
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_train_on_a_locked_folder_fails_at_once_naming_the_pid(tmp_path, data):
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run" / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SvmsError, match=f"in use by another svms train \\(PID {holder.pid} holds"):
            run(tmp_path, data)
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing written
    finally:
        holder.communicate("")
    run(tmp_path, data, max_steps=1)  # released: the folder trains


def test_stale_temporary_checkpoints_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f".tmp-checkpoint-2-{dead.pid}", ".tmp-checkpoint-2", f".tmp-checkpoint-4-{os.getppid()}"):
        (tmp_path / name).mkdir()
    removed = {p.name for p in clean_stale_tmp(tmp_path)}
    assert removed == {f".tmp-checkpoint-2-{dead.pid}", ".tmp-checkpoint-2"}
    assert (tmp_path / f".tmp-checkpoint-4-{os.getppid()}").is_dir()


# -- unreadable checkpoints (case 15) -----------------------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_safetensors_is_an_error_naming_the_file(tmp_path, checkpoint, capsys):
    broken = tmp_path / "CK"
    shutil.copytree(checkpoint, broken)
    truncate(broken / "model.safetensors")
    with pytest.raises(UnreadableCheckpointError, match=f"{broken / 'model.safetensors'} cannot be read"):
        Gr00tN1d6.from_pretrained(broken)  # the one loader of --init, eval, serve and resume
    assert cli("--init", str(broken), "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert f"{broken / 'model.safetensors'} cannot be read as safetensors" in err and "Traceback" not in err


def test_unreadable_newest_checkpoints_fall_back_to_the_previous_one_saying_so(tmp_path, data, capfd):
    run(tmp_path, data, max_steps=6, save_every=2)
    straight = (tmp_path / "run" / "metrics.jsonl").read_text()
    truncate(tmp_path / "run" / "checkpoint-6" / "model.safetensors")
    truncate(tmp_path / "run" / "checkpoint-4" / ckpts.TRAINING_STATE)
    capfd.readouterr()
    run(tmp_path, data, max_steps=6, save_every=2)
    err = capfd.readouterr().err
    assert "checkpoint-6/model.safetensors cannot be read" in err and "training_state.pt cannot be read" in err
    assert f"resuming from {tmp_path / 'run' / 'checkpoint-2'}" in err
    assert (tmp_path / "run" / "checkpoint-6.unreadable").is_dir()  # set aside, not deleted
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2, 4, 6]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == straight  # and the resume is still exact


# -- a full disk (case 16) ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["ENOSPC", "iostream"])
def test_a_full_disk_names_the_path_and_removes_the_temporary_folder(tmp_path, monkeypatch, how):
    def write_model(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"w" * 1000)

    write_checkpoint(tmp_path, 2, write_model, {"step": 2}, keep=3)
    if how == "ENOSPC":
        def failing(*args, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(ckpts.torch, "save", failing)
    else:  # what torch.save says on a full disk; the disk has no space left
        def failing(*args, **kw):
            raise RuntimeError("basic_ios::clear: iostream error")
        monkeypatch.setattr(ckpts.torch, "save", failing)
        monkeypatch.setattr(ckpts.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(SvmsError, match=f"disk full at {tmp_path}/.tmp-checkpoint-4-{os.getpid()}") as err:
        write_checkpoint(tmp_path, 4, write_model, {"step": 4}, keep=3)
    assert "checkpoint-2" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def failing(*args, **kw):
        raise ValueError("not picklable")
    monkeypatch.setattr(ckpts.torch, "save", failing)
    with pytest.raises(ValueError, match="not picklable"):
        write_checkpoint(tmp_path, 2, lambda folder: None, {"step": 2}, keep=3)
    assert list(tmp_path.iterdir()) == []


# -- SVMS weights (case 13) ---------------------------------------------------------------------------------------
def test_svms_weights_under_a_config_without_svms_are_an_error_unless_ignored(tmp_path, capsys):
    model = tiny(svms=True)
    model.save_pretrained(tmp_path / "CK")
    n = sum(k.startswith("svms.") for k in model.state_dict())
    with pytest.raises(SvmsError, match=f"holds {n} SVMS tensors"):
        Gr00tN1d6.from_pretrained(tmp_path / "CK", overrides={"use_sheaf_streams": False})
    loaded = Gr00tN1d6.from_pretrained(tmp_path / "CK", overrides={"use_sheaf_streams": False},
                                       ignore_svms_weights=True)
    assert loaded.svms is None and sum(k.startswith("svms.") for k in loaded.load_report.ignored) == n
    argv = ("--init", str(tmp_path / "CK"), "--phase", "3", "--no-svms", "--dataset", str(tmp_path / "ds"),
            "--out", str(tmp_path / "run"))
    assert cli(*argv) == 1
    assert "--ignore-svms-weights" in capsys.readouterr().err
    cfg = TrainConfig(dataset=tmp_path / "ds", out=tmp_path / "run", init=tmp_path / "CK", phase="3", svms=False,
                      ignore_svms_weights=True)
    baseline, _ = build_model(cfg, None)
    assert baseline.svms is None
