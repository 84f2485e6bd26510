"""Open-loop evaluation (spec §9.2): replay recorded episodes, query the policy every A steps from
the recorded observation, tile the predicted chunks and compare them with the recorded actions in
physical units.

Differences from the reference, on purpose: an explicit episode list or split (held-out episodes by
default; a dataset without the requested split is an error, and evaluating every episode, training
episodes included, takes an explicit `split="all"` / `--split all`), a seeded sampler (results
reproduce), errors per action key and per task as well as overall, and the SVMS router/sheaf
diagnostics on the same observations.

Per task means per simulated task (`sim.task_index`, e.g. Lift) in datasets from `svms sim generate`,
whose instructions are phrased differently in every episode; the same names key closed-loop results,
so both line up in `svms eval compare`. Other datasets group by the episode's first task string.
Episodes shorter than one action chunk are skipped with a warning (listed under `skipped`); if none
is long enough that is an error, as is a checkpoint whose keys or widths do not fit the dataset.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svms.data.aux_labels import prompt_aux_labels
from svms.data.lerobot.meta import load_meta, split_episodes
from svms.data.lerobot.reader import Gr00tLeRobotDataset
from svms.data.prompt import load_tokenizer
from svms.errors import SvmsError
from svms.eval.plots_open_loop import plot_residuals, plot_router_heatmap, plot_trajectory
from svms.policy import Gr00tPolicy, checkpoint_processor
from svms.policy.protocol import batch_of_one
from svms.policy.remote import PolicyClient, parse_address
from svms.sim.generate import TASK_COLUMN
from svms.sim.tasks import TASKS


@dataclass
class EpisodeResult:
    episode_index: int
    task: str
    n_steps: int
    query_steps: list[int]
    predicted: np.ndarray  # (n, D) concatenated action keys
    recorded: np.ndarray  # (n, D)
    key_columns: dict[str, tuple[int, int]] = field(default_factory=dict)

    def errors(self) -> dict[str, Any]:
        diff = self.predicted - self.recorded
        per_key = {k: {"mse": float(np.mean(diff[:, a:b] ** 2)), "mae": float(np.mean(np.abs(diff[:, a:b])))}
                   for k, (a, b) in self.key_columns.items()}
        return {"episode_index": self.episode_index, "task": self.task, "n_steps": self.n_steps,
                "mse": float(np.mean(diff**2)), "mae": float(np.mean(np.abs(diff))), "per_key": per_key}


def task_name(dataset, pos: int) -> str:
    """The episode's task for per-task results: the simulated task name when the parquet has the
    `sim.task_index` column (`svms sim generate`), else the first task string of episodes.jsonl."""
    meta = dataset.meta
    if TASK_COLUMN not in meta.features:
        return dataset.episode_task(pos)
    path = meta.data_path(meta.episodes[pos].index)
    values = meta.read_episode(meta.episodes[pos].index, [TASK_COLUMN])[TASK_COLUMN]
    names = list(TASKS)
    if len(values) == 0 or not 0 <= int(values[0]) < len(names):
        found = "no rows" if len(values) == 0 else f"task index {int(values[0])}"
        raise SvmsError(f"{path}: column {TASK_COLUMN!r} holds {found}, not a simulated task (0..{len(names) - 1} = "
                        f"{', '.join(names)}); regenerate the dataset with `svms sim generate` or drop the column.")
    return names[int(values[0])]


def sample_observation(policy, cfg, raw) -> dict[str, Any]:
    """A dataset sample's observation (the policy's cameras and state keys) as the policy contract's batch of
    one."""
    return batch_of_one({k: np.stack(raw.video[k]) for k in cfg.video.modality_keys},
                        {k: raw.state[k] for k in cfg.state.modality_keys}, raw.language, policy.language_key)


def evaluate_episode(policy, dataset, pos: int, steps: int, action_horizon: int) -> EpisodeResult:
    """Query every `action_horizon` steps, keep the first `action_horizon` actions of each chunk."""
    cfg = policy.get_modality_config()
    length = dataset.episode_length(pos)
    n = min(steps, length)
    if n < 1:
        raise SvmsError(f"episode {dataset.meta.episodes[pos].index} is empty")
    chunks: list[np.ndarray] = []
    instruction = ""  # the first query's: the task when episodes.jsonl names none
    queries = list(range(0, n, action_horizon))
    for i in queries:
        raw = dataset.sample_at(pos, i)
        observation = sample_observation(policy, cfg, raw)
        action, _ = policy.get_action(observation)
        instruction = instruction or raw.language
        chunks.append(np.concatenate([action[k][0][:action_horizon] for k in cfg.action.modality_keys], axis=-1))
    predicted = np.concatenate(chunks)[:n]
    recorded_keys = dataset.episode_actions(pos)
    recorded = np.concatenate([recorded_keys[k][:n] for k in cfg.action.modality_keys], axis=-1)
    columns, start = {}, 0
    for k in cfg.action.modality_keys:
        width = recorded_keys[k].shape[-1]
        columns[k] = (start, start + width)
        start += width
    task = task_name(dataset, pos) or instruction
    return EpisodeResult(dataset.meta.episodes[pos].index, task, n, queries, predicted, recorded.astype(np.float32),
                         columns)


def summarise(results: list[EpisodeResult]) -> dict[str, Any]:
    """Overall, per-key and per-task MSE/MAE (means over all steps and dims, pooled over episodes)."""
    pred = np.concatenate([r.predicted for r in results])
    rec = np.concatenate([r.recorded for r in results])
    diff = pred - rec
    per_key = {k: {"mse": float(np.mean(diff[:, a:b] ** 2)), "mae": float(np.mean(np.abs(diff[:, a:b])))}
               for k, (a, b) in results[0].key_columns.items()}
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_task[r.task].append(r)
    per_task = {}
    for task, rs in sorted(by_task.items()):
        d = np.concatenate([r.predicted - r.recorded for r in rs])
        per_task[task] = {"mse": float(np.mean(d**2)), "mae": float(np.mean(np.abs(d))), "episodes": len(rs)}
    return {"overall": {"mse": float(np.mean(diff**2)), "mae": float(np.mean(np.abs(diff)))},
            "per_key": per_key, "per_task": per_task}


def _non_finite(value: Any, where: str = "") -> str | None:
    """The first field of a JSON-like value holding NaN or ±Inf (as a path such as `per_key.arm.mse`)."""
    if isinstance(value, float):
        return None if np.isfinite(value) else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def write_metrics(out: Path, payload: dict[str, Any]) -> Path:
    """OUT/metrics.json as strict JSON; a non-finite value is an SvmsError naming the episode (or field)."""
    for result in payload.get("episodes") or []:
        field_ = _non_finite(result)
        if field_ is not None:
            raise SvmsError(
                f"open-loop error of episode {result['episode_index']} is not finite ({field_} is NaN or Inf): "
                "its recorded or predicted actions are huge or NaN, so the squared error overflows. metrics.json "
                "must be strict JSON and was not written; check the dataset with `svms data validate "
                f"{payload.get('dataset', 'DIR')}` (it warns about extreme values), then fix that episode or "
                "leave it out (--episodes).")
    field_ = _non_finite(payload)
    if field_ is not None:
        raise SvmsError(f"open-loop metrics field {field_} is NaN or Inf; metrics.json must be strict JSON and "
                        "was not written. Check the dataset with `svms data validate`.")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    tmp = path.with_name("metrics.json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def check_dataset_fits(config, tag: str, statistics: dict[str, Any] | None, meta, source: str) -> None:
    """SvmsError unless the dataset's meta/modality.json has every camera, state and action key of the policy's
    modality config and, with the checkpoint's `statistics`, each state/action key has the trained width."""
    path = meta.root / "meta" / "modality.json"
    for part in ("video", "state", "action"):
        wanted = list(getattr(config, part).modality_keys)
        declared = list(meta.modality.get(part, {}))
        missing = [k for k in wanted if k not in declared]
        if missing:
            raise SvmsError(
                f"{source} expects the {part} keys {wanted} of embodiment {tag!r}, but {path} declares {declared} "
                f"(missing {missing}): the checkpoint and the dataset are of different embodiments. Evaluate a "
                f"checkpoint trained on this kind of data (`svms train --dataset {meta.root} ...`), pick the "
                "checkpoint's tag for this robot with --embodiment-tag, or rename the keys in modality.json.")
    for part in ("state", "action"):
        for key in getattr(config, part).modality_keys if statistics is not None else ():
            trained = len((statistics.get(part) or {}).get(key, {}).get("mean", []))
            entry = meta.modality[part][key]
            width = int(entry.get("end", 0)) - int(entry.get("start", 0))
            if trained and width != trained:
                raise SvmsError(
                    f"{path}: {part} key {key!r} spans {width} values (start {entry.get('start')}, end "
                    f"{entry.get('end')}) but {source} was trained with {trained} for embodiment {tag!r} (its "
                    f"statistics.json): the dataset's {part} layout differs from the checkpoint's. Fix start/end "
                    "in modality.json if they are wrong, or evaluate a checkpoint trained on this dataset.")


