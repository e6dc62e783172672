"""The start-up plan train.py and eval.py print before any training: the output folder, the projected total time,
and a plain note when a CPU run would take hours.

The projections come from timing a few real forward + backward steps on a copy of the model (`time_training_step`
here, called by tinybert.pretrain.estimate_step_seconds and tinybert.finetune.estimate_step_seconds, which build
the batch) times the number of steps,
plus the evaluation passes, counted as forward passes at a third of a training step's cost (a backward pass costs
about twice a forward one). They are estimates: the real batches are often shorter than the timed ones.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch

QUICKSTART = "python -m tinybert.quickstart"
CPU_NOTE_AFTER_S = 3600  # a CPU run projected to take longer than this gets the note


def format_duration(seconds: float) -> str:
    """'~40 s', '~12 min', '~3.5 h', '~37 h'."""
    if seconds < 90:
        return f"~{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"~{hours:.1f} h" if hours < 10 else f"~{hours:.0f} h"


def output_line(out: Path, resuming: bool = False) -> str:
    """Where the outputs go; says whether the folder exists now (it is made only once training starts)."""
    if resuming:
        where = "continuing the run there"
    else:
        where = "exists" if Path(out).is_dir() else "made when training starts"
    return f"output folder: {out} ({where})"


def cpu_note(seconds: float, device) -> str | None:
    """The note for a CPU run projected to take over an hour: the paper's settings are GPU-sized."""
    if getattr(device, "type", str(device)) != "cpu" or seconds <= CPU_NOTE_AFTER_S:
        return None
    return (f"note: this run is projected to take {format_duration(seconds)} on this CPU; the paper's settings are "
            f"sized for a GPU. For a run that fits a laptop in ~15 min: {QUICKSTART}")


def time_training_step(model: torch.nn.Module, device: torch.device, precision,
                       make_loss: Callable[[torch.nn.Module], Callable[[], torch.Tensor]],
                       optimizer_step: bool = False, repeats: int = 2) -> float:
    """Seconds of one training step of a deep copy of `model`: the fastest of `repeats` timed steps after a warm-up.

    ``make_loss(probe)`` builds a random batch for the copy and returns a function computing its loss (run under
    ``precision.autocast``); a step is that forward, the backward and, with ``optimizer_step``, an AdamW step.
    Everything runs inside ``torch.random.fork_rng`` on the copy, so the real model, its gradients and the RNG
    streams that make runs reproducible are untouched.
    """
    probe = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-9) if optimizer_step else None
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        loss_of_batch = make_loss(probe)
        times = []
        for _ in range(repeats + 1):  # the first call warms up kernels and allocators
            start = time.perf_counter()
            with precision.autocast(device):
                loss = loss_of_batch()
            loss.backward()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    del probe, optimizer
    return min(times[1:])
