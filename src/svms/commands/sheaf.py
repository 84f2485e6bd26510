"""`svms sheaf-demo`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SheafDemo:
    """Train SheafStreams on a synthetic routing task and print how it learns (seconds on a CPU)."""

    steps: int = 300
    """optimizer steps"""
    d_model: int = 64
    """width of the synthetic backbone features"""
    n_streams: int = 3
    """streams (and token types to route)"""
    seed: int = 0
    log_every: int = 50

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        from svms.sheaf.toy import baseline_mse, run_toy

        console = Console()
        identity = baseline_mse(self.d_model, self.n_streams, seed=self.seed)
        console.print(f"task: move each token by its type's linear map; identity (SVMS at init) "
                      f"error = {identity:.4f}")
        table = Table("step", "task mse", "vs identity", "sheaf loss", "residual", "alpha",
                      "own-stream weight", "aux bal. acc (min)")

        def log(r) -> None:
            table.add_row(str(r.step), f"{r.task_mse:.4f}", f"{r.task_mse / identity:.2f}x",
                          f"{r.sheaf_loss:.3f}", f"{r.residual:.4f}", f"{r.alpha:.4f}",
                          f"{r.own_stream_weight:.2f}", f"{min(r.aux_balanced_accuracy.values()):.2f}")
            console.print(f"step {r.step}/{self.steps}  task mse {r.task_mse:.4f}", highlight=False)

        run_toy(steps=self.steps, d_model=self.d_model, n_streams=self.n_streams, seed=self.seed,
                log_every=self.log_every, on_log=log)
        console.print(table)
        return 0
