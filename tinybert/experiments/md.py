"""Markdown helpers shared by tables.py, the studies' table sections and embeddings.py."""

from __future__ import annotations

import math


def pm(mean, std, digits=3) -> str:
    """`mean ± std`, or just the mean when std is missing, or "" when the mean is."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _missing(x) -> bool:
    return x is None or x == "" or (isinstance(x, float) and math.isnan(x))


def ci(mean, half, digits=3, signed=False) -> str:
    """`mean ± half` (the 95% t half-width, stats.mean_ci); "mean (no interval)" from a single value; "" when
    the mean is missing. `signed`: a + on positive means (differences)."""
    if _missing(mean):
        return ""
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{m} (no interval)" if _missing(half) else f"{m} ± {half:.{digits}f}"


def ci_of(row, col: str, digits=3, signed=False) -> str:
    """`ci` of summary.csv's `<col>_mean` and `<col>_ci` in a row (a namedtuple from itertuples or a Series)."""
    get = (lambda k: row.get(k)) if hasattr(row, "get") else (lambda k: getattr(row, k, None))
    return ci(get(f"{col}_mean"), get(f"{col}_ci"), digits, signed)


def pseed_cell(row) -> str:
    """'pre-seed b−a' cell of a summary row: second minus first pre-training seed, paired by fine-tuning seed,
    with its interval and the pair ('' where the arm has one pre-training seed)."""
    if row is None:
        return ""
    get = (lambda k: row.get(k)) if hasattr(row, "get") else (lambda k: getattr(row, k, None))
    cell = ci(get("pseed_diff_mean"), get("pseed_diff_ci"), signed=True)
    return f"{cell} (seeds {get('pseed_pair')})" if cell else ""
