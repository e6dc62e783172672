"""The table of fine-tuning tasks: one frozen `TaskRow` per task, read by everything that needs to know the tasks.

Where it sits in the flow: raw files -> a reader (agnews.py, dbpedia.py, fewrel.py, csv_task.py) -> RawTask ->
data_prep/tasks.py `load_task` (which looks the reader up **here**) -> TaskData. The same rows give eval.py its
`--task` choices, tinybert/overlap.py its task choices, and the experiment runner its label counts, so none of
them lists task names of its own.

Adding a task is one reader file plus one row (README.md, 'Adding a task'):
  * the reader: `def load_mytask(data_dir=None) -> RawTask` (plus `setting=` when the row has settings, plus the
    keyword arguments named in `options`); it reads `<data dir>/mytask/` (tinybert.data_dir.dataset_dir) and
    returns every usable row, unsampled;
  * the row: `register(TaskRow("mytask", load_mytask, num_labels=6, default_sizes=(500, 100),
    expected=mytask.EXPECTED))`, in `_BUILTIN` below for a task that ships with tinybert, or from your own code.

Readers import only data_prep/task_types.py (and shared row readers such as zhang_csv.py), never this module or
tasks.py, so importing this table imports every reader without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from data_prep import agnews, csv_task, dbpedia, fewrel
from data_prep.task_types import RawTask

# load_task keyword arguments that a row may pass on to its reader (`TaskRow.options`). `setting` is not one of
# them: a row takes a setting exactly when it lists `settings`.
READER_OPTIONS = ("train_file", "test_file", "text_col", "label_col")


@dataclass(frozen=True)
class Setting:
    """One variant of a task (FewRel's relation sets); `num_labels` None: the task's own count."""

    name: str
    num_labels: int | None = None


@dataclass(frozen=True)
class TaskRow:
    """One row of the task table. Nothing here is sampled or read; `load_task` does that with these values."""

    name: str  # the --task value
    reader: Callable[..., RawTask]  # reader(data_dir, [setting=...], **{option: value for option in options})
    num_labels: int | None  # None: known only from the data (the csv task)
    default_sizes: tuple[int | None, int | None] = (None, None)  # (train, test) per label; None: every row
    settings: tuple[Setting, ...] = ()  # the first is the default
    expected: str = ""  # the expected files and format, for error messages and help
    options: tuple[str, ...] = ()  # which of READER_OPTIONS the reader takes

    def __post_init__(self):
        unknown = set(self.options) - set(READER_OPTIONS)
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown reader options {sorted(unknown)}; "
                             f"expected some of {', '.join(READER_OPTIONS)}")

    @property
    def setting_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.settings)

    @property
    def reads_data_dir(self) -> bool:
        """True when the task's files are found from the data dir alone (no --train/--test files)."""
        return not self.options

    def resolve_setting(self, setting: str | None) -> str | None:
        """The plain name of `setting` ('fewrel-val16' is 'val16'), the default for None; ValueError if unknown."""
        if not self.settings:
            return None
        if setting is None:
            return self.settings[0].name
        plain = setting.removeprefix(f"{self.name}-")
        if plain not in self.setting_names:
            raise ValueError(f"unknown {self.name} setting {plain!r}; expected {' or '.join(self.setting_names)}")
        return plain

    def label_count(self, setting: str | None = None) -> int | None:
        """Number of labels of the task (in `setting`); None when only the data can tell."""
        plain = self.resolve_setting(setting)
        override = next((s.num_labels for s in self.settings if s.name == plain), None)
        return self.num_labels if override is None else override


_BUILTIN = (
    TaskRow("agnews", agnews.load_agnews, num_labels=4, default_sizes=(1000, 1000),
             expected=agnews.EXPECTED),
    TaskRow("dbpedia", dbpedia.load_dbpedia, num_labels=14, default_sizes=(100, 100),
             expected=dbpedia.EXPECTED),
    TaskRow("fewrel", fewrel.load_fewrel, num_labels=64, default_sizes=(630, 70),
             settings=(Setting("train64", 64), Setting("val16", 16)), expected=fewrel.EXPECTED),
    TaskRow("csv", csv_task.read_csv_files, num_labels=None, options=READER_OPTIONS,
             expected="a CSV, TSV or JSON-lines file with a text and a label column (--train, --text-col, "
                      "--label-col; optional --test)"),
)
_REGISTRY: dict[str, TaskRow] = {row.name: row for row in _BUILTIN}


def register(row: TaskRow, *, replace: bool = False) -> TaskRow:
    """Add a row (a new task). A name already taken is an error unless `replace`, so a typo cannot shadow a task."""
    if row.name in _REGISTRY and not replace:
        raise ValueError(f"task {row.name!r} is already registered")
    _REGISTRY[row.name] = row
    return row


def unregister(name: str) -> None:
    """Remove a row (tests register throwaway tasks and remove them again)."""
    _REGISTRY.pop(name, None)


def task_names(*, data_dir_only: bool = False) -> tuple[str, ...]:
    """Registered task names in registration order; `data_dir_only`: only tasks read from the data dir alone."""
    return tuple(name for name, row in _REGISTRY.items() if row.reads_data_dir or not data_dir_only)


def all_tasks() -> tuple[TaskRow, ...]:
    return tuple(_REGISTRY.values())


def get_task(name: str) -> TaskRow:
    """The row of `name`; ValueError naming the registered tasks when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(task_names())}") from None
