"""Where the datasets live: one rule shared by every command (train.py, eval.py, data_prep CLIs).

Order, first hit wins:
  1. an explicit ``--data-dir`` argument,
  2. the ``TINYBERT_DATA`` environment variable,
  3. ``../shared/data`` next to the repository root (the project's shared checkout),
  4. ``./data`` in the current working directory.

A missing dataset is reported with :class:`DatasetNotFound`, which names every path looked at and the file
layout that was expected there, so the user knows what to put where.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class DatasetNotFound(FileNotFoundError):
    """A dataset (or the data directory itself) is not where we looked."""


def candidate_data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data directories to try, in priority order (see the module docstring)."""
    if explicit:
        return [Path(explicit).expanduser()]
    candidates = []
    env = os.environ.get("TINYBERT_DATA")
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    candidates.append(Path.cwd() / "data")
    return candidates


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the first existing data directory, or raise DatasetNotFound listing what was tried."""
    tried = candidate_data_dirs(explicit)
    for path in tried:
        if path.is_dir():
            return path
    raise DatasetNotFound(
        "no data directory found; looked at: " + ", ".join(str(p) for p in tried)
        + ". Pass --data-dir DIR or set TINYBERT_DATA=DIR; DIR should hold wikipedia/, agnews/, dbpedia/, "
        "fewrel/ and bert_vocab/ (see README.md, 'Data')."
    )


def dataset_dir(name: str, explicit: str | os.PathLike | None = None, expected: str = "") -> Path:
    """Return ``<data dir>/<name>``; raise DatasetNotFound naming the path and the expected layout."""
    root = resolve_data_dir(explicit)
    path = root / name
    if not path.is_dir():
        hint = f" Expected there: {expected}." if expected else ""
        raise DatasetNotFound(f"dataset folder {path} does not exist.{hint}")
    return path
