"""Replay an action-head fixture (`action_head_tiny*/` layout) through `Gr00tActionHead` and compare.

The head is rebuilt from the folder's `config.json` and `weights.safetensors` alone; the recorded random
draws (`noise`, `t`, `init_noise`) are fed back in, so every recorded output must be reproduced within the
fixture tolerance. Intermediates are read with forward hooks, as the reference recorded them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from svms.compat.tolerance import CompatRow, compare_tensor
from svms.errors import SvmsError
from svms.model.action_head import Gr00tActionHead
from svms.model.config import Gr00tN1d6Config

INPUTS = ("backbone_features", "backbone_attention_mask", "image_mask", "state", "embodiment_id", "action",
          "action_mask", "noise", "t", "init_noise")
FORWARD_OUTPUTS = ("noisy_trajectory", "t_discretized", "velocity_target", "pred_velocity", "action_loss",
                   "loss", "vl_embeds", "state_features", "action_encoder_output", "dit_output",
                   "decoder_output")
GET_ACTION_OUTPUTS = ("action_pred", "inference_step_velocities", "inference_timesteps")


def load_action_head(folder: Path) -> Gr00tActionHead:
    """The fixture's head in fp32 eval mode, weights loaded strictly."""
    config = Gr00tN1d6Config.from_json_file(folder / "config.json")
    recorded_class = config.extra.get("_diffusion_model_class")
    built_class = "AlternateVLDiT" if config.use_alternate_vl_dit else "DiT"
    if recorded_class is not None and recorded_class != built_class:
        raise SvmsError(f"{folder / 'config.json'}: _diffusion_model_class is {recorded_class!r} but "
                        f"use_alternate_vl_dit selects {built_class!r}; the fixture is inconsistent")
    head = Gr00tActionHead(config)
    weights = load_file(str(folder / "weights.safetensors"))
    missing, unexpected = head.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SvmsError(f"{folder / 'weights.safetensors'} does not fit the head built from config.json: "
                        f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return head.float().eval()


class _Recorder:
    """Forward hooks collecting the outputs of named submodules, one list entry per call."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(_module, _args, output):
            self.outputs[name].append(output.detach())
        return hook

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


def _compare_all(case: str, ours: dict[str, torch.Tensor], io: dict[str, torch.Tensor],
                 names: tuple[str, ...]) -> list[CompatRow]:
    rows = []
    for name in names:
        if name not in io:
            rows.append(CompatRow(case, name, False, mismatches=0, note="missing from io.safetensors"))
        else:
            rows.append(compare_tensor(case, name, ours[name], io[name]))
    return rows


@torch.no_grad()
def check_action_head_fixture(folder: Path) -> list[CompatRow]:
    """One row per recorded output/intermediate of the training (`forward`) and inference cases."""
    folder = Path(folder)
    for name in ("config.json", "weights.safetensors", "io.safetensors"):
        if not (folder / name).is_file():
            raise SvmsError(f"{folder} is not an action-head fixture: {name} is missing")
    head = load_action_head(folder)
    io = load_file(str(folder / "io.safetensors"))
    absent = [name for name in INPUTS if name not in io]
    if absent:
        raise SvmsError(f"{folder / 'io.safetensors'} lacks the input tensors {absent}")
    backbone = (io["backbone_features"], io["backbone_attention_mask"].bool(), io["image_mask"].bool(),
                io["state"], io["embodiment_id"])

    modules = {"action_encoder_output": head.action_encoder, "dit_output": head.model,
               "decoder_output": head.action_decoder}
    with _Recorder(modules) as rec:
        out = head(*backbone, io["action"], io["action_mask"], noise=io["noise"], t=io["t"])
    ours = {name: getattr(out, name) for name in FORWARD_OUTPUTS if name not in modules}
    ours.update({name: calls[0] for name, calls in rec.outputs.items()})
    rows = _compare_all(f"{folder.name}:forward", ours, io, FORWARD_OUTPUTS)

    # The denoising loop embeds the buckets of all its steps at once (`DiT.prepare_denoising`): (steps,).
    buckets_used: list[torch.Tensor] = []
    pre = head.model.timestep_encoder.register_forward_pre_hook(
        lambda _m, args: buckets_used.append(args[0].clone()))
    try:
        with _Recorder({"decoder": head.action_decoder}) as rec:
            action_pred = head.get_action(*backbone, initial_noise=io["init_noise"])
    finally:
        pre.remove()
    horizon = action_pred.shape[1]
    ours = {
        "action_pred": action_pred,
        "inference_step_velocities": torch.stack([y[:, -horizon:] for y in rec.outputs["decoder"]]),
        "inference_timesteps": buckets_used[0],
    }
    return rows + _compare_all(f"{folder.name}:get_action", ours, io, GET_ACTION_OUTPUTS)
