"""AG News reader (Zhang, Zhao & LeCun 2015, `ag_news_csv`): the raw CSV files -> labelled texts.

Where it sits in the flow: raw files -> **data_prep/agnews.py** -> texts + labels (RawTask) -> data_prep/tasks.py
samples 1000/1000 per label -> tokenizer -> batches -> model. `read_zhang_csv` also reads DBpedia (same format).

Format (no header; every field quoted, `""` for a quote): `class (1-4)`, `title`, `description`. Class i becomes
label i-1, named as in `classes.txt`: World, Sports, Business, Sci/Tech. The text is `title + " " + description`,
what Hugging Face `ag_news` (the paper's source) puts in its `text` field. The dataset's backslashes (its stand-in for
newlines, and escapes such as `\\$`) are kept as they are, as there.

Files, looked for in `<data>/agnews/` and then `<data>/agnews/ag_news_csv/` (how the official tarball unpacks):
  train: the official `train.csv` (120,000 rows) when present, else `train_subset_20k.csv` (the shared copy: 20,000
         real training rows, 5000 per class, see PROVENANCE.md);
  test:  the official `test.csv` (7,600 rows, 1900 per class).

Skipped, and counted in the notes: rows where the title or description is exactly `#NAME?` (Excel damage; 5 rows in
the shared train subset, see PROVENANCE.md). Any other bad row (wrong number of fields, a class that is not an
integer 1-4, no text at all) is a TaskDataError naming file, line and field.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.csv_task import iter_csv_rows
from data_prep.tasks import Example, RawTask, TaskDataError, read_text
from tinybert.data_dir import DatasetNotFound, dataset_dir

LABEL_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
EXPECTED = ("test.csv and train.csv (or train_subset_20k.csv): Zhang-format CSV, no header, "
            "class (1-4), title, description")
EXCEL_DAMAGE = "#NAME?"  # what Excel wrote over a field that started with '-'


def read_zhang_csv(path: Path, label_names: list[str], fields: tuple[str, str, str]) -> tuple[list[Example], list[str]]:
    """Read a Zhang-format CSV (`class (1-based), title, body`). Return the examples and notes.

    The text is `title + " " + body`, or the body alone when the title is empty (the shared DBpedia copy).
    """
    n = len(label_names)
    examples, damaged = [], 0
    for line, row in iter_csv_rows(path, read_text(path, EXPECTED)):
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


def load_agnews(data_dir=None) -> RawTask:
    """Every usable row of the AG News train and test files (see the module docstring)."""
    root = dataset_dir("agnews", data_dir, EXPECTED)
    folders = [root, root / "ag_news_csv"]
    train = find_file(folders, "train.csv", "train_subset_20k.csv")
    test = find_file(folders, "test.csv")
    if train is None or test is None:
        missing = "train.csv (or train_subset_20k.csv)" if train is None else "test.csv"
        raise DatasetNotFound(f"{root}: no {missing}. Expected there: {EXPECTED}.")
    fields = ("class", "title", "description")
    train_rows, notes = read_zhang_csv(train, LABEL_NAMES, fields)
    test_rows, more = read_zhang_csv(test, LABEL_NAMES, fields)
    if train.name != "train.csv":
        notes.append(f"train rows come from {train.name} ({len(train_rows):,} usable rows), a subset of the official "
                     f"120k training split")
    return RawTask(LABEL_NAMES, train_rows, test_rows, [str(train), str(test)], notes + more)
