"""Parity of `svms.data` with the reference on the processor fixture (`prompt`/`images`/`state_action`).

Every case is rebuilt from the fixture's own inputs (frame sizes and colours, instructions, modality
configs, dataset columns, `modality.json`) and run through our processing; nothing is read from
the expected outputs except to compare. Tolerances are the fixture README's: exact for strings,
ids, masks, sizes, uint8 images and padding; 1e-6 for normalised values; statistics per kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from svms.compat.tolerance import CompatRow, compare_tensor
from svms.data import (
    IMAGE_TOKEN_ID,
    EmbodimentConfig,
    Gr00tProcessor,
    ProcessorSettings,
    collate,
    compute_relative_stats,
    compute_stats,
    eagle_normalize,
    eagle_resize,
    eagle_smart_resize,
    embodiment_statistics,
    gr00t_transform,
    gr00t_transform_plan,
    load_tokenizer,
    merge_statistics,
    num_image_tokens,
)
from svms.errors import SvmsError

#: (atol, rtol) per statistic, from the fixture README ("Tolerances to expect").
STAT_TOLERANCE = {
    "min": (0.0, 0.0),
    "max": (0.0, 0.0),
    "mean": (1e-6, 1e-5),
    "std": (1e-6, 1e-5),
    "q01": (0.0, 1e-6),
    "q99": (0.0, 1e-6),
}
NORMALIZED_ATOL = 1e-6
DECODED_TOL = (1e-6, 1e-6)


def _exact(case: str, name: str, ours: Sequence, ref: Sequence, note: str = "") -> CompatRow:
    """Element-wise equality of two lists (strings, id lists, tuples); length differences count too."""
    mismatches = sum(a != b for a, b in zip(ours, ref, strict=False)) + abs(len(ours) - len(ref))
    return CompatRow(case, name, mismatches == 0, mismatches=mismatches, note=note)


def _load(folder: Path, stem: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    return json.loads((folder / f"{stem}.json").read_text()), load_file(str(folder / f"{stem}.safetensors"))


def _settings(meta: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> ProcessorSettings:
    return ProcessorSettings.from_dict({**meta.get("processor_settings", {}), **(overrides or {})})


def check_images(folder: Path) -> list[CompatRow]:
    """Both image stages on the stored frames, then the shape tables of the two resizes."""
    meta, t = _load(folder, "images")
    s = _settings(meta, None)
    edge, frac = s.shortest_image_edge, s.crop_fraction
    rows = []
    for c in meta["cases"]:
        case, n = f"images/{c['name']}", c["name"]
        gr00t = gr00t_transform(t[f"{n}.frame"].numpy(), edge, frac)
        eagle = eagle_resize(gr00t)
        pv = eagle_normalize(eagle)  # (1, 3, h, w)
        plan = gr00t_transform_plan(*c["frame_hw"], edge, frac)
        sizes = [plan.first_resize_hw, plan.center_crop_yx_hw, gr00t.shape[:2], eagle.shape[:2]]
        rows += [
            compare_tensor(case, "gr00t_image", torch.tensor(gr00t), t[f"{n}.gr00t_image"]),
            compare_tensor(case, "eagle_image", torch.tensor(eagle), t[f"{n}.eagle_image"]),
            compare_tensor(case, "pixel_values_patch_0_0", pv[..., :28, :28],
                           t[f"{n}.pixel_values_patch_0_0"], atol=0.0, rtol=0.0),
            compare_tensor(case, "pixel_values_channel_sum", pv[0].double().sum(dim=(1, 2)),
                           t[f"{n}.pixel_values_channel_sum"], atol=1e-6, rtol=1e-9, note="f64 sum order"),
            compare_tensor(case, "image_sizes", torch.tensor([eagle.shape[:2]]), t[f"{n}.image_sizes"]),
            _exact(case, "sizes", [*map(list, sizes), num_image_tokens(eagle.shape[:2])],
                   [c[k] for k in ("first_resize_hw", "center_crop_yx_hw", "gr00t_hw", "eagle_hw",
                                   "num_image_tokens")]),
        ]
    for r in meta["gr00t_transform_shapes"]:
        plan = gr00t_transform_plan(*r["in_hw"], edge, frac)
        out = gr00t_transform(np.zeros((*r["in_hw"], 3), np.uint8), edge, frac)
        ours = [plan.first_resize_hw, plan.center_crop_yx_hw, plan.out_hw, out.shape[:2]]
        ref = [r["first_resize_hw"], r["center_crop_yx_hw"], r["out_hw"], r["out_hw"]]
        rows.append(_exact("images/gr00t_transform_shapes", _hw(r["in_hw"]), [*map(list, ours)], ref))
    for r in meta["eagle_smart_resize"]:
        try:
            hw = eagle_smart_resize(*r["in_hw"])
            ours, note = [list(hw), num_image_tokens(hw)], ""
        except SvmsError as e:
            ours, note = ["error", r.get("message", "") in str(e)], f"raises: {r.get('message', '')}"
        ref = ["error", True] if "error" in r else [r["out_hw"], r["num_image_tokens"]]
        rows.append(_exact("images/eagle_smart_resize", _hw(r["in_hw"]), ours, ref, note))
    return rows


def _hw(hw: Sequence[int]) -> str:
    return "x".join(map(str, hw))


def _prompt_video(frames: Sequence[Mapping[str, Any]]) -> dict[str, list[np.ndarray]]:
    """Constant-colour frames {camera: [frame per t]} from the fixture's frame records."""
    video: dict[str, dict[int, np.ndarray]] = {}
    for f in frames:
        video.setdefault(f["camera"], {})[f["t"]] = np.full((*f["raw_hw"], 3), f["rgb"], np.uint8)
    return {cam: [steps[t] for t in sorted(steps)] for cam, steps in video.items()}


