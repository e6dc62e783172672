"""Shared types of the fine-tuning task readers: what a reader returns (`RawTask` of `Example`s), what `load_task`
returns (`TaskData`), the error for bad input (`TaskDataError`), and `read_text`, the one way readers open a file.

Where it sits in the flow: raw files -> data_prep readers (agnews.py, dbpedia.py, fewrel.py, csv_task.py, ...) ->
data_prep/tasks.py (sampling) -> `TaskData`. Every reader and data_prep/tasks.py import from here and this module
imports no reader, so the readers never import tasks.py and the import graph of data_prep has no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinybert.data_dir import DatasetNotFound


class TaskDataError(ValueError):
    """Input that cannot be turned into labelled examples; the message names file, line and field."""


@dataclass
class Example:
    text: str
    label: int


@dataclass
class TaskData:
    name: str  # a task name of data_prep/registry.py: 'agnews' | 'dbpedia' | 'fewrel' | 'csv' | ...
    setting: str  # e.g. 'agnews-1000/1000', 'fewrel-train64', 'fewrel-val16', 'csv:<file>'
    label_names: list[str]
    train: list[Example]
    val: list[Example]
    test: list[Example]
    notes: list[str]  # human-readable warnings (shortfalls, skips, which split was used)
    sources: list[str]  # files read

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class RawTask:
    """What a reader hands to `load_task`: every usable row, before sampling."""

    label_names: list[str]
    train: list[Example]
    test: list[Example] | None  # None: a single pool; disjoint train and test are both drawn from `train`
    sources: list[str]
    notes: list[str] = field(default_factory=list)


def read_text(path: Path, expected: str = "") -> str:
    """A whole file as str. A missing file is DatasetNotFound; a non-UTF-8 byte is a TaskDataError with its line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        hint = f" Expected: {expected}." if expected else ""
        raise DatasetNotFound(f"{path}: no such file.{hint}") from None
    try:
        return data.decode("utf-8-sig")  # -sig: a BOM (Excel likes to write one) is not part of the first field
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TaskDataError(f"{path}: line {line}, byte {column} of the line: 0x{data[e.start]:02x} is not valid "
                            f"UTF-8; save the file as UTF-8") from None
