"""Study ``size`` (E2, C4): the sweep model (`preset.sweep`, the deep one by default) from scratch (0 articles)
and pre-trained on each of `sizes`."""

from __future__ import annotations

from ..md import ci, ci_of, md_table, pm, pseed_cell
from ..stats import verdict
from .baseline import baseline_row
from .core import Study, TableInput, sweep_size_rows, paired_contrast, register


def grid(study: Study, p, ws) -> list:
    return sweep_size_rows(study, p, ws, p.sizes)


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    headers = ["task", "articles", "accuracy", "gap", "verdict", "seeds with gap > 0", "pre-seed b−a",
               "token overlap", "type overlap", "n"]
    rows = []
    for task, g in t.groupby("task", sort=True):
        rows += [[r.task, r.pretrain_articles, ci_of(r, "accuracy"), ci_of(r, "gap", signed=True) if r.pretrained
                  else "0", verdict(r.gap_mean, r.gap_ci) if r.pretrained else "",
                  r.gap_positive if r.pretrained else "", pseed_cell(r), pm(r.overlap_tokens_mean, None),
                  pm(r.overlap_types_mean, None), int(r.n)]
                 for r in g.sort_values("pretrain_articles").itertuples()]
        base = baseline_row(inp, task, accuracy_at=2, width=len(headers), n_at=9, label_at=1, task_at=0)
        if base:
            rows.append(base)
    parts = [f"## size: {inp.preset.sweep.name} accuracy and gap vs pre-training articles", md_table(headers, rows)]
    effects = []
    for task, g in t[t["pretrained"] == True].groupby("task", sort=True):  # noqa: E712
        sizes = sorted(g["pretrain_articles"])
        if len(sizes) < 2:
            continue
        big, small = (g[g["pretrain_articles"] == n].iloc[0] for n in (sizes[-1], sizes[0]))
        mean, half, n = paired_contrast(inp, "size", task, {"pretrained": True, "pretrain_articles": sizes[-1]},
                                        {"pretrained": True, "pretrain_articles": sizes[0]})
        effects.append([task, f"{sizes[-1]} − {sizes[0]}", ci(mean, half, signed=True), verdict(mean, half),
                        pseed_cell(big), pseed_cell(small), n])
    if effects:
        parts += ["## size effect: accuracy at the largest minus the smallest pre-training size, paired by "
                  "fine-tuning seed, beside each size's pre-training-seed difference",
                  md_table(["task", "articles", "difference", "verdict", "pre-seed b−a (largest)",
                            "pre-seed b−a (smallest)", "n"], effects)]
    return parts


STUDY = register(Study("size", grid, table, "plots.make_figures:fig_size",
                       doc="pre-training gap (and accuracy) vs number of pre-training articles"))
