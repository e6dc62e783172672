"""The Zhang, Zhao & LeCun (2015) CSV format shared by AG News and DBpedia: `class (1-based), title, body`.

Where it sits in the flow: raw files -> **data_prep/zhang_csv.py** (rows -> Examples) -> the AG News and DBpedia
readers (which files, which label names) -> RawTask -> data_prep/tasks.py. It has its own module so that neither
dataset's reader imports the other's (DBpedia used to import AG News's reader, and with it AG News's error hint).

Format (no header; every field quoted, `""` for a quote). Class i becomes label i-1. The text is
`title + " " + body`, or the body alone when the title is empty. Rows where the title or body is exactly `#NAME?`
(Excel damage) are skipped and counted in the notes; any other bad row is a TaskDataError naming file, line and field.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.csv_task import iter_csv_rows
from data_prep.task_types import Example, TaskDataError, read_text

EXCEL_DAMAGE = "#NAME?"  # what Excel wrote over a field that started with '-'


def read_zhang_csv(path: Path, label_names: list[str], fields: tuple[str, str, str],
                   expected: str = "") -> tuple[list[Example], list[str]]:
    """Read a Zhang-format CSV (`class (1-based), title, body`). Return the examples and notes.

    `fields` names the three columns in error messages; `expected` is the dataset's layout hint for a missing file.
    The text is `title + " " + body`, or the body alone when the title is empty (the shared DBpedia copy).
    """
    n = len(label_names)
    examples, damaged = [], 0
    for line, row in iter_csv_rows(path, read_text(path, expected)):
        if len(row) != 3:
            raise TaskDataError(f"{path}: line {line}: expected 3 fields ({', '.join(fields)}), got {len(row)}")
        cls, title, body = row
        try:
            label = int(cls) - 1
        except ValueError:
            label = -1
        if not 0 <= label < n:
            raise TaskDataError(f"{path}: line {line}, field 1 ({fields[0]}): expected an integer 1-{n}, got {cls!r}")
        if EXCEL_DAMAGE in (title, body):
            damaged += 1
            continue
        text = " ".join(part.strip() for part in (title, body) if part.strip())
        if not text:
            raise TaskDataError(f"{path}: line {line}, fields 2-3 ({fields[1]}, {fields[2]}): both empty, no text")
        examples.append(Example(text, label))
    notes = []
    if damaged:
        notes.append(f"{path.name}: skipped {damaged} rows whose {fields[1]} or {fields[2]} is {EXCEL_DAMAGE!r} "
                     f"(Excel damage, see PROVENANCE.md)")
    return examples, notes


def find_file(folders: list[Path], *names: str) -> Path | None:
    """The first of `names` that exists in any of `folders` (names in order of preference)."""
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
    return None
