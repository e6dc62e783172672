"""Study ``baseline``: the bag-of-words yardstick (tinybert/baseline.py: TF-IDF word uni+bigrams + softmax
regression, C chosen on validation) on every task and fine-tuning seed of the preset, on exactly the train /
validation / test rows that seed's fine-tuning units see. Its rows (model `bag-of-words`, corpus `baseline`) are
read by every other study's table (`baseline_row`) and figure, so each result is shown beside it. The runner adds
this study to every run (a unit takes seconds)."""

from __future__ import annotations

from ..md import ci_of, md_table
from ..presets import ModelSpec
from ..units import BASELINE_MODEL, baseline_spec
from .core import GridRow, Study, TableInput, register

MODEL = ModelSpec(BASELINE_MODEL, "baseline")
CORPUS = "baseline"


def grid(study: Study, p, ws) -> list:
    return [GridRow(study.name, MODEL, task, seed, None, baseline_spec(task, seed), corpus=CORPUS)
            for task in p.tasks for seed in p.seeds]


def baseline_summary(summary, task: str):
    """The baseline's summary.csv row for `task` (None when it has not run)."""
    if summary is None or not len(summary) or "model" not in summary:
        return None
    b = summary[(summary["model"] == BASELINE_MODEL) & (summary["task"] == task)]
    return b.iloc[0] if len(b) else None


def baseline_row(inp: TableInput, task: str, accuracy_at: int, width: int, n_at: int | None = None,
                 label_at: int = 0, task_at: int | None = None) -> list | None:
    """A table row of `width` cells for the baseline on `task`: its accuracy (mean ± 95% half-width) in column
    `accuracy_at`, 'bag-of-words (same rows)' in `label_at`, the task in `task_at`, n in `n_at`; None if absent."""
    b = baseline_summary(inp.summary, task)
    if b is None:
        return None
    row = [""] * width
    row[label_at] = f"{BASELINE_MODEL} (same rows)"
    if task_at is not None:
        row[task_at] = task
    row[accuracy_at] = ci_of(b, "accuracy")
    if n_at is not None:
        row[n_at] = int(b["n"])
    return row


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    rows = [[r.task, ci_of(r, "accuracy"), ci_of(r, "best_val_accuracy"), int(r.n)] for r in t.itertuples()]
    return ["## baseline: bag-of-words (TF-IDF uni+bigrams + logistic regression, C chosen on validation) on "
            "each seed's rows",
            md_table(["task", "test accuracy", "validation accuracy", "n"], rows)]


STUDY = register(Study("baseline", grid, table, None, doc="the bag-of-words yardstick on every task sample"))