def long_enough(dataset, chosen: list[int], horizon: int, where: str) -> tuple[list[int], list[dict[str, Any]]]:
    """The episodes at least one action chunk (`horizon` steps) long, and the skipped ones (each warned about);
    SvmsError when none is long enough."""
    lengths = {i: dataset.episode_length(dataset.position_of(i)) for i in chosen}
    short = [i for i in chosen if lengths[i] < horizon]
    listed = ", ".join(f"{i} ({lengths[i]} steps)" for i in short[:10]) + (", ..." if len(short) > 10 else "")
    if short and len(short) == len(chosen):
        raise SvmsError(
            f"{dataset.meta.root}: none of the {len(chosen)} episode(s) of {where} is at least one action chunk "
            f"({horizon} steps, the policy's action horizon) long: episodes {listed}. Open-loop error compares "
            "whole chunks with the recorded actions; evaluate longer episodes (--episodes, --split) or record "
            "longer ones.")
    if short:
        warnings.warn(f"{dataset.meta.root}: skipping {len(short)} episode(s) shorter than one action chunk "
                      f"({horizon} steps): {listed}", stacklevel=2)
    skipped = [{"episode_index": i, "length": lengths[i], "reason": f"shorter than {horizon} steps"} for i in short]
    return [i for i in chosen if lengths[i] >= horizon], skipped


