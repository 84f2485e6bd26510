"""Counting what a call dispatches: kernels, GPU-sync ops and tensors made from host data (issue 18).

A `TorchDispatchMode` sees every aten op below autograd, on any device, so the counts taken on CPU are the
ones an accelerator would launch. A kernel is any op but a view or an allocation. A sync op makes a GPU wait
for the host: `_local_scalar_dense` (`item`, `float`, `int`, `bool` of a tensor), `nonzero`, boolean indexing,
`masked_select`, `repeat_interleave` without a size, `unique`. A host-data op (`torch.tensor(...)` of Python
values) is a host->device copy on an accelerator.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
ALLOCATIONS = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
               aten.new_empty.default, aten.new_empty_strided.default, aten.lift_fresh.default,
               aten.detach.default, aten.alias.default, aten._unsafe_view.default}
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
            aten.repeat_interleave.Tensor, aten._unique2.default, aten.unique_dim.default,
            aten.unique_consecutive.default}
HOST_DATA = {aten.lift_fresh.default, aten.lift_fresh_copy.default}


def is_sync(func, args) -> bool:
    """Whether this op, with these arguments, makes a GPU wait for the host."""
    if func in SYNC_OPS:
        return True
    if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
        return any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None)
    return False


class OpCounter(TorchDispatchMode):
    """Counts kernels, sync ops and host-data tensors, each under the label on top of `labels` (a row of a
    per-module table; `label(name)` pushes one for a block of code)."""

    def __init__(self, default_label: str = "other") -> None:
        super().__init__()
        self.labels: list[str] = [default_label]
        self.kernels: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()
        self.host: Counter[str] = Counter()
        self.sync_names: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        label = self.labels[-1]
        if func in HOST_DATA:
            self.host[label] += 1
        if not (func in ALLOCATIONS or func.is_view):
            self.kernels[label] += 1
        if is_sync(func, args):
            self.syncs[label] += 1
            self.sync_names[f"{label}: {func}"] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def label(self, name: str) -> Iterator[None]:
        self.labels.append(name)
        try:
            yield
        finally:
            self.labels.pop()

    @property
    def total_kernels(self) -> int:
        return sum(self.kernels.values())

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def total_host(self) -> int:
        return sum(self.host.values())
