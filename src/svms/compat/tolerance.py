"""One row of a parity report and the tolerance rule every checker uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CompatRow:
    """The comparison of one output tensor of one fixture case against the reference.

    `max_abs_diff` is set for floating tensors, `mismatches` (count of differing elements) for
    integer, bool and string outputs.
    """

    case: str
    name: str
    passed: bool
    max_abs_diff: float | None = None
    mismatches: int | None = None
    note: str = ""

    def format(self) -> str:
        if self.max_abs_diff is not None:
            what = f"max|d|={self.max_abs_diff:.3e}"
        else:
            what = f"mismatches={self.mismatches}"
        status = "pass" if self.passed else "FAIL"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.case:<28} {self.name:<32} {what:<22} {status}{note}"


def compare_tensor(
    case: str,
    name: str,
    ours: torch.Tensor,
    ref: torch.Tensor,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    mask: torch.Tensor | None = None,
    note: str = "",
) -> CompatRow:
    """Compare `ours` with `ref`: floats pass when |d| <= atol + rtol*|ref|, others exactly.

    `mask` (broadcastable to the tensors, bool) restricts the comparison to selected elements.
    A shape mismatch is a failure with every element counted as a mismatch.
    """
    ours = ours.detach().cpu()
    ref = ref.detach().cpu()
    if ours.shape != ref.shape:
        return CompatRow(case, name, False, mismatches=ref.numel(),
                         note=f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    if mask is not None:
        mask = mask.to(torch.bool).cpu().expand_as(ref)
        ours, ref = ours[mask], ref[mask]
    if ref.is_floating_point():
        diff = (ours.double() - ref.double()).abs()
        bound = atol + rtol * ref.double().abs()
        passed = bool((diff <= bound).all())  # any NaN fails
        max_diff = float(diff.nan_to_num(0.0).max()) if diff.numel() else 0.0
        return CompatRow(case, name, passed, max_abs_diff=max_diff, note=note)
    mismatches = int((ours != ref).sum())
    return CompatRow(case, name, mismatches == 0, mismatches=mismatches, note=note)
