"""Study ``pretrain_gap`` (E1, E4, C1-C3, C11): the deep model and the main BERT-1, each from scratch and
pre-trained on `main_size` articles, on every task and seed."""

from __future__ import annotations

from ..md import ci, ci_of, md_table, pseed_cell
from ..stats import verdict
from .baseline import baseline_row
from .core import Study, TableInput, make_rows, minus_baseline, register


def grid(study: Study, p, ws) -> list:
    rows = []
    for model in (p.deep, p.shallow[0]):
        for task in p.tasks:
            for seed in p.seeds:
                rows += make_rows(ws, study.name, model, task, seed)
                rows += make_rows(ws, study.name, model, task, seed, articles=p.main_size)
    return rows


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    rows = []
    headers = ["model", "task", "from scratch", "pre-trained", "gap", "verdict", "seeds with gap > 0",
               "pre-seed b−a", "scratch − bag-of-words", "pre-trained − bag-of-words", "n"]
    for task, gt in t.groupby("task", sort=False):
        for model, g in gt.groupby("model", sort=False):
            sc, pr = g[g["pretrained"] == False], g[g["pretrained"] == True]  # noqa: E712
            p = pr.iloc[0] if len(pr) else None
            vs_base = [ci(*minus_baseline(inp, "pretrain_gap", task, {"model": model, "pretrained": flag})[:2],
                          signed=True) for flag in (False, True)]
            rows.append([model, task, ci_of(sc.iloc[0], "accuracy") if len(sc) else "",
                         ci_of(p, "accuracy") if p is not None else "",
                         ci_of(p, "gap", signed=True) if p is not None else "",
                         verdict(p["gap_mean"], p["gap_ci"]) if p is not None else "",
                         int(p["gap_positive"]) if p is not None else "", pseed_cell(p), *vs_base,
                         int(g["n"].min())])
        base = baseline_row(inp, task, accuracy_at=2, width=len(headers), n_at=10, task_at=1)
        if base:
            rows.append(base)
    return [f"## pretrain_gap: with and without pre-training on {inp.preset.main_size} articles",
            md_table(headers, rows)]


STUDY = register(Study("pretrain_gap", grid, table, "plots.make_figures:fig_pretrain_gap",
                       doc="test accuracy from scratch vs pre-trained, per task and model"))
