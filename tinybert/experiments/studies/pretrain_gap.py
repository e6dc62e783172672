"""Study ``pretrain_gap`` (E1, E4, C1-C3, C11): the deep model and the main BERT-1, each from scratch and
pre-trained on `main_size` articles, on every task and seed."""

from __future__ import annotations

from ..md import md_table, pm
from .core import Study, TableInput, make_row, register


def grid(study: Study, p, ws) -> list:
    rows = []
    for model in (p.deep, p.shallow[0]):
        for task in p.tasks:
            for seed in p.seeds:
                rows.append(make_row(ws, study.name, model, task, seed))
                rows.append(make_row(ws, study.name, model, task, seed, articles=p.main_size))
    return rows


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    rows = []
    for (model, task), g in t.groupby(["model", "task"], sort=False):
        sc, pr = g[g["pretrained"] == False], g[g["pretrained"] == True]  # noqa: E712
        rows.append([model, task, pm(*sc[["accuracy_mean", "accuracy_std"]].iloc[0]) if len(sc) else "",
                     pm(*pr[["accuracy_mean", "accuracy_std"]].iloc[0]) if len(pr) else "",
                     pm(*pr[["gap_mean", "gap_std"]].iloc[0]) if len(pr) else "",
                     int(pr["gap_positive"].iloc[0]) if len(pr) else "", int(g["n"].min())])
    return [f"## pretrain_gap: with and without pre-training on {inp.preset.main_size} articles",
            md_table(["model", "task", "from scratch", "pre-trained", "gap", "seeds with gap > 0", "n"], rows)]


STUDY = register(Study("pretrain_gap", grid, table, "plots.make_figures:fig_pretrain_gap",
                       doc="test accuracy from scratch vs pre-trained, per task and model"))
