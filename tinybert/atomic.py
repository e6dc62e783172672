"""Atomic file writes: one rule for every JSON, CSV, text, vocab, npz and checkpoint file the project writes.

A file is written under a temporary name in its own folder (`<name>.tmp-<pid>`, so two processes never share a
temporary) and then moved over the target with `os.replace`, which is atomic on one file system: a reader sees
the old file or the new one, never half of one, and a crash mid-write leaves the old file in place. The
temporary is removed when the write fails. Files get the mode a plain open() gives (0666 minus the umask).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


@contextmanager
def replacing(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`, for writers that add an extension); when the
    block ends without an error, move it over `path`. The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write or the rename failed


def write_bytes_atomic(path, data: bytes, fsync: bool = False) -> Path:
    """`data` to `path`; with `fsync`, flushed to disk before the rename (files that must survive a power cut)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_default(o):
    """numpy scalars and arrays, tuples and sets as plain JSON values (units' records hold some)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, tuple, set)):
        return list(o.tolist() if isinstance(o, np.ndarray) else o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json_atomic(path, obj, indent: int = 2, default: Callable | None = None) -> Path:
    """`obj` as JSON (`indent`, a trailing newline) to `path`."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=default) + "\n")


def write_npz_atomic(path, **arrays) -> Path:
    """np.savez_compressed(path, **arrays), atomically (the temporary ends in .npz so numpy keeps its name)."""
    with replacing(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)
