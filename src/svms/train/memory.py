"""Peak GPU memory of one fine-tuning phase: an analytical estimate and what makes it fit (measured on CUDA by
`svms.train.memory_measure`).

Counts come from the real model built on the meta device (`Gr00tN1d6`, SVMS on): every parameter is
assigned to a *stage* (ViT+connector, embeddings, each LLM layer, final norm, SVMS, vlln, encoders,
timestep encoder, each DiT block, DiT output, decoder) and the phase's `set_trainable` says which are
trainable. Nothing about the model's size is hard-coded.

Phases (seed protocol, issue #6): 1 = SVMS only (batch 16); 2 = SVMS + the bottom half of the DiT blocks
(batch 12); 3 = action head + SVMS + the top `tune_top_llm_layers` LLM layers (batch 8).

Assumptions of the estimate (checked against `measure` on a GPU; expect ±15 % on the total):
  * Precision (spec §4.6): trainable parameters fp32; frozen ones bf16 (`frozen_dtype="bf16"`), all fp32
    (`"fp32"`), or as the reference builds them (`"mixed"`: frozen backbone bf16, action head and SVMS
    fp32 even when frozen). Forward under bf16 autocast.
  * Gradients fp32 for trainable parameters only. Optimizer: `adamw` 8 B/param, fused (no temporaries);
    `adamw-foreach` the same plus a 4 B/param temporary at the step (torch's multi-tensor AdamW, what
    HF's `adamw_torch` and so the reference use); `adamw8bit` 2 B/param; `paged-adamw8bit` counted as
    `adamw8bit` (its pages can move to CPU memory under pressure, so the GPU peak may be lower);
    `offload` 0 on the GPU.
  * LoRA (`lora=(rank, targets)`, `svms.train.lora` resolves the targets on the meta model): an adapted
    linear's weight is frozen (bf16 with `frozen_dtype="bf16"`, no autocast copy) and gains r·(in + out)
    trainable fp32 adapter parameters; its stage still saves what a trained stage saves (the adapter needs
    the linear's input), so activations barely change.
  * FSDP over N GPUs (`fsdp_gpus=N`): weights, gradients and optimizer state / N, plus the units gathered
    whole: the root unit (everything outside the LLM layers and DiT blocks, kept gathered through forward
    and backward) and two block units (the one running and the one prefetched).
  * Activations: only tensors autograd saves for backward. A stage saves nothing unless a gradient
    passes through it (it is trainable, or a trainable stage feeds it): the frozen backbone in front of
    the first trainable module saves nothing; the frozen DiT behind SVMS does ("through": norm inputs,
    attention q/k/v/out, activation-function inputs, no linear inputs). Per-token byte counts per layer
    kind are derived in `_layer_bytes` from PyTorch's autocast rules (matmuls in bf16, norms in fp32,
    a fresh bf16 cast of a non-leaf input for every linear that reads it, HF's fp32 RMSNorm, k/v
    repeated to all heads for the masked SDPA, dropout masks 1 B/element in trained DiT blocks).
  * Autocast keeps a bf16 copy of every fp32 weight it casts: of trainable weights until the forward
    ends, and of any fp32 weight whose input needs a gradient until that node's backward. The
    per-embodiment projectors gather one (in, out) matrix per sample (`W[ids]`): B copies in bf16.
  * Gradient checkpointing (LLM layers and DiT blocks): a block keeps only its input; its activations
    are recomputed, one block at a time, during backward.
  * Timeline (steps >= 2, `zero_grad(set_to_none=True)`): the peak is the largest of the end of the
    forward (weights + optimizer + activations + cached copies), each moment of the backward (stages are
    freed as their gradients appear, in reverse order; the stage in flight needs about its saved bytes
    again for the activation gradients), and the optimizer step (weights + optimizer + gradients).
    The lines of an estimate are the amounts live at that peak, so they add up to the total.
  * Overhead: 0.6 GiB CUDA context and cuBLAS workspaces (not in `max_memory_allocated`) plus 5 % of
    the peak for allocator fragmentation (reserved - allocated). `allocated_gib` excludes both and is
    what `measure` compares against.
  * Sequence: `seq_len` tokens per sample; default RoboCasa: 3 cameras × 81 image tokens (252² after
    Eagle's resize) + 40 text tokens = 283. The frozen ViT and the forward's transient working memory
    are not counted (they are gone before the peak).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from torch import nn

from svms.errors import SvmsError
from svms.model import Gr00tN1d6, Gr00tN1d6Config
from svms.train.lora import check_targets, resolve_targets
from svms.train.phases import FROZEN_DTYPES, apply_phase, frozen_is_bf16

GIB = 1024**3
CARD_GIB = 31.8  # a "32 GB" card (RTX 5090, V100-32GB) reports ~32,600 MiB
CONTEXT_GIB = 0.6
FRAGMENTATION = 0.05
SEED_CLAIM_GB = {1: 18, 2: 24, 3: 28}
PHASE_BATCH = {1: 16, 2: 12, 3: 8}
OPTIMIZER_BYTES = {"adamw": 8, "adamw-foreach": 8, "adamw8bit": 2, "paged-adamw8bit": 2, "offload": 0}
LORA_DEFAULT = (32, ("llm", "dit"))  # what `--gpu-memory` proposes (and the 16 GiB target)
FOREACH_TEMP_BYTES = 4  # torch's multi-tensor AdamW builds sqrt(v) for every parameter at the step
IMAGES, TOKENS_PER_IMAGE, TEXT_TOKENS, IMAGE_SIZE = 3, 81, 40, 252
DEFAULT_SEQ_LEN = IMAGES * TOKENS_PER_IMAGE + TEXT_TOKENS


@dataclass(frozen=True)
class Stage:
    """One unit of the forward, in order: its parameters and what it saves for backward."""

    name: str
    params: int
    trainable: int
    linear_params: int  # params of trainable nn.Linear modules and LoRA adapters (autocast casts them to bf16)
    gathered_per_sample: int  # per-embodiment W elements gathered per sample (W[ids])
    frozen_linear_params: int = 0  # params of frozen nn.Linear modules (cast too when stored in fp32)


@dataclass
class MemoryEstimate:
    """Peak memory of one phase in GiB; the lines are what is live at the peak and add up to `total_gib`."""

    preset: str
    phase: int
    batch_size: int
    seq_len: int
    grad_checkpointing: bool
    optimizer: str
    frozen_dtype: str
    lora: tuple[int, tuple[str, ...]] | None
    fsdp_gpus: int
    total_params: int
    trainable_params: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    weight_copies_gib: float
    overhead_gib: float
    total_gib: float
    allocated_gib: float  # total without overhead: compare with torch.cuda.max_memory_allocated
    gradients_all_gib: float  # every trainable parameter's gradient
    activations_all_gib: float  # everything saved for backward at the end of the forward (copies too)
    peak_at: str

    def lines(self) -> list[tuple[str, float]]:
        return [("weights", self.weights_gib), ("gradients", self.gradients_gib),
                ("optimizer states", self.optimizer_gib), ("activations", self.activations_gib),
                ("autocast bf16 weight copies", self.weight_copies_gib),
                ("CUDA context + fragmentation", self.overhead_gib), ("total", self.total_gib)]

    def fits(self, card_gib: float = CARD_GIB) -> bool:
        return self.total_gib <= card_gib

    def settings(self) -> str:
        """The `svms train` flags of this estimate's settings (empty for the defaults)."""
        flags = [f"--optimizer {self.optimizer}"] if self.optimizer != "adamw" else []
        if self.lora is not None:
            flags.append(f"--lora-rank {self.lora[0]} --lora-targets {' '.join(self.lora[1])}")
        if self.grad_checkpointing:
            flags.append("--grad-checkpointing")
        if self.frozen_dtype != "bf16":
            flags.append(f"--frozen-dtype {self.frozen_dtype}")
        if self.fsdp_gpus > 1:
            flags.append(f"--fsdp (torchrun --nproc-per-node {self.fsdp_gpus})")
        return " ".join(flags)


