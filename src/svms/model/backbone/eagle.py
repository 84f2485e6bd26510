"""The Eagle VLM backbone of GR00T N1.6 (spec §4): SigLIP2 -> pixel unshuffle -> mlp1 -> truncated Qwen3.

The module tree reproduces the reference's state-dict keys (spec §2.1-§2.3) with transformers' own
`Siglip2VisionModel` and `Qwen3ForCausalLM`, so that under the policy's `backbone.` prefix our keys are
`model.vision_model.vision_model.*`, `model.language_model.{model.*, lm_head.weight}`, `model.mlp1.*`.
`lm_head.weight` is the same Parameter as `embed_tokens.weight` (tied, spec §2.3): it appears in
`state_dict()` as in the reference's manifest, is never used, and on load it is always taken from
`embed_tokens` (a checkpoint may omit it, or hold a stale untied copy).

Attention kernels (`attention=`):
  * "flash-rule" (default, for parity): transformers' eager kernels, and every padded query row's LLM
    attention output (before `o_proj`) is set to exactly 0, as flash-attn's unpad/pad path does in the
    reference; features at padded positions then match the reference too (fixture README, Tolerances).
  * "sdpa" (fast) / "eager": transformers' kernels unchanged; features at padded positions are
    implementation-defined. Valid positions agree with "flash-rule" to float rounding.
The ViT attends within each image only in every mode (see `vision.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Qwen3ForCausalLM, Siglip2VisionModel

from svms.errors import SvmsError
from svms.model.backbone.eagle_config import (
    EAGLE_MODEL_NAME,
    qwen3_config,
    resolve_eagle_config,
    siglip2_config,
    unshuffle_factor,
)
from svms.model.backbone.vision import as_image_list, images_to_tokens

ATTENTION_MODES = ("flash-rule", "sdpa", "eager")
_EMBED_KEY = "model.language_model.model.embed_tokens.weight"
_LM_HEAD_KEY = "model.language_model.lm_head.weight"
_VIT_HEAD_PREFIX = "model.vision_model.vision_model.head."


def _after_load(backbone: EagleBackbone, _incompatible_keys) -> None:
    """Repair what `load_state_dict(..., assign=True)` into a meta-built backbone leaves: lm_head and
    embed_tokens as separate Parameters (re-tie them), RoPE's non-persistent table on meta (rebuild it)."""
    language_model = backbone.model.language_model
    embed = language_model.model.embed_tokens.weight
    language_model.lm_head.weight = embed
    rotary = language_model.model.rotary_emb
    if rotary.inv_freq.is_meta and not embed.is_meta:
        language_model.model.rotary_emb = type(rotary)(config=language_model.config, device=embed.device)


@dataclass
class BackboneOutput:
    """What the action head receives (spec §3.1), under the reference's names."""

    backbone_features: torch.Tensor  # (B, L, D) final-RMSNorm output of the last kept LLM layer
    backbone_attention_mask: torch.Tensor  # (B, L) bool, True = real token
    image_mask: torch.Tensor  # (B, L) bool, True = <IMG_CONTEXT> token
    intermediates: dict[str, torch.Tensor] | None = None  # the fixture's intermediates, on request


class Eagle3VL(nn.Module):
    """The reference's `Eagle3_VL` tree; attribute names are state-dict keys, in the reference's order."""

    def __init__(self, eagle: dict[str, Any], num_llm_layers: int, attn_implementation: str):
        super().__init__()
        self.vision_model = Siglip2VisionModel(siglip2_config(eagle, attn_implementation))
        self.language_model = Qwen3ForCausalLM(qwen3_config(eagle, num_llm_layers, attn_implementation))
        vit_width = eagle["vision_config"]["hidden_size"] * unshuffle_factor(eagle) ** 2
        llm_width = eagle["text_config"]["hidden_size"]
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(vit_width, eps=1e-5),
            nn.Linear(vit_width, llm_width),
            nn.GELU(),  # exact (erf)
            nn.Linear(llm_width, llm_width),
        )


