"""Results tables: results.csv, summary.csv, latency.csv and tables.md, rebuilt from the finished units.

Where it sits: units.py wrote one JSON (and .npz) per unit; this file joins them with the studies' labels
(studies.build_grid over every study), adds the committee curves, aggregates over seeds and writes the tables
that plots/make_figures.py draws from. It runs no model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .presets import Preset
from .studies import STUDIES, build_grid, committee_rows
from .units import Workspace, ft_record, now, pretrain_done, read_json, spec_hash

COLUMNS = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "pretrain_seed", "vocab", "task",
           "setting", "num_labels", "seed", "init_seed", "committee", "member", "committee_k", "accuracy",
           "final_accuracy", "best_val_accuracy", "accuracy_given_order", "selected_epoch", "overlap_tokens",
           "overlap_types", "pretrain_eval_acc", "pretrain_tokens", "pretrain_seconds", "finetune_seconds", "params",
           "n_train", "n_val", "n_test", "status", "error", "unit", "pretrain_unit", "preset", "device", "date"]
GROUP = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "pretrain_seed", "task",
         "committee", "committee_k"]



def collect(preset: Preset, ws: Workspace) -> pd.DataFrame:
    """results.csv rows for every unit of every study that has a record (finished or failed)."""
    grid = build_grid(preset, ws, STUDIES)
    records = {}
    rows = []
    for r in grid:
        if r.ft_hash not in records:
            records[r.ft_hash] = ft_record(ws, r.ft)
        rec = records[r.ft_hash]
        if rec is None:
            continue
        pre = rec.get("pretrain") or {}
        if r.pretrain is not None and not pre:
            pre = pretrain_done(ws, r.pretrain) or {}
        ovl = rec.get("overlap") or {}
        rows.append({
            "study": r.study, "model": r.model.name, "family": r.model.family, "pretrained": r.pretrain is not None,
            "pretrain_articles": r.articles, "corpus": r.corpus, "pretrain_seed": r.pretrain_seed,
            "vocab": ws.vocab_label, "task": r.task.name, "setting": rec.get("setting"),
            "num_labels": rec.get("num_labels"), "seed": r.seed, "init_seed": r.ft["init_seed"],
            "committee": r.committee, "member": r.member, "committee_k": None,
            "accuracy": rec.get("accuracy"), "final_accuracy": rec.get("final_accuracy"),
            "best_val_accuracy": rec.get("best_val_accuracy"), "selected_epoch": rec.get("selected_epoch"),
            "overlap_tokens": ovl.get("overlap_tokens"), "overlap_types": ovl.get("overlap_types"),
            "pretrain_eval_acc": pre.get("eval_acc"), "pretrain_tokens": pre.get("content_tokens"),
            "pretrain_seconds": pre.get("seconds", 0.0 if r.pretrain is None else None),
            "finetune_seconds": rec.get("finetune_seconds"), "params": rec.get("params"),
            "n_train": rec.get("n_train"), "n_val": rec.get("n_val"), "n_test": rec.get("n_test"),
            "status": rec.get("status"), "error": rec.get("error", ""), "unit": r.ft_hash,
            "pretrain_unit": spec_hash(r.pretrain) if r.pretrain else "", "preset": preset.name,
            "device": rec.get("device"), "date": rec.get("date")})
    for row in committee_rows(ws, grid, records):
        rows.append({"vocab": ws.vocab_label, "preset": preset.name, **row})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    keys = list(GROUP)
    ok = _blank_keys(ok, keys)
    # paired differences, per seed: pre-trained minus scratch of the same model and task; committee minus deep
    scratch = (ok[~ok["pretrained"].astype(bool) & (ok["committee_k"] == "")]
               .drop_duplicates(["model", "task", "seed"]).set_index(["model", "task", "seed"])["accuracy"])
    ok["gap"] = [a - scratch.get((m, t, s), np.nan) if p and k == "" else np.nan
                 for a, m, t, s, p, k in zip(ok["accuracy"], ok["model"], ok["task"], ok["seed"], ok["pretrained"],
                                             ok["committee_k"])]
    ref = ok[(ok["committee"] == "reference")].drop_duplicates(["task", "seed"]).set_index(["task", "seed"])["accuracy"]
    ok["vs_deep"] = [a - ref.get((t, s), np.nan) if k != "" else np.nan
                     for a, t, s, k in zip(ok["accuracy"], ok["task"], ok["seed"], ok["committee_k"])]
    # reset_unseen arms ('nested-reset', 'nested-blocks') minus the same checkpoint fine-tuned as pre-trained
    as_is = (ok[ok["corpus"] == "nested"].drop_duplicates(["model", "task", "pretrain_articles", "seed"])
             .set_index(["model", "task", "pretrain_articles", "seed"])["accuracy"])
    ok["vs_as_pretrained"] = [a - as_is.get((m, t, n, s), np.nan) if c.startswith("nested-") else np.nan
                              for a, m, t, n, s, c in zip(ok["accuracy"], ok["model"], ok["task"],
                                                          ok["pretrain_articles"], ok["seed"], ok["corpus"])]
    def positive(x):  # seeds whose paired difference is > 0 (the sign test behind "n of 5 seeds")
        return int((x > 0).sum())

    agg = {"accuracy": ["mean", "std", "count"], "final_accuracy": ["mean", "std"],
           "gap": ["mean", "std", positive], "vs_deep": ["mean", "std"],
           "vs_as_pretrained": ["mean", "std", positive], "overlap_tokens": ["mean"], "overlap_types": ["mean"],
           "pretrain_eval_acc": ["mean"], "pretrain_seconds": ["mean"], "finetune_seconds": ["mean"]}
    for col in agg:
        ok[col] = pd.to_numeric(ok[col], errors="coerce")
    s = ok.groupby(keys, sort=False, dropna=False).agg(agg)
    s.columns = [f"{a}_{b}" if b != "count" else "n" for a, b in s.columns]
    s = s.reset_index()
    failed = df[df["status"] != "ok"].copy()
    if not failed.empty:
        failed = _blank_keys(failed, keys)
        nf = failed.groupby(keys, sort=False, dropna=False).size().rename("n_failed").reset_index()
        s = s.merge(nf, on=keys, how="left")
    else:
        s["n_failed"] = 0
    s["n_failed"] = s["n_failed"].fillna(0).astype(int)
    return s


def _blank_keys(df: pd.DataFrame, keys) -> pd.DataFrame:
    """Group keys as plain objects: missing -> "" (so groupby keeps them), integral floats -> int."""
    df = df.copy()
    for k in keys:
        df[k] = [("" if v is None or (isinstance(v, float) and math.isnan(v)) else
                  int(v) if isinstance(v, float) and v.is_integer() and k != "pretrained" else v) for v in df[k]]
    return df


def write_tables(preset: Preset, ws: Workspace, log=print, studies=STUDIES) -> int:
    """Rewrite every CSV and tables.md; return the number of failed rows of `studies`."""
    out = ws.out
    df = collect(preset, ws)
    df.to_csv(out / "results.csv", index=False)
    summary = summarize(df)
    summary.to_csv(out / "summary.csv", index=False)
    lat = []
    for path in sorted(ws.units.glob("latency-*.json")):
        rec = read_json(path)
        if rec and rec["spec"].get("machine") == ws.machine:
            lat += [{**row, "device": rec["spec"]["machine"], "precision": rec["spec"]["precision"],
                     "preset": preset.name, "date": rec.get("date")} for row in rec["rows"]]
    if lat:
        pd.DataFrame(lat).to_csv(out / "latency.csv", index=False)
    text = tables_markdown(preset, ws, df, summary, lat)
    (out / "tables.md").write_text(text)
    if log is not None:
        log(text)
    return int(((df["status"] != "ok") & df["study"].isin(studies)).sum())


def _pm(mean, std, digits=3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def tables_markdown(preset: Preset, ws: Workspace, df: pd.DataFrame, s: pd.DataFrame, latency: list) -> str:
    parts = [f"# Results: preset {preset.name} ({ws.machine}, {now()})",
             "Test accuracy at the best-validation epoch, mean ± std over seeds (n = number of seeds); gap = "
             "pre-trained minus from-scratch accuracy, paired by seed."]
    if s.empty:
        return "\n\n".join(parts + ["(no finished units yet)"]) + "\n"

    def sel(study, **kw):
        t = s[s["study"] == study]
        for k, v in kw.items():
            t = t[t[k] == v]
        return t

    t = sel("pretrain_gap")
    if len(t):
        rows = []
        for (model, task), g in t.groupby(["model", "task"], sort=False):
            sc, pr = g[g["pretrained"] == False], g[g["pretrained"] == True]  # noqa: E712
            rows.append([model, task, _pm(*sc[["accuracy_mean", "accuracy_std"]].iloc[0]) if len(sc) else "",
                         _pm(*pr[["accuracy_mean", "accuracy_std"]].iloc[0]) if len(pr) else "",
                         _pm(*pr[["gap_mean", "gap_std"]].iloc[0]) if len(pr) else "",
                         int(pr["gap_positive"].iloc[0]) if len(pr) else "", int(g["n"].min())])
        parts += [f"## pretrain_gap: with and without pre-training on {preset.main_size} articles",
                  md_table(["model", "task", "from scratch", "pre-trained", "gap", "seeds with gap > 0", "n"],
                           rows)]
    t = sel("size")
    if len(t):
        rows = [[r.task, r.pretrain_articles, _pm(r.accuracy_mean, r.accuracy_std),
                 _pm(r.gap_mean, r.gap_std) if r.pretrained else "0", r.gap_positive if r.pretrained else "",
                 _pm(r.overlap_tokens_mean, None), _pm(r.overlap_types_mean, None), int(r.n)]
                for r in t.sort_values(["task", "pretrain_articles"]).itertuples()]
        parts += [f"## size: {preset.deep.name} accuracy and gap vs pre-training articles",
                  md_table(["task", "articles", "accuracy", "gap", "seeds with gap > 0", "token overlap",
                            "type overlap", "n"], rows)]
    t = sel("overlap")
    if len(t):
        rows = [[r.task, r.corpus, r.pretrain_articles, _pm(r.overlap_tokens_mean, None),
                 _pm(r.overlap_types_mean, None),
                 _pm(r.accuracy_mean, r.accuracy_std), _pm(r.gap_mean, r.gap_std) if r.pretrained else "0", int(r.n)]
                for r in t.itertuples()]
        parts += [f"## overlap: controlled pre-training sets ({preset.overlap.size} articles from a pool of "
                  f"{preset.overlap.pool}) for {preset.overlap.task}",
                  md_table(["task", "corpus", "articles", "token overlap", "type overlap", "accuracy", "gap", "n"],
                           rows)]
    t = sel("reset_unseen")
    if len(t):
        rows = [[r.task, r.pretrain_articles, r.corpus, _pm(r.accuracy_mean, r.accuracy_std),
                 _pm(r.gap_mean, r.gap_std) if r.pretrained else "0",
                 _pm(r.vs_as_pretrained_mean, r.vs_as_pretrained_std),
                 r.vs_as_pretrained_positive if r.corpus.startswith("nested-") else "", int(r.n)]
                for r in t.sort_values(["task", "pretrain_articles", "corpus"]).itertuples()]
        parts += [f"## reset_unseen: {preset.deep.name} as pre-trained (nested), with the embedding rows of "
                  f"never-seen tokens re-drawn (nested-reset), or with its transformer blocks re-initialised "
                  f"(nested-blocks)",
                  md_table(["task", "articles", "corpus", "accuracy", "gap", "minus as pre-trained (paired)",
                            "seeds better than as pre-trained", "n"], rows)]
    ov_path = ws.out / "overlap.csv"
    if ov_path.is_file():
        o = pd.read_csv(ov_path)
        g = o.groupby(["task", "corpus", "pretrain_articles"], sort=False)[["overlap_tokens", "overlap_types"]].mean()
        rows = [[task, corpus, n, f"{a:.4f}", f"{b:.4f}"] for (task, corpus, n), (a, b) in g.iterrows()]
        parts += ["## overlap: every task and corpus (mean over the seeds' samples)",
                  md_table(["task", "corpus", "articles", "token overlap (a)", "type overlap (b)"], rows)]
    t = sel("committee")
    if len(t):
        rows = []
        for task, g in t.groupby("task", sort=False):
            ref = g[g["committee"] == "reference"]
            refs = _pm(*ref[["accuracy_mean", "accuracy_std"]].iloc[0]) if len(ref) else ""
            for kind in ("variants", "seeds"):
                c = g[(g["committee"] == kind) & (g["committee_k"] != "")].sort_values("committee_k")
                singles = g[(g["committee"] == kind) & (g["committee_k"] == "")]
                best = singles["accuracy_mean"].max() if len(singles) else float("nan")
                for r in c.itertuples():
                    rows.append([task, kind, r.committee_k, _pm(r.accuracy_mean, r.accuracy_std),
                                 _pm(r.vs_deep_mean, r.vs_deep_std), refs, _pm(best, None), int(r.n)])
        parts += [f"## committee: soft committee of K BERT-1 models vs {preset.deep.name} (both pre-trained on "
                  f"{preset.main_size} articles)",
                  md_table(["task", "committee", "K", "accuracy", "minus deep", "deep", "best single member", "n"],
                           rows)]
    if latency:
        rows = [[r["model"], r["mode"], r["members"], r["batch"], f"{r['median_ms']:.2f}", f"{r['params_m']:.2f}",
                 f"{r['gmacs_per_seq']:.4f}", r["depth"]] for r in latency]
        parts += [f"## latency ({latency[0]['device']}, {latency[0]['precision']}, seq {latency[0]['seq_len']})",
                  md_table(["model", "mode", "members", "batch", "median ms", "params M", "GMACs/seq", "layers"],
                           rows)]
    return "\n\n".join(parts) + "\n"
