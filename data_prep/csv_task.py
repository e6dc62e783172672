"""The generic task (`--task csv`): your own labelled texts from CSV, TSV or JSON-lines files.

Where it sits in the flow: raw files -> **data_prep/csv_task.py** -> texts + labels (RawTask) -> data_prep/tasks.py
samples per label -> tokenizer -> batches -> model. `read_csv_files` is the registry's reader for `--task csv`;
`load_csv_task` can back a task of its own (one registry row, see README 'Adding a task'). `iter_csv_rows` is also
the row reader behind data_prep/zhang_csv.py (AG News, DBpedia).

Format, by extension: `.csv` comma-separated; `.tsv`/`.tab` tab-separated; `.jsonl`/`.ndjson`/`.json` one JSON
value per line. Any other name is sniffed: a first character `{` or `[` means JSON lines, a tab in the first line
means TSV, else CSV. CSV follows RFC 4180 quoting (`"a, b"`, `""` for a quote, newlines inside quotes). TSV is read
literally, as GLUE-style TSVs are written: no quoting, so a `"` is just a character and a tab always ends a field.

Columns (`--text-col`, `--label-col`; defaults `text` and `label`):
  * a name: CSV/TSV then has a header line, and the name must be in it; JSON lines are objects with that key;
  * a 0-based index: CSV/TSV then has no header (every line is data); JSON lines are arrays.
With index columns a first line that looks like a header (its label occurs nowhere else and its "text" is a single
word, or a non-integer label on top of integer labels) is an error, not a silently wrong class.

Labels: strings or integers, mapped to ids 0..K-1 in sorted order (numeric order when every label is an integer)
over the union of the train and test files; `label_names` keeps the original spelling. Refused, naming file and
line: a label column that mixes integers and strings, and a test label that never occurs in the training file.
Without a test file, load_task draws a seeded, disjoint test set of CSV_TEST_FRACTION per label from the train file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Iterator

from data_prep.task_types import Example, RawTask, TaskDataError, read_text

# One text is far below this, but a whole document in a field would trip csv's 128 KiB default with a confusing error.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))

_INTEGER = re.compile(r"[+-]?\d+")


def iter_csv_rows(path: Path, text: str, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL,
                  ) -> Iterator[tuple[int, list[str]]]:
    """Yield (line where the record starts, fields) for every non-blank record of `text` (the content of `path`)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    start = 1
    try:
        for row in reader:
            if row and any(row):  # blank lines: skipped (not data)
                yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise TaskDataError(f"{path}: line {start}: malformed CSV ({e})") from None  # where the bad record starts


def _format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    head = text.lstrip()[:1]
    if head in ("{", "["):
        return "jsonl"
    return "tsv" if "\t" in text.split("\n", 1)[0] else "csv"


def _column(spec, default: str) -> int | str:
    """A column given by name stays a str; '3' or 3 becomes the index 3."""
    spec = default if spec is None else spec
    if isinstance(spec, int):
        return spec
    spec = str(spec).strip()
    return int(spec) if spec.isdigit() else spec


def _read_table(path: Path, text: str, fmt: str, text_col, label_col) -> list[tuple[int, str, str]]:
    """(line, text, label as str) for every row of a CSV or TSV file."""
    rows = list(iter_csv_rows(path, text, "\t" if fmt == "tsv" else ",",
                              csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL))
    if not rows:
        return []
    cols = {"text": text_col, "label": label_col}
    header = isinstance(text_col, str) or isinstance(label_col, str)
    width = len(rows[0][1])
    if header:
        line, names = rows.pop(0)
        names = [n.strip() for n in names]
        for role, spec in cols.items():
            if isinstance(spec, str):
                if spec not in names:
                    raise TaskDataError(f"{path}: line {line}: no column named {spec!r} (the {role} column) in the "
                                        f"header; it has {', '.join(map(repr, names))}")
                cols[role] = names.index(spec)
    for role, index in cols.items():
        if index >= width:
            raise TaskDataError(f"{path}: line {rows[0][0] if rows else 1}: {role} column index {index} but the "
                                f"line has {width} fields (indices are 0-based)")
    out = []
    for line, row in rows:
        if len(row) != width:
            raise TaskDataError(f"{path}: line {line}: expected {width} fields (as on the first line), got "
                                f"{len(row)}")
        out.append((line, row[cols["text"]], row[cols["label"]].strip()))
        _check(path, line, text_col, label_col, out[-1][1], out[-1][2])

    if not header and len(out) > 1:  # index columns: make sure line 1 is not a header read as data
        line, first_text, first_label = out[0]
        labels = [lab for _, _, lab in out[1:]]
        integer_rest = all(_INTEGER.fullmatch(lab) for lab in labels) and not _INTEGER.fullmatch(first_label)
        if integer_rest or (first_label not in labels and len(first_text.split()) == 1):
            raise TaskDataError(f"{path}: line {line}, field {label_col} (label column): {first_label!r} looks like a "
                                f"header; give the columns by name (e.g. --text-col {first_text.strip()} "
                                f"--label-col {first_label}) so that the first line is read as the header")
    return out


