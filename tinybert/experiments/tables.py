"""Results tables: results.csv, summary.csv, latency.csv and tables.md, rebuilt from the finished units.

Where it sits: units.py wrote one JSON (and .npz) per unit; this file joins them with the studies' labels
(studies.build_grid over every registered study), adds each study's derived rows (the committee curves) and the
per-seed pre-training gap, aggregates over seeds and writes the tables that plots/make_figures.py draws from.
tables.md is a loop over the registered studies' table sections. It runs no model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .presets import Preset
from .md import md_table, pm  # noqa: F401  (md_table: embeddings.py imports it from here)
from .studies import TableInput, build_grid, registered
from .units import Workspace, ft_record, now, pretrain_done, read_json, spec_hash

COLUMNS = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "pretrain_seed", "vocab", "task",
           "setting", "num_labels", "seed", "init_seed", "committee", "member", "committee_k", "accuracy",
           "gap", "final_accuracy", "best_val_accuracy", "accuracy_given_order", "selected_epoch", "overlap_tokens",
           "overlap_types", "pretrain_eval_acc", "pretrain_tokens", "pretrain_seconds", "finetune_seconds", "params",
           "n_train", "n_val", "n_test", "status", "error", "unit", "pretrain_unit", "preset", "device", "date"]
GROUP = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "pretrain_seed", "task",
         "committee", "committee_k"]



def collect(preset: Preset, ws: Workspace) -> pd.DataFrame:
    """results.csv rows for every unit of every study that has a record (finished or failed)."""
    grid = build_grid(preset, ws)
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
    for study in registered():
        if study.derived_rows is not None:
            for row in study.derived_rows(ws, grid, records):
                rows.append({"vocab": ws.vocab_label, "preset": preset.name, **row})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["gap"] = paired_gap(df)
    return df


def paired_gap(df: pd.DataFrame) -> list:
    """Per row: accuracy minus the from-scratch accuracy of the same model, task and seed (scratch rows from any
    study), for finished pre-trained unit rows; NaN elsewhere (scratch rows, committee curves, failed units).
    Written into results.csv so the summary and the figures read one number instead of each pairing again."""
    unit = (df["status"] == "ok") & df["committee_k"].isna()
    pre = df["pretrained"].astype(bool)
    scratch = (df[unit & ~pre].drop_duplicates(["model", "task", "seed"])
               .set_index(["model", "task", "seed"])["accuracy"])
    return [a - scratch.get((m, t, s), np.nan) if u and p else np.nan
            for a, m, t, s, u, p in zip(df["accuracy"], df["model"], df["task"], df["seed"], unit, pre)]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    keys = list(GROUP)
    ok = _blank_keys(ok, keys)
    # paired differences, per seed: the gap comes with results.csv (paired_gap); committee minus deep
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


def write_tables(preset: Preset, ws: Workspace, log=print, studies=None) -> int:
    """Rewrite every CSV and tables.md; return the number of failed rows of `studies` (default: all)."""
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
    names = [st.name for st in registered(studies)]
    return int(((df["status"] != "ok") & df["study"].isin(names)).sum())


_pm = pm  # the old names, kept for callers outside this file


def tables_markdown(preset: Preset, ws: Workspace, df: pd.DataFrame, s: pd.DataFrame, latency: list) -> str:
    """tables.md: a header, then each registered study's table section, in registration order."""
    parts = [f"# Results: preset {preset.name} ({ws.machine}, {now()})",
             "Test accuracy at the best-validation epoch, mean ± std over seeds (n = number of seeds); gap = "
             "pre-trained minus from-scratch accuracy, paired by seed."]
    if s.empty:
        return "\n\n".join(parts + ["(no finished units yet)"]) + "\n"
    for study in registered():
        if study.table is not None:
            parts += study.table(TableInput(preset, ws, s[s["study"] == study.name], s, latency))
    return "\n\n".join(parts) + "\n"
