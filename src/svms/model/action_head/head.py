"""The GR00T N1.6 action head: flow matching over padded action chunks, conditioned on VL features.

Time runs from noise (t = 0) to data (t = 1): x_t = (1 − t)·ε + t·a, target velocity a − ε, and the Euler
sampler integrates 0 → 1 (spec §3.11–3.12). Both the action encoder and the DiT see the integer bucket
floor(t · num_timestep_buckets), never t. Every random draw (noise, t, state dropout, initial noise) can be
injected or taken from a `generator`, so runs are reproducible and fixtures can be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svms.model.action_head.dit import AlternateVLDiT, DenoisingCache, DiT
from svms.model.action_head.projectors import CategorySpecificMLP, MultiEmbodimentActionEncoder, bucket_sinusoid
from svms.model.config import Gr00tN1d6Config


@dataclass
class ActionHeadOutput:
    """What `Gr00tActionHead.forward` returns; `loss` is the masked-mean flow-matching loss."""

    loss: torch.Tensor  # ()
    action_loss: torch.Tensor  # (B, H, A) per-element masked squared error
    action_mask: torch.Tensor  # (B, H, A)
    vl_embeds: torch.Tensor  # (B, S, D_vl) after vlln
    state_features: torch.Tensor  # (B, T_s, D) after dropout/noise
    pred_velocity: torch.Tensor  # (B, H, A)
    velocity_target: torch.Tensor  # (B, H, A)
    noisy_trajectory: torch.Tensor  # (B, H, A)
    t: torch.Tensor  # (B,) continuous time in [0, noise_s]
    t_discretized: torch.Tensor  # (B,) int64 bucket


def inference_buckets(num_steps: int, num_buckets: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The Euler sampler's buckets int(k/N · num_buckets), k = 0..N−1: [0, 250, 500, 750] for N = 4.

    Computed on `device` in float64, the same IEEE arithmetic as Python's, so nothing is copied from the host.
    """
    k = torch.arange(num_steps, dtype=torch.float64, device=device)
    return (k / num_steps * num_buckets).long()


