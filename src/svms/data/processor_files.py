"""A processor's files in a checkpoint folder (spec §8) and the one place a run's processor comes from.

`processor_config.json`, `statistics.json`, `embodiment_id.json` are written beside the model weights so a
checkpoint can be evaluated, served or fine-tuned on its own, and read back into a `Gr00tProcessor` with
every setting, key order and statistic unchanged. `run_processor` decides the processing of a training
run: a checkpoint's files when there is a checkpoint (they always win), else the model config and the
built-in embodiment table; `with_tag` carries a checkpoint's files forward, adding only the trained tag.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from svms.data.modality import MODALITY_CONFIGS, EmbodimentConfig, normalize_tag
from svms.data.processor import MODEL_CONFIG_FIELDS, Gr00tProcessor, ProcessorSettings
from svms.errors import SvmsError

PROCESSOR_CONFIG = "processor_config.json"
STATISTICS = "statistics.json"
EMBODIMENT_IDS = "embodiment_id.json"
MODEL_CONFIG = "config.json"
PROCESSOR_CLASS = "Gr00tN1d6Processor"
#: Settings a fine-tune may change over its checkpoint's (as the reference honours them, spec §8).
FINE_TUNE_OVERRIDES = ("random_rotation_angle", "color_jitter_params", "use_relative_action")


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


def check_embodiment_ids(ids: Any, path: Path) -> None:
    """`embodiment_id.json` maps each tag to its projector slot, a non-negative integer."""
    example = '{"new_embodiment": 10}'
    if not isinstance(ids, dict):
        raise SvmsError(f"{path} must be a JSON object mapping embodiment tags to projector indices (e.g. {example}), "
                        f"not {type(ids).__name__}; copy it again from the checkpoint")
    for tag, value in ids.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SvmsError(f"{path}: embodiment tag {tag!r} maps to {value!r}; each tag needs its projector index, "
                            f"a non-negative integer (e.g. {example}). Fix the entry or copy the file again from "
                            "the checkpoint")


def save_processor(processor: Gr00tProcessor, folder: str | Path) -> None:
    """Write the three processor files of `processor` into `folder` (the release's layout and field order)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"modality_configs": {tag: cfg.to_dict() for tag, cfg in processor.configs.items()},
              **processor.settings.to_dict()}
    ids = dict(processor.declared_ids)
    ids.update({tag: processor.ids[tag] for tag in processor.configs if tag not in ids and tag in processor.ids})
    _write_json(folder / PROCESSOR_CONFIG, {"processor_class": PROCESSOR_CLASS, "processor_kwargs": kwargs})
    _write_json(folder / STATISTICS, processor.statistics)
    _write_json(folder / EMBODIMENT_IDS, ids)


def load_processor(folder: str | Path) -> Gr00tProcessor:
    """A `Gr00tProcessor` from a checkpoint folder's processor files (the release's or ours), checked
    against the folder's `config.json` when there is one (padded sizes must agree)."""
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
    cls = raw.get("processor_class", PROCESSOR_CLASS)
    if cls != PROCESSOR_CLASS:
        raise SvmsError(f"{config_path}: processor_class is {cls!r}; only {PROCESSOR_CLASS!r} (GR00T N1.6) "
                        "is implemented. Use a GR00T N1.6 checkpoint.")
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
    if ids is not None:
        check_embodiment_ids(ids, folder / EMBODIMENT_IDS)
    try:
        settings = ProcessorSettings.from_dict(kwargs)
    except SvmsError as err:
        raise SvmsError(f"{config_path}: {err}") from err
    model_config = folder / MODEL_CONFIG
    if model_config.is_file():
        settings.check_fits(_read_json(model_config), f"{config_path} and {model_config}")
    try:
        return Gr00tProcessor(configs, statistics, settings, ids)
    except SvmsError as err:
        raise SvmsError(f"{config_path}: {err}") from err


def run_processor(tag: str, model_config: Mapping[str, Any], checkpoint: str | Path | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Gr00tProcessor:
    """The processor a run starts from: `checkpoint`'s files when given (they win; `overrides` may change only
    `FINE_TUNE_OVERRIDES`, others must equal the checkpoint's), else `model_config` (a
    `Gr00tN1d6Config.to_dict()`, overrides included) with the built-in modality config of `tag` (none for a
    custom tag: the dataset's modality.json gives it). Statistics are the dataset's; `with_tag` adds them."""
    tag = normalize_tag(tag)
    if checkpoint is not None and (Path(checkpoint) / PROCESSOR_CONFIG).is_file():
        source = load_processor(checkpoint)
        settings = source.settings
        for name, value in (overrides or {}).items():
            if name not in FINE_TUNE_OVERRIDES and value != getattr(settings, name):
                raise SvmsError(
                    f"--model-override {MODEL_CONFIG_FIELDS.get(name, name)}: the processing setting {name} "
                    f"comes from {Path(checkpoint) / PROCESSOR_CONFIG} when fine-tuning (a checkpoint's "
                    f"processing is what its weights were trained with); only "
                    f"{', '.join(MODEL_CONFIG_FIELDS[n] for n in FINE_TUNE_OVERRIDES)} may be overridden.")
            if value is not None and name in FINE_TUNE_OVERRIDES:
                settings = replace(settings, **{name: value})
        settings.check_fits(model_config, f"{Path(checkpoint) / PROCESSOR_CONFIG} and the model config")
        return Gr00tProcessor(source.configs, source.statistics, settings, source.declared_ids)
    if checkpoint is not None:
        warnings.warn(f"{checkpoint} has no {PROCESSOR_CONFIG}; processing comes from its config.json and the "
                      "built-in embodiment configs instead (copy the checkpoint's processor files to keep its "
                      "key order and settings)", stacklevel=2)
    configs = {tag: MODALITY_CONFIGS[tag]} if tag in MODALITY_CONFIGS else {}
    return Gr00tProcessor(configs, {}, ProcessorSettings.from_model_config(model_config))


def with_tag(source: Gr00tProcessor, tag: str, config: EmbodimentConfig,
             statistics: Mapping[str, Any]) -> Gr00tProcessor:
    """`source` with `tag`'s modality config and statistics set (the tag keeps its place, or is appended);
    every other tag, setting and id is carried forward unchanged."""
    tag = normalize_tag(tag)
    configs = dict(source.configs)
    configs[tag] = config
    stats = dict(source.statistics)
    stats[tag] = statistics
    return Gr00tProcessor(configs, stats, source.settings, source.declared_ids)
