"""Study ``reset_unseen`` (an intervention behind E2/E3): the deep model pre-trained on the smallest size and on
`main_size` articles (or the preset's `reset_sizes`), fine-tuned as in ``size`` and again after the word-embedding
rows of every token its pre-training rows never contained are drawn afresh from the initial distribution (corpus
label 'nested-reset'), and again with the transformer blocks re-initialised and the embeddings kept
('nested-blocks'). If those collapsed rows are what makes small corpora hurt, the reset closes the gap; if the
blocks are, the second arm does. The interventions themselves run in units.py (finetune_spec's arguments)."""

from __future__ import annotations

from ..md import md_table, pm
from .core import AS_PRETRAINED, Intervention, Study, TableInput, deep_size_rows, register

INTERVENTIONS = (AS_PRETRAINED, Intervention("reset", (("reset_unseen", True),)),
                 Intervention("blocks", (("reinit_blocks", True),)))


def grid(study: Study, p, ws) -> list:
    return deep_size_rows(study, p, ws, p.reset_sizes or sorted({min(p.sizes), p.main_size}), study.interventions)


def table(inp: TableInput) -> list[str]:
    t = inp.rows
    if not len(t):
        return []
    rows = [[r.task, r.pretrain_articles, r.corpus, pm(r.accuracy_mean, r.accuracy_std),
             pm(r.gap_mean, r.gap_std) if r.pretrained else "0", pm(r.vs_as_pretrained_mean, r.vs_as_pretrained_std),
             r.vs_as_pretrained_positive if r.corpus.startswith("nested-") else "", int(r.n)]
            for r in t.sort_values(["task", "pretrain_articles", "corpus"]).itertuples()]
    return [f"## reset_unseen: {inp.preset.deep.name} as pre-trained (nested), with the embedding rows of "
            f"never-seen tokens re-drawn (nested-reset), or with its transformer blocks re-initialised "
            f"(nested-blocks)",
            md_table(["task", "articles", "corpus", "accuracy", "gap", "minus as pre-trained (paired)",
                      "seeds better than as pre-trained", "n"], rows)]


STUDY = register(Study("reset_unseen", grid, table, "plots.make_figures:fig_reset_unseen", INTERVENTIONS,
                       doc="the gap with the never-seen tokens' embedding rows, or the transformer blocks, "
                           "re-initialised"))