@dataclass
class FitOption:
    label: str
    estimate: MemoryEstimate
    card_gib: float = CARD_GIB
    extra_flags: str = ""  # flags beyond the estimate's settings (the gradient accumulation of a micro-batch)

    def flags(self) -> str:
        return " ".join(x for x in (self.estimate.settings(), self.extra_flags) if x)

    @property
    def fits(self) -> bool:
        return self.estimate.fits(self.card_gib)


# ---- the model's stages per phase -------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _meta_model(preset: str):
    config = dataclasses.replace(Gr00tN1d6Config.preset(preset), use_sheaf_streams=True)
    with torch.device("meta"):
        return Gr00tN1d6(config, backbone_dtype=torch.bfloat16)


def _stage_of(name: str) -> str:
    parts = name.split(".")
    if name.startswith(("backbone.model.vision_model.", "backbone.model.mlp1.")):
        return "vision"
    if name.startswith("backbone.model.language_model.model.layers."):
        return f"llm.{parts[5]}"
    if name.startswith("backbone.model.language_model.model.embed_tokens."):
        return "embed"
    if name.startswith("backbone.model.language_model.model.norm."):
        return "llm.norm"
    if parts[0] == "svms":
        return "svms"
    if name.startswith("action_head.model.transformer_blocks."):
        return f"dit.{parts[3]}"
    if name.startswith("action_head.model.timestep_encoder."):
        return "timestep"
    if name.startswith("action_head.model.proj_out"):
        return "dit.out"
    if name.startswith("action_head.vlln."):
        return "vlln"
    if name.startswith("action_head.action_decoder."):
        return "decoder"
    if parts[:2] in (["action_head", "state_encoder"], ["action_head", "action_encoder"],
                     ["action_head", "position_embedding"], ["action_head", "mask_token"]):
        return "encoders"
    raise AssertionError(f"memory model: no stage for parameter {name}; update svms.train.memory")


