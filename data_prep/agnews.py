"""AG News reader (Zhang, Zhao & LeCun 2015, `ag_news_csv`): the raw CSV files -> labelled texts.

Where it sits in the flow: raw files -> **data_prep/agnews.py** -> texts + labels (RawTask) -> data_prep/tasks.py
samples 1000/1000 per label -> tokenizer -> batches -> model. The rows are read by data_prep/zhang_csv.py (shared
with DBpedia, same format).

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

from data_prep.task_types import RawTask
from data_prep.zhang_csv import find_file, read_zhang_csv
from tinybert.data_dir import DatasetNotFound, dataset_dir

LABEL_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
EXPECTED = ("test.csv and train.csv (or train_subset_20k.csv): Zhang-format CSV, no header, "
            "class (1-4), title, description")


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
    train_rows, notes = read_zhang_csv(train, LABEL_NAMES, fields, EXPECTED)
    test_rows, more = read_zhang_csv(test, LABEL_NAMES, fields, EXPECTED)
    if train.name != "train.csv":
        notes.append(f"train rows come from {train.name} ({len(train_rows):,} usable rows), a subset of the official "
                     f"120k training split")
    return RawTask(LABEL_NAMES, train_rows, test_rows, [str(train), str(test)], notes + more)