def check_prompt(folder: Path, tokenizer=None) -> list[CompatRow]:
    """Each batch: language, template, expansion, token ids, collated tensors and image order."""
    meta, t = _load(folder, "prompt")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    configs = {tag: EmbodimentConfig.from_dict(c) for tag, c in meta["modality_configs"].items()}
    rows = []
    for b, batch in meta["batches"].items():
        case, refs = f"prompt/{b}", batch["samples"]
        proc = Gr00tProcessor(configs, settings=_settings(meta, batch.get("processor_overrides")))
        samples = [proc(r["embodiment_tag"], _prompt_video(r["frames"]), r["instruction_raw"]) for r in refs]
        out = collate(samples, tokenizer)
        ids, mask, sizes = out["input_ids"], out["attention_mask"], out["image_sizes"]
        ours = {
            "language": [s.language for s in samples],
            "chat_template_text": [s.chat_text for s in samples],
            "expanded_text": [s.text for s in samples],
            "token_ids": [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)],
            "num_left_pad": [int((m == 0).sum()) for m in mask],
            "eagle_hw": [[list(hw) for hw in s.image_sizes] for s in samples],
        }
        rows += [_exact(case, name, v, [r[name] for r in refs]) for name, v in ours.items()]
        channel_mean = torch.stack([pv[0].double().mean(dim=(1, 2)) for pv in out["pixel_values"]])
        tensors = {"input_ids": ids, "attention_mask": mask, "image_mask": ids == IMAGE_TOKEN_ID,
                   "image_sizes": sizes, "num_image_tokens": sizes[:, 0] * sizes[:, 1] // 784,
                   "embodiment_id": out["embodiment_id"]}
        rows += [compare_tensor(case, name, v, t[f"{b}.{name}"]) for name, v in tensors.items()]
        rows.append(compare_tensor(case, "pixel_values_channel_mean", channel_mean,
                                   t[f"{b}.pixel_values_channel_mean"], atol=1e-7, rtol=0.0,
                                   note="pins image order"))
        ref_dtypes = ["torch.int64", "torch.int64", f"torch.{batch['image_sizes_dtype_in_reference']}"]
        rows.append(_exact(case, "dtypes", [str(ids.dtype), str(mask.dtype), str(sizes.dtype)], ref_dtypes))
    return rows


