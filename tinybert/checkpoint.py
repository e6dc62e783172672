"""Checkpoints: atomic save, safe load with clear errors, everything needed to resume or fine-tune.

A checkpoint is one torch file holding a plain dict (no pickled classes, so it loads with weights_only=True):
  format        CHECKPOINT_FORMAT, bumped when the layout changes
  kind          'mlm' (pre-training) or 'classifier'
  model_config  ModelConfig.to_dict()
  train_config  the run's training settings (a dict of plain values)
  vocab         the vocabulary (list of tokens): the checkpoint is usable without any other file
  model         state_dict
  optimizer, scheduler, scaler   state_dicts (None where not used)
  progress      {'epoch': e, 'batch': b, 'step': s}: the next batch to run
  rng           global torch RNG states (dropout), see runtime.rng_state
  world_size, rng_ranks   under torchrun: the number of processes and every process's RNG state, so a resume
                on the same number of processes is bit-exact (tinybert/distributed.py)
  cli, data     train.py's flags and the data provenance (resume takes its settings from `cli`)
Saving writes `<path>.tmp` and renames it over `<path>`, so a crash mid-write never leaves a half-written
file and the previous checkpoint survives.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import replacing

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "kind", "model_config", "vocab", "model")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match what the run expects."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load and validate; raise CheckpointError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise CheckpointError(f"checkpoint {path} is not a readable tinybert checkpoint "
                              f"(corrupt or truncated?): {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, found {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the field(s) {', '.join(missing)}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ckpt['format']}, this code reads "
                              f"format {CHECKPOINT_FORMAT}")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"checkpoint {path} is a '{ckpt['kind']}' checkpoint, expected '{kind}'")
    return ckpt


def check_same_config(path, saved: dict, current: dict, what: str, ignore: tuple[str, ...] = ()) -> None:
    """On resume, every setting that shapes the result must match; name the first field that differs."""
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"checkpoint {path}: {what} field '{key}' is {saved.get(key)!r} in the checkpoint but "
                f"{current.get(key)!r} in this run; resume with the original settings or start a new --out")