def _stage_order(model: nn.Module) -> list[str]:
    n_llm = len(model.backbone.model.language_model.model.layers)
    n_dit = len(model.action_head.model.transformer_blocks)
    return (["vision", "embed"] + [f"llm.{i}" for i in range(n_llm)] + ["llm.norm", "svms", "vlln", "encoders",
            "timestep"] + [f"dit.{i}" for i in range(n_dit)] + ["dit.out", "decoder"])


@functools.lru_cache(maxsize=32)
def phase_stages(preset: str, phase: int, lora: tuple[int, tuple[str, ...]] | None = None) -> tuple[Stage, ...]:
    """The model's stages in forward order with their parameter counts and trainability in `phase` (with LoRA
    adapters of `lora = (rank, targets)` on what those targets adapt in that phase)."""
    model = _meta_model(preset)
    check_phase(phase)
    apply_phase(model, str(phase))
    adapted = set()
    if lora is not None:
        check_lora(lora)
        adapted = {n for names in resolve_targets(model, lora[1]).values() for n in names}
    params: dict[str, int] = {}
    trainable: dict[str, int] = {}
    linear: dict[str, int] = {}
    frozen_linear: dict[str, int] = {}
    gathered: dict[str, int] = {}

    def add(table: dict[str, int], stage: str, n: int) -> None:
        table[stage] = table.get(stage, 0) + n

    for name, p in model.named_parameters():
        stage = _stage_of(name)
        add(params, stage, p.numel())
        add(trainable, stage, p.numel() if p.requires_grad and name.rpartition(".")[0] not in adapted else 0)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith("lm_head"):  # tied, never run
            stage = _stage_of(f"{name}.weight")
            own = sum(p.numel() for p in module.parameters(recurse=False))
            if name in adapted:
                adapter = lora[0] * (module.in_features + module.out_features)
                add(params, stage, adapter)
                add(trainable, stage, adapter)
                add(linear, stage, adapter)
                add(frozen_linear, stage, own)
            else:
                add(linear if module.weight.requires_grad else frozen_linear, stage, own)
        elif type(module).__name__ == "CategorySpecificLinear":
            stage = _stage_of(f"{name}.W")
            add(gathered, stage, module.W.shape[1] * module.W.shape[2])
    return tuple(Stage(s, params.get(s, 0), trainable.get(s, 0), linear.get(s, 0), gathered.get(s, 0),
                       frozen_linear.get(s, 0)) for s in _stage_order(model))


