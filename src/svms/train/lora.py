"""LoRA (peft) for `svms train --lora-rank R`: which linear layers get adapters, and checkpoints that stay N1.6.

Targets are named by what they are: `llm` (attention and MLP projections of the LLM layers the phase trains),
`dit` (attention and feed-forward linears of the DiT blocks the phase trains), `vision` (the ViT layers' when
the phase trains them: `--phase scratch`). A named target adapts only what its phase would train in full, so
the default `llm dit` fits every phase (phase 2: the bottom DiT blocks; phase 1 trains SVMS only, so nothing).
Any other target is a regular expression matched against whole module names (`re.fullmatch`), for experts; it
may adapt a frozen linear and must match at least one. The base weights of an adapted linear freeze; the rest
of the phase (SVMS, the projectors, norms, AdaLN) trains in full.

A checkpoint's `model.safetensors` holds the merged weights W + (alpha/r)·B·A, with exactly the keys and shapes
of a run without LoRA, so any N1.6 loader reads it without peft; `adapter/` beside it holds the adapter in
peft's format. Resume rebuilds the frozen base as the run did (the --init checkpoint or the seeded preset),
loads the checkpoint's other weights and the adapter, so it continues bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from svms.errors import SvmsError

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = ("llm", "dit")
_LLM = re.compile(r"backbone\.model\.language_model\.model\.layers\.\d+\."
                  r"(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)")
_DIT = re.compile(r"action_head\.model\.transformer_blocks\.\d+\."
                  r"(attn1\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))")
_VISION = re.compile(r"backbone\.model\.vision_model\.vision_model\.encoder\.layers\.\d+\."
                     r"(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])")
NAMED_TARGETS = {"llm": _LLM, "dit": _DIT, "vision": _VISION}
_NAME = re.compile(r"[A-Za-z_]+")


def check_targets(targets: tuple[str, ...]) -> None:
    """Each target is a known name or a valid regular expression (configuration time, before any compute)."""
    if not targets:
        raise SvmsError(f"--lora-targets is empty; name some of {', '.join(NAMED_TARGETS)} (default llm dit)")
    for target in targets:
        if _NAME.fullmatch(target):
            if target not in NAMED_TARGETS:
                raise SvmsError(f"--lora-targets {target!r}: not a target name; use {', '.join(NAMED_TARGETS)} "
                                "or a module-name pattern (a regular expression with a dot, e.g. "
                                "'action_head\\.model\\.transformer_blocks\\.0\\..*')")
            continue
        try:
            re.compile(target)
        except re.error as err:
            raise SvmsError(f"--lora-targets {target!r}: not a valid regular expression ({err})") from err


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not name.endswith("lm_head")}  # lm_head: tied, never run


def resolve_targets(model: nn.Module, targets: tuple[str, ...]) -> dict[str, list[str]]:
    """target -> the linear layers it adapts (full module names), for a model whose phase is applied
    (`requires_grad` says what the phase trains). A pattern that matches no linear layer is an error."""
    check_targets(targets)
    linears = _linears(model)
    found: dict[str, list[str]] = {}
    for target in targets:
        if target in NAMED_TARGETS:
            rx = NAMED_TARGETS[target]
            found[target] = [n for n, m in linears.items() if rx.fullmatch(n) and m.weight.requires_grad]
        else:
            rx = re.compile(target)
            found[target] = [n for n in linears if rx.fullmatch(n)]
            if not found[target]:
                raise SvmsError(f"--lora-targets {target!r} matches no linear layer of this model (matched "
                                "against whole module names, e.g. backbone.model.language_model.model.layers.0."
                                "self_attn.q_proj; `svms compat manifest` lists the weights)")
    return found


@dataclass
class Lora:
    """The adapters of a run: which layers and the peft config written beside each checkpoint."""

    modules: list[str]
    config: object  # peft.LoraConfig
    scaling: dict[str, float]  # module -> alpha / rank
    full_trainable: int  # parameters the phase would train without LoRA
    trainable: int  # parameters trained with it (adapters + what stays in full)

    def summary(self) -> str:
        c = self.config
        return (f"LoRA rank {c.r} (alpha {c.lora_alpha:g}) on {len(self.modules)} linear layers: "
                f"{self.trainable:,} trainable parameters instead of {self.full_trainable:,} "
                f"({self.trainable / max(self.full_trainable, 1):.1%})")


def _peft():
    try:
        import peft
    except ImportError as err:  # a regular dependency: only a broken install lacks it
        raise SvmsError("--lora-rank needs peft, a dependency of svms-gr00t: reinstall the project "
                        "(scripts/bootstrap.sh, or pip install 'peft>=0.13,<0.22')") from err
    return peft


def apply_lora(model: nn.Module, rank: int, alpha: float | None, dropout: float, targets: tuple[str, ...],
               phase: str) -> Lora | None:
    """Inject peft LoRA adapters into the phase's targeted linears in place (after `apply_phase`); None when
    the targets adapt nothing in this phase (it trains as without LoRA, saying so)."""
    found = resolve_targets(model, targets)
    modules = sorted({n for names in found.values() for n in names})
    if not modules:
        return None
    peft = _peft()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    full = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = peft.LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=dropout,
                             target_modules=modules, bias="none")
    peft.inject_adapter_in_model(config, model)
    adapted = {f"{m}.{kind}" for m in modules for kind in ("weight", "bias")}
    for name, p in model.named_parameters():  # peft froze everything else: give the phase its trainables back
        plain = name.replace(".base_layer.", ".")
        if "lora_" in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(plain in trainable and plain not in adapted)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Lora(modules, config, scalings(model), full, count)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def merged_state_dict(state: dict[str, torch.Tensor], scaling: dict[str, float]) -> dict[str, torch.Tensor]:
    """The checkpoint a run without LoRA would write, from a LoRA model's state dict (a copy: the live model is
    untouched): each adapted `base_layer` weight plus scaling·B·A (in fp32) under the plain name, adapters
    dropped, key order kept."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        module, sep, rest = key.partition(".base_layer.")
        if not sep:
            out[key] = value
            continue
        if rest == "weight":
            a, b = state[f"{module}.lora_A.default.weight"], state[f"{module}.lora_B.default.weight"]
            value = value.float() + scaling[module] * (b.float() @ a.float())
        out[f"{module}.{rest}"] = value
    return out