def sample_beta(shape: tuple[int, ...], alpha: float, beta: float, generator: torch.Generator | None,
                device: torch.device) -> torch.Tensor:
    """Beta(alpha, beta) samples; with a generator, drawn in a forked CPU RNG seeded from it (torch's Beta
    sampler takes no generator)."""
    # validate_args=False: the parameters are checked config values, and checking them reads tensors back
    dist = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta)), validate_args=False)
    if generator is None:
        return dist.sample(shape).to(device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dist.sample(shape).to(device)


class Gr00tActionHead(nn.Module):
    """vlln, per-embodiment state/action encoders and decoder, position table, DiT (spec §2.4, §3)."""

    def __init__(self, config: Gr00tN1d6Config) -> None:
        super().__init__()
        self.config = c = config
        dit_cfg, d = c.diffusion_model_cfg, c.input_embedding_dim
        if c.state_dropout_prob > 0:  # registered first: the reference's state-dict order
            self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, d))
        if c.use_alternate_vl_dit:
            self.model: DiT = AlternateVLDiT(dit_cfg, c.backbone_embedding_dim, c.attend_text_every_n_blocks)
        else:
            self.model = DiT(dit_cfg, c.backbone_embedding_dim)
        init = c.projector_init
        self.state_encoder = CategorySpecificMLP(c.max_num_embodiments, c.max_state_dim, c.hidden_size, d, init)
        self.action_encoder = MultiEmbodimentActionEncoder(c.max_num_embodiments, c.max_action_dim, d, init)
        self.action_decoder = CategorySpecificMLP(c.max_num_embodiments, c.hidden_size, c.hidden_size,
                                                  c.max_action_dim, init)
        self.vlln = nn.LayerNorm(c.backbone_embedding_dim, eps=1e-5) if c.use_vlln else nn.Identity()
        if c.add_pos_embed:
            self.position_embedding = nn.Embedding(c.max_seq_len, d)
            nn.init.normal_(self.position_embedding.weight, mean=0.0, std=0.02)
        self.set_trainable(c.tune_projector, c.tune_diffusion_model, c.tune_vlln)

    # ---- trainability -----------------------------------------------------------------------------

    def _projector_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.state_encoder, self.action_encoder, self.action_decoder]
        if self.config.add_pos_embed:
            mods.append(self.position_embedding)
        return mods

    def set_trainable(self, tune_projector: bool, tune_diffusion_model: bool, tune_vlln: bool) -> None:
        """Freeze or unfreeze the three parameter groups (spec §3.13); `mask_token` counts as projector."""
        self.tune_projector, self.tune_diffusion_model, self.tune_vlln = (
            tune_projector, tune_diffusion_model, tune_vlln)
        for module in self._projector_modules():
            module.requires_grad_(tune_projector)
        if self.config.state_dropout_prob > 0:
            self.mask_token.requires_grad_(tune_projector)
        self.model.requires_grad_(tune_diffusion_model)
        self.vlln.requires_grad_(tune_vlln)
        self.train(self.training)

    def train(self, mode: bool = True) -> Gr00tActionHead:
        """Frozen parts stay in eval mode so their dropouts are off while the rest trains."""
        super().train(mode)
        if mode and not self.tune_projector:
            for module in self._projector_modules():
                module.eval()
        if mode and not self.tune_diffusion_model:
            self.model.eval()
        return self

    # ---- shared pieces ----------------------------------------------------------------------------

    def encode_state(self, state: torch.Tensor, embodiment_id: torch.Tensor) -> torch.Tensor:
        return self.state_encoder(state, embodiment_id)  # (B, T_s, max_state_dim) -> (B, T_s, D)

    def predict_velocity(self, vl: torch.Tensor, attention_mask: torch.Tensor, image_mask: torch.Tensor,
                         state_features: torch.Tensor, noisy_actions: torch.Tensor, buckets: torch.Tensor,
                         embodiment_id: torch.Tensor) -> torch.Tensor:
        """One velocity evaluation: (B, H, A) noisy actions at bucket (B,) -> (B, H, A) velocity."""
        horizon = noisy_actions.shape[1]
        a = self.action_encoder(noisy_actions, buckets, embodiment_id)  # (B, H, D)
        if self.config.add_pos_embed:
            a = a + self.position_embedding.weight[:horizon].unsqueeze(0)
        tokens = torch.cat([state_features, a], dim=1)  # (B, T_s + H, D): state first
        y = self.model(tokens, vl, buckets, attention_mask, image_mask)  # (B, T_s + H, hidden)
        return self.action_decoder(y, embodiment_id)[:, -horizon:]  # drop the state positions

    # ---- training ---------------------------------------------------------------------------------

    def _train_state_extras(self, s: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """State dropout (whenever `forward` runs, as the reference does) and train-time additive noise."""
        c = self.config
        if c.state_dropout_prob > 0:
            drop = torch.rand(s.shape[0], generator=generator, device=s.device) < c.state_dropout_prob
            m = drop.to(s.dtype)[:, None, None]  # (B, 1, 1)
            s = s * (1 - m) + self.mask_token * m
        if self.training and c.state_additive_noise_scale > 0:
            noise = torch.randn(s.shape, generator=generator, device=s.device, dtype=s.dtype)
            s = s + c.state_additive_noise_scale * noise
        return s

    def sample_time(self, batch_size: int, device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """t = (1 − u)·noise_s with u ~ Beta(α, β): biased toward the noisy end. (B,) float32."""
        c = self.config
        u = sample_beta((batch_size,), c.noise_beta_alpha, c.noise_beta_beta, generator, device)
        return (1 - u) * c.noise_s

    def forward(self, backbone_features: torch.Tensor, backbone_attention_mask: torch.Tensor,
                image_mask: torch.Tensor, state: torch.Tensor, embodiment_id: torch.Tensor,
                action: torch.Tensor, action_mask: torch.Tensor, *, noise: torch.Tensor | None = None,
                t: torch.Tensor | None = None, generator: torch.Generator | None = None) -> ActionHeadOutput:
        """Flow-matching loss. features (B, S, D_vl), masks (B, S) bool, state (B, T_s, max_state_dim),
        embodiment_id (B,), action/action_mask (B, H, max_action_dim); `noise` (like action) and `t` (B,)
        replace the random draws when given."""
        c = self.config
        vl = self.vlln(backbone_features)
        state_features = self._train_state_extras(self.encode_state(state, embodiment_id), generator)
        if noise is None:
            noise = torch.randn(action.shape, generator=generator, device=action.device, dtype=action.dtype)
        if t is None:
            t = self.sample_time(action.shape[0], action.device, generator)
        t_ = t.to(action.dtype)[:, None, None]  # (B, 1, 1)
        noisy = (1 - t_) * noise + t_ * action
        target = action - noise
        buckets = (t * c.num_timestep_buckets).long()  # floor for t >= 0
        pred = self.predict_velocity(vl, backbone_attention_mask, image_mask, state_features, noisy, buckets,
                                     embodiment_id)
        action_loss = (pred - target) ** 2 * action_mask
        loss = action_loss.sum() / (action_mask.sum() + 1e-6)
        return ActionHeadOutput(loss=loss, action_loss=action_loss, action_mask=action_mask, vl_embeds=vl,
                                state_features=state_features, pred_velocity=pred, velocity_target=target,
                                noisy_trajectory=noisy, t=t, t_discretized=buckets)

    # ---- inference --------------------------------------------------------------------------------

    @torch.no_grad()
    def get_action(self, backbone_features: torch.Tensor, backbone_attention_mask: torch.Tensor,
                   image_mask: torch.Tensor, state: torch.Tensor, embodiment_id: torch.Tensor, *,
                   initial_noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   num_steps: int | None = None, cached: bool = True) -> torch.Tensor:
        """Euler integration from noise to a normalised, padded action chunk (B, H, max_action_dim).

        No state dropout or noise here. vl and the state token are computed once for all steps; with `cached`
        (default) so are the time embeddings and AdaLN modulations of every step, the cross-attention keys
        and values and the key masks (`DiT.prepare_denoising`); `cached=False` runs `predict_velocity` per
        step, the training path's computation, which the cached one equals up to float rounding.
        """
        c = self.config
        num_steps = c.num_inference_timesteps if num_steps is None else num_steps
        vl = self.vlln(backbone_features)
        x = initial_noise
        if x is None:
            x = torch.randn((vl.shape[0], c.action_horizon, c.max_action_dim), generator=generator, device=vl.device,
                            dtype=vl.dtype)
        args = (vl, backbone_attention_mask, image_mask, state, embodiment_id, x, num_steps)
        if not cached:
            return self.denoise_per_step(*args)
        compiled = self.__dict__.get("_compiled_denoise")
        # a CUDA graph's output lives in memory its next replay overwrites: the caller gets a copy
        return self.denoise(*args) if compiled is None else compiled(*args).clone()

    def compile_denoising(self, cuda_graphs: bool | None = None) -> None:
        """Run `denoise` through `torch.compile` from now on; with `cuda_graphs` (default: on CUDA) in the
        "reduce-overhead" mode, which captures one CUDA graph per input shape (batch, VL tokens) and captures
        again when a shape changes. The noise is drawn outside the compiled function, from the same generator."""
        device = next(self.parameters()).device
        cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self.__dict__["_compiled_denoise"] = torch.compile(self.denoise,
                                                           mode="reduce-overhead" if cuda_graphs else None)

    def denoise(self, vl: torch.Tensor, backbone_attention_mask: torch.Tensor,
                image_mask: torch.Tensor, state: torch.Tensor, embodiment_id: torch.Tensor, x: torch.Tensor,
                num_steps: int) -> torch.Tensor:
        """The Euler loop from noise `x` on VL features after vlln, with the step-independent parts computed once
        (`prepare_denoising`)."""
        c = self.config
        state_features = self.encode_state(state, embodiment_id)
        dt = 1.0 / num_steps
        buckets = inference_buckets(num_steps, c.num_timestep_buckets, x.device)  # (steps,)
        cache = self.model.prepare_denoising(vl, buckets, backbone_attention_mask, image_mask)
        time_features = bucket_sinusoid(buckets, self.action_encoder.hidden_dim).to(vl.dtype)  # (steps, D)
        for step in range(num_steps):
            x = x + dt * self.velocity_step(x, state_features, embodiment_id, cache, step, time_features[step])
        return x

    def denoise_per_step(self, vl: torch.Tensor, backbone_attention_mask: torch.Tensor,
                         image_mask: torch.Tensor, state: torch.Tensor, embodiment_id: torch.Tensor, x: torch.Tensor,
                         num_steps: int) -> torch.Tensor:
        """The Euler loop with `predict_velocity`, the training path's computation, at every step."""
        c = self.config
        state_features = self.encode_state(state, embodiment_id)
        dt = 1.0 / num_steps
        buckets = inference_buckets(num_steps, c.num_timestep_buckets, x.device)  # (steps,)
        for step in range(num_steps):
            v = self.predict_velocity(vl, backbone_attention_mask, image_mask, state_features, x,
                                      buckets[step].expand(x.shape[0]), embodiment_id)
            x = x + dt * v
        return x

    def velocity_step(self, noisy_actions: torch.Tensor, state_features: torch.Tensor, embodiment_id: torch.Tensor,
                      cache: DenoisingCache, step: int, time_features: torch.Tensor) -> torch.Tensor:
        """`predict_velocity` at denoising step `step`, from what `prepare_denoising` computed once."""
        horizon = noisy_actions.shape[1]
        a = self.action_encoder(noisy_actions, None, embodiment_id, time_features)  # (B, H, D)
        if self.config.add_pos_embed:
            a = a + self.position_embedding.weight[:horizon].unsqueeze(0)
        tokens = torch.cat([state_features, a], dim=1)
        y = self.model.forward_step(tokens, cache, step)
        return self.action_decoder(y, embodiment_id)[:, -horizon:]