def _stats_rows(case: str, prefix: str, ours: Mapping, ref: Mapping) -> list[CompatRow]:
    """One row per statistic over every column/key of a stats mapping (nested dicts of six stats)."""

    def leaves(node: Mapping, path: str = "") -> dict[str, Mapping]:
        if "mean" in node:
            return {path: node}
        return {k: v for key in sorted(node) for k, v in leaves(node[key], f"{path}/{key}").items()}

    lo, lr = leaves(ours), leaves(ref)
    rows = [_exact(case, f"{prefix}.keys", sorted(lo), sorted(lr))]
    common = [k for k in sorted(lr) if k in lo]
    for stat, (atol, rtol) in STAT_TOLERANCE.items():
        if not common:
            continue
        a = torch.cat([torch.tensor(lo[k][stat], dtype=torch.float64).flatten() for k in common])
        b = torch.cat([torch.tensor(lr[k][stat], dtype=torch.float64).flatten() for k in common])
        rows.append(compare_tensor(case, f"{prefix}.{stat}", a, b, atol=atol, rtol=rtol))
    return rows


def _episodes(
    c: str, t: Mapping[str, torch.Tensor], features: Mapping[str, Any]
) -> list[dict[str, np.ndarray]]:
    """Per-episode column arrays from the stored `dataset.*` columns (episode order of appearance)."""
    cols = {
        name: t[f"{c}.dataset.{name.replace('.', '_')}"].numpy()
        for name in features
        if f"{c}.dataset.{name.replace('.', '_')}" in t
    }
    ep = cols["episode_index"]
    order = list(dict.fromkeys(ep.tolist()))
    return [{name: v[ep == e] for name, v in cols.items()} for e in order]


def _language(
    ep: Mapping[str, np.ndarray], step: int, config: EmbodimentConfig, dataset: Mapping
) -> tuple[str, str]:
    """The instruction of a step: annotation column (or `task_index` when not stored) → tasks.jsonl."""
    key = config.language.modality_keys[0]
    entry = dataset["modality_json"].get("annotation", {}).get(key.removeprefix("annotation."), {})
    column = entry.get("original_key", key)
    note = ""
    if column not in ep:
        column, note = "task_index", f"{column} not stored; task_index used"
    tasks = {r["task_index"]: r["task"] for r in dataset["tasks_jsonl"]}
    return tasks[int(ep[column][step])], note


def _slice(rows: np.ndarray, modality_json: Mapping, modality: str, key: str) -> np.ndarray:
    e = modality_json[modality][key]
    return rows[..., e["start"] : e["end"]]


def _samples(proc: Gr00tProcessor, tag: str, cc: Mapping[str, Any], episodes: Sequence[Mapping]):
    """Cut each (episode, step) sample from the columns and process it; frames are blank (unused here)."""
    config, ds = proc.config(tag), cc["dataset"]
    mj = ds["modality_json"]
    video = {k: [np.zeros((*ds["features"][mj["video"][k].get("original_key", k)]["shape"][:2], 3), np.uint8)
                 for _ in config.video.delta_indices] for k in config.video.modality_keys}
    states, actions, processed, langs, notes = [], [], [], [], set()
    for s in cc["samples"]:
        ep, step = episodes[s["episode"]], s["step"]
        st_rows = ep["observation.state"][step + np.asarray(config.state.delta_indices)]
        ac_rows = ep["action"][step + np.asarray(config.action.delta_indices)]
        states.append({k: _slice(st_rows, mj, "state", k) for k in config.state.modality_keys})
        actions.append({k: _slice(ac_rows, mj, "action", k) for k in config.action.modality_keys})
        raw, note = _language(ep, step, config, ds)
        notes.add(note)
        processed.append(proc(tag, video, raw, states[-1], actions[-1]))
        langs.append((raw, processed[-1].language))
    return video, states, actions, processed, langs, "; ".join(n for n in notes if n)


