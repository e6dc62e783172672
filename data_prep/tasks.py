"""Fine-tuning tasks: one entry point, `load_task`, that turns a dataset folder into sampled train/val/test examples.

Where it sits in the flow: raw files -> data_prep readers (agnews.py, dbpedia.py, fewrel.py, csv_task.py) ->
**data_prep/tasks.py** (dedupe, per-label sampling) -> texts + labels (`TaskData`) -> tokenizer -> batches -> model.
fine-tuning/eval.py calls `load_task`; nothing here tokenizes. Which reader a task name means, and its default sizes
and settings, come from the task table, data_prep/registry.py; the shared types from data_prep/task_types.py.

Each reader returns a `RawTask`: every usable row of its files, as `Example(text, label)`, plus the label names,
the files read and notes. This module then samples as the paper does (`random.sample` within each label,
separately for train and test: docs/paper-recipe.md#fine-tuning-data), with three changes that keep the test set
honest:
  * train and test are always disjoint, also by text. With an official test file they come from different files;
    with a single pool (the shared DBpedia and FewRel files, a CSV without a test file) one seeded shuffle per label
    is cut into test rows first, then training candidates. Either way, a training candidate whose text is in the
    test set (under any label) is left out, and counted in the notes.
  * a validation slice is carved out of each label's *training* sample (default 10% of it, at least 1) for choosing
    the epoch; the test set is never used to choose anything. So train + val per label = `train_per_label`.
  * when a label has fewer rows than asked, all of them are used and a note says so (never an error, never padding).
Sampling uses one `random.Random` per (seed, split, label), seeded from a string, so it is deterministic across
runs and Python versions, a different seed gives a different sample, and one label's count never shifts another
label's sample.

Refused (TaskDataError), because the accuracy would mean nothing: fewer than two classes; a class with test rows but
no training rows (the model could never predict it). Warned in the notes (eval.py prints every note): fewer than
MIN_TEST_PER_LABEL test rows in a class (too coarse to compare runs), no validation rows (the last epoch is reported).

Skip policy (every skip is counted in `TaskData.notes`; everything else that is not valid input is a
`TaskDataError` naming file, line and field):
  * blank lines in CSV/TSV/JSONL files;
  * AG News / DBpedia rows with a field that is exactly `#NAME?` (Excel damage, see agnews/PROVENANCE.md);
  * exact duplicate (text, label) rows within one file's pool: only the first is kept, so a duplicated row cannot
    land in both train and test of a single-pool split.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from data_prep.registry import TaskRow, all_tasks, get_task, task_names
# Re-exported: code and tests import the shared types from here, as before data_prep/task_types.py existed.
from data_prep.task_types import Example, RawTask, TaskData, TaskDataError, read_text  # noqa: F401
from tinybert.data_dir import DatasetNotFound

# Snapshots of the built-in rows of data_prep/registry.py, for code that imported these names; load_task itself
# reads the registry, so a task registered later is loaded too.
TASKS = task_names()
DEFAULT_SIZES = {s.name: s.default_sizes for s in all_tasks() if s.default_sizes != (None, None)}  # (train, test)
DEFAULT_VAL_FRACTION = 0.1  # of each label's training sample, when val_per_label is not given
CSV_TEST_FRACTION = 0.2  # of each label's rows, for a CSV task without a test file and without test_per_label
MAX_LISTED_LABELS = 5  # above this many short labels, the shortfall notes are merged into one line
MIN_TEST_PER_LABEL = 10  # fewer test rows per class than this: accuracy moves in steps too coarse to compare runs


def dedupe(pool: list[Example], where: str) -> tuple[list[Example], list[str]]:
    """Drop exact repeats of (text, label), keeping the first; return the pool and notes."""
    seen, kept = set(), []
    for ex in pool:
        key = (ex.text, ex.label)
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    notes = []
    if len(kept) < len(pool):
        notes.append(f"{where}: dropped {len(pool) - len(kept)} exact duplicate (text, label) rows")
    clashes = sum(n > 1 for n in Counter(ex.text for ex in kept).values())
    if clashes:  # kept: the dataset itself says both labels; the note makes the ambiguity visible
        notes.append(f"{where}: {clashes} texts occur with more than one label")
    return kept, notes


def _rng(seed: int, *parts) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def _take(rng: random.Random, rows: list, n: int | None) -> list:
    """A random sample of n rows (all of them, shuffled, when n is None or larger than the list)."""
    return rng.sample(rows, len(rows) if n is None else min(n, len(rows)))


def _shortfall_notes(split: str, short: list[tuple[str, int, int]], n_labels: int, after_test: bool) -> list[str]:
    """`short` holds (label name, rows used, rows asked) for every label that had fewer rows than asked."""
    if not short:
        return []
    if len(short) <= MAX_LISTED_LABELS:
        left = " left after its test rows" if after_test else ""
        return [f"{split}: label {name!r} has {got} rows{left}, fewer than the {asked} asked; using {got}"
                for name, got, asked in short]
    left = " left after their test rows" if after_test else ""
    counts = [got for _, got, _ in short]
    listing = ", ".join(f"{name!r} {got}" for name, got, _ in short)
    return [f"{split}: {len(short)} of {n_labels} labels have fewer rows{left} than the {short[0][2]} asked; "
            f"using what there is ({min(counts)}-{max(counts)} per label): {listing}"]


def sample_per_label(raw: RawTask, train_n: int | None, test_n: int | None, val_n: int | None,
                     seed: int) -> tuple[list[Example], list[Example], list[Example], list[str]]:
    """Balanced, seeded, disjoint train/val/test samples; see the module docstring. Returns (train, val, test, notes).

    `train_n` None: every training row. `test_n` None: every test row, or (single pool) CSV_TEST_FRACTION of each
    label. `val_n` None: DEFAULT_VAL_FRACTION of each label's training sample, at least 1.
    """
    names = raw.label_names
    train_pool = [[] for _ in names]
    for ex in raw.train:
        train_pool[ex.label].append(ex)
    test_pool = None
    if raw.test is not None:
        test_pool = [[] for _ in names]
        for ex in raw.test:
            test_pool[ex.label].append(ex)

    # Pass 1: each label's test rows. With a single pool, one seeded shuffle per label is cut: test first, the rest
    # stays a training candidate.
    test_rows, candidates = [], []
    for k in range(len(names)):
        rows = train_pool[k]
        if test_pool is None:
            rows = _take(_rng(seed, "split", k), rows, None)
            n_test = test_n
            if n_test is None:  # CSV without a test file: a fraction of the label, but never its only row
                n_test = max(1, int(len(rows) * CSV_TEST_FRACTION)) if len(rows) > 1 else 0
            te, rows = rows[:n_test], rows[n_test:]
        else:
            te = _take(_rng(seed, "test", k), test_pool[k], test_n)
        test_rows.append(te)
        candidates.append(rows)

    # Pass 2: training rows, never a text that is in the test set (under any label: a sentence can carry two
    # relations in FewRel), then the validation slice carved out of them.
    test_texts = {ex.text for te in test_rows for ex in te}
    train, val, test, notes = [], [], [], []
    short = {"train": [], "test": []}
    excluded = 0
    for k, name in enumerate(names):
        te, rows = test_rows[k], [ex for ex in candidates[k] if ex.text not in test_texts]
        excluded += len(candidates[k]) - len(rows)
        # Always sampled (not just sliced) so that the val slice below is a random part of the training rows.
        tr = _take(_rng(seed, "train", k), rows, train_n)
        if test_n is not None and len(te) < test_n:
            short["test"].append((name, len(te), test_n))
        if train_n is not None and len(tr) < train_n:
            short["train"].append((name, len(tr), train_n))
        if not tr:
            notes.append(f"label {name!r} has no training rows")

        n_val = val_n if val_n is not None else max(1, int(len(tr) * DEFAULT_VAL_FRACTION))
        n_val = min(n_val, max(len(tr) - 1, 0))  # leave at least one training row
        if val_n is not None and n_val < val_n:
            notes.append(f"val: label {name!r} has {len(tr)} training rows; carving {n_val} for validation, "
                         f"not the {val_n} asked")
        val += tr[:n_val]
        train += tr[n_val:]
        test += te
    if excluded:
        notes.append(f"{excluded} training candidates were left out because their text is in the test set")

    single = test_pool is None
    notes = _shortfall_notes("test", short["test"], len(names), False) + \
        _shortfall_notes("train", short["train"], len(names), single) + notes
    # Interleave the labels so that a consumer that does not shuffle still sees mixed batches.
    for i, split in enumerate((train, val, test)):
        _rng(seed, "order", i).shuffle(split)
    return train, val, test, notes


def check_measurable(raw: RawTask, train: list[Example], test: list[Example]) -> None:
    """Refuse a task whose accuracy would mean nothing: fewer than two classes, or a class with test rows but no
    training rows (the model could never predict it, so the accuracy would be silently capped; the usual cause is
    a label spelled differently in two files, or a test share that took every row of a small class)."""
    names = raw.label_names
    if len(names) < 2:
        raise TaskDataError(f"{', '.join(raw.sources)}: {len(names)} class ({', '.join(map(repr, names))}); "
                            f"classification needs at least two")
    untrained = sorted({ex.label for ex in test} - {ex.label for ex in train})
    if untrained:
        counts = Counter(ex.label for ex in test)
        listing = ", ".join(f"{names[k]!r} ({counts[k]} test rows)" for k in untrained[:MAX_LISTED_LABELS])
        raise TaskDataError(f"{', '.join(raw.sources)}: {len(untrained)} class(es) have test rows but no training "
                            f"rows: {listing}; the model could never predict them. Check the label spelling, or "
                            f"lower the test share (--test-per-label)")


def measurement_notes(names: list[str], val: list[Example], test: list[Example]) -> list[str]:
    """Warnings about what the test and validation sets can measure (eval.py prints every note)."""
    notes = []
    counts = Counter(ex.label for ex in test)
    small = [(name, counts.get(k, 0)) for k, name in enumerate(names) if counts.get(k, 0) < MIN_TEST_PER_LABEL]
    if small and test:
        listing = ", ".join(f"{name!r} {n}" for name, n in small[:MAX_LISTED_LABELS])
        more = ", ..." if len(small) > MAX_LISTED_LABELS else ""
        notes.append(f"warning: the test set is too small to measure well: {len(small)} of {len(names)} classes "
                     f"have fewer than {MIN_TEST_PER_LABEL} test rows ({listing}{more}); with {len(test)} test rows "
                     f"one prediction moves the accuracy by {100 / len(test):.1f} points")
    if not val:
        notes.append("no validation rows (too few training rows, or --val-per-label 0): the last epoch's model is "
                     "reported, not the one with the best validation accuracy")
    return notes


def _positive(value, what: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_options(row: TaskRow, setting, options: dict) -> None:
    """Refuse a setting or reader option that this task does not take, naming the tasks that do take it."""
    extra = [k for k, v in options.items() if v is not None and k not in row.options]
    if extra:
        owners = " or ".join(t.name for t in all_tasks() if set(extra) <= set(t.options)) or "no"
        raise ValueError(f"{', '.join(extra)} only apply to the {owners} task")
    if setting is not None and not row.settings:
        owners = " or ".join(f"{t.name} ({' or '.join(t.setting_names)})" for t in all_tasks() if t.settings)
        raise ValueError(f"setting only applies to {owners or 'no task'}; got {setting!r}")


def _setting_label(row: TaskRow, setting: str | None, train_n, test_n, options: dict) -> str:
    """TaskData.setting: what results.json and the tables call this sample (unchanged from before the registry)."""
    sizes = f"{train_n if train_n is not None else 'all'}/{test_n if test_n is not None else 'all'}"
    if row.settings:  # e.g. 'fewrel-train64'; the sizes only when they are not the paper's
        return f"{row.name}-{setting}" + ("" if (train_n, test_n) == row.default_sizes else f"-{sizes}")
    if options.get("train_file") is not None:  # a task over the user's own files: named by the file
        return f"{row.name}:{Path(options['train_file']).name}"
    return f"{row.name}-{sizes}"


def load_task(name, data_dir=None, *, setting=None, train_per_label=None, test_per_label=None,
              val_per_label=None, seed=0, train_file=None, test_file=None, text_col=None, label_col=None) -> TaskData:
    """Read, dedupe and sample one fine-tuning task of data_prep/registry.py. `data_dir` as in tinybert/data_dir.py
    (the CSV task uses `train_file`/`test_file` instead). Sizes default to the row's (the paper's); else every row."""
    row = get_task(name)
    options = dict(train_file=train_file, test_file=test_file, text_col=text_col, label_col=label_col)
    _check_options(row, setting, options)
    train_n = _positive(train_per_label, "train_per_label")
    test_n = _positive(test_per_label, "test_per_label")
    val_n = _positive(val_per_label, "val_per_label", minimum=0)
    default_train, default_test = row.default_sizes
    train_n = default_train if train_n is None else train_n
    test_n = default_test if test_n is None else test_n

    setting = row.resolve_setting(setting)
    kwargs = {k: options[k] for k in row.options}
    if row.settings:
        kwargs["setting"] = setting
    raw = row.reader(data_dir, **kwargs)
    label = _setting_label(row, setting, train_n, test_n, options)

    notes = list(raw.notes)
    # Readers list their data files first: [train (or the single pool), test, extras such as pid2name.json].
    raw.train, more = dedupe(raw.train, Path(raw.sources[0]).name)
    notes += more
    if raw.test is not None:
        raw.test, more = dedupe(raw.test, Path(raw.sources[1]).name)
        notes += more
    train, val, test, more = sample_per_label(raw, train_n, test_n, val_n, seed)
    check_measurable(raw, train + val, test)
    notes += more + measurement_notes(raw.label_names, val, test)
    return TaskData(name=name, setting=label, label_names=list(raw.label_names), train=train, val=val, test=test,
                    notes=notes, sources=list(raw.sources))


def main(argv=None) -> int:
    """`python -m data_prep.tasks agnews`: load a task and print what eval.py would get."""
    epilog = "\n".join(f"{t.name}: {t.expected}" for t in all_tasks() if t.expected)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="expected files:\n" + epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=task_names())
    p.add_argument("--data-dir")
    p.add_argument("--setting", help="fewrel: train64 (default) or val16")
    p.add_argument("--train-per-label", type=int)
    p.add_argument("--test-per-label", type=int)
    p.add_argument("--val-per-label", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", dest="train_file")
    p.add_argument("--test", dest="test_file")
    p.add_argument("--text-col")
    p.add_argument("--label-col")
    a = p.parse_args(argv)
    try:
        task = load_task(a.task, a.data_dir, setting=a.setting, train_per_label=a.train_per_label,
                         test_per_label=a.test_per_label, val_per_label=a.val_per_label, seed=a.seed,
                         train_file=a.train_file, test_file=a.test_file, text_col=a.text_col, label_col=a.label_col)
    except (TaskDataError, DatasetNotFound, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"{task.setting}: {task.num_labels} labels; train {len(task.train)}, val {len(task.val)}, "
          f"test {len(task.test)}")
    print("sources: " + ", ".join(task.sources))
    for note in task.notes:
        print(f"note: {note}")
    if task.train:
        ex = task.train[0]
        print(f"example [{task.label_names[ex.label]}]: {ex.text[:300]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
