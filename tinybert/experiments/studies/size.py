"""Study ``size`` (E2, C4): the deep model from scratch (0 articles) and pre-trained on each of `sizes`."""

from __future__ import annotations

from ..md import md_table, pm
from .core import Study, TableInput, deep_size_rows, register


def grid(study: Study, p, ws) -> list:
    return deep_size_rows(study, p, ws, p.sizes)


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    rows = [[r.task, r.pretrain_articles, pm(r.accuracy_mean, r.accuracy_std),
             pm(r.gap_mean, r.gap_std) if r.pretrained else "0", r.gap_positive if r.pretrained else "",
             pm(r.overlap_tokens_mean, None), pm(r.overlap_types_mean, None), int(r.n)]
            for r in t.sort_values(["task", "pretrain_articles"]).itertuples()]
    return [f"## size: {inp.preset.deep.name} accuracy and gap vs pre-training articles",
            md_table(["task", "articles", "accuracy", "gap", "seeds with gap > 0", "token overlap", "type overlap",
                      "n"], rows)]


STUDY = register(Study("size", grid, table, "plots.make_figures:fig_size",
                       doc="pre-training gap (and accuracy) vs number of pre-training articles"))
