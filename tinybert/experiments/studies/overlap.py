"""Study ``overlap`` (E3, C5): the sweep model (`preset.sweep`, the deep one by default) on `overlap.task`,
pre-trained on `overlap.size` articles chosen for high, random and low overlap with that task, plus the scratch
control; and (`overlap_table`, written to overlap.csv after a run) the overlap of every task sample with every
corpus of the preset, without training."""

from __future__ import annotations

import pandas as pd

from ..md import ci, ci_of, md_table, pm, pseed_cell
from ..stats import verdict
from ..units import format_exception
from .baseline import baseline_row
from .core import Study, TableInput, make_rows, paired_contrast, register


def grid(study: Study, p, ws) -> list:
    rows = []
    task = p.task(p.overlap.task)
    for seed in p.seeds:
        rows += make_rows(ws, study.name, p.sweep, task, seed)
        for arm in p.overlap.arms:
            rows += make_rows(ws, study.name, p.sweep, task, seed, articles=p.overlap.size, corpus=arm)
    return rows


def overlap_table(ws, preset) -> list[dict]:
    """Overlap of every task sample (every seed) with every corpus of the preset: the nested sizes (0 and the
    size study's) and the overlap arms. No training; one row per (task, seed, corpus)."""
    corpora = [("none", 0, None)] + [("nested", n, ws.corpus_spec("nested", n))
                                     for n in sorted(set(preset.sizes) | {preset.main_size})]
    corpora += [(arm, preset.overlap.size, ws.corpus_spec(arm, preset.overlap.size)) for arm in preset.overlap.arms]
    rows = []
    for task in preset.tasks:
        for seed in preset.seeds:
            for kind, n, spec in corpora:
                res = ws.task_overlap(task, seed, spec)
                rows.append({"task": task.name, "setting": ws.task(task, seed).setting, "seed": seed, "corpus": kind,
                             "pretrain_articles": n, **res, "preset": preset.name, "vocab": ws.vocab_label})
    return rows


def after_run(preset, ws, log) -> None:
    try:
        pd.DataFrame(overlap_table(ws, preset)).to_csv(ws.out / "overlap.csv", index=False)
    except Exception as exc:  # noqa: BLE001 -- a failed table must not lose the run's other results
        log(f"overlap table FAILED: {format_exception(exc)[0]}")


def table(inp: TableInput) -> list[str]:
    parts = []
    t, o = inp.rows, inp.preset.overlap
    if len(t):
        headers = ["task", "corpus", "articles", "token overlap", "type overlap", "accuracy", "gap", "verdict",
                   "pre-seed b−a", "n"]
        rows = [[r.task, r.corpus, r.pretrain_articles, pm(r.overlap_tokens_mean, None), pm(r.overlap_types_mean, None),
                 ci_of(r, "accuracy"), ci_of(r, "gap", signed=True) if r.pretrained else "0",
                 verdict(r.gap_mean, r.gap_ci) if r.pretrained else "", pseed_cell(r), int(r.n)]
                for r in t.itertuples()]
        base = baseline_row(inp, o.task, accuracy_at=5, width=len(headers), n_at=9, label_at=1, task_at=0)
        if base:
            rows.append(base)
        parts += [f"## overlap: controlled pre-training sets ({o.size} articles from a pool of {o.pool}) for {o.task}",
                  md_table(headers, rows)]
        arms = {r.corpus: r for r in t.itertuples() if r.pretrained}
        effects = []
        for b, a in (("high", "low"), ("high", "random"), ("random", "low")):
            if a in arms and b in arms:
                mean, half, n = paired_contrast(inp, "overlap", o.task, {"corpus": b}, {"corpus": a})
                effects.append([o.task, f"{b} − {a}", ci(mean, half, signed=True), verdict(mean, half),
                                pseed_cell(arms[b]), pseed_cell(arms[a]), n])
        if effects:
            parts += ["## overlap effect: accuracy of one controlled set minus another, paired by fine-tuning seed, "
                      "beside each set's pre-training-seed difference",
                      md_table(["task", "sets", "difference", "verdict", "pre-seed b−a (first set)",
                                "pre-seed b−a (second set)", "n"], effects)]
    ov_path = inp.ws.out / "overlap.csv"
    if ov_path.is_file():  # written by after_run even when no overlap unit has finished
        ov = pd.read_csv(ov_path)
        cols = [c for c in ("overlap_tokens", "overlap_types", "corpus_share") if c in ov]  # (c): older CSVs lack it
        g = ov.groupby(["task", "corpus", "pretrain_articles"], sort=False)[cols].mean()
        rows = [[task, corpus, n] + [f"{v:.4f}" for v in vals] for (task, corpus, n), vals in g.iterrows()]
        names = {"overlap_tokens": "token overlap (a)", "overlap_types": "type overlap (b)",
                 "corpus_share": "corpus share (c)"}
        parts += ["## overlap: every task and corpus (mean over the seeds' samples; (c) = share of the corpus's "
                  "tokens that are task types, `tinybert/overlap.py`)",
                  md_table(["task", "corpus", "articles"] + [names[c] for c in cols], rows)]
    return parts


STUDY = register(Study("overlap", grid, table, "plots.make_figures:fig_overlap", after_run=after_run,
                       doc="token overlap vs corpus size; gap vs overlap; the controlled high/random/low sets"))
