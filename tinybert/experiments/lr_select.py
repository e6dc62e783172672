"""The fine-tuning lr chosen per arm on validation, from the units of the preset's lr grid (preset.lrs).

Where it sits: every study's grid has one fine-tuning unit per lr (studies/core.make_rows); tables.py calls
`choose_lrs` on the finished units of results.csv, marks each row `lr_chosen` and writes lr_selection.csv; the
summary, the tables, the figures and the committees use only the chosen lr's units.

An arm (studies/core.arm_key) = study, model, pre-training condition (pre-trained or not, articles, corpus arm or
intervention), task and committee role. Its lr is the one with the highest mean best-validation accuracy over the
arm's finished units (every fine-tuning seed, every pre-training seed); ties go to the smaller lr. Test accuracy is
never looked at. An arm with no finished unit has no choice yet (every row of it `lr_chosen` False).
"""

from __future__ import annotations

import math

import pandas as pd

from .studies.core import arm_key

ARM_COLUMNS = ["study", "model", "pretrained", "pretrain_articles", "corpus", "task", "committee"]


def row_arm(row) -> tuple:
    return arm_key(*(row[c] for c in ARM_COLUMNS))


def choose_lrs(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """({arm: chosen lr}, lr_selection table: one row per arm and lr with the mean validation accuracy, the
    number of finished units behind it and whether it was chosen) from results.csv rows (unit rows with an lr;
    committee curves and the baseline have none)."""
    val: dict = {}
    for _, row in df.iterrows():
        lr = row.get("lr")
        if _missing(lr) or not _missing(row.get("committee_k")):
            continue
        arm = row_arm(row)
        per_lr = val.setdefault(arm, {})
        accs = per_lr.setdefault(float(lr), [])
        v = row.get("best_val_accuracy")
        if row.get("status") == "ok" and not _missing(v):
            accs.append(float(v))
    chosen, table = {}, []
    for arm, per_lr in val.items():
        means = {lr: sum(a) / len(a) for lr, a in per_lr.items() if a}
        if means:
            best = max(means.values())
            chosen[arm] = min(lr for lr, m in means.items() if m == best)
        grid = sorted(per_lr)
        for lr in grid:
            table.append({**dict(zip(ARM_COLUMNS, arm)), "lr": lr, "val_accuracy_mean": means.get(lr, math.nan),
                          "n": len(per_lr[lr]), "chosen": chosen.get(arm) == lr,
                          "at_grid_edge": len(grid) > 1 and chosen.get(arm) in (grid[0], grid[-1])})
    return chosen, pd.DataFrame(table, columns=ARM_COLUMNS + ["lr", "val_accuracy_mean", "n", "chosen",
                                                              "at_grid_edge"])


def lr_chosen_column(df: pd.DataFrame, chosen: dict) -> list[bool]:
    """Per results.csv row: True for a unit at its arm's chosen lr and for rows without an lr (the baseline,
    the committee curves, which are built from chosen units only); False otherwise."""
    out = []
    for _, row in df.iterrows():
        lr = row.get("lr")
        out.append(True if _missing(lr) else chosen.get(row_arm(row)) == float(lr))
    return out


def chosen_grid(grid: list, chosen: dict, default_lr: float) -> list:
    """The grid rows at their arm's chosen lr; an arm with no choice yet keeps its `default_lr` rows (so a
    committee whose members have not run still lists them as 'not run'). Rows without an lr are kept."""
    return [r for r in grid if r.lr is None or r.lr == chosen.get(r.arm, default_lr)]


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