def svms_diagnostics(policy, observation: dict[str, Any]) -> dict[str, Any] | None:
    """Router weights per token for one observation (SVMS checkpoints only): token strings, weights
    (L, S), image-token mask, the per-sample sheaf residual and, when the model has auxiliary heads, their
    accuracy per stream against the prompt's keyword labels (`svms.data.aux_labels`)."""
    model = policy.model
    if model.svms is None:
        return None
    batch, _ = policy.prepare(observation)
    if model.svms.aux_heads is not None:
        batch["aux_labels"] = prompt_aux_labels(batch["input_ids"], batch["attention_mask"]).to(
            batch["input_ids"].device)
    with torch.no_grad():
        _, _, out = model.encode(batch)

    ids = batch["input_ids"][0].tolist()
    valid = batch["attention_mask"][0].bool().tolist()
    return {
        "tokens": [t for t, v in zip(load_tokenizer().convert_ids_to_tokens(ids), valid, strict=True) if v],
        "weights": out.router_weights[0][batch["attention_mask"][0].bool()].float().cpu().numpy(),
        "image": [i == model.backbone.image_token_index for i, v in zip(ids, valid, strict=True) if v],
        "residual": float(out.sheaf_residual[0]),
        "streams": list(model.svms.config.stream_names),
        "aux": {stream: {k: float(v) for k, v in m.items()} for stream, m in (out.aux_metrics or {}).items()},
    }


