"""Study ``reset_unseen`` (an intervention behind E2/E3): the sweep model (`preset.sweep`) pre-trained on the
smallest size and on `main_size` articles (or the preset's `reset_sizes`), fine-tuned as in ``size`` and again after
the word-embedding rows of every token its pre-training rows never contained are drawn afresh from the initial
distribution (corpus label 'nested-reset'), and again with the transformer blocks re-initialised and the embeddings kept
('nested-blocks'). If those collapsed rows are what makes small corpora hurt, the reset closes the gap; if the
blocks are, the second arm does. The interventions themselves run in units.py (finetune_spec's arguments)."""

from __future__ import annotations

from ..md import ci_of, md_table, pseed_cell
from ..stats import verdict
from .baseline import baseline_row
from .core import AS_PRETRAINED, Intervention, Study, TableInput, sweep_size_rows, register

INTERVENTIONS = (AS_PRETRAINED, Intervention("reset", (("reset_unseen", True),)),
                 Intervention("blocks", (("reinit_blocks", True),)))


def grid(study: Study, p, ws) -> list:
    return sweep_size_rows(study, p, ws, p.reset_sizes or sorted({min(p.sizes), p.main_size}), study.interventions)


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    headers = ["task", "articles", "corpus", "accuracy", "gap", "minus as pre-trained (paired)", "verdict",
               "seeds better than as pre-trained", "pre-seed b−a", "n"]
    rows = []
    for task, g in t.groupby("task", sort=True):
        for r in g.sort_values(["pretrain_articles", "corpus"]).itertuples():
            arm = r.corpus.startswith("nested-")
            rows.append([r.task, r.pretrain_articles, r.corpus, ci_of(r, "accuracy"),
                         ci_of(r, "gap", signed=True) if r.pretrained else "0",
                         ci_of(r, "vs_as_pretrained", signed=True),
                         verdict(r.vs_as_pretrained_mean, r.vs_as_pretrained_ci) if arm else "",
                         r.vs_as_pretrained_positive if arm else "", pseed_cell(r), int(r.n)])
        base = baseline_row(inp, task, accuracy_at=3, width=len(headers), n_at=9, label_at=2, task_at=0)
        if base:
            rows.append(base)
    return [f"## reset_unseen: {inp.preset.sweep.name} as pre-trained (nested), with the embedding rows of "
            f"never-seen tokens re-drawn (nested-reset), or with its transformer blocks re-initialised "
            f"(nested-blocks)", md_table(headers, rows)]


STUDY = register(Study("reset_unseen", grid, table, "plots.make_figures:fig_reset_unseen", INTERVENTIONS,
                       doc="the gap with the never-seen tokens' embedding rows, or the transformer blocks, "
                           "re-initialised"))