class EagleBackbone(nn.Module):
    """GR00T's Eagle backbone: images + prompt tokens -> LLM features for the action head.

    Built from the plain values of the project's `Gr00tN1d6Config`:
      eagle_config -> `eagle_config` (overrides of the bundled architecture, None = as released),
      select_layer -> `select_layer` (LLM layers kept), model_name -> `model_name`,
      backbone_embedding_dim -> `backbone_embedding_dim` (checked against the LLM width),
      tune_llm / tune_visual / tune_top_llm_layers -> the same names,
      backbone_trainable_params_fp32 -> `trainable_params_fp32`,
      load_bf16 -> `dtype`: torch.bfloat16 on CUDA when load_bf16 (what the reference builds), else float32.
    With `dtype` bf16 the frozen parts stay bf16 and trainable ones become fp32 (spec §4.6); such a
    mixed-precision backbone is meant to run under `torch.autocast`, as the reference's trainer does.
    Construction under `with torch.device("meta"):` gives a weightless model of the right shapes.
    """

    def __init__(
        self,
        eagle_config: dict[str, Any] | None = None,
        select_layer: int = 16,
        *,
        model_name: str = EAGLE_MODEL_NAME,
        backbone_embedding_dim: int | None = None,
        tune_llm: bool = False,
        tune_visual: bool = False,
        tune_top_llm_layers: int = 4,
        trainable_params_fp32: bool = True,
        dtype: torch.dtype = torch.float32,
        attention: str = "flash-rule",
    ):
        super().__init__()
        eagle = resolve_eagle_config(eagle_config, model_name)
        text = eagle["text_config"]
        if not 1 <= select_layer <= text["num_hidden_layers"]:
            raise SvmsError(f"select_layer = {select_layer} must be between 1 and the LLM's "
                            f"{text['num_hidden_layers']} layers (16 in the release)")
        if backbone_embedding_dim is not None and backbone_embedding_dim != text["hidden_size"]:
            raise SvmsError(f"backbone_embedding_dim = {backbone_embedding_dim} differs from the LLM width "
                            f"{text['hidden_size']}; set it to {text['hidden_size']}")
        if attention not in ATTENTION_MODES:
            raise SvmsError(f"attention = {attention!r} is not one of {ATTENTION_MODES}")
        self.eagle_config = eagle
        self.select_layer = select_layer
        self.image_token_index = int(eagle["image_token_index"])
        self.unshuffle_factor = unshuffle_factor(eagle)
        self.attention = attention
        self.trainable_params_fp32 = trainable_params_fp32
        kernel = "sdpa" if attention == "sdpa" else "eager"
        self.model = Eagle3VL(eagle, select_layer, kernel)
        for param in self.parameters():  # not `.to(dtype)`: RoPE's inv_freq buffer stays fp32, as built
            param.data = param.data.to(dtype)
        self._query_valid: torch.Tensor | None = None  # (B, L) bool, set only during a flash-rule forward
        if attention == "flash-rule":
            for layer in self.model.language_model.model.layers:
                layer.self_attn.o_proj.register_forward_pre_hook(self._zero_padded_queries)
        self.register_load_state_dict_post_hook(_after_load)
        self.set_trainable(tune_llm, tune_visual, tune_top_llm_layers)

    # ----- trainability (spec §4.6, §3.13)

    def set_trainable(self, tune_llm: bool, tune_visual: bool, tune_top_llm_layers: int) -> None:
        """Freeze per the reference: the LLM unless `tune_llm`, but always its top N kept layers; the
        ViT and mlp1 unless `tune_visual`. Trainable low-precision params become fp32 if configured."""
        if tune_top_llm_layers < 0:
            raise SvmsError(f"tune_top_llm_layers = {tune_top_llm_layers} must be >= 0")
        self.tune_llm, self.tune_visual = tune_llm, tune_visual
        model = self.model
        model.language_model.requires_grad_(tune_llm)
        model.vision_model.requires_grad_(tune_visual)
        model.mlp1.requires_grad_(tune_visual)
        if tune_top_llm_layers:
            for layer in model.language_model.model.layers[-tune_top_llm_layers:]:
                layer.requires_grad_(True)
        if self.trainable_params_fp32:
            for param in self.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
        self.train(self.training)

    def train(self, mode: bool = True) -> EagleBackbone:
        """Frozen parts stay in eval mode (the whole LLM when not `tune_llm`, as the reference does)."""
        super().train(mode)
        if not self.tune_llm:
            self.model.language_model.eval()
        if not self.tune_visual:
            self.model.vision_model.eval()
            self.model.mlp1.eval()
        return self

    # ----- state dict

    def optional_state_keys(self) -> list[str]:
        """Our keys a checkpoint may lack: the tied `lm_head` and the never-run ViT pooling head."""
        keys = self.state_dict(keep_vars=True)
        return [k for k in keys if k == _LM_HEAD_KEY or k.startswith(_VIT_HEAD_PREFIX)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # lm_head is tied to embed_tokens: load it from there whatever the checkpoint holds (spec §2.3).
        if prefix + _EMBED_KEY in state_dict:
            state_dict[prefix + _LM_HEAD_KEY] = state_dict[prefix + _EMBED_KEY]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----- forward

    def _zero_padded_queries(self, _module: nn.Module, args: tuple[torch.Tensor, ...]):
        """o_proj pre-hook: padded query rows get attention output exactly 0, as with flash-attn."""
        if self._query_valid is None:
            return None
        attn_out = args[0]  # (B, L, H*head_dim)
        return (torch.where(self._query_valid[..., None], attn_out, attn_out.new_zeros(())),)

    def _check_image_slots(self, image_mask: torch.Tensor, n_tokens: int) -> None:
        """One image-token id per image token. Checked on the device without waiting for it (an accelerator
        reports a mismatch as a device-side assertion); on CPU a mismatch is a clear error at once."""
        try:
            torch._assert_async(image_mask.sum() == n_tokens, "image-token ids and image tokens differ in number")
        except RuntimeError as err:
            n_slots = int(image_mask.sum())
            if not n_tokens:
                raise SvmsError(f"the prompt has {n_slots} image-token ids but no pixel_values were given") from err
            raise SvmsError(f"the prompt has {n_slots} image-token ids ({self.image_token_index}) but the images "
                            f"give {n_tokens} tokens; the processor must insert one id per image token") from err

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) int
        attention_mask: torch.Tensor,  # (B, L) 1 = token, 0 = padding (left)
        pixel_values: torch.Tensor | list[torch.Tensor] | None = None,  # [(n_i, 3, H_i, W_i), ...]
        return_intermediates: bool = False,
    ) -> BackboneOutput:
        """Embed the prompt, replace <IMG_CONTEXT> embeddings by image tokens, run the kept LLM layers."""
        model = self.model
        valid = attention_mask.bool()  # (B, L)
        image_mask = input_ids == self.image_token_index  # (B, L)
        embeds = model.language_model.get_input_embeddings()(input_ids)  # (B, L, D)
        images = as_image_list(pixel_values)
        intermediates: dict[str, torch.Tensor] = {}
        if images:
            vit_embeds, vit_states = images_to_tokens(model.vision_model, model.mlp1, images,
                                                      self.unshuffle_factor)  # (N_tok, D)
            self._check_image_slots(image_mask, vit_embeds.shape[0])
            embeds = embeds.masked_scatter(image_mask[..., None], vit_embeds.to(embeds.dtype))
            if return_intermediates:
                intermediates["vision_last_hidden_state"] = torch.cat(vit_states)[None]  # (1, sum hw, D_vit)
                intermediates["vit_embeds"] = vit_embeds
        else:
            self._check_image_slots(image_mask, 0)
        self._query_valid = valid if self.attention == "flash-rule" else None
        try:
            out = model.language_model.model(inputs_embeds=embeds, attention_mask=valid,
                                             use_cache=False, output_hidden_states=return_intermediates)
        finally:
            self._query_valid = None
        if return_intermediates:
            intermediates["llm_inputs_embeds"] = embeds
            intermediates["llm_hidden_states"] = torch.stack(out.hidden_states)  # (layers+1, B, L, D)
        return BackboneOutput(out.last_hidden_state, valid, image_mask,
                              intermediates if return_intermediates else None)
