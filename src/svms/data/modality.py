"""Embodiment modality configs (spec §6.1, §6.8–§6.11): which keys, in which order, normalised how.

A config is plain data, serialised as the reference serialises it (enum *names*, `action_configs`
filled), so a checkpoint's `processor_config.json` entries load unchanged. The order of
`modality_keys` is the concatenation order everywhere; nothing here sorts keys.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from svms.errors import SvmsError


class ActionRep(enum.Enum):
    """How an action key is represented; DELTA is declared by the reference but never processed."""

    RELATIVE = "relative"
    DELTA = "delta"
    ABSOLUTE = "absolute"


class ActionType(enum.Enum):
    """End-effector pose (EEF) or anything else (NON_EEF, element-wise)."""

    EEF = "eef"
    NON_EEF = "non_eef"


class ActionFormat(enum.Enum):
    """Layout of an EEF pose; irrelevant for NON_EEF keys."""

    DEFAULT = "default"
    XYZ_ROT6D = "xyz_rot6d"
    XYZ_ROTVEC = "xyz_rotvec"


@dataclass(frozen=True)
class ActionConfig:
    """Per action key: representation, type, format and the state key relative actions refer to."""

    rep: ActionRep = ActionRep.ABSOLUTE
    type: ActionType = ActionType.NON_EEF
    format: ActionFormat = ActionFormat.DEFAULT
    state_key: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionConfig:
        try:
            return cls(
                ActionRep[d.get("rep", "ABSOLUTE")],
                ActionType[d.get("type", "NON_EEF")],
                ActionFormat[d.get("format", "DEFAULT")],
                d.get("state_key"),
            )
        except KeyError as e:
            raise SvmsError(
                f"action config {dict(d)}: unknown enum name {e}; expected rep in "
                f"{[r.name for r in ActionRep]}, type in {[t.name for t in ActionType]}, "
                f"format in {[f.name for f in ActionFormat]}."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rep": self.rep.name,
            "type": self.type.name,
            "format": self.format.name,
            "state_key": self.state_key,
        }


@dataclass(frozen=True)
class ModalityConfig:
    """One modality of an embodiment: sampled offsets, ordered keys and per-key options."""

    delta_indices: tuple[int, ...]
    modality_keys: tuple[str, ...]
    sin_cos_embedding_keys: tuple[str, ...] | None = None
    mean_std_embedding_keys: tuple[str, ...] | None = None
    action_configs: tuple[ActionConfig, ...] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModalityConfig:
        def opt(name: str) -> tuple[str, ...] | None:
            return None if d.get(name) is None else tuple(d[name])

        acs = d.get("action_configs")
        return cls(
            tuple(d["delta_indices"]),
            tuple(d["modality_keys"]),
            opt("sin_cos_embedding_keys"),
            opt("mean_std_embedding_keys"),
            None if acs is None else tuple(ActionConfig.from_dict(a) for a in acs),
        )

    def to_dict(self) -> dict[str, Any]:
        def opt(v: tuple[str, ...] | None) -> list[str] | None:
            return None if v is None else list(v)

        return {
            "delta_indices": list(self.delta_indices),
            "modality_keys": list(self.modality_keys),
            "sin_cos_embedding_keys": opt(self.sin_cos_embedding_keys),
            "mean_std_embedding_keys": opt(self.mean_std_embedding_keys),
            "action_configs": None
            if self.action_configs is None
            else [a.to_dict() for a in self.action_configs],
        }


@dataclass(frozen=True)
class EmbodimentConfig:
    """The four modalities of one embodiment tag; `validate()` returns the filled, checked config."""

    video: ModalityConfig
    state: ModalityConfig
    action: ModalityConfig
    language: ModalityConfig

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmbodimentConfig:
        missing = [m for m in ("video", "state", "action", "language") if m not in d]
        if missing:
            raise SvmsError(
                f"modality config lacks modality {missing}; it needs video, state, action "
                "and language entries."
            )
        return cls(*(ModalityConfig.from_dict(d[m]) for m in ("video", "state", "action", "language")))

    def to_dict(self) -> dict[str, Any]:
        return {m: getattr(self, m).to_dict() for m in ("video", "state", "action", "language")}

    @property
    def action_horizon(self) -> int:
        """H_e = len(action.delta_indices); the model's 50 steps beyond it are padding."""
        return len(self.action.delta_indices)

    def action_config(self, key: str) -> ActionConfig:
        """The action config of `key` (ABSOLUTE/NON_EEF/DEFAULT when none were given)."""
        if self.action.action_configs is None:
            return ActionConfig()
        return self.action.action_configs[self.action.modality_keys.index(key)]

    def validate(self) -> EmbodimentConfig:
        """Check the reference's rules and fill default `action_configs` (what `Config.validate` does)."""
        lang = self.language
        if len(lang.modality_keys) != 1 or tuple(lang.delta_indices) != (0,):
            raise SvmsError(
                f"language modality must have exactly one key and delta_indices [0]; got keys "
                f"{list(lang.modality_keys)} and delta_indices {list(lang.delta_indices)}."
            )
        if self.action.sin_cos_embedding_keys:
            raise SvmsError(
                f"sin/cos encoding requested for action key(s) "
                f"{list(self.action.sin_cos_embedding_keys)}: sin/cos is a state-only encoding "
                "(it is not invertible); remove them from action.sin_cos_embedding_keys."
            )
        for name in ("state", "action"):
            m: ModalityConfig = getattr(self, name)
            for opt in ("sin_cos_embedding_keys", "mean_std_embedding_keys"):
                unknown = [k for k in getattr(m, opt) or () if k not in m.modality_keys]
                if unknown:
                    raise SvmsError(
                        f"{name}.{opt} names {unknown}, which are not among {name}."
                        f"modality_keys {list(m.modality_keys)}."
                    )
        acs = self.action.action_configs
        if acs is None:
            acs = tuple(ActionConfig() for _ in self.action.modality_keys)
        if len(acs) != len(self.action.modality_keys):
            raise SvmsError(
                f"action has {len(self.action.modality_keys)} modality_keys but "
                f"{len(acs)} action_configs; give one action config per action key."
            )
        for key, ac in zip(self.action.modality_keys, acs, strict=True):
            ref = ac.state_key or key
            if ac.rep is ActionRep.RELATIVE and ref not in self.state.modality_keys:
                raise SvmsError(
                    f"relative action key {key!r} refers to state key {ref!r}, which is not "
                    f"among state.modality_keys {list(self.state.modality_keys)}; set its "
                    "action config's state_key to an existing state key."
                )
        return replace(self, action=replace(self.action, action_configs=acs))

    def check_modality_json(
        self, modality_json: Mapping[str, Any], source: str = "meta/modality.json"
    ) -> None:
        """Raise SvmsError unless every state/action/video key of this config exists in `modality.json`."""
        for name in ("state", "action", "video"):
            declared = modality_json.get(name, {})
            unknown = [k for k in getattr(self, name).modality_keys if k not in declared]
            if unknown:
                raise SvmsError(
                    f"{source}: the modality config's {name} keys {unknown} are not declared "
                    f"there (it declares {list(declared)}); fix the config's modality_keys or "
                    f"add the keys to {source}."
                )


