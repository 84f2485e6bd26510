"""A processor's files in a checkpoint folder (spec §8): `processor_config.json`, `statistics.json`,
`embodiment_id.json`. Written beside the model weights so a checkpoint can be evaluated, served or
fine-tuned on its own; read back into a `Gr00tProcessor` with the same settings and statistics.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from svms.data.modality import EmbodimentConfig, normalize_tag
from svms.data.processor import Gr00tProcessor, ProcessorSettings
from svms.errors import SvmsError

PROCESSOR_CONFIG = "processor_config.json"
STATISTICS = "statistics.json"
EMBODIMENT_IDS = "embodiment_id.json"
PROCESSOR_CLASS = "Gr00tN1d6Processor"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SvmsError(f"{path} is not valid JSON ({err}); re-save it or copy it again from the "
                        "checkpoint") from err


def save_processor(processor: Gr00tProcessor, folder: str | Path,
                   model_name: str = "nvidia/Eagle-Block2A-2B-v2") -> None:
    """Write the three processor files of `processor` into `folder` (the reference's layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = processor.settings
    kwargs = {
        "modality_configs": {tag: cfg.to_dict() for tag, cfg in processor.configs.items()},
        "image_crop_size": None,
        "image_target_size": None,
        "use_albumentations": True,
        "random_rotation_angle": s.random_rotation_angle,
        "color_jitter_params": s.color_jitter_params,
        "model_name": model_name,
        "model_type": "eagle",
        "max_action_horizon": s.max_action_horizon,
        **{k: v for k, v in asdict(s).items() if k != "max_action_horizon"},
    }
    _write_json(folder / PROCESSOR_CONFIG, {"processor_class": PROCESSOR_CLASS, "processor_kwargs": kwargs})
    _write_json(folder / STATISTICS, processor.statistics)
    _write_json(folder / EMBODIMENT_IDS, processor.ids)


def load_processor(folder: str | Path) -> Gr00tProcessor:
    """A `Gr00tProcessor` from a checkpoint folder's processor files (the release's or ours)."""
    folder = Path(folder)
    config_path = folder / PROCESSOR_CONFIG
    if not config_path.is_file():
        raise SvmsError(f"{folder} has no {PROCESSOR_CONFIG}; a GR00T N1.6 checkpoint folder holds it "
                        "beside config.json (copy the complete checkpoint, or train with `svms train`, "
                        "which writes it)")
    raw = _read_json(config_path)
    kwargs = raw.get("processor_kwargs") if isinstance(raw, dict) else None
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("modality_configs"), dict):
        raise SvmsError(f"{config_path} lacks processor_kwargs.modality_configs (one entry per embodiment "
                        "tag); it is not a GR00T N1.6 processor config")
    configs = {}
    for tag, cfg in kwargs["modality_configs"].items():
        try:
            configs[normalize_tag(tag)] = EmbodimentConfig.from_dict(cfg)
        except SvmsError as err:
            raise SvmsError(f"{config_path}: modality config of {tag!r}: {err}") from err
        except (KeyError, TypeError) as err:
            raise SvmsError(f"{config_path}: modality config of {tag!r} is malformed (missing {err}); each "
                            "modality needs delta_indices and modality_keys") from err
    statistics = _read_json(folder / STATISTICS) if (folder / STATISTICS).is_file() else {}
    ids = _read_json(folder / EMBODIMENT_IDS) if (folder / EMBODIMENT_IDS).is_file() else None
    try:
        settings = ProcessorSettings.from_dict(kwargs)
    except SvmsError as err:
        raise SvmsError(f"{config_path}: {err}") from err
    return Gr00tProcessor(configs, statistics, settings, ids)
