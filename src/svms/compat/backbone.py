"""Parity of `EagleBackbone` with a reference backbone fixture (layout of `backbone_tiny/`).

The backbone is rebuilt from the folder's `config.json` (`eagle_config`, `select_layer`) and
`weights.safetensors` alone, run on the inputs of `io.safetensors` (`input_ids`, `attention_mask`,
`pixel_values.0..N-1` in list order), and every output and intermediate the fixture README lists is
compared. Under the default "flash-rule" attention padded positions are compared too; with another
kernel they are implementation-defined, so LLM states are compared at valid positions only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from svms.compat.tolerance import CompatRow, compare_tensor
from svms.errors import SvmsError
from svms.model.backbone import EagleBackbone

# README §3: outputs, then intermediates (inputs are not compared).
OUTPUTS = ("backbone_features", "backbone_attention_mask", "image_mask")
INTERMEDIATES = ("vision_last_hidden_state", "vit_embeds", "llm_inputs_embeds", "llm_hidden_states")
_PADDING_DEPENDENT = ("backbone_features", "llm_hidden_states")
_PIXEL_KEY = re.compile(r"pixel_values\.(\d+)")


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    paths = [folder / name for name in ("config.json", "weights.safetensors", "io.safetensors")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SvmsError(f"{folder} is not a backbone fixture: it lacks {', '.join(missing)}")
    config = json.loads(paths[0].read_text())
    for key in ("eagle_config", "select_layer"):
        if key not in config:
            raise SvmsError(f"{paths[0]} has no {key!r}; is {folder} a backbone fixture?")
    return config, load_file(paths[1]), load_file(paths[2])


def _pixel_values(io: dict[str, torch.Tensor], folder: Path) -> list[torch.Tensor]:
    indices = sorted(int(m.group(1)) for key in io if (m := _PIXEL_KEY.fullmatch(key)))
    if indices != list(range(len(indices))):
        raise SvmsError(f"{folder}/io.safetensors has pixel_values indices {indices}; expected 0..N-1")
    return [io[f"pixel_values.{i}"] for i in indices]


def check_backbone_fixture(folder: Path, attention: str = "flash-rule") -> list[CompatRow]:
    """One row per output and intermediate tensor of the fixture (case = folder name)."""
    folder = Path(folder)
    config, weights, io = _read(folder)
    for key in ("input_ids", "attention_mask"):
        if key not in io:
            raise SvmsError(f"{folder}/io.safetensors lacks the input {key!r}")
    backbone = EagleBackbone(config["eagle_config"], config["select_layer"], attention=attention)
    result = backbone.load_state_dict(weights, strict=False)
    optional = set(backbone.optional_state_keys())
    missing = [k for k in result.missing_keys if k not in optional]
    if missing or result.unexpected_keys:
        raise SvmsError(f"{folder}/weights.safetensors does not fit the backbone its config describes: "
                        f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    backbone.eval()
    with torch.no_grad():
        out = backbone(io["input_ids"], io["attention_mask"], _pixel_values(io, folder),
                       return_intermediates=True)
    ours = {"backbone_features": out.backbone_features,
            "backbone_attention_mask": out.backbone_attention_mask,
            "image_mask": out.image_mask, **(out.intermediates or {})}
    valid = out.backbone_attention_mask[..., None]  # (B, L, 1)
    rows = []
    for name in OUTPUTS + INTERMEDIATES:
        if name not in io:
            rows.append(CompatRow(folder.name, name, False, note="absent from io.safetensors"))
        elif name not in ours:
            rows.append(CompatRow(folder.name, name, False, note="not produced (no images in the inputs?)"))
        elif name in _PADDING_DEPENDENT and attention != "flash-rule":
            rows.append(compare_tensor(folder.name, name, ours[name], io[name], mask=valid,
                                       note="valid positions only"))
        else:
            rows.append(compare_tensor(folder.name, name, ours[name], io[name]))
    return rows
