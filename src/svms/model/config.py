"""The GR00T N1.6 model config (spec §1) plus the SVMS fields, as one JSON-round-trippable dataclass.

Field names and code defaults are the reference's, so a released `config.json` loads unchanged; keys this
class does not know (the reference's private `_…` entries, newer fields) are kept in `extra` and written back.
Every value is checked at construction and a bad one raises `SvmsError` naming the field and the fix.

The processing fields here (padded sizes, horizon, image and augmentation settings, the sin/cos and relative
switches) keep the reference's code defaults (29/29, both switches off). They decide processing only for a
fresh model, through `svms.data.processor.ProcessorSettings.from_model_config`; wherever a checkpoint is
involved its `processor_config.json` wins (the release's `config.json` and `processor_config.json` differ
on colour jitter, and the processor file is the one that applies).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svms.errors import SvmsError
from svms.model.presets import PRESETS
from svms.protocol import SHEAF_MODES
from svms.sheaf import SheafConfigError, SheafStreamsConfig

#: `Gr00tN1d6Config.projector_init` values (see `CategorySpecificLinear`).
PROJECTOR_INITS = ("release", "fan_in")


# DiT constructor arguments the reference's dict never overrides (spec §1.2); the module hard-codes them,
# so a config that sets one of them to anything else cannot be honoured.
FIXED_DIT_ARGS: dict[str, Any] = {
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-5,
    "upcast_attention": False,
}


@dataclass(frozen=True)
class DiTConfig:
    """`diffusion_model_cfg`: the DiT's constructor arguments (spec §1.2), released values as defaults."""

    positional_embeddings: str | None = None
    num_layers: int = 32
    num_attention_heads: int = 32
    attention_head_dim: int = 48
    norm_type: str = "ada_norm"
    dropout: float = 0.2
    final_dropout: bool = True
    output_dim: int = 1024
    interleave_self_attention: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**copy.deepcopy(self.extra), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        return cls(**kwargs, extra={k: copy.deepcopy(v) for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class Gr00tN1d6Config:
    """Every field of the reference's `Gr00tN1d6Config` (spec §1.1) with its code default, then SVMS."""

    model_type: str = "Gr00tN1d6"
    model_dtype: str = "bfloat16"
    model_name: str = "nvidia/Eagle-Block2A-2B-v2"
    backbone_model_type: str = "eagle"
    model_revision: str | None = None
    tune_top_llm_layers: int = 4
    backbone_embedding_dim: int = 2048
    tune_llm: bool = False
    tune_visual: bool = False
    select_layer: int = 16
    reproject_vision: bool = False
    use_flash_attention: bool = True
    load_bf16: bool = True
    collator_overwrite_image_inputs: bool = False
    eagle_collator: bool = False
    backbone_trainable_params_fp32: bool = True
    image_crop_size: Any = None
    image_target_size: Any = None
    shortest_image_edge: int = 256
    crop_fraction: float = 0.95
    random_rotation_angle: float | None = None
    color_jitter_params: dict[str, float] | None = None
    use_albumentations_transforms: bool = True
    formalize_language: bool = True
    apply_sincos_state_encoding: bool = False
    use_relative_action: bool = False
    max_state_dim: int = 29
    max_action_dim: int = 29
    action_horizon: int = 16
    hidden_size: int = 1024
    input_embedding_dim: int = 1536
    add_pos_embed: bool = True
    attn_dropout: float = 0.2
    use_vlln: bool = True
    max_seq_len: int = 1024
    use_alternate_vl_dit: bool = True
    attend_text_every_n_blocks: int = 2
    diffusion_model_cfg: DiTConfig = field(default_factory=DiTConfig)
    num_inference_timesteps: int = 4
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    num_timestep_buckets: int = 1000
    tune_projector: bool = True
    tune_diffusion_model: bool = True
    tune_vlln: bool = True
    state_dropout_prob: float = 0.0
    state_additive_noise_scale: float = 0.0
    max_num_embodiments: int = 32
    # How the per-embodiment projectors start (not in the release's config.json, whose models are "release"):
    # "release" = N(0, 0.02²) whatever the fan-in, "fan_in" = N(0, 1/fan_in). Only training from scratch sees it.
    projector_init: str = "release"
    # Eagle architecture overrides ({"vision_config": {...}, "text_config": {...}, ...}) merged over the
    # bundled Eagle-Block2A-2B-v2 values by the backbone; None = the bundled model unchanged.
    eagle_config: dict[str, Any] | None = None
    # SVMS (design §4); names kept from the first prototype so its config.json files load.
    use_sheaf_streams: bool = False
    n_streams: int = 3
    d_stream: int = 768
    d_overlap: int = 384
    adapter_rank: int = 128
    sheaf_unroll_steps: int = 1
    lambda_sheaf_min: float = 0.01
    lambda_sheaf_max: float = 0.1
    sheaf_schedule_mode: str = "adaptive"
    sheaf_delay_until_diffusion: float = 0.4
    use_aux_losses: bool = True
    lambda_aux: float = 0.3
    aux_warmup_steps: int = 5000
    router_temp_init: float = 2.0
    router_temp_final: float = 0.5
    router_temp_decay_steps: int = 15000
    router_balance_weight: float = 0.01
    router_stream_dropout_p: float = 0.15
    use_router: bool = True  # False: uniform stream weights (the "no router" ablation)
    # Keys of a loaded config.json this class does not define; written back by `to_dict`.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.diffusion_model_cfg, dict):
            object.__setattr__(self, "diffusion_model_cfg", DiTConfig.from_dict(self.diffusion_model_cfg))
        _validate(self)

    # ---- presets and JSON -------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> Gr00tN1d6Config:
        """A named flavour (`tiny`, `n1d6-3b`, `reference-default`); see `svms.model.presets`."""
        if name not in PRESETS:
            raise SvmsError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
        return cls.from_dict(copy.deepcopy(PRESETS[name]))

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict in the reference's layout (`extra` keys merged back at the top level)."""
        d: dict[str, Any] = copy.deepcopy(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            d[f.name] = value.to_dict() if isinstance(value, DiTConfig) else copy.deepcopy(value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gr00tN1d6Config:
        """Build from a (saved) dict; unknown keys go to `extra`, missing ones take the code defaults."""
        if not isinstance(d, dict):
            raise SvmsError(f"a model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: copy.deepcopy(v) for k, v in d.items() if k in known}
        extra = {k: copy.deepcopy(v) for k, v in d.items() if k not in known}
        dit = kwargs.get("diffusion_model_cfg")
        if dit is not None and not isinstance(dit, dict | DiTConfig):
            raise SvmsError("config field 'diffusion_model_cfg' must be an object of DiT arguments")
        if dit is None:
            kwargs.pop("diffusion_model_cfg", None)
        return cls(**kwargs, extra=extra)

    def sheaf_streams_config(self) -> SheafStreamsConfig:
        """The SVMS module's config: the prototype's field names mapped onto `SheafStreamsConfig`."""
        try:
            return SheafStreamsConfig(
                d_model=self.backbone_embedding_dim, n_streams=self.n_streams, d_stream=self.d_stream,
                d_overlap=self.d_overlap, adapter_rank=self.adapter_rank,
                diffusion_steps=self.sheaf_unroll_steps, stream_dropout_p=self.router_stream_dropout_p,
                use_aux_heads=self.use_aux_losses, use_router=self.use_router,
            )
        except SheafConfigError as err:
            raise SvmsError(f"invalid model config (SVMS fields): {err}") from err

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> Gr00tN1d6Config:
        path = Path(path)
        if not path.is_file():
            raise SvmsError(f"model config {path} does not exist; pass the config.json of a checkpoint")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SvmsError(f"model config {path} is not valid JSON ({e}); fix or re-save the file") from e
        return cls.from_dict(d)


# ---- validation -----------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SvmsError(f"invalid model config: {message}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _validate(c: Gr00tN1d6Config) -> None:
    _check(c.model_type == "Gr00tN1d6", f"model_type is {c.model_type!r}; this class loads 'Gr00tN1d6' only")
    _check(c.backbone_model_type == "eagle",
           f"backbone_model_type is {c.backbone_model_type!r}; the only supported backbone is 'eagle'")
    for name in ("backbone_embedding_dim", "select_layer", "max_state_dim", "max_action_dim",
                 "action_horizon", "hidden_size", "input_embedding_dim", "max_seq_len",
                 "attend_text_every_n_blocks", "num_inference_timesteps", "num_timestep_buckets",
                 "max_num_embodiments", "shortest_image_edge", "n_streams", "d_stream", "d_overlap",
                 "adapter_rank"):
        v = getattr(c, name)
        _check(_is_int(v) and v > 0, f"{name} = {v!r}; set it to a positive integer")
    for name in ("tune_top_llm_layers", "sheaf_unroll_steps", "aux_warmup_steps", "router_temp_decay_steps"):
        v = getattr(c, name)
        _check(_is_int(v) and v >= 0, f"{name} = {v!r}; set it to a non-negative integer")
    for name in ("state_dropout_prob", "router_stream_dropout_p", "attn_dropout"):
        v = getattr(c, name)
        _check(_is_num(v) and 0.0 <= v <= 1.0, f"{name} = {v!r}; a probability must lie in [0, 1]")
    for name in ("noise_beta_alpha", "noise_beta_beta", "router_temp_init", "router_temp_final"):
        v = getattr(c, name)
        _check(_is_num(v) and v > 0, f"{name} = {v!r}; set it to a positive number")
    for name in ("state_additive_noise_scale", "lambda_sheaf_min", "lambda_sheaf_max", "lambda_aux",
                 "router_balance_weight", "sheaf_delay_until_diffusion"):
        v = getattr(c, name)
        _check(_is_num(v) and v >= 0, f"{name} = {v!r}; set it to a number >= 0")
    _check(_is_num(c.noise_s) and 0.0 < c.noise_s <= 1.0, f"noise_s = {c.noise_s!r}; it must lie in (0, 1]")
    _check(_is_num(c.crop_fraction) and 0.0 < c.crop_fraction <= 1.0,
           f"crop_fraction = {c.crop_fraction!r}; it must lie in (0, 1]")
    _check(not c.add_pos_embed or c.action_horizon <= c.max_seq_len,
           f"action_horizon ({c.action_horizon}) exceeds max_seq_len ({c.max_seq_len}), the rows of the "
           "action position table; raise max_seq_len or shorten the horizon")
    _check(c.tune_top_llm_layers <= c.select_layer,
           f"tune_top_llm_layers ({c.tune_top_llm_layers}) exceeds the {c.select_layer} LLM layers kept "
           "(select_layer); lower it")
    _check(c.lambda_sheaf_min <= c.lambda_sheaf_max,
           f"lambda_sheaf_min ({c.lambda_sheaf_min}) exceeds lambda_sheaf_max ({c.lambda_sheaf_max}); "
           "swap them")
    _check(c.projector_init in PROJECTOR_INITS,
           f"projector_init = {c.projector_init!r}; use one of {', '.join(PROJECTOR_INITS)}")
    _check(c.sheaf_schedule_mode in SHEAF_MODES,
           f"sheaf_schedule_mode = {c.sheaf_schedule_mode!r}; use one of {', '.join(SHEAF_MODES)}")
    _validate_dit(c)
    _validate_eagle(c)
    if c.use_sheaf_streams:
        c.sheaf_streams_config()


def _validate_dit(c: Gr00tN1d6Config) -> None:
    dit = c.diffusion_model_cfg
    for name in ("num_layers", "num_attention_heads", "attention_head_dim", "output_dim"):
        v = getattr(dit, name)
        _check(_is_int(v) and v > 0, f"diffusion_model_cfg.{name} = {v!r}; set it to a positive integer")
    _check(_is_num(dit.dropout) and 0.0 <= dit.dropout <= 1.0,
           f"diffusion_model_cfg.dropout = {dit.dropout!r}; a probability must lie in [0, 1]")
    _check(dit.inner_dim == c.input_embedding_dim,
           f"diffusion_model_cfg.num_attention_heads × attention_head_dim = {dit.num_attention_heads} × "
           f"{dit.attention_head_dim} = {dit.inner_dim} must equal input_embedding_dim "
           f"({c.input_embedding_dim}): the DiT has no input projection; change the head count/size or "
           "input_embedding_dim")
    _check(dit.output_dim == c.hidden_size,
           f"diffusion_model_cfg.output_dim ({dit.output_dim}) must equal hidden_size ({c.hidden_size}), the "
           "action decoder's input width; set them equal")
    _check(dit.norm_type == "ada_norm", f"diffusion_model_cfg.norm_type = {dit.norm_type!r}; only 'ada_norm' "
           "is implemented (the reference's value)")
    _check(dit.positional_embeddings is None, "diffusion_model_cfg.positional_embeddings = "
           f"{dit.positional_embeddings!r}; only null is implemented (the reference's value)")
    _check(dit.interleave_self_attention is True, "diffusion_model_cfg.interleave_self_attention must be "
           "true (odd blocks self-attend); it is the reference's value and the only one implemented")
    for name, fixed in FIXED_DIT_ARGS.items():
        if name in dit.extra:
            _check(dit.extra[name] == fixed, f"diffusion_model_cfg.{name} = {dit.extra[name]!r}; only "
                   f"{fixed!r} is implemented (the reference's value); remove the key")
    if "cross_attention_dim" in dit.extra:
        _check(dit.extra["cross_attention_dim"] == c.backbone_embedding_dim,
               f"diffusion_model_cfg.cross_attention_dim ({dit.extra['cross_attention_dim']}) must equal "
               f"backbone_embedding_dim ({c.backbone_embedding_dim}); remove the key (it is derived)")


def _validate_eagle(c: Gr00tN1d6Config) -> None:
    e = c.eagle_config
    if e is None:
        return
    _check(isinstance(e, dict), "eagle_config must be an object of Eagle config overrides, or null")
    text = e.get("text_config", {})
    _check(isinstance(text, dict), "eagle_config.text_config must be an object")
    if "hidden_size" in text:
        _check(text["hidden_size"] == c.backbone_embedding_dim,
               f"eagle_config.text_config.hidden_size ({text['hidden_size']}) is the backbone's output width "
               f"and must equal backbone_embedding_dim ({c.backbone_embedding_dim}); set them equal")
    if "num_hidden_layers" in text:
        _check(c.select_layer <= text["num_hidden_layers"],
               f"select_layer ({c.select_layer}) keeps more LLM layers than "
               f"eagle_config.text_config.num_hidden_layers ({text['num_hidden_layers']}); "
               "lower select_layer")