# ---- bytes saved for backward, per sample ------------------------------------------------------------


def _layer_bytes(model: nn.Module, stage: str, mode: str, seq: int, dropout: bool) -> int:
    """Bytes one sample's forward saves for backward in `stage`; mode "full" (trainable), "through"
    (frozen, gradient passes), "ckpt" (checkpointed: the block input only)."""
    c = model.config
    text = model.backbone.eagle_config["text_config"]
    d, f = text["hidden_size"], text["intermediate_size"]
    d_kv = text["num_key_value_heads"] * text.get("head_dim", d // text["num_attention_heads"])
    a, h, q_len = c.input_embedding_dim, c.hidden_size, 1 + c.action_horizon  # state token + actions
    ff = 4 * a
    if stage.startswith("llm.") and stage != "llm.norm":
        # full: fp32 input of both RMSNorms (4d) + their bf16 normalised value (2d) + a bf16 cast per
        # linear reading an fp32 norm output (q, k, v, gate, up: 2d each), q/k norms (4+2 per width),
        # SDPA q, k, v (repeated to all heads), out (8d), o_proj input (2d), SwiGLU (gate, silu, up,
        # product: 8f). through: norms' fp32 inputs, SDPA tensors and SwiGLU inputs (20d + 4d_kv + 6f).
        per_token = {"full": 38 * d + 6 * d_kv + 8 * f, "through": 20 * d + 4 * d_kv + 6 * f,
                     "ckpt": 2 * d}[mode]
        return seq * per_token
    if stage == "llm.norm":
        return seq * (6 * d if mode == "full" else 4 * d)
    if stage == "svms":
        s = model.svms.config
        e = len(s.edges)
        # stream heads (2 fp32 LayerNorm inputs, 3 bf16 linear/GELU inputs each), x0 / diffused / mixed
        # streams in fp32, bf16 casts for the restriction maps (twice: loss and diffusion), the overlap
        # projections in fp32 for the normalised disagreement and collapse penalty, router LayerNorm and
        # linears, merge and aux-head inputs.
        per_token = (8 * c.backbone_embedding_dim + 26 * s.n_streams * s.d_stream + 8 * e * s.d_stream
                     + 28 * e * s.d_overlap)
        return seq * per_token
    if stage == "vlln":
        # LayerNorm's fp32 input and the fp32 output (held: `vl_embeds`, read by every cross block);
        # the normalised value too when the affine weight trains.
        return seq * (12 if mode == "full" else 8) * c.backbone_embedding_dim
    if stage.startswith("dit.") and stage != "dit.out":
        cross = int(stage.split(".")[1]) % 2 == 0
        if mode == "ckpt":
            return q_len * 4 * a  # the fp32 residual stream
        if mode == "full":
            # AdaLN (LN input and output fp32: 8a), bf16 casts of q (+k, v when self: 2a each), SDPA
            # q, out (+k, v) 2a each, to_out input 2a, norm3 input 4a, ff input cast 2a, GELU input and
            # second-linear input (2f each); dropout masks 1 B per element (3a + f) when training.
            per_q = (25 if cross else 33) * a + 4 * ff - (0 if dropout else 3 * a + ff) + ff
            per_kv = 4 * a + 4 * c.backbone_embedding_dim  # SDPA k, v + the k/v linears' bf16 input casts
        else:
            per_q = (12 if cross else 16) * a + 2 * ff  # LN inputs (4a each), SDPA tensors, GELU input
            per_kv = 4 * a
        return q_len * per_q + (seq * per_kv if cross else 0)
    if stage == "dit.out":
        return q_len * (10 * a if mode == "full" else 4 * a)
    if stage == "decoder":
        return q_len * (8 * h if mode == "full" else 4 * h)
    if stage == "encoders":
        return q_len * 16 * a if mode == "full" else 0
    return 0  # vision, embed, timestep: tiny or never in a gradient path in these phases


# ---- the estimate ---------------------------------------------------------------------------------


def check_phase(phase: int) -> None:
    if phase not in PHASE_BATCH:
        raise SvmsError(f"phase {phase!r} is not a fine-tuning phase; use 1, 2 or 3")


def check_lora(lora: tuple[int, tuple[str, ...]]) -> None:
    if lora[0] < 1:
        raise SvmsError(f"--lora-rank must be >= 1, got {lora[0]}")
    check_targets(tuple(lora[1]))


def check_args(phase: int, batch_size: int, optimizer: str, frozen_dtype: str, seq_len: int,
               fsdp_gpus: int = 1) -> None:
    check_phase(phase)
    if fsdp_gpus < 1:
        raise SvmsError(f"--fsdp-gpus {fsdp_gpus} must be >= 1 (1: no sharding)")
    if batch_size < 1:
        raise SvmsError(f"--batch-size {batch_size} must be >= 1")
    if optimizer not in OPTIMIZER_BYTES:
        raise SvmsError(f"--optimizer {optimizer!r} is not one of {', '.join(OPTIMIZER_BYTES)}")
    if frozen_dtype not in FROZEN_DTYPES:
        raise SvmsError(f"--frozen-dtype {frozen_dtype!r} is not one of {', '.join(FROZEN_DTYPES)}")
    if seq_len < 2:
        raise SvmsError(f"--seq-len {seq_len} must be >= 2 (text and image tokens)")


def _is_block(stage: str) -> bool:
    """An FSDP unit of its own (`svms.train.distributed.shard_model`): an LLM layer or a DiT block."""
    return stage[:4] in ("llm.", "dit.") and stage not in ("llm.norm", "dit.out")


def _frozen_bytes(stage: str, frozen_dtype: str) -> int:
    backbone = stage.startswith(("vision", "embed", "llm"))
    return 2 if frozen_is_bf16("backbone." if backbone else "", frozen_dtype) else 4


def estimate(preset: str, phase: int, batch_size: int, grad_checkpointing: bool = False,
             optimizer: str = "adamw", frozen_dtype: str = "bf16", seq_len: int | None = None,
             lora: tuple[int, tuple[str, ...]] | None = None, fsdp_gpus: int = 1) -> MemoryEstimate:
    """Estimated peak memory of one training step of `phase` (see the module docstring)."""
    seq = DEFAULT_SEQ_LEN if seq_len is None else seq_len
    check_args(phase, batch_size, optimizer, frozen_dtype, seq, fsdp_gpus)
    lora = None if lora is None else (int(lora[0]), tuple(lora[1]))
    stages = phase_stages(preset, phase, lora)
    model = _meta_model(preset)
    dropout = True  # trained DiT blocks run in train mode (dropout on), as svms.train.phases sets them
    stage_bytes = [4 * s.trainable + _frozen_bytes(s.name, frozen_dtype) * (s.params - s.trainable) for s in stages]
    weights = sum(stage_bytes)
    n = fsdp_gpus
    if n > 1:  # sharded, plus the units gathered whole at the peak (module docstring)
        blocks = [b for s, b in zip(stages, stage_bytes, strict=True) if _is_block(s.name)]
        root = weights - sum(blocks)
        weights = weights / n + root * (n - 1) / n + 2 * max(blocks) * (n - 1) / n
    grads = [4 * s.trainable / n for s in stages]
    opt = OPTIMIZER_BYTES[optimizer] * sum(s.trainable for s in stages) / n

    # Which stages a gradient passes through: the backbone chain up to vlln in order; the DiT side also
    # from its own trainable inputs (encoders, timestep encoder). Inputs (pixels, ids) live all step.
    inputs = batch_size * (IMAGES * 3 * IMAGE_SIZE**2 * 4 + seq * 8 * 3)
    acts: list[int] = []  # saved for backward, per stage
    copies: list[int] = []  # bf16 weight copies saved for backward, per stage
    cached = 0  # copies of trainable weights autocast holds only until the forward ends
    modes: list[tuple[str, bool]] = []
    chain_grad = side_grad = False
    for s in stages:
        side = s.name.startswith(("encoders", "timestep", "dit.", "decoder"))
        if s.name in ("encoders", "timestep"):
            upstream = False
        else:
            upstream = chain_grad or (side_grad and side)
        mode = "full" if s.trainable else ("through" if upstream else "none")
        ckpt = (grad_checkpointing and mode != "none" and s.name[:4] in ("llm.", "dit.")
                and s.name not in ("llm.norm", "dit.out"))
        modes.append((mode, ckpt))
        acts.append(0 if mode == "none" else
                    batch_size * _layer_bytes(model, s.name, "ckpt" if ckpt else mode, seq, dropout))
        fp32_linear = s.linear_params + (s.frozen_linear_params if _frozen_bytes(s.name, frozen_dtype) == 4 else 0)
        copies.append(0 if mode == "none" else
                      2 * s.gathered_per_sample * batch_size + (0 if ckpt else 2 * fp32_linear))
        if s.trainable and ckpt:
            cached += 2 * s.linear_params
        if s.trainable:
            side_grad = side_grad or side
            chain_grad = chain_grad or not side

    # Peak over the step's timeline (module docstring): (bytes, where, activations, copies, grads).
    base = weights + opt
    best = (base + inputs + sum(acts) + sum(copies) + cached, "end of forward",
            inputs + sum(acts), sum(copies) + cached, 0)
    for k in range(len(stages) - 1, -1, -1):
        mode, ckpt = modes[k]
        if mode == "none":
            continue
        in_flight = batch_size * _layer_bytes(model, stages[k].name, mode, seq, dropout)
        live_acts = inputs + sum(acts[:k]) + acts[k] + in_flight  # checkpointed: input + recomputed
        live_copies = sum(copies[: k + 1]) + (2 * stages[k].linear_params if ckpt else 0)
        live_grads = sum(grads[k:])
        total = base + live_acts + live_copies + live_grads
        if total > best[0]:
            best = (total, f"backward ({stages[k].name})", live_acts, live_copies, live_grads)
    step_temp = FOREACH_TEMP_BYTES * sum(s.trainable for s in stages) / n if optimizer == "adamw-foreach" else 0
    if base + sum(grads) + step_temp > best[0]:
        best = (base + sum(grads) + step_temp, "optimizer step", 0, 0, sum(grads))
    allocated, peak_at, live_acts, live_copies, live_grads = best
    opt += step_temp if peak_at == "optimizer step" else 0  # the multi-tensor step's sqrt(v) copy
    overhead = CONTEXT_GIB * GIB + FRAGMENTATION * allocated
    return MemoryEstimate(
        preset=preset, phase=phase, batch_size=batch_size, seq_len=seq, grad_checkpointing=grad_checkpointing,
        optimizer=optimizer, frozen_dtype=frozen_dtype, lora=lora, fsdp_gpus=fsdp_gpus,
        total_params=sum(s.params for s in stages),
        trainable_params=sum(s.trainable for s in stages), weights_gib=weights / GIB,
        gradients_gib=live_grads / GIB, optimizer_gib=opt / GIB, activations_gib=live_acts / GIB,
        weight_copies_gib=live_copies / GIB, overhead_gib=overhead / GIB, total_gib=(allocated + overhead) / GIB,
        allocated_gib=allocated / GIB, gradients_all_gib=sum(grads) / GIB,
        activations_all_gib=(inputs + sum(acts) + sum(copies) + cached) / GIB, peak_at=peak_at)


# ---- what makes a phase fit ----------------------------------------------------------------------------


def fit_options(est: MemoryEstimate, card_gib: float = CARD_GIB, every: bool = False) -> list[FitOption]:
    """Settings that lower `est`, each with its estimate (empty when `est` already fits `card_gib`, unless
    `every`: then all of them, for `svms memory --gpu-memory`).

    Tried on top of the current settings: gradient checkpointing, 8-bit AdamW (plain and paged, with and
    without checkpointing), LoRA (rank 32 on llm + dit; with 8-bit AdamW), FSDP over 2 and 4 GPUs, optimizer
    offload, frozen weights in bf16, and the largest micro-batch dividing the batch that fits, with gradient
    accumulation keeping the global batch."""
    if est.total_gib <= card_gib and not every:
        return []
    args = dict(preset=est.preset, phase=est.phase, batch_size=est.batch_size,
                grad_checkpointing=est.grad_checkpointing, optimizer=est.optimizer,
                frozen_dtype=est.frozen_dtype, seq_len=est.seq_len, lora=est.lora, fsdp_gpus=est.fsdp_gpus)
    tries: list[tuple[str, dict]] = []
    if not est.grad_checkpointing:
        # Measured on an H100 at the phases' default batches, checkpointing raised the peak (activations
        # are small next to the optimizer state); offered for large batches, to be checked with --measure.
        tries.append(("gradient checkpointing (check with --measure)", {"grad_checkpointing": True}))
    if est.optimizer in ("adamw", "adamw-foreach"):
        if est.optimizer == "adamw-foreach":
            tries.append(("fused AdamW", {"optimizer": "adamw"}))
        tries.append(("8-bit AdamW", {"optimizer": "adamw8bit"}))
        tries.append(("paged 8-bit AdamW", {"optimizer": "paged-adamw8bit"}))
        if not est.grad_checkpointing:
            tries.append(("8-bit AdamW + gradient checkpointing",
                          {"optimizer": "adamw8bit", "grad_checkpointing": True}))
    if est.lora is None and est.phase != 1:  # phase 1 trains SVMS only: nothing for LoRA to adapt
        rank, targets = LORA_DEFAULT
        tries.append((f"LoRA rank {rank} on {' + '.join(targets)}", {"lora": LORA_DEFAULT}))
        if est.optimizer != "adamw8bit":
            tries.append((f"LoRA rank {rank} + 8-bit AdamW", {"lora": LORA_DEFAULT, "optimizer": "adamw8bit"}))
    if est.fsdp_gpus == 1:
        tries += [(f"FSDP over {n} GPUs", {"fsdp_gpus": n}) for n in (2, 4)]
    if est.optimizer != "offload":
        tries.append(("optimizer offload to CPU (not in svms train)", {"optimizer": "offload"}))
    if est.frozen_dtype != "bf16":
        tries.append(("frozen weights in bf16", {"frozen_dtype": "bf16"}))
    options = [FitOption(label, estimate(**{**args, **change}), card_gib) for label, change in tries]
    for micro in sorted((b for b in range(1, est.batch_size) if est.batch_size % b == 0), reverse=True):
        option = estimate(**{**args, "batch_size": micro})
        if option.total_gib <= card_gib:
            options.append(FitOption(f"micro-batch {micro} x {est.batch_size // micro} accumulation steps",
                                     option, card_gib, f"--grad-accumulation {est.batch_size // micro}"))
            break
    return options


__all__ = ["CARD_GIB", "DEFAULT_SEQ_LEN", "LORA_DEFAULT", "PHASE_BATCH", "SEED_CLAIM_GB", "FitOption", "MemoryEstimate",
           "estimate", "fit_options", "phase_stages"]
