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
