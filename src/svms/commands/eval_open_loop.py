"""`svms eval open-loop`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class EvalOpenLoop:
    """Open-loop action error of a checkpoint on recorded episodes (spec §9.2, held-out by default).

    Queries the policy every --action-horizon steps from the recorded observation, tiles the chunks,
    and compares them with the recorded actions in physical units: MSE and MAE overall, per action
    key and per task (the simulated task, e.g. Lift, for `svms sim generate` data; else the episode's task
    string); trajectory plots; SVMS router heatmap and sheaf residuals. Writes OUT/metrics.json. Episodes
    shorter than one action chunk are skipped with a warning; a checkpoint whose embodiment, keys or widths
    do not fit the dataset is an error naming both.
    """

    dataset: Path
    """LeRobot v2 dataset folder"""
    out: Path
    """output folder (metrics.json, figures/)"""
    checkpoint: Path | None = None
    """checkpoint folder (or a run folder: its newest checkpoint)"""
    server: str | None = None
    """HOST:PORT of a GR00T policy server (ours, or NVIDIA's of either era) instead of --checkpoint"""
    wire: Literal["auto", "npsave", "msgpack-numpy"] = "auto"
    """--server array form: auto (settle on the server's era), npsave (N1.6 era) or msgpack-numpy (current)"""
    sim_wrapper: bool = False
    """--server runs GR00T's simulation wrapper (flat video.<key> / state.<key> observations)"""
    api_token: str | None = None
    """--server's API token (sent in every request)"""
    episodes: tuple[int, ...] | None = None
    """episode indices (default: the --split episodes); metrics.json then says "split": "episodes" and lists them"""
    split: str = "heldout"
    """split of meta/info.json to evaluate, or `all` for every episode (a dataset without the split is an error)"""
    steps: int = 200
    """steps per episode (min with the episode length)"""
    action_horizon: int | None = None
    """actions used from each chunk before the next query (default: the policy's horizon)"""
    embodiment_tag: str | None = None
    seed: int = 0
    """seed of the sampler's noise (results reproduce)"""
    device: str = "auto"
    compile: bool = False
    """run the checkpoint's model compiled (torch.compile; CUDA graphs on CUDA): the first query of each
    input shape compiles, the rest run faster"""
    plots: int = 3
    """episodes to plot"""

    def run(self) -> int:
        import sys
        import warnings

        from rich.console import Console
        from rich.table import Table

        from svms.eval.open_loop import run_open_loop

        console = Console()

        def progress(done: int, total: int, result) -> None:
            console.print(f"episode {done}/{total} (index {result.episode_index}): "
                          f"mse {result.errors()['mse']:.5f}", highlight=False)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = run_open_loop(self.checkpoint, self.dataset, self.out, server=self.server, wire=self.wire,
                              sim_wrapper=self.sim_wrapper, api_token=self.api_token,
                              episodes=None if self.episodes is None else list(self.episodes), split=self.split,
                              steps=self.steps, action_horizon=self.action_horizon,
                              embodiment_tag=self.embodiment_tag, seed=self.seed, device=self.device,
                              plots=self.plots, progress=progress, compile=self.compile)
        for w in dict.fromkeys(str(w.message) for w in caught):
            print(f"warning: {w}", file=sys.stderr)
        chosen = (f"--episodes {' '.join(map(str, m['requested_episodes']))}" if m.get("requested_episodes") is not None
                  else f"{m['split']} episodes")
        table = Table("scope", "MSE", "MAE", title=f"open-loop error ({chosen}, physical units)")
        table.add_row("overall", f"{m['overall']['mse']:.5f}", f"{m['overall']['mae']:.5f}")
        for key, v in m["per_key"].items():
            table.add_row(key, f"{v['mse']:.5f}", f"{v['mae']:.5f}")
        for task, v in m["per_task"].items():
            table.add_row(f"task: {task}", f"{v['mse']:.5f}", f"{v['mae']:.5f}")
        console.print(table)
        svms = m.get("svms")
        if svms is not None:
            res = svms["sheaf_residual"]
            console.print(f"SVMS: sheaf residual mean {res['mean']:.4g} (min {res['min']:.4g}, max {res['max']:.4g})",
                          highlight=False)
            for kind, weights in svms["router_mean"].items():
                shares = ", ".join(f"{stream} {w:.2f}" for stream, w in weights.items())
                console.print(f"SVMS: router weights on {kind} tokens: {shares}", highlight=False)
            for stream, a in (svms.get("aux") or {}).items():
                console.print(f"SVMS: aux head {stream}: balanced accuracy {a['balanced_accuracy']:.3f} over "
                              f"{a['labelled_tokens']} labelled tokens", highlight=False)
        console.print(f"metrics: {self.out / 'metrics.json'}")
        return 0