def scalings(model: nn.Module) -> dict[str, float]:
    return {n: float(m.scaling["default"]) for n, m in lora_layers(model).items()}


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft's adapter file keys (adapter name dropped, `base_model.model.` prefix) from a full state dict."""
    return {f"base_model.model.{k.replace('.default.', '.')}": v.detach().cpu().contiguous()
            for k, v in state.items() if ".lora_" in k}


def save_adapter(lora: Lora, state: dict[str, torch.Tensor], folder: Path) -> None:
    """`folder/adapter/`: adapter_config.json + adapter_model.safetensors in peft's format."""
    from safetensors.torch import save_file

    target = folder / ADAPTER_DIR
    lora.config.save_pretrained(str(target))
    save_file(adapter_state(state), str(target / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapter(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's adapter weights into a model with the same adapters injected."""
    from safetensors.torch import load_file

    path = checkpoint / ADAPTER_DIR / ADAPTER_WEIGHTS
    if not path.is_file():
        raise SvmsError(f"{checkpoint} has no {ADAPTER_DIR}/{ADAPTER_WEIGHTS}, but this run trains LoRA "
                        "adapters: resume needs the checkpoint a LoRA run wrote")
    stored = load_file(str(path))
    own = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
    wanted = {f"base_model.model.{k.replace('.default.', '.')}": k for k in own}
    if set(stored) != set(wanted):
        raise SvmsError(f"{path}: its adapters ({len(stored)} tensors) are not this run's ({len(wanted)}); "
                        "resume with the same --lora-rank and --lora-targets")
    model.load_state_dict({wanted[k]: v for k, v in stored.items()}, strict=False)


def adapted_modules(checkpoint: Path) -> list[str]:
    """The module names a checkpoint's adapter holds (their base weights come from the run's base). Read from
    the weights: peft's config may shorten `target_modules` to common suffixes."""
    from safetensors import SafetensorError, safe_open

    path = checkpoint / ADAPTER_DIR / ADAPTER_WEIGHTS
    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())  # noqa: SIM118 (safe_open is not iterable)
    except (OSError, SafetensorError) as err:
        raise SvmsError(f"{path} cannot be read ({err}); resume needs the adapter of a LoRA run") from err
    prefix = "base_model.model."
    return sorted({k[len(prefix):].rpartition(".lora_")[0] for k in keys if ".lora_" in k})


__all__ = ["ADAPTER_DIR", "DEFAULT_TARGETS", "NAMED_TARGETS", "Lora", "adapted_modules", "apply_lora",
           "check_targets", "load_adapter", "merged_state_dict", "resolve_targets", "save_adapter", "scalings"]
