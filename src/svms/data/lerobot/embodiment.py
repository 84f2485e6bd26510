"""Which modality config reads a dataset: a registered one for the tag, a given one, or one built
from the dataset's own modality.json (custom robots under `new_embodiment`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svms.data.lerobot.meta import DatasetMeta
from svms.data.modality import (
    MODALITY_CONFIGS,
    EmbodimentConfig,
    ModalityConfig,
    embodiment_ids,
    normalize_tag,
)
from svms.errors import SvmsError

DEFAULT_ACTION_HORIZON = 16
#: Annotation keys tried, in order, as the instruction of a custom embodiment.
LANGUAGE_PREFERENCE = ("human.action.task_description", "human.task_description", "human.coarse_action")


def default_language_key(modality: Mapping[str, Any]) -> str:
    """The annotation to use as instruction: a task description if there is one, else the first
    annotation, else the episodes.jsonl `task` list."""
    names = list(modality.get("annotation", {}))
    for name in LANGUAGE_PREFERENCE:
        if name in names:
            return f"annotation.{name}"
    described = [n for n in names if "task_description" in n]
    if described or names:
        return f"annotation.{(described or names)[0]}"
    return "task"


def config_from_modality_json(
    modality: Mapping[str, Any], action_horizon: int = DEFAULT_ACTION_HORIZON
) -> EmbodimentConfig:
    """A custom embodiment's config: every state/action/video key of modality.json in file order,
    absolute min-max actions over `action_horizon` steps, one frame of video and state."""
    return EmbodimentConfig(
        video=ModalityConfig((0,), tuple(modality["video"])),
        state=ModalityConfig((0,), tuple(modality["state"])),
        action=ModalityConfig(tuple(range(action_horizon)), tuple(modality["action"])),
        language=ModalityConfig((0,), (default_language_key(modality),)),
    ).validate()


def resolve_config(
    meta: DatasetMeta,
    embodiment_tag: str,
    config: EmbodimentConfig | None = None,
    known_ids: Mapping[str, int] | None = None,
) -> EmbodimentConfig:
    """The config that cuts this dataset's samples, checked against its modality.json.

    Priority: `config` (e.g. from a checkpoint's processor_config.json), the tag's registered
    config, then modality.json itself. An unknown tag (no projector index) is an error.
    """
    tag = normalize_tag(embodiment_tag)
    ids = embodiment_ids(known_ids)
    if tag not in ids:
        stats_note = (
            f" The dataset also has no {meta.root / 'meta/stats.json'}, so there are no statistics "
            "to normalise with either."
            if meta.stats is None
            else ""
        )
        raise SvmsError(
            f"embodiment tag {tag!r} is unknown (no modality config and no projector index; known: "
            f"{sorted(ids)}).{stats_note} For a custom robot use `new_embodiment` and compute its "
            f"statistics with `svms data stats {meta.root} --embodiment-tag new_embodiment`."
        )
    if config is None:
        config = MODALITY_CONFIGS.get(tag) or config_from_modality_json(meta.modality)
    config = config.validate()
    config.check_modality_json(meta.modality, str(meta.root / "meta/modality.json"))
    meta.language_column(config.language.modality_keys[0])
    return config
