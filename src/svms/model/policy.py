"""`Gr00tN1d6`: Eagle backbone -> (optional) SheafStreams -> flow-matching action head.

With `use_sheaf_streams` off the model is GR00T N1.6 and its state dict is the release's. With it on,
the SVMS module (state-dict prefix `svms.`) refines the backbone features before the action head;
its merge starts at zero, so a freshly enabled SVMS model computes exactly what the baseline does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from svms.errors import SvmsError
from svms.model.action_head.head import ActionHeadOutput, Gr00tActionHead
from svms.model.backbone.eagle import BackboneOutput, EagleBackbone
from svms.model.checkpoint import load_pretrained, save_pretrained
from svms.model.config import Gr00tN1d6Config
from svms.sheaf import SheafStreams, SheafStreamsOutput

REQUIRED_KEYS = ("input_ids", "attention_mask", "state", "embodiment_id")
TRAIN_KEYS = ("action", "action_mask")


@dataclass
class Gr00tN1d6Output:
    """`loss` is the flow-matching loss; `svms` holds the SVMS losses and diagnostics (None when off)."""

    loss: torch.Tensor
    action_head: ActionHeadOutput
    svms: SheafStreamsOutput | None = None


class Gr00tN1d6(nn.Module):
    """The GR00T N1.6 policy, optionally with SVMS between backbone and action head.

    `backbone_attention` picks the LLM attention kernel (see `EagleBackbone`): "sdpa" (default, fast)
    or "flash-rule" (the reference's values at padded positions too, for parity checks). Padded
    positions never reach the action (they are masked in the DiT and passed through by SVMS).
    """

    def __init__(self, config: Gr00tN1d6Config, backbone_attention: str = "sdpa",
                 backbone_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = config
        self.backbone = EagleBackbone(
            config.eagle_config, config.select_layer, model_name=config.model_name,
            backbone_embedding_dim=config.backbone_embedding_dim, tune_llm=config.tune_llm,
            tune_visual=config.tune_visual, tune_top_llm_layers=config.tune_top_llm_layers,
            trainable_params_fp32=config.backbone_trainable_params_fp32, dtype=backbone_dtype,
            attention=backbone_attention,
        )
        self.action_head = Gr00tActionHead(config)
        self.svms: SheafStreams | None = None
        if config.use_sheaf_streams:
            self.svms = self.build_svms()

    def build_svms(self) -> SheafStreams:
        """A freshly initialised SVMS module for this config (identity at init)."""
        svms = SheafStreams(self.config.sheaf_streams_config())
        svms.router_temperature.fill_(self.config.router_temp_init)
        return svms

    # ---- trainability ------------------------------------------------------------------------------

    def set_trainable(self, *, tune_llm: bool | None = None, tune_visual: bool | None = None,
                      tune_top_llm_layers: int | None = None, tune_projector: bool | None = None,
                      tune_diffusion_model: bool | None = None, tune_vlln: bool | None = None,
                      tune_svms: bool | None = None) -> None:
        """Freeze or unfreeze groups (None keeps the current setting); frozen modules stay in eval mode."""
        c, bb, ah = self.config, self.backbone, self.action_head
        bb.set_trainable(bb.tune_llm if tune_llm is None else tune_llm,
                         bb.tune_visual if tune_visual is None else tune_visual,
                         c.tune_top_llm_layers if tune_top_llm_layers is None else tune_top_llm_layers)
        ah.set_trainable(ah.tune_projector if tune_projector is None else tune_projector,
                         ah.tune_diffusion_model if tune_diffusion_model is None else tune_diffusion_model,
                         ah.tune_vlln if tune_vlln is None else tune_vlln)
        if self.svms is not None and tune_svms is not None:
            self.svms.requires_grad_(tune_svms)

    # ---- forward -----------------------------------------------------------------------------------

    def _check_batch(self, batch: dict[str, Any], keys: tuple[str, ...]) -> None:
        missing = [k for k in keys if k not in batch]
        if missing:
            raise SvmsError(f"the model batch lacks {', '.join(missing)}; it needs {', '.join(keys)} "
                            "(as built by svms.data.collate or Gr00tN1d6.dummy_batch)")

    def _cast_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Floating inputs to the dtype the model runs in (all-bf16 inference casts them, spec §4.6)."""
        dtype = self.action_head.vlln.weight.dtype if self.config.use_vlln else torch.float32
        vision_dtype = self.backbone.model.mlp1[1].weight.dtype
        out = dict(batch)
        for key in ("state", "action", "action_mask"):
            if key in out and torch.is_floating_point(out[key]) and out[key].dtype != dtype:
                out[key] = out[key].to(dtype)
        pixels = out.get("pixel_values")
        if isinstance(pixels, list):
            out["pixel_values"] = [p.to(vision_dtype) for p in pixels]
        elif torch.is_tensor(pixels):
            out["pixel_values"] = pixels.to(vision_dtype)
        return out

    def encode(self, batch: dict[str, Any], losses: bool = True
               ) -> tuple[BackboneOutput, torch.Tensor, SheafStreamsOutput | None]:
        """Backbone features, then SVMS when enabled: (backbone output, features for the head, svms out).
        `losses=False` (inference) skips SVMS's losses and diagnostics; the features are the same."""
        out = self.backbone(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"))
        features = out.backbone_features
        svms_out = None
        if self.svms is not None:
            svms_out = self.svms(features, out.backbone_attention_mask, batch.get("aux_labels") if losses else None,
                                 losses=losses)
            features = svms_out.features
        return out, features, svms_out

    def forward(self, batch: dict[str, Any], *, noise: torch.Tensor | None = None,
                t: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Gr00tN1d6Output:
        """Flow-matching loss (and SVMS outputs) on a collated batch; `noise`/`t` replace the random
        draws when given, `generator` supplies them otherwise."""
        self._check_batch(batch, REQUIRED_KEYS + TRAIN_KEYS)
        batch = self._cast_inputs(batch)
        out, features, svms_out = self.encode(batch)
        head = self.action_head(features, out.backbone_attention_mask, out.image_mask,
                                batch["state"], batch["embodiment_id"], batch["action"], batch["action_mask"],
                                noise=noise, t=t, generator=generator)
        return Gr00tN1d6Output(loss=head.loss, action_head=head, svms=svms_out)

    @torch.no_grad()
    def get_action(self, batch: dict[str, Any], generator: torch.Generator | None = None,
                   initial_noise: torch.Tensor | None = None,
                   num_steps: int | None = None) -> dict[str, torch.Tensor]:
        """Denoise an action chunk: {"action_pred": (B, H, max_action_dim)} float32, normalised units.

        A model cast to bf16 (the reference's inference) runs the Euler loop in bf16 on bf16 inputs.
        """
        self._check_batch(batch, REQUIRED_KEYS)
        batch = self._cast_inputs(batch)
        out, features, _ = self.encode(batch, losses=False)
        pred = self.action_head.get_action(features, out.backbone_attention_mask, out.image_mask,
                                           batch["state"], batch["embodiment_id"],
                                           initial_noise=initial_noise, generator=generator,
                                           num_steps=num_steps)
        return {"action_pred": pred.float()}

    def compile_inference(self, cuda_graphs: bool | None = None) -> Gr00tN1d6:
        """Make `get_action` run compiled: `torch.compile` of the ViT encoder, the LLM and the denoising loop
        (`Gr00tActionHead.compile_denoising`; with `cuda_graphs`, default on CUDA, one CUDA graph per input shape,
        captured again when the shape changes). Compilation happens at the first call of each shape; the
        results equal eager ones up to float rounding. Training keeps its eager path. Returns the model."""
        vision = self.backbone.model.vision_model.vision_model
        vision.encoder.compile()
        self.backbone.model.language_model.model.compile()
        self.action_head.compile_denoising(cuda_graphs)
        return self

    # ---- helpers -----------------------------------------------------------------------------------

    def image_tokens(self, height: int, width: int) -> int:
        """LLM tokens one (height, width) image becomes: patches x unshuffle^2."""
        patch = self.backbone.eagle_config["vision_config"]["patch_size"]
        if height % patch or width % patch:
            raise SvmsError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
        tokens = (height // patch) * (width // patch) / self.backbone.unshuffle_factor**2
        return int(tokens)

    def dummy_batch(self, batch_size: int, *, text_tokens: int = 32, n_images: int = 1,
                    image_size: int = 252, seed: int = 0,
                    device: torch.device | str | None = None) -> dict[str, Any]:
        """A valid random training batch for this config (smoke tests, benchmarks, memory measures).

        Each sample: `n_images` square images of `image_size` pixels, their image-token ids, random
        text ids, the first sample left-padded by 3 tokens; state/action at the config's padded sizes.
        On `device` (default: the model's; a model on the meta device can make CPU batches).
        """
        c = self.config
        gen = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device if device is None else torch.device(device)
        vocab = self.backbone.eagle_config["text_config"]["vocab_size"]
        image_id = self.backbone.image_token_index
        per_image = self.image_tokens(image_size, image_size)
        length = text_tokens + n_images * per_image
        input_ids = torch.randint(0, min(vocab, 150_000), (batch_size, length), generator=gen)
        input_ids[input_ids == image_id] = 0
        input_ids[:, text_tokens:] = image_id
        attention_mask = torch.ones(batch_size, length, dtype=torch.long)
        pad = min(3, text_tokens)
        attention_mask[0, :pad] = 0
        input_ids[0, :pad] = 0
        pixel_values = [torch.randn(1, 3, image_size, image_size, generator=gen)
                        for _ in range(batch_size * n_images)]
        action_mask = torch.zeros(batch_size, c.action_horizon, c.max_action_dim)
        action_mask[:, :, : max(1, c.max_action_dim // 2)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor([[image_size, image_size]] * (batch_size * n_images)),
            "state": torch.randn(batch_size, 1, c.max_state_dim, generator=gen),
            "embodiment_id": torch.randint(0, c.max_num_embodiments, (batch_size,), generator=gen),
            "action": action_mask * torch.randn(batch_size, c.action_horizon, c.max_action_dim,
                                                generator=gen),
            "action_mask": action_mask,
        }
        if self.svms is not None:
            labels = torch.randint(0, 2, (batch_size, length, self.svms.config.n_streams), generator=gen)
            labels[attention_mask == 0] = -100
            batch["aux_labels"] = labels
        return {k: (v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if isinstance(v, list)
                    else v) for k, v in batch.items()}

    # ---- checkpoints -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> Gr00tN1d6:
        """Load a checkpoint folder (release layout, spec §8); see `svms.model.checkpoint.load_pretrained`
        for the keyword arguments (`overrides`, `device`, `dtype`, `backbone_attention`)."""
        model, _ = load_pretrained(cls, folder, **kwargs)
        return model

    def save_pretrained(self, folder, **kwargs):
        """Write config.json + model.safetensors (sharded when large); see `checkpoint.save_pretrained`."""
        return save_pretrained(self, folder, **kwargs)
