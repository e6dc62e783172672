"""The fine-tuning lr chosen per arm on validation, from the units of the preset's lr grid (preset.lrs).

Where it sits: every study's grid has one fine-tuning unit per lr (studies/core.make_rows); tables.py calls
`choose_lrs` on the finished units of results.csv, marks each row `lr_chosen` and writes lr_selection.csv; the
summary, the tables, the figures and the committees use only the chosen lr's units.

An arm (studies/core.arm_key) = study, model, pre-training condition (pre-trained or not, articles, corpus arm or
intervention), task and committee role. Its lr is the one with the highest mean best-validation accuracy over the
arm's finished units (every fine-tuning seed, every pre-training seed); ties go to the smaller lr. Test accuracy is
never looked at. An arm with no finished unit has no choice yet (every row of it `lr_chosen` False).

Grid extension (a preset's `lr_extensions` > 0): when an arm's chosen lr is the lowest or highest it has, the
optimum may lie outside, so the runner adds the next lr beyond that end (`next_lr`: one step of the 1-3 ladder,
1e-3 -> 3e-4 -> 1e-4) for that arm, at most `lr_extensions` steps past each end of the preset's grid, runs those
units and chooses again (`extensions_needed`). Extensions are recorded in `<out>/lr_extensions.json` (key: the arm
without its study, so units shared by several studies extend together) and read back by every later grid
(studies/core.make_rows), so the grid stays a pure function of the preset and that file.
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


def next_lr(lr: float, down: bool) -> float:
    """The next lr beyond `lr` on the 1-3 ladder (..., 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, ...); an lr off the ladder
    moves by a factor sqrt(10), rounded to 2 significant digits."""
    exp = math.floor(math.log10(lr) + 1e-9)
    mant = round(lr / 10 ** exp, 6)
    if mant == 1.0:
        out = 3 * 10 ** (exp - 1) if down else 3 * 10 ** exp
    elif mant == 3.0:
        out = 10 ** exp if down else 10 ** (exp + 1)
    else:
        out = lr / math.sqrt(10) if down else lr * math.sqrt(10)
    return float(f"{out:.2g}")


def extension_key(arm: tuple) -> tuple:
    """The part of an arm (arm_key) that lr extensions are recorded under: all but the study."""
    return tuple(arm[1:])


def extensions_needed(selection: pd.DataFrame, grid_lrs: tuple, limit: int,
                      recorded: dict | None = None) -> list[tuple[tuple, float]]:
    """[(extension key, lr to add)] for every arm of lr_selection whose chosen lr is its lowest (highest) lr, when
    every lr of the arm has the same number of finished units (the choice is not premature) and fewer than
    `limit` lrs lie below (above) the preset's grid `grid_lrs`; never an lr already `recorded` for the arm
    ({extension key: lrs}, e.g. one whose units lie outside the block being run). One step per arm and end."""
    out = []
    if selection is None or not len(selection) or limit <= 0:
        return out
    lo, hi = min(grid_lrs), max(grid_lrs)
    for arm, g in selection.groupby(ARM_COLUMNS, sort=False, dropna=False):
        lrs = sorted(g["lr"])
        counts = set(g["n"])
        if len(lrs) < 2 or len(counts) != 1 or counts == {0} or not g["chosen"].any():
            continue
        chosen = float(g[g["chosen"]]["lr"].iloc[0])
        key = extension_key(arm_key(*arm))
        if chosen == lrs[0] and sum(lr < lo for lr in lrs) < limit:
            out.append((key, next_lr(lrs[0], down=True)))
        elif chosen == lrs[-1] and sum(lr > hi for lr in lrs) < limit:
            out.append((key, next_lr(lrs[-1], down=False)))
    recorded = recorded or {}
    out = [(key, lr) for key, lr in out if lr not in recorded.get(key, ())]
    return list(dict.fromkeys(out))  # arms of several studies can share a key


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
