"""Checkpoint folders in the release layout (spec §8): `config.json` + `model.safetensors` (or shards
with `model.safetensors.index.json`) + the processor files written beside them by their owners.

Loading builds the model on the meta device and assigns the stored tensors (cast to the dtypes the
model is built with), so a 3B checkpoint is read once and never initialised at random first. Keys the
reference treats as optional (spec §2: the tied `lm_head.weight`, `mask_token`, the never-run ViT
pooling `head.*`) may be absent; SVMS weights missing from a plain N1.6 checkpoint start fresh
(identity at init). SVMS weights a model without SVMS would drop are an error unless dropping them is asked
for (`ignore_svms_weights`). Any other missing, unexpected or mis-shaped key is an error listing the
difference; a weights file that cannot be read (truncated, not safetensors) is an
`UnreadableCheckpointError` naming it.

Locating checkpoints belongs here too: a run folder's complete `checkpoint-<step>/` folders and the one an
`--init` or `--checkpoint` path means (training, evaluation and serving all ask).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from svms.errors import SvmsError
from svms.model.config import Gr00tN1d6Config

CONFIG_NAME = "config.json"
#: What a training checkpoint adds beside the model folder; a `checkpoint-<step>/` without it is incomplete.
TRAINING_STATE = "training_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run folder, oldest first."""
    if not run.is_dir():
        return []
    found = []
    for child in run.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir() and (child / TRAINING_STATE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def newest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1][1] if found else None


def resolve_init(path: Path) -> Path:
    """`--init`: a checkpoint folder as is, or a run folder's newest checkpoint."""
    if (path / "config.json").is_file() and not (path / "metrics.jsonl").is_file():
        return path
    newest = newest_checkpoint(path)
    if newest is None:
        raise SvmsError(f"--init {path}: neither a checkpoint folder (config.json + model.safetensors) nor a "
                        "run folder with a checkpoint-<step>/ in it")
    return newest


WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
LM_HEAD_KEY = "backbone.model.language_model.lm_head.weight"
MASK_TOKEN_KEY = "action_head.mask_token"
DEFAULT_SHARD_BYTES = 5 * 1024**3


class UnreadableCheckpointError(SvmsError):
    """A checkpoint file exists but cannot be read (truncated, corrupt): resuming may fall back past it."""


@dataclass
class LoadReport:
    """What loading did beyond a one-to-one copy."""

    fresh: list[str] = field(default_factory=list)  # keys initialised here (absent from the checkpoint)
    ignored: list[str] = field(default_factory=list)  # checkpoint keys the model does not use
    cast: int = 0  # tensors converted to the model's dtype

    def summary(self) -> str:
        parts = []
        svms_fresh = [k for k in self.fresh if k.startswith("svms.")]
        other_fresh = [k for k in self.fresh if not k.startswith("svms.")]
        if svms_fresh:
            parts.append(f"SVMS weights start fresh ({len(svms_fresh)} tensors; identity at init)")
        if other_fresh:
            parts.append(f"initialised absent optional keys: {', '.join(other_fresh)}")
        if self.ignored:
            parts.append(f"ignored checkpoint keys: {', '.join(_abbrev(self.ignored))}")
        if self.cast:
            parts.append(f"{self.cast} tensors cast to the model's dtypes")
        return "; ".join(parts) or "all keys loaded as stored"


def _abbrev(keys: list[str], limit: int = 12) -> list[str]:
    return keys[:limit] + ([f"... ({len(keys) - limit} more)"] if len(keys) > limit else [])


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- reading ---------------------------------------------------------------------------------------

def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (single file or the shards of its index)."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SvmsError(f"{index} is not a safetensors index (needs a 'weight_map' object): "
                            f"{err}") from err
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise SvmsError(f"{index} names shard(s) that are not in {folder}: {', '.join(missing)}; "
                            "copy the complete checkpoint folder")
        return files
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    raise SvmsError(f"{folder} holds no weights: expected {WEIGHTS_NAME} or {INDEX_NAME} with its shards "
                    "(the layout of nvidia/GR00T-N1.6-3B and of every svms checkpoint)")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    state[key] = f.get_tensor(key).clone()  # own, aligned storage (not the file mapping)
        except (SafetensorError, OSError, RuntimeError) as err:  # safetensors checks sizes against its header
            raise UnreadableCheckpointError(
                f"{path} cannot be read as safetensors ({err}): the file is truncated or corrupt (an interrupted "
                f"copy or download, a full disk). Copy the checkpoint folder {folder} again, or use another "
                "checkpoint") from err
    return state


def read_config(folder: Path, overrides: dict[str, Any] | None = None) -> Gr00tN1d6Config:
    folder = Path(folder)
    if not folder.is_dir():
        raise SvmsError(f"checkpoint folder {folder} does not exist; pass a folder holding config.json and "
                        "model.safetensors (e.g. a local copy of nvidia/GR00T-N1.6-3B)")
    config = Gr00tN1d6Config.from_json_file(folder / CONFIG_NAME)
    return replace(config, **overrides) if overrides else config


