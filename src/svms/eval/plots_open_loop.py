"""Figures of an open-loop evaluation: recorded vs predicted actions, the router heatmap, the sheaf residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_trajectory(result, path: Path) -> None:
    """One subplot per action dimension: recorded (black), predicted (blue), query steps (red dots)."""
    dims = result.recorded.shape[1]
    cols = min(4, dims)
    rows = -(-dims // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False)
    t = np.arange(result.n_steps)
    names = [f"{k}[{i}]" for k, (a, b) in result.key_columns.items() for i in range(b - a)]
    for d in range(rows * cols):
        ax = axes[d // cols][d % cols]
        if d >= dims:
            ax.axis("off")
            continue
        ax.plot(t, result.recorded[:, d], color="black", lw=1, label="recorded")
        ax.plot(t, result.predicted[:, d], color="tab:blue", lw=1, label="predicted")
        ax.plot(result.query_steps, result.recorded[result.query_steps, d], "o", color="red", ms=3, label="query")
        ax.set_title(names[d], fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"episode {result.episode_index}: {result.task}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_router_heatmap(diag: dict[str, Any], path: Path, max_tokens: int = 80) -> None:
    """Router weights over one prompt's text tokens (image tokens summarised in one column)."""
    w, image, tokens = diag["weights"], np.asarray(diag["image"]), diag["tokens"]
    cols, labels = [], []
    if image.any():
        cols.append(w[image].mean(0))
        labels.append(f"<{int(image.sum())} image tokens>")
    for i in np.flatnonzero(~image)[:max_tokens]:
        cols.append(w[i])
        labels.append(tokens[i].replace("Ġ", " ").replace("Ċ", "\\n"))
    matrix = np.stack(cols, axis=1)  # (S, N)
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(labels)), 2.2))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(diag["streams"])), diag["streams"], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.02)
    ax.set_title("SVMS router weight per token", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_residuals(residuals: list[float], episodes: list[int], path: Path) -> None:
    """The sheaf residual (normalised stream disagreement) of each evaluated episode's first observation:
    a histogram, and the values per episode (which episodes the streams disagree on)."""
    fig, (hist, per) = plt.subplots(1, 2, figsize=(9, 3))
    hist.hist(residuals, bins=min(20, max(5, len(residuals))), color="tab:purple")
    hist.set_xlabel("sheaf residual")
    hist.set_ylabel("episodes")
    per.bar(range(len(residuals)), residuals, color="tab:purple")
    per.set_xticks(range(len(residuals)), [str(e) for e in episodes], fontsize=6,
                   rotation=90 if len(residuals) > 20 else 0)
    per.set_xlabel("episode")
    per.set_ylabel("sheaf residual")
    fig.suptitle(f"sheaf residual over {len(residuals)} episodes: mean {np.mean(residuals):.4g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
