"""The GR00T policy (spec §9.1) around a checkpoint folder: model + processor, in physical units.

`get_action(observation)` takes a batched observation in physical units —
`video` {camera: uint8 (B, T_v, H, W, 3)}, `state` {key: float32 (B, T_s, D)}, `language`
{language_key: [[instruction]] * B} — processes each sample as training did, runs one model call
for the batch and returns `({action_key: float32 (B, H_e, D)}, {})` in physical units. The same
object serves open-loop evaluation, closed-loop rollouts and the policy server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svms.data.collate import collate
from svms.data.modality import EmbodimentConfig, normalize_tag
from svms.data.processor import Gr00tProcessor
from svms.data.processor_files import load_processor
from svms.device import resolve_device
from svms.errors import SvmsError
from svms.model import Gr00tN1d6
from svms.model.checkpoint import resolve_init


class Gr00tPolicy:
    """A checkpoint's model + processor for one embodiment tag, stateless."""

    def __init__(self, model, processor: Gr00tProcessor, embodiment_tag: str, *,
                 denoising_steps: int | None = None, seed: int | None = None, compile: bool = False) -> None:
        """`compile`: run the model compiled (`Gr00tN1d6.compile_inference`; CUDA graphs on CUDA); the first
        query of each input shape then takes the compilation time."""
        self.model = model.eval()
        if compile:
            model.compile_inference()
        self.processor = processor
        self.tag = normalize_tag(embodiment_tag)
        self.config: EmbodimentConfig = processor.config(self.tag)
        processor.normalizer(self.tag)  # statistics present: fail now, not at the first query
        self.denoising_steps = denoising_steps
        self.device = next(model.parameters()).device
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.language_key = self.config.language.modality_keys[0]

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, embodiment_tag: str | None = None, *, device: str = "auto",
                        dtype: torch.dtype | None = None, **kwargs) -> Gr00tPolicy:
        """Load model and processor files from a checkpoint folder (or a run's newest checkpoint).

        Without `embodiment_tag` the checkpoint's only tag with statistics is used. On CUDA the model
        runs in bf16 as the reference does unless `dtype` says otherwise.
        """
        folder, processor, embodiment_tag = checkpoint_processor(checkpoint, embodiment_tag)
        dev = resolve_device(device)
        if dtype is None and dev.type == "cuda":
            dtype = torch.bfloat16
        model = Gr00tN1d6.from_pretrained(folder, device=dev, dtype=dtype)
        return cls(model, processor, embodiment_tag, **kwargs)

    def reset(self, options: Mapping[str, Any] | None = None) -> dict:
        return {}

    def get_modality_config(self) -> EmbodimentConfig:
        return self.config

    # ---- the call ---------------------------------------------------------------------------------
    def check_observation(self, observation: Mapping[str, Any]) -> int:
        """Strict validation (spec §9.1); returns the batch size."""
        cfg = self.config
        for part in ("video", "state", "language"):
            if not isinstance(observation.get(part), Mapping):
                raise SvmsError(f"observation lacks a '{part}' dict; expected video, state and language dicts")
        sizes: dict[str, int] = {}
        for key in cfg.video.modality_keys:
            arr = observation["video"].get(key)
            if arr is None:
                raise SvmsError(f"observation video lacks camera {key!r}; expected {list(cfg.video.modality_keys)}")
            arr = np.asarray(arr)
            t = len(cfg.video.delta_indices)
            if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[1] != t or arr.shape[-1] != 3:
                raise SvmsError(f"video {key!r}: expected uint8 (B, {t}, H, W, 3), got {arr.dtype} "
                                f"{tuple(arr.shape)}")
            sizes[f"video.{key}"] = arr.shape[0]
        for key in cfg.state.modality_keys:
            arr = observation["state"].get(key)
            if arr is None:
                raise SvmsError(f"observation state lacks {key!r}; expected {list(cfg.state.modality_keys)}")
            arr = np.asarray(arr)
            t = len(cfg.state.delta_indices)
            if not np.issubdtype(arr.dtype, np.floating) or arr.ndim != 3 or arr.shape[1] != t:
                raise SvmsError(f"state {key!r}: expected float (B, {t}, D), got {arr.dtype} {tuple(arr.shape)}")
            sizes[f"state.{key}"] = arr.shape[0]
        lang = observation["language"].get(self.language_key)
        if not isinstance(lang, list | tuple) or not all(isinstance(x, list | tuple) and len(x) == 1 for x in lang):
            raise SvmsError(f"language {self.language_key!r}: expected a list of B one-string lists")
        sizes["language"] = len(lang)
        if len(set(sizes.values())) != 1:
            raise SvmsError(f"observation parts disagree on the batch size: {sizes}")
        return next(iter(sizes.values()))

    def prepare(self, observation: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The model batch of an observation (on the model's device) and its raw states."""
        batch_size = self.check_observation(observation)
        cfg = self.config
        states = {k: np.asarray(observation["state"][k], dtype=np.float32) for k in cfg.state.modality_keys}
        samples = []
        for b in range(batch_size):
            video = {k: list(np.asarray(observation["video"][k])[b]) for k in cfg.video.modality_keys}
            instruction = str(observation["language"][self.language_key][b][0])
            samples.append(self.processor(self.tag, video, instruction, {k: v[b] for k, v in states.items()}))
        batch = collate(samples)
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else [x.to(self.device) for x in v])
                 for k, v in batch.items()}
        return batch, states

    @torch.no_grad()
    def get_action(self, observation: Mapping[str, Any], options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict]:
        batch, states = self.prepare(observation)
        pred = self.model.get_action(batch, generator=self.generator, num_steps=self.denoising_steps)["action_pred"]
        return self.processor.decode_action(self.tag, pred, states), {}


def checkpoint_processor(checkpoint: str | Path, embodiment_tag: str | None = None,
                         ) -> tuple[Path, Gr00tProcessor, str]:
    """A checkpoint's folder (a run folder means its newest checkpoint), processor and embodiment tag, checked:
    the tag must have a modality config and statistics there. Without a tag, the checkpoint's only one."""
    folder = resolve_init(Path(checkpoint))
    processor = load_processor(folder)
    tags = sorted(set(processor.configs) & set(processor.statistics))
    if embodiment_tag is None:
        if len(tags) != 1:
            raise SvmsError(f"{folder} holds processor configs with statistics for {tags or 'no embodiment'}; pass "
                            "the embodiment tag of the data to use (--embodiment-tag)")
        return folder, processor, tags[0]
    tag = normalize_tag(embodiment_tag)
    if tag not in tags:
        raise SvmsError(
            f"checkpoint {folder} was not trained for embodiment {tag!r}: its processor_config.json and "
            f"statistics.json cover {tags or 'no embodiment'}. Use --embodiment-tag {' or '.join(tags) or 'TAG'} "
            f"if the data are of that robot, or fine-tune a checkpoint on this embodiment first (`svms train "
            f"--init {folder} --embodiment-tag {tag} --dataset DIR ...`).")
    return folder, processor, tag