def load_pretrained(model_class: type[torch.nn.Module], folder: str | Path, *,
                    overrides: dict[str, Any] | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                    backbone_attention: str = "sdpa", ignore_svms_weights: bool = False):
    """Build a `model_class` (`Gr00tN1d6`, passed in so that this module does not import the model's) from a
    checkpoint folder; returns (model, LoadReport).

    `overrides` replace config fields (e.g. {"use_sheaf_streams": True} turns SVMS on over a plain N1.6
    checkpoint); `dtype` casts the whole model after loading (bf16 for inference as the reference does).
    A checkpoint's `svms.*` weights under a config without SVMS are an error (the baseline would run in their
    place), unless `ignore_svms_weights` drops them on purpose (listed in the report's `ignored`).
    """
    folder = Path(folder)
    config = read_config(folder, overrides)
    stored = read_state_dict(folder)
    with torch.device("meta"):
        model = model_class(config, backbone_attention=backbone_attention)
    if model.svms is not None:  # small; built for real so its non-persistent buffers exist
        model.svms = model.build_svms()
    expected = model.state_dict(keep_vars=True)
    optional = {LM_HEAD_KEY, MASK_TOKEN_KEY} | {f"backbone.{k}" for k in model.backbone.optional_state_keys()}
    report = LoadReport()

    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    dropped_svms = [k for k in unexpected if k.startswith("svms.")] if model.svms is None else []
    if dropped_svms and not ignore_svms_weights:
        raise SvmsError(
            f"{folder} holds {len(dropped_svms)} SVMS tensors (svms.*), but the model is built without SVMS "
            "(use_sheaf_streams false), so they would be dropped and the plain baseline used in their place. "
            "Turn SVMS on (`svms train --svms`, use_sheaf_streams true in config.json, or "
            "overrides={'use_sheaf_streams': True}), or drop them on purpose with `svms train "
            "--ignore-svms-weights` (Python: ignore_svms_weights=True)")
    svms_missing = [k for k in missing if k.startswith("svms.")]
    if svms_missing and len(svms_missing) != sum(k.startswith("svms.") for k in expected):
        raise SvmsError(f"{folder}: the checkpoint holds only part of the SVMS weights; missing "
                        f"{', '.join(_abbrev(svms_missing))}")
    hard_missing = [k for k in missing if k not in optional and not k.startswith("svms.")]
    tolerated = {MASK_TOKEN_KEY, LM_HEAD_KEY} | ({k for k in unexpected if k.startswith("svms.")}
                                                  if model.svms is None else set())
    hard_unexpected = [k for k in unexpected if k not in tolerated and not k.startswith("backbone.model."
                       "vision_model.vision_model.head.")]
    mismatched = [f"{k}: checkpoint {list(stored[k].shape)} vs model {list(expected[k].shape)}"
                  for k in expected if k in stored and stored[k].shape != expected[k].shape]
    if hard_missing or hard_unexpected or mismatched:
        lines = ([f"  missing   {k}" for k in _abbrev(hard_missing)]
                 + [f"  unexpected {k}" for k in _abbrev(hard_unexpected)]
                 + [f"  shape     {m}" for m in _abbrev(mismatched)])
        raise SvmsError(
            f"{folder} does not fit the model its config.json describes ({len(hard_missing)} missing, "
            f"{len(hard_unexpected)} unexpected, {len(mismatched)} mis-shaped keys):\n" + "\n".join(lines)
            + "\nCheck that config.json belongs to these weights (sizes such as max_state_dim, "
            "action_horizon, max_num_embodiments, select_layer must match)."
        )
    report.ignored = sorted(set(unexpected))
    to_load = {}
    for k, tensor in stored.items():
        if k not in expected:
            continue
        want = expected[k].dtype
        if tensor.dtype != want:
            report.cast += 1
            tensor = tensor.to(want)
        to_load[k] = tensor
    model.load_state_dict(to_load, strict=False, assign=True)

    if MASK_TOKEN_KEY in expected and MASK_TOKEN_KEY not in stored:
        shape = model.action_head.mask_token.shape
        model.action_head.mask_token = torch.nn.Parameter(0.02 * torch.randn(shape))
        report.fresh.append(MASK_TOKEN_KEY)
    for k in missing:
        if k.startswith("backbone.model.vision_model.vision_model.head.") or k.startswith("svms."):
            report.fresh.append(k)
    _materialise_unused_vit_head(model)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise SvmsError(f"internal error: tensors left uninitialised after loading {folder}: "
                        f"{', '.join(_abbrev(leftovers))}")
    model.set_trainable()  # re-apply frozen-module modes after assignment
    model = model.to(device)
    if dtype is not None:
        model = model.to(dtype)
    model.load_report = report
    return model, report


def _materialise_unused_vit_head(model) -> None:
    """The SigLIP2 pooling head is never run (spec §2.1); give it zeros when a checkpoint omits it."""
    head = model.backbone.model.vision_model.vision_model.head
    for module in head.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                setattr(module, name, torch.nn.Parameter(torch.zeros(param.shape, dtype=param.dtype),
                                                         requires_grad=param.requires_grad))


# ---- writing ---------------------------------------------------------------------------------------

def save_pretrained(model, folder: str | Path, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                    dtype: torch.dtype | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `config.json` and the weights (sharded above `max_shard_bytes`) into `folder`.

    The tied `lm_head.weight` is left out, as the reference's save does; every file is written to a
    temporary name and renamed, so a crash never leaves a half-written file under its final name.
    `state_dict` replaces the model's own (a training run's merged LoRA or gathered FSDP weights).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
             .cpu() for k, v in (model.state_dict() if state_dict is None else state_dict).items()
             if k != LM_HEAD_KEY}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    meta = {"format": "pt"}
    if len(shards) == 1:
        names = [WEIGHTS_NAME]
    else:
        names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for name, shard in zip(names, shards, strict=True):
        tmp = folder / (name + ".tmp")
        save_file(shard, str(tmp), metadata=meta)
        os.replace(tmp, folder / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards, strict=True) for k in shard}}
        _atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    config = model.config.to_dict()
    config.setdefault("architectures", ["Gr00tN1d6"])
    _atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return folder
