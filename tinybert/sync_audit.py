"""Counting the operations that make the host wait for the device (host syncs), to keep a training step free of them.

Why it matters: on CUDA the host only queues kernels and runs ahead of the GPU. An op whose result the host needs,
a Python number read from a tensor (`.item()`, `int(t)`, `bool(t)`, `if t.any():`) or an output whose *shape*
depends on the data (`nonzero`, boolean indexing, `unique`, `bincount`, ...), blocks the host until the device
has finished everything queued before it; the GPU then idles while the host queues the next kernels. For a small
model (hundreds of short kernels per step) a few syncs per step cost a large part of the step.

How: a TorchDispatchMode sees every aten op a function runs, forward and backward, with its arguments, so the
count needs no GPU: on a CPU run the CPU stands in for the device (tests/test_sync_free.py asserts zero for one
whole training step); where any op touched an accelerator tensor (tinybert.gpu_check on CUDA) only the ops on
accelerator tensors count, since host-side tensors (an optimiser's CPU step counter) cost no sync there.

What it cannot see: a sync made inside one kernel's C++ implementation (the dispatch mode sees the op, not what
its kernel does) and copies outside aten. On a GPU, `torch.cuda.set_sync_debug_mode("warn")` catches those at the
CUDA level; this count is the portable, CPU-testable part.

    count_sync_ops(fn, *args, **kwargs) -> collections.Counter   op name -> how often it ran
"""

from __future__ import annotations

import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# ops that always sync on CUDA: they return a host value, or an output whose size only the device knows
ALWAYS = {
    "_local_scalar_dense",     # .item(), int(t), float(t), bool(t), a tensor in an `if`
    "is_nonzero", "equal",     # bool(t) and torch.equal return Python bools
    "nonzero", "nonzero_numpy", "masked_select", "bincount",
    "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "histogram", "histogramdd",
}
INDEXING = {"index", "_unsafe_index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"}


def _is_mask(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


def sync_reason(func, args, kwargs) -> str | None:
    """The name under which this aten call is counted, or None when it does not sync."""
    name = func.overloadpacket.__name__
    if name in ALWAYS:
        return name
    if name in INDEXING and len(args) > 1 and isinstance(args[1], (list, tuple)) and any(map(_is_mask, args[1])):
        return f"{name} (boolean mask)"  # the mask becomes indices with nonzero inside
    if name == "repeat_interleave" and func._overloadname in ("Tensor", "self_Tensor") \
            and kwargs.get("output_size") is None:  # tensor repeats: the output length is their sum
        return "repeat_interleave (no output_size)"
    if name == "_to_copy":
        src, dst, non_blocking = args[0], kwargs.get("device"), kwargs.get("non_blocking", False)
    elif name == "copy_":
        src, dst = args[1], args[0].device
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    else:
        return None
    if (isinstance(src, torch.Tensor) and src.device.type not in ("cpu", "meta") and dst is not None
            and torch.device(dst).type == "cpu" and not non_blocking):
        return "copy to host"
    return None


class SyncAudit(TorchDispatchMode):
    """The dispatch mode behind count_sync_ops. counts: op name -> calls (all devices); device_counts: the same
    for calls that touched an accelerator tensor; where: op name -> the first call's Python stack (for messages)."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.device_counts: collections.Counter = collections.Counter()
        self.where: dict[str, str] = {}
        self.saw_accelerator = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on_device = any(isinstance(t, torch.Tensor) and t.device.type not in ("cpu", "meta")
                        for t in tree_leaves((args, kwargs)))
        self.saw_accelerator |= on_device
        reason = sync_reason(func, args, kwargs)
        if reason is not None:
            self.counts[reason] += 1
            if on_device or reason == "copy to host":
                self.device_counts[reason] += 1
            if reason not in self.where:
                self.where[reason] = "".join(traceback.format_stack(limit=12)[:-1])
        return func(*args, **kwargs)

    def result(self) -> collections.Counter:
        """On a run that touched an accelerator, its syncs; on a CPU-only run, every counted op."""
        return collections.Counter(self.device_counts if self.saw_accelerator else self.counts)


def count_sync_ops(fn, *args, **kwargs) -> collections.Counter:
    """Run fn(*args, **kwargs) (forward, backward, optimiser step: whatever it does) and return the ops in it that
    would synchronise the host with the device on CUDA, as a Counter of op names (empty: sync-free)."""
    with SyncAudit() as audit:
        fn(*args, **kwargs)
    return audit.result()
