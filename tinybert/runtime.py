"""Device, precision and seeding: the run-time choices every loop (pre-training, fine-tuning, benchmarks) shares.

`choose_precision("auto", device)` decides once, and says why:
  * CUDA with bf16 support (Ampere and newer) -> bf16 autocast, no grad scaler;
  * older CUDA GPUs                          -> fp16 autocast + a GradScaler;
  * CPUs with native bf16 matmul (AVX512-BF16 or AMX) -> bf16 autocast;
  * other CPUs                                -> fp32. On such CPUs bf16 matmuls are emulated and measured ~4x
    slower than fp32 (see README, "Speed"), so autocast would cost time instead of saving it.
An explicit ``--precision bf16|fp16|fp32`` always wins.

`configure_cuda(device, tf32)` sets the process-wide CUDA switches once, at start-up: cuDNN autotuning
(`cudnn.benchmark`, for the conv front end, whose shapes repeat) and TF32 matmuls/convolutions, which are
opt-in (`--tf32`): they change fp32 rounding (10-bit mantissa inputs), so a run asks for them and run.json
records it. `channels_last_convs(model, device)` puts the conv front end's weights in the NHWC layout cuDNN's
tensor-core kernels use; with such weights cuDNN runs the convolutions, and returns their outputs, in NHWC.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def choose_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu. Anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matmul instructions (Linux /proc/cpuinfo flags).

    TINYBERT_CPU_BF16=1 (or 0) overrides the detection, so the test suite can be run here as it resolves
    `--precision auto` on the other kind of CPU (`TINYBERT_CPU_BF16=1 python -m pytest -q`; bf16 is then
    emulated: slower, same rounding)."""
    forced = os.environ.get("TINYBERT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    name: str          # 'bf16' | 'fp16' | 'fp32'
    reason: str        # one line, printed at the start of a run

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self, device: torch.device):
        """The autocast context for the forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(requested: str, device: torch.device) -> Precision:
    if requested not in PRECISIONS:
        raise ValueError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ValueError("--precision fp16 is not supported on CPU; use bf16 or fp32")
        return Precision(requested, "requested with --precision")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: this GPU supports bf16")
        return Precision("fp16", "auto: this GPU lacks bf16, so fp16 with a grad scaler")
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return Precision("bf16", "auto: this CPU has native bf16 matmul (AVX512-BF16/AMX)")
        return Precision("fp32", "auto: this CPU has no native bf16 matmul (emulated bf16 is slower than fp32)")
    return Precision("fp32", f"auto: fp32 on {device.type}")


def configure_cuda(device: torch.device, tf32: bool = False) -> dict:
    """On CUDA: cudnn.benchmark on, TF32 for fp32 matmuls and convolutions as asked (off by default: it
    changes fp32 results). Elsewhere nothing changes. Returns what was set, for run.json / results.json."""
    if device.type != "cuda":
        return {"tf32": False, "cudnn_benchmark": False}
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"tf32": tf32, "cudnn_benchmark": True}


def channels_last_convs(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """On CUDA, the 4-D conv weights in channels-last memory format (the values are unchanged); else as is."""
    if device.type == "cuda":
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    return model


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global torch RNG states (CPU and CUDA), for checkpoints. Dropout draws from these."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tune_cpu_allocator() -> bool:
    """glibc only: serve large allocations from the heap and never give memory back (M_MMAP_MAX=0,
    M_TRIM_THRESHOLD 2 GiB), so the big per-step tensors (MLM logits, embedding gradients) reuse memory instead of
    being mmapped and page-faulted afresh every step. Measured on our 2-core CI machine: cross-entropy forward +
    backward on 608 x 30522 logits 221 -> 41 ms, a BERT-1 h8 training step -20%, at +1% peak memory.
    Equivalent to MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647. Returns whether it took effect."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, ctypes.c_int(2**31 - 1)))
    except (OSError, AttributeError):
        return False


def _git(*args: str) -> str | None:
    """stdout of a git command run in this repository (None where git cannot run)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    except OSError:
        return None


def git_commit() -> str:
    """The repository's HEAD commit, recorded in run.json / results.json ('' outside a git checkout)."""
    return _git("rev-parse", "HEAD") or ""


def git_uncommitted_changes() -> bool | None:
    """Whether tracked files differ from HEAD (None where git cannot run); recorded beside git_commit()."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out)