EMBODIMENT_TAG_TO_INDEX: dict[str, int] = {
    "oxe_google": 0,
    "oxe_widowx": 1,
    "libero_panda": 2,
    "unitree_g1": 8,
    "new_embodiment": 10,
    "robocasa_panda_omron": 13,
    "gr1": 20,
    "behavior_r1_pro": 24,
}


def embodiment_ids(checkpoint_ids: Mapping[str, int] | None = None) -> dict[str, int]:
    """Tag → projector index: a checkpoint's `embodiment_id.json` wins; missing built-in tags are added."""
    out = dict(checkpoint_ids or {})
    for tag, idx in EMBODIMENT_TAG_TO_INDEX.items():
        out.setdefault(tag, idx)
    return out


def normalize_tag(tag: str) -> str:
    """Tags are lower-case strings; accept the upper-case enum names a CLI user types."""
    return tag.lower()


def _cfg(
    video: Sequence[str],
    state: Sequence[str],
    action: Sequence[str],
    horizon: int,
    language: str,
    relative: Sequence[str] = (),
    mean_std: Sequence[str] | None = None,
) -> EmbodimentConfig:
    acs = tuple(ActionConfig(ActionRep.RELATIVE if k in relative else ActionRep.ABSOLUTE) for k in action)
    return EmbodimentConfig(
        video=ModalityConfig((0,), tuple(video)),
        state=ModalityConfig((0,), tuple(state)),
        action=ModalityConfig(
            tuple(range(horizon)),
            tuple(action),
            mean_std_embedding_keys=None if mean_std is None else tuple(mean_std),
            action_configs=acs,
        ),
        language=ModalityConfig((0,), (language,)),
    )


_TASK = "annotation.human.action.task_description"
_XYZ_RPY = ("x", "y", "z", "roll", "pitch", "yaw")

#: Configs registered in code (spec §6.9), plus RoboCasa (§6.11) exactly as the release's
#: `processor_config.json` has it (key order, all actions ABSOLUTE, no sin/cos or mean-std keys; tested
#: against tests/fixtures/real_checkpoint/). `behavior_r1_pro` is absent: the spec gives its key count,
#: not its key names. These serve fresh models only: wherever a checkpoint is involved its
#: `processor_config.json` entry wins (`svms.data.processor_files.run_processor`).
MODALITY_CONFIGS: dict[str, EmbodimentConfig] = {
    "unitree_g1": _cfg(
        ["ego_view"],
        ["left_leg", "right_leg", "waist", "left_arm", "right_arm", "left_hand", "right_hand"],
        [
            "left_arm",
            "right_arm",
            "left_hand",
            "right_hand",
            "waist",
            "base_height_command",
            "navigate_command",
        ],
        30,
        "annotation.human.task_description",
        relative=("left_arm", "right_arm"),
    ),
    "libero_panda": _cfg(["image", "wrist_image"], [*_XYZ_RPY, "gripper"], [*_XYZ_RPY, "gripper"], 16, _TASK),
    "oxe_widowx": _cfg(
        ["image_0"], [*_XYZ_RPY, "pad", "gripper"], [*_XYZ_RPY, "gripper"], 8, _TASK, mean_std=_XYZ_RPY
    ),
    "oxe_google": _cfg(
        ["image"],
        ["x", "y", "z", "rx", "ry", "rz", "rw", "gripper"],
        [*_XYZ_RPY, "gripper"],
        8,
        _TASK,
        mean_std=_XYZ_RPY,
    ),
    "robocasa_panda_omron": _cfg(
        ["res256_image_side_0", "res256_image_side_1", "res256_image_wrist_0"],
        [
            "end_effector_position_relative",
            "end_effector_rotation_relative",
            "gripper_qpos",
            "base_position",
            "base_rotation",
        ],
        ["end_effector_position", "end_effector_rotation", "gripper_close", "base_motion", "control_mode"],
        16,
        _TASK,
    ),
}