def aux_summary(per_prompt: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per stream: accuracy and balanced accuracy of the auxiliary heads, the mean over the evaluated prompts
    that have labelled tokens for that stream, and the labelled token count."""
    summary = {}
    for stream in dict.fromkeys(s for m in per_prompt for s in m):
        rows = [m[stream] for m in per_prompt if stream in m and m[stream]["count"] > 0]
        summary[stream] = {
            "accuracy": float(np.mean([r["accuracy"] for r in rows])) if rows else float("nan"),
            "balanced_accuracy": float(np.mean([r["balanced_accuracy"] for r in rows])) if rows else float("nan"),
            "positive_rate": float(np.mean([r["positive_rate"] for r in rows])) if rows else float("nan"),
            "labelled_tokens": int(sum(r["count"] for r in rows)),
            "prompts": len(rows),
        }
    return summary


ALL = "all"  # the split name that means every episode


def chosen_split(meta, split: str) -> str | None:
    """The split to read (None = every episode, only when asked for with "all"); SvmsError when the dataset lacks
    it: evaluating training episodes by accident would flatter the policy, so it takes an explicit --split all."""
    if split == ALL:
        return None
    splits = meta.info.get("splits") or {}
    if split not in splits:
        raise SvmsError(
            f"{meta.root / 'meta' / 'info.json'} has no split {split!r} (its splits: "
            f"{', '.join(sorted(splits)) or 'none'}), so open-loop evaluation does not know which episodes are "
            f"held out. Pass --split all to evaluate every episode (training episodes included), --split with one "
            f"of its splits, or --episodes; or regenerate the dataset with held-out episodes "
            f"(`svms sim generate --heldout N`).")
    return split


def run_open_loop(checkpoint: Path | None, dataset_dir: Path, out: Path, *, server: str | None = None,
                  wire: str = "auto", sim_wrapper: bool = False, api_token: str | None = None,
                  episodes: list[int] | None = None,
                  split: str = "heldout", steps: int = 200, action_horizon: int | None = None,
                  embodiment_tag: str | None = None, seed: int = 0, device: str = "auto", plots: int = 3,
                  progress=None, compile: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint (or a policy server at `server` = HOST:PORT, reached by a `PolicyClient` with
    `wire`, `sim_wrapper` and `api_token`) on a dataset's episodes: `episodes`,
    else the `split` of meta/info.json ("all": every episode); writes OUT/metrics.json and OUT/figures/*.png.
    `compile` runs a checkpoint's model compiled (`Gr00tPolicy(compile=True)`)."""
    if (checkpoint is None) == (server is None):
        raise SvmsError("pass either --checkpoint DIR or --server HOST:PORT (exactly one)")
    meta = load_meta(dataset_dir)
    chosen = list(episodes) if episodes is not None else split_episodes(meta, chosen_split(meta, split))
    policy, tag, statistics, settings = open_policy(checkpoint, server, meta, wire=wire, sim_wrapper=sim_wrapper,
                                                    api_token=api_token, embodiment_tag=embodiment_tag,
                                                    device=device, seed=seed, compile=compile)
    config = policy.get_modality_config()
    horizon = config.action_horizon
    a = horizon if action_horizon is None else action_horizon
    if not 1 <= a <= horizon:
        raise SvmsError(f"--action-horizon {a} must lie in 1..{horizon} (the policy's action horizon)")
    dataset = Gr00tLeRobotDataset(dataset_dir, tag, config=config, statistics=statistics, settings=settings,
                                  episodes=chosen, allow_padding=True)
    where = "--episodes" if episodes is not None else "the dataset" if split == ALL else f"split {split!r}"
    chosen, skipped = long_enough(dataset, chosen, horizon, where)
    results, diagnostics = [], []
    for n, index in enumerate(chosen):
        pos = dataset.position_of(index)
        results.append(evaluate_episode(policy, dataset, pos, steps, a))
        if progress is not None:
            progress(n + 1, len(chosen), results[-1])
        if server is None:  # SVMS diagnostics need the model in this process
            diag = svms_diagnostics(policy, sample_observation(policy, config, dataset.sample_at(pos, 0)))
            if diag is not None:
                diagnostics.append(diag)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for r in results[:plots]:
        plot_trajectory(r, figures / f"trajectory_episode_{r.episode_index}.png")
    payload = {"checkpoint": str(checkpoint) if server is None else f"server:{server}", "dataset": str(dataset_dir),
               "split": "episodes" if episodes is not None else split,
               "requested_episodes": None if episodes is None else [int(e) for e in episodes],
               "action_horizon": a, "steps": steps, "seed": seed, **summarise(results),
               "episodes": [r.errors() for r in results], "skipped": skipped,
               "svms": svms_figures(diagnostics, [r.episode_index for r in results], figures)}
    write_metrics(out, payload)
    return payload


def open_policy(checkpoint: Path | None, server: str | None, meta, *, wire: str, sim_wrapper: bool,
                api_token: str | None, embodiment_tag: str | None, device: str, seed: int, compile: bool):
    """(policy, tag, statistics, settings): a policy server through a `PolicyClient`, or a checkpoint's
    `Gr00tPolicy` with its processor's statistics and settings; either checked against the dataset first."""
    if server is not None:
        policy = PolicyClient(*parse_address(server), wire=wire, sim_wrapper=sim_wrapper, api_token=api_token)
        tag = embodiment_tag or "new_embodiment"
        check_dataset_fits(policy.get_modality_config(), tag, None, meta, f"the policy server at {server}")
        return policy, tag, None, None
    folder, processor, tag = checkpoint_processor(checkpoint, embodiment_tag)
    statistics = processor.statistics[tag]
    check_dataset_fits(processor.config(tag), tag, statistics, meta, f"checkpoint {folder}")
    policy = Gr00tPolicy.from_checkpoint(folder, tag, device=device, seed=seed, compile=compile)
    return policy, tag, statistics, processor.settings


def svms_figures(diagnostics: list[dict[str, Any]], episode_indices: list[int], figures: Path
                 ) -> dict[str, Any] | None:
    """The router heatmap (first episode) and sheaf residuals (every episode) as PNGs, and their summary for
    metrics.json; None without SVMS."""
    if not diagnostics:
        return None
    heatmap = diagnostics[0]
    residuals = [d["residual"] for d in diagnostics]
    aux = [d["aux"] for d in diagnostics]
    plot_router_heatmap(heatmap, figures / "router_heatmap.png")
    plot_residuals(residuals, episode_indices, figures / "sheaf_residuals.png")
    w, image = heatmap["weights"], np.asarray(heatmap["image"])
    return {
        "router_mean": {kind: {s: float(w[m, i].mean()) for i, s in enumerate(heatmap["streams"])}
                        for kind, m in (("image", image), ("text", ~image)) if m.any()},
        "sheaf_residual": {"mean": float(np.mean(residuals)), "min": float(np.min(residuals)),
                           "max": float(np.max(residuals)), "values": residuals},
        "aux": aux_summary(aux) if any(aux) else None,
    }