def check_state_action(folder: Path) -> list[CompatRow]:
    """Statistics from the dataset columns, then per-sample processing, decoding and inference states."""
    meta, t = _load(folder, "state_action")
    rows = []
    for c, cc in meta["cases"].items():
        case, ds, tag = f"state_action/{c}", cc["dataset"], cc["embodiment_tag"]
        mj = ds["modality_json"]

        def cmp(name: str, ours, atol: float = 0.0, rtol: float = 0.0, case: str = case, c: str = c):
            ours = torch.from_numpy(ours) if isinstance(ours, np.ndarray) else ours
            return compare_tensor(case, name, ours, t[f"{c}.{name}"], atol=atol, rtol=rtol)

        config = EmbodimentConfig.from_dict(cc["modality_config"]).validate()
        config.check_modality_json(mj)
        rows.append(_exact(case, "modality_config", [json.dumps(config.to_dict(), sort_keys=True)],
                           [json.dumps(cc["modality_config"], sort_keys=True)]))
        episodes = _episodes(c, t, ds["features"])
        floats = [n for n, f in ds["features"].items() if "float" in f["dtype"]]
        stats, rel = compute_stats(episodes, floats), compute_relative_stats(episodes, mj, config)
        statistics = merge_statistics([embodiment_statistics(stats, rel, mj, config)])
        rows += _stats_rows(case, "stats_json", stats, cc["stats_json"])
        rows += _stats_rows(case, "relative_stats_json", rel, cc["relative_stats_json"])
        rows += _stats_rows(case, "processor_statistics", statistics, cc["processor_statistics"])
        settings = _settings(meta, cc.get("processor_overrides"))
        proc = Gr00tProcessor({tag: config}, {tag: statistics}, settings)
        norm = proc.normalizer(tag)
        rows += _layout_rows(case, norm, cc)
        video, states, actions, processed, langs, note = _samples(proc, tag, cc, episodes)
        ref_langs = [(s["language_raw"], s["language"]) for s in cc["samples"]]
        rows.append(_exact(case, "language", langs, ref_langs, note))
        episode_step = torch.tensor([[s["episode"], s["step"]] for s in cc["samples"]])
        rows.append(cmp("sample_episode_step", episode_step))
        batch_state = {k: np.stack([s[k] for s in states]) for k in config.state.modality_keys}
        rows += [cmp(f"raw_state.{k}", v) for k, v in batch_state.items()]
        for lay in norm.action_layout:
            rows.append(cmp(f"raw_action.{lay.key}", np.stack([a[lay.key] for a in actions])))
            if lay.relative_to is not None:
                pairs = zip(actions, states, strict=True)
                rel = [norm.relative_action(lay.key, a[lay.key], st) for a, st in pairs]
                rows.append(cmp(f"relative_action.{lay.key}", np.stack(rel)))
        out = collate(processed, load_tokenizer())
        rows += _assembly_rows(case, out, t, c, cc, norm.state_dim, norm.action_dim, config.action_horizon)
        for what, pred in (("decode", t[f"{c}.decode.model_output"]), ("roundtrip", t[f"{c}.action"])):
            decoded = proc.decode_action(tag, pred, batch_state)
            rows += [cmp(f"{what}.action.{k}", v, *DECODED_TOL) for k, v in decoded.items()]
            dtypes = sorted({str(v.dtype) for v in decoded.values()})
            rows.append(_exact(case, f"{what}.dtype", dtypes, ["float32"]))
        inf = {k: t[f"{c}.inference.raw_state.{k}"].numpy() for k in config.state.modality_keys}
        n_inf = len(next(iter(inf.values())))
        inf_state = np.stack([proc(tag, video, "", {k: v[i] for k, v in inf.items()}).state
                              for i in range(n_inf)])
        rows.append(cmp("inference.state", inf_state, NORMALIZED_ATOL))
    return rows


