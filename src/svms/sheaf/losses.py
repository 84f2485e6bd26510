"""The SVMS training signals: consistency (with anti-collapse) and auxiliary stream supervision."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalised_disagreement(y_tail: torch.Tensor, y_head: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-token ||delta x||^2 / sum_e (||F_u x_u||^2 + ||F_w x_w||^2), in [0, 2].

    Scaling every restriction map by c scales numerator and denominator by c^2, so shrinking the
    maps cannot lower it. Inputs (..., E, d_overlap); output (...).
    """
    y_tail, y_head = y_tail.float(), y_head.float()
    num = (y_tail - y_head).pow(2).sum(dim=(-2, -1))
    den = y_tail.pow(2).sum(dim=(-2, -1)) + y_head.pow(2).sum(dim=(-2, -1))
    return num / (den + eps)


def collapse_penalty(projections: torch.Tensor, mask: torch.Tensor, std_floor: float) -> torch.Tensor:
    """Penalty on restriction maps that make their outputs constant or low-rank across tokens.

    A ratio can still reach 0 when both sides of every edge become the same constant, or when all
    maps keep only a direction the streams already agree on. Per incidence (a map applied to its
    stream), over the valid tokens: a hinge `relu(1 - std_k / floor)` on each overlap coordinate's
    standard deviation (VICReg's variance term, made relative to the floor) plus the mean squared
    off-diagonal correlation between coordinates (1 for rank-1 outputs, ~0 for independent ones).
    projections (B, T, K, d_overlap), mask (B, T) -> scalar.
    """
    y = projections.float()[mask]  # (N, K, d)
    n = y.shape[0]
    if n < 2:
        return projections.new_zeros((), dtype=torch.float32)
    y = y - y.mean(0, keepdim=True)
    var = y.pow(2).sum(0) / (n - 1)  # (K, d)
    std = (var + 1e-8).sqrt()
    hinge = F.relu(1.0 - std / std_floor).mean()
    z = (y / std).transpose(0, 1)  # (K, N, d)
    corr = z.transpose(1, 2) @ z / (n - 1)  # (K, d, d)
    d = corr.shape[-1]
    off = corr - torch.diag_embed(torch.diagonal(corr, dim1=-2, dim2=-1))
    decorrelation = off.pow(2).sum(dim=(-2, -1)).mean() / (d * (d - 1))
    return hinge + decorrelation


def aux_loss_and_metrics(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, names: tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """Binary cross-entropy per stream over labelled valid tokens (-100 = ignore), averaged over
    the streams that have labels, plus accuracy and balanced accuracy per stream.

    logits, labels (B, T, S); mask (B, T). Balanced accuracy is the mean of the true-positive and
    true-negative rates over the classes present, so rare positives cannot hide behind accuracy.
    """
    valid = (labels != -100) & mask.unsqueeze(-1)
    target = labels.clamp(0, 1).float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    losses, metrics = [], {}
    pred = logits > 0
    for i, name in enumerate(names):
        v = valid[..., i]
        n = v.sum()
        if n > 0:
            losses.append(bce[..., i][v].mean())
        t, p = target[..., i][v].bool(), pred[..., i][v]
        n_pos, n_neg = t.sum(), (~t).sum()
        tpr = (p & t).sum() / n_pos.clamp_min(1)
        tnr = (~p & ~t).sum() / n_neg.clamp_min(1)
        classes = (n_pos > 0).float() + (n_neg > 0).float()
        balanced = (tpr * (n_pos > 0) + tnr * (n_neg > 0)) / classes.clamp_min(1)
        metrics[name] = {
            "accuracy": (p == t).float().mean() if n > 0 else torch.tensor(float("nan")),
            "balanced_accuracy": balanced if n > 0 else torch.tensor(float("nan")),
            "positive_rate": t.float().mean() if n > 0 else torch.tensor(float("nan")),
            "count": n,
        }
    loss = torch.stack(losses).mean() if losses else logits.new_zeros((), dtype=torch.float32) * logits.sum()
    return loss, metrics
