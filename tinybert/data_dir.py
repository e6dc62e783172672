"""Where the datasets live: one rule shared by every command (train.py, eval.py, data_prep CLIs).

Order, first hit wins:
  1. an explicit ``--data-dir`` argument (one that does not exist is an error: no fallback),
  2. the ``TINYBERT_DATA`` environment variable,
  3. ``../shared/data`` next to the repository root (the project's shared checkout),
  4. ``./data`` in the current working directory,
  5. the small real sample committed in the repository, ``data_prep/sample`` (SAMPLE_DATA_DIR; built by
     ``python -m data_prep.make_sample``, described in its PROVENANCE.md), so that a fresh clone runs the tests,
     train.py and eval.py without downloading anything. Falling back to it prints a note on stderr (once per
     process), because results on the sample are not results on the full data.

A missing dataset is reported with :class:`DatasetNotFound`, which names every path looked at and the file
layout that was expected there, so the user knows what to put where.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA_DIR = REPO_ROOT / "data_prep" / "sample"
SAMPLE_SUMMARY = ("10,000 Wikipedia articles + 500 held out, AG News 1,250/1,000 rows per label, DBpedia-14 220 per "
                  "label, FewRel 80 instances per relation")

_sample_noted = False  # the fallback note is printed once per process, not at every lookup


class DatasetNotFound(FileNotFoundError):
    """A dataset (or the data directory itself) is not where we looked."""


def candidate_data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The data directories to try, in priority order (items 1-4 of the module docstring; the embedded sample
    is not among them: it is the fallback of resolve_data_dir, never a place to download into)."""
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
    """Return the first existing data directory, else the embedded sample (with a note on stderr), else raise
    DatasetNotFound listing what was tried. An explicit directory that does not exist is always an error."""
    tried = candidate_data_dirs(explicit)
    for path in tried:
        if path.is_dir():
            return path
    if not explicit and SAMPLE_DATA_DIR.is_dir():
        _note_sample(tried)
        return SAMPLE_DATA_DIR
    raise DatasetNotFound(
        "no data directory found; looked at: " + ", ".join(str(p) for p in tried)
        + ". Pass --data-dir DIR or set TINYBERT_DATA=DIR; DIR should hold wikipedia/, agnews/, dbpedia/, "
        "fewrel/ and bert_vocab/ (see README.md, 'Data')."
    )


def is_sample_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is the embedded sample (tests use it to expect the sample's counts instead of the full data's)."""
    return Path(path).resolve() == SAMPLE_DATA_DIR.resolve()


def _note_sample(tried: list[Path]) -> None:
    global _sample_noted
    if _sample_noted:
        return
    _sample_noted = True
    print(f"note: no data directory found (looked at {', '.join(str(p) for p in tried)}); using the small embedded "
          f"sample data_prep/sample ({SAMPLE_SUMMARY}); see README 'Data'", file=sys.stderr)


def dataset_dir(name: str, explicit: str | os.PathLike | None = None, expected: str = "") -> Path:
    """Return ``<data dir>/<name>``; raise DatasetNotFound naming the path and the expected layout."""
    root = resolve_data_dir(explicit)
    path = root / name
    if not path.is_dir():
        hint = f" Expected there: {expected}." if expected else ""
        raise DatasetNotFound(f"dataset folder {path} does not exist.{hint}")
    return path