def _layout_rows(case: str, norm, cc: Mapping[str, Any]) -> list[CompatRow]:
    """Per-key modes, widths, columns and action configs; the bounds the normaliser uses."""
    config, p = norm.config, cc["padding"]
    ours_s = [(lay.key, lay.mode, lay.raw_dim, list(lay.columns)) for lay in norm.state_layout]
    ref_s = [(r["key"], r["mode"], r["raw_dim"], r["columns"]) for r in cc["state_layout"]]
    ours_a = [(lay.key, lay.mode, lay.raw_dim, list(lay.columns), config.action_config(lay.key).to_dict())
              for lay in norm.action_layout]
    ref_a = [(r["key"], r["mode"], r["dim"], r["columns"],
              {n: r[n] for n in ("rep", "type", "format", "state_key")}) for r in cc["action_layout"]]
    rows = [_exact(case, "state_layout", ours_s, ref_s), _exact(case, "action_layout", ours_a, ref_a),
            _exact(case, "padding", [norm.state_dim, norm.action_dim, config.action_horizon],
                   [p["state_dim"], p["action_dim"], p["action_horizon"]])]
    used = {f"{m}/{lay.key}": norm.statistics["relative_action" if lay.relative_to else m][lay.key]
            for m, layout in (("state", norm.state_layout), ("action", norm.action_layout)) for lay in layout}
    ref = {f"{m}/{k}": v for m in ("state", "action") for k, v in cc["norm_params"][m].items()}
    keys = [k for k in ref if k in used]
    rows.append(_exact(case, "norm_params.keys", sorted(used), sorted(ref)))
    for stat in ("min", "max", "mean", "std"):
        a = torch.cat([torch.tensor(used[k][stat], dtype=torch.float64).flatten() for k in keys])
        b = torch.cat([torch.tensor(ref[k][stat], dtype=torch.float64).flatten() for k in keys])
        atol, rtol = STAT_TOLERANCE[stat]
        rows.append(compare_tensor(case, f"norm_params.{stat}", a, b, atol=atol, rtol=rtol))
    return rows


def _assembly_rows(
    case: str,
    out: Mapping[str, Any],
    t: Mapping[str, torch.Tensor],
    c: str,
    cc: Mapping,
    state_dim: int,
    action_dim: int,
    h_e: int,
) -> list[CompatRow]:
    """Collated state/action/mask/id against the reference, padding compared exactly."""
    state, action, mask = out["state"], out["action"], out["action_mask"]
    pad_s = torch.zeros(state.shape[-1], dtype=torch.bool)
    pad_s[state_dim:] = True
    pad_a = torch.ones(action.shape[-2:], dtype=torch.bool)
    pad_a[:h_e, :action_dim] = False
    dtypes = cc["dtypes_in_reference"]
    return [
        compare_tensor(case, "state", state, t[f"{c}.state"], atol=NORMALIZED_ATOL, rtol=0.0),
        compare_tensor(case, "state.padding", state, t[f"{c}.state"], atol=0.0, rtol=0.0, mask=pad_s),
        compare_tensor(case, "action", action, t[f"{c}.action"], atol=NORMALIZED_ATOL, rtol=0.0),
        compare_tensor(case, "action.padding", action, t[f"{c}.action"], atol=0.0, rtol=0.0, mask=pad_a),
        compare_tensor(case, "action_mask", mask, t[f"{c}.action_mask"], atol=0.0, rtol=0.0),
        compare_tensor(case, "embodiment_id", out["embodiment_id"], t[f"{c}.embodiment_id"]),
        _exact(
            case,
            "dtypes",
            [str(out[k].dtype) for k in ("state", "action", "action_mask", "embodiment_id")],
            [dtypes[k] for k in ("state", "action", "action_mask", "embodiment_id")],
        ),
    ]


def check_processor_fixture(folder: Path) -> list[CompatRow]:
    """All rows of a processor fixture folder (`prompt`, `images`, `state_action` .json + .safetensors)."""
    folder = Path(folder)
    for stem in ("prompt", "images", "state_action"):
        for ext in ("json", "safetensors"):
            if not (folder / f"{stem}.{ext}").is_file():
                raise SvmsError(
                    f"{folder} is not a processor fixture: {stem}.{ext} is missing (a processor "
                    "fixture holds prompt, images and state_action .json + .safetensors)."
                )
    return check_images(folder) + check_prompt(folder) + check_state_action(folder)