def _read_jsonl(path: Path, text: str, text_col, label_col) -> list[tuple[int, str, str]]:
    """(line, text, label as str) for every line of a JSON-lines file."""
    out = []
    for line, raw in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold a raw U+2028
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}: line {line}, column {e.colno}: not valid JSON ({e.msg})") from None
        fields = []
        for role, spec in (("text", text_col), ("label", label_col)):
            if isinstance(spec, str):
                if not isinstance(value, dict) or spec not in value:
                    got = "no such key" if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"
                    raise TaskDataError(f"{path}: line {line}, field {spec!r} ({role} column): {got}")
                fields.append(value[spec])
            else:
                if not isinstance(value, list) or spec >= len(value):
                    got = f"{len(value)} items" if isinstance(value, list) else "not a JSON array"
                    raise TaskDataError(f"{path}: line {line}, field {spec} ({role} column, an index): {got}")
                fields.append(value[spec])
        txt, lab = fields
        if not isinstance(txt, str):
            raise TaskDataError(f"{path}: line {line}, field {text_col!r} (text column): expected a string, got "
                                f"{json.dumps(txt)[:40]}")
        # bool is an int subclass in Python; true/false as a class is almost surely a mistake, so refuse it.
        if isinstance(lab, bool) or not isinstance(lab, (int, str)):
            raise TaskDataError(f"{path}: line {line}, field {label_col!r} (label column): expected an integer or a "
                                f"string, got {json.dumps(lab)[:40]}")
        out.append((line, txt, str(lab).strip()))
        _check(path, line, text_col, label_col, txt, out[-1][2])
    return out


def _check(path, line, text_col, label_col, text: str, label: str) -> None:
    if not text.strip():
        raise TaskDataError(f"{path}: line {line}, field {text_col!r} (text column): empty text")
    if not label:
        raise TaskDataError(f"{path}: line {line}, field {label_col!r} (label column): empty label")


def read_labelled_file(path, text_col=None, label_col=None) -> list[tuple[int, str, str]]:
    """(line, text, label as str) for every row of one CSV, TSV or JSON-lines file."""
    path = Path(path)
    text = read_text(path, "a CSV, TSV or JSON-lines file with a text and a label column")
    text_col, label_col = _column(text_col, "text"), _column(label_col, "label")
    fmt = _format(path, text)
    rows = _read_jsonl(path, text, text_col, label_col) if fmt == "jsonl" else \
        _read_table(path, text, fmt, text_col, label_col)
    if not rows:
        raise TaskDataError(f"{path}: no data rows")
    return rows


def check_label_kinds(files, label_col) -> None:
    """A label column holds integers or strings, not both: mixed, '1' and 'pos' would silently become separate
    classes (a typical cause: a header line or a stray row in the middle of a file)."""
    first = {}  # kind -> (file, line, label) of its first occurrence
    for path, rows in files:
        for line, _, label in rows:
            first.setdefault("integer" if _INTEGER.fullmatch(label) else "string", (path, line, label))
    if len(first) == 2:
        (s_path, s_line, s_label), (i_path, i_line, i_label) = first["string"], first["integer"]
        raise TaskDataError(f"{s_path}: line {s_line}, field {label_col or 'label'!r} (label column): {s_label!r} is a "
                            f"string label, but {i_path} line {i_line} has the integer label {i_label!r}; a label "
                            f"column must hold only integers or only strings")


def check_test_labels_trained(train_file, train_rows, test_file, test_rows) -> None:
    """Every test label must occur in the training file: the model could never predict one that does not (the
    accuracy would be silently capped). The usual cause is a label spelled differently in the two files."""
    def cls(label: str) -> str:  # '1' and '01' are one class (load_csv_task maps them together)
        return str(int(label)) if _INTEGER.fullmatch(label) else label

    trained = {cls(lab) for _, _, lab in train_rows}
    missing = {}
    for line, _, lab in test_rows:
        if cls(lab) not in trained:
            missing.setdefault(lab, []).append(line)
    if missing:
        listing = ", ".join(f"{lab!r} (lines {', '.join(map(str, lines[:3]))}{', ...' if len(lines) > 3 else ''})"
                            for lab, lines in sorted(missing.items()))
        raise TaskDataError(f"{test_file}: label(s) {listing} never occur in the training file {train_file}; the "
                            f"model could never predict them. Check the spelling of the labels in both files")


def load_csv_task(train_file, test_file=None, text_col=None, label_col=None) -> RawTask:
    """Every row of the train (and test) file, labels mapped to ids in sorted order; see the module docstring."""
    train_rows = read_labelled_file(train_file, text_col, label_col)
    test_rows = read_labelled_file(test_file, text_col, label_col) if test_file is not None else None
    files = [(train_file, train_rows)] + ([(test_file, test_rows)] if test_rows is not None else [])
    check_label_kinds(files, label_col)
    if test_rows is not None:
        check_test_labels_trained(train_file, train_rows, test_file, test_rows)
    labels = {lab for _, _, lab in train_rows + (test_rows or [])}
    if all(_INTEGER.fullmatch(lab) for lab in labels):
        by_value = {}
        for lab in labels:  # '1' and '01' are one class; keep the plain spelling
            by_value.setdefault(int(lab), str(int(lab)))
        names = [by_value[v] for v in sorted(by_value)]
        ids = {lab: names.index(str(int(lab))) for lab in labels}
    else:
        names = sorted(labels)
        ids = {lab: i for i, lab in enumerate(names)}

    notes = []
    if test_rows is None:
        notes.append(f"no test file: train and test are drawn disjointly per label from {Path(train_file).name} "
                     f"(seeded)")
    return RawTask(
        label_names=names,
        train=[Example(txt, ids[lab]) for _, txt, lab in train_rows],
        test=None if test_rows is None else [Example(txt, ids[lab]) for _, txt, lab in test_rows],
        sources=[str(train_file)] + ([str(test_file)] if test_file is not None else []),
        notes=notes,
    )


def read_csv_files(data_dir=None, *, train_file=None, test_file=None, text_col=None, label_col=None) -> RawTask:
    """The registry's reader for `--task csv`: the files come from the flags, so `data_dir` is not used."""
    if train_file is None:
        raise ValueError("the csv task needs train_file (--train FILE)")
    return load_csv_task(train_file, test_file, text_col, label_col)
