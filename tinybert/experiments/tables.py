"""Results tables: results.csv, summary.csv, latency.csv and tables.md, rebuilt from the finished units.

Where it sits: units.py wrote one JSON (and .npz) per unit; this file joins them with the studies' labels
(studies.build_grid over every registered study), adds each study's derived rows (the committee curves) and the
per-seed pre-training gap, aggregates over seeds and writes the tables that plots/make_figures.py draws from.
tables.md is a loop over the registered studies' table sections. It runs no model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .presets import Preset
from .md import md_table, pm  # noqa: F401  (md_table: embeddings.py imports it from here)
from .lr_select import ARM_COLUMNS, choose_lrs, chosen_grid, lr_chosen_column
from .stats import binomial_se, ci_half, mean_ci
from .studies import TableInput, build_grid, registered
from .units import Workspace, ft_record, now, pretrain_done, read_json, spec_hash

COLUMNS = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "pretrain_seed", "vocab", "task",
           "setting", "num_labels", "seed", "init_seed", "committee", "member", "committee_k", "lr", "lr_chosen",
           "accuracy", "gap", "final_accuracy", "best_val_accuracy", "accuracy_given_order", "selected_epoch",
           "selected_last_epoch", "overlap_tokens", "overlap_types", "pretrain_eval_acc", "pretrain_tokens",
           "pretrain_seconds", "finetune_seconds", "params", "n_train", "n_val", "n_test", "status", "error", "unit",
           "pretrain_unit", "preset", "device", "date"]
# summary.csv groups: pooled over fine-tuning seeds and pre-training seeds (the committee's members stay apart)
GROUP = ["study", "model", "family", "pretrained", "pretrain_articles", "corpus", "task", "committee", "member",
         "committee_k"]
# averaged over pre-training seeds per fine-tuning seed, then mean, std, 95% interval over fine-tuning seeds
MEASURES = ["accuracy", "final_accuracy", "best_val_accuracy", "gap", "vs_deep", "vs_as_pretrained"]


def collect(preset: Preset, ws: Workspace) -> pd.DataFrame:
    """results.csv rows for every unit of every study that has a record (finished or failed), every lr of the
    grid, `lr_chosen` marking the rows at their arm's chosen lr (lr_select.py); `df.attrs["lr_selection"]` holds
    the lr_selection table. The committee curves are built from the chosen members only."""
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
        last = rec.get("selected_last_epoch")
        if last is None and rec.get("selected_epoch") is not None and rec.get("curve"):  # records before the field
            last = rec["selected_epoch"] == len(rec["curve"]) - 1
        rows.append({
            "study": r.study, "model": r.model.name, "family": r.model.family, "pretrained": r.pretrain is not None,
            "pretrain_articles": r.articles, "corpus": r.corpus, "pretrain_seed": r.pretrain_seed,
            "vocab": ws.vocab_label, "task": r.task.name, "setting": rec.get("setting"),
            "num_labels": rec.get("num_labels"), "seed": r.seed, "init_seed": r.ft.get("init_seed"),
            "committee": r.committee, "member": r.member, "committee_k": None, "lr": r.lr,
            "accuracy": rec.get("accuracy"), "final_accuracy": rec.get("final_accuracy"),
            "best_val_accuracy": rec.get("best_val_accuracy"), "selected_epoch": rec.get("selected_epoch"),
            "selected_last_epoch": last,
            "overlap_tokens": ovl.get("overlap_tokens"), "overlap_types": ovl.get("overlap_types"),
            "pretrain_eval_acc": pre.get("eval_acc"), "pretrain_tokens": pre.get("content_tokens"),
            "pretrain_seconds": pre.get("seconds", 0.0 if r.pretrain is None else None),
            "finetune_seconds": rec.get("finetune_seconds"), "params": rec.get("params"),
            "n_train": rec.get("n_train"), "n_val": rec.get("n_val"), "n_test": rec.get("n_test"),
            "status": rec.get("status"), "error": rec.get("error", ""), "unit": r.ft_hash,
            "pretrain_unit": spec_hash(r.pretrain) if r.pretrain else "", "preset": preset.name,
            "device": rec.get("device"), "date": rec.get("date")})
    df = pd.DataFrame(rows, columns=COLUMNS)
    chosen, selection = choose_lrs(df)
    chosen_rows = chosen_grid(grid, chosen, preset.lrs[0])
    derived = []
    for study in registered():
        if study.derived_rows is not None:
            for row in study.derived_rows(ws, chosen_rows, records):
                derived.append({"vocab": ws.vocab_label, "preset": preset.name, **row})
    if derived:
        df = pd.concat([df, pd.DataFrame(derived, columns=COLUMNS)], ignore_index=True)
    df["lr_chosen"] = lr_chosen_column(df, chosen)
    df["gap"] = paired_gap(df)
    df.attrs["lr_selection"] = selection
    return df


def paired_gap(df: pd.DataFrame) -> list:
    """Per row: accuracy minus the from-scratch accuracy of the same model, task and fine-tuning seed at the
    scratch arm's chosen lr (scratch rows from any study), for finished pre-trained unit rows (every pre-training
    seed and every lr); NaN elsewhere (scratch rows, committee curves, failed units). Written into results.csv so
    the summary and the figures read one number instead of each pairing again."""
    unit = (df["status"] == "ok") & df["committee_k"].isna()
    pre = df["pretrained"].astype(bool)
    chosen = df["lr_chosen"].astype(bool) if "lr_chosen" in df else True
    scratch = (df[unit & ~pre & chosen].drop_duplicates(["model", "task", "seed"])
               .set_index(["model", "task", "seed"])["accuracy"])
    return [a - scratch.get((m, t, s), np.nan) if u and p else np.nan
            for a, m, t, s, u, p in zip(df["accuracy"], df["model"], df["task"], df["seed"], unit, pre)]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: per configuration (GROUP, pooled over seeds), the finished units at their arm's chosen lr.

    Each measure (accuracy, gap, ...) is first averaged over the pre-training seeds of one fine-tuning seed, then
    given as mean, std (ddof 1) and 95% t half-width (`_ci`) over the fine-tuning seeds, n = their number (the
    pairing unit of every difference), n_units = the units behind them. A pre-training seed's effect is the same
    offset in every paired gap, so it cannot widen that interval: it is reported beside it instead, as
    `pseed_diff` = (second minus first pre-training seed), paired by fine-tuning seed, with its interval."""
    ok = df[(df["status"] == "ok") & df["lr_chosen"].astype(bool)].copy()
    if ok.empty:
        return pd.DataFrame()
    keys = list(GROUP)
    ok = _blank_keys(ok, keys + ["pretrain_seed"])
    # paired differences, per seed: the gap comes with results.csv (paired_gap); committee minus deep
    ref = ok[(ok["committee"] == "reference")].drop_duplicates(["task", "seed"]).set_index(["task", "seed"])["accuracy"]
    ok["vs_deep"] = [a - ref.get((t, s), np.nan) if k != "" else np.nan
                     for a, t, s, k in zip(ok["accuracy"], ok["task"], ok["seed"], ok["committee_k"])]
    # reset_unseen arms ('nested-reset', 'nested-blocks') minus the same checkpoint fine-tuned as pre-trained
    key = ["model", "task", "pretrain_articles", "pretrain_seed", "seed"]
    as_is = ok[ok["corpus"] == "nested"].drop_duplicates(key).set_index(key)["accuracy"]
    ok["vs_as_pretrained"] = [a - as_is.get((m, t, n, p, s), np.nan) if c.startswith("nested-") else np.nan
                              for a, m, t, n, p, s, c in zip(ok["accuracy"], ok["model"], ok["task"],
                                                             ok["pretrain_articles"], ok["pretrain_seed"], ok["seed"],
                                                             ok["corpus"])]
    extra = ["overlap_tokens", "overlap_types", "pretrain_eval_acc", "pretrain_seconds", "finetune_seconds",
             "selected_last_epoch"]
    for col in MEASURES + extra:
        ok[col] = pd.to_numeric(ok[col].map(lambda v: np.nan if v is None else float(v)), errors="coerce")
    by_seed = ok.groupby(keys + ["seed"], sort=False, dropna=False)
    per_seed = by_seed[MEASURES + extra].mean()
    per_seed["units"] = by_seed["accuracy"].count()
    per_seed["pretrain_seeds"] = by_seed["pretrain_seed"].nunique()
    per_seed = per_seed.reset_index()

    def positive(x):  # seeds whose paired difference is > 0 (the sign test behind "n of 5 seeds")
        return int((x > 0).sum())

    agg = {m: ["mean", "std", _ci] for m in MEASURES}
    agg["accuracy"].append("count")
    agg["gap"].append(positive)
    agg["vs_as_pretrained"].append(positive)
    agg.update({c: ["mean"] for c in extra})
    agg.update({"units": ["sum"], "pretrain_seeds": ["max"]})
    s = per_seed.groupby(keys, sort=False, dropna=False).agg(agg)
    names = {"count": "n", "units_sum": "n_units", "pretrain_seeds_max": "n_pretrain_seeds"}
    s.columns = [names.get(b, names.get(f"{a}_{b}", f"{a}_{b.lstrip('_')}")) for a, b in s.columns]
    s = s.rename(columns={"selected_last_epoch_mean": "selected_last_epoch_frac"}).reset_index()
    s = s.merge(pretrain_seed_differences(ok, keys), on=keys, how="left")
    failed = df[df["status"] != "ok"].copy()
    if not failed.empty:  # failed units of the configuration, at any lr
        failed = _blank_keys(failed, keys)
        nf = failed.groupby(keys, sort=False, dropna=False).size().rename("n_failed").reset_index()
        s = s.merge(nf, on=keys, how="left")
    else:
        s["n_failed"] = 0
    s["n_failed"] = s["n_failed"].fillna(0).astype(int)
    return s


def _ci(x) -> float:
    """The 95% t half-width (a named function: pandas names the column after it)."""
    return ci_half(x)


def pretrain_seed_differences(ok: pd.DataFrame, keys) -> pd.DataFrame:
    """Per pre-trained configuration with two or more pre-training seeds: accuracy of the second minus the
    first pre-training seed (in sorted order), paired by fine-tuning seed: mean, 95% half-width, n, and which pair
    (`pseed_pair` 'b-a'). How much a different pre-training run alone moves the result."""
    out = []
    units = ok[ok["pretrained"].astype(bool) & (ok["committee_k"] == "")]
    for k, g in units.groupby(keys, sort=False, dropna=False):
        seeds = sorted(set(g["pretrain_seed"]) - {""})
        if len(seeds) < 2:
            continue
        a, b = seeds[:2]
        acc = g.groupby(["seed", "pretrain_seed"])["accuracy"].mean()
        diffs = [acc[(s, b)] - acc[(s, a)] for s in sorted(set(g["seed"])) if (s, a) in acc and (s, b) in acc]
        mean, half, n = mean_ci(diffs)
        out.append({**dict(zip(keys, k)), "pseed_pair": f"{b}-{a}", "pseed_diff_mean": mean, "pseed_diff_ci": half,
                    "pseed_diff_n": n})
    return pd.DataFrame(out, columns=list(keys) + ["pseed_pair", "pseed_diff_mean", "pseed_diff_ci", "pseed_diff_n"])


def _blank_keys(df: pd.DataFrame, keys) -> pd.DataFrame:
    """Group keys as plain objects: missing -> "" (so groupby keeps them), integral floats -> int."""
    df = df.copy()
    for k in keys:
        df[k] = [("" if v is None or (isinstance(v, float) and math.isnan(v)) else
                  int(v) if isinstance(v, float) and v.is_integer() and k != "pretrained" else v) for v in df[k]]
    return df


def latest_latency(units: Path, machine: str) -> dict | None:
    """The newest latency record (units/latency-*.json) measured on `machine` on an idle machine, or None. Only
    one: a change to what is timed (a new spec) measures again, and the older record's rows must not sit beside
    the new ones. A record marked busy (other processes shared the cores) is used only when no idle one exists."""
    recs = [rec for rec in map(read_json, sorted(units.glob("latency-*.json")))
            if rec and rec["spec"].get("machine") == machine]
    idle = [rec for rec in recs if not rec.get("busy")]
    return max(idle or recs, key=lambda r: r.get("date") or "") if recs else None


def write_tables(preset: Preset, ws: Workspace, log=print, studies=None) -> int:
    """Rewrite every CSV and tables.md; return the number of failed rows of `studies` (default: all)."""
    out = ws.out
    df = collect(preset, ws)
    selection = df.attrs.pop("lr_selection")
    df.to_csv(out / "results.csv", index=False)
    selection.to_csv(out / "lr_selection.csv", index=False)
    summary = summarize(df)
    summary.to_csv(out / "summary.csv", index=False)
    rec = latest_latency(ws.units, ws.machine)
    lat = [] if rec is None else [{**row, "device": rec["spec"]["machine"], "precision": rec["spec"]["precision"],
                                   "preset": preset.name, "date": rec.get("date"),
                                   "other_busy_cores": rec.get("other_busy_cores"), "busy": bool(rec.get("busy"))}
                                  for row in rec["rows"]]
    if lat:
        pd.DataFrame(lat).to_csv(out / "latency.csv", index=False)
    text = tables_markdown(preset, ws, df, summary, lat, selection)
    (out / "tables.md").write_text(text)
    if log is not None:
        log(text)
    names = [st.name for st in registered(studies)]
    return int(((df["status"] != "ok") & df["study"].isin(names)).sum())


_pm = pm  # the old names, kept for callers outside this file


def tables_markdown(preset: Preset, ws: Workspace, df: pd.DataFrame, s: pd.DataFrame, latency: list,
                    selection: pd.DataFrame | None = None) -> str:
    """tables.md: a header, each registered study's table section (in registration order), then the lr choice,
    how often the selected epoch was the last one, and the binomial standard errors of the slices."""
    parts = [f"# Results: preset {preset.name} ({ws.machine}, {now()})",
             "Test accuracy at the best-validation epoch of each unit's arm-chosen fine-tuning lr (chosen on "
             "validation, see the lr section), **mean ± 95% Student-t half-width over fine-tuning seeds** (n = "
             "fine-tuning seeds; with several pre-training seeds each fine-tuning seed's value is first averaged "
             "over them); `(no interval)` = a single value. gap = pre-trained minus from-scratch accuracy, paired by "
             "fine-tuning seed. A difference is **supported** only when its interval excludes 0. pre-seed b−a = "
             "the same arm pre-trained with another seed (b) minus seed a, paired by fine-tuning seed: how much "
             "the pre-training run alone moves the result. The bag-of-words row is the baseline on the same rows."]
    if s.empty:
        return "\n\n".join(parts + ["(no finished units yet)"]) + "\n"
    for study in registered():
        if study.table is not None:
            parts += study.table(TableInput(preset, ws, s[s["study"] == study.name], s, latency, df))
    parts += lr_section(selection) + last_epoch_section(df) + slices_section(df)
    return "\n\n".join(parts) + "\n"


def lr_section(selection: pd.DataFrame | None) -> list[str]:
    """Per arm: the lr grid with the mean validation accuracy of each lr (n units), the chosen lr, and whether
    it lies at an end of the grid (then the optimum may be outside it)."""
    if selection is None or selection.empty:
        return []
    rows = []
    for arm, g in selection.groupby(ARM_COLUMNS, sort=False, dropna=False):
        study, model, pretrained, articles, corpus, task, committee = arm
        grid = ", ".join(f"{lr:g}: {m:.3f} (n {n})" if m == m else f"{lr:g}: -" for lr, m, n in
                         zip(g["lr"], g["val_accuracy_mean"], g["n"]))
        ch = g[g["chosen"].astype(bool)]
        rows.append([study, model, f"{corpus} {articles}" if pretrained else "scratch", task, committee or "",
                     grid, f"{ch['lr'].iloc[0]:g}" if len(ch) else "-",
                     "yes" if len(ch) and bool(ch["at_grid_edge"].iloc[0]) else ""])
    return ["## fine-tuning lr chosen per arm (highest mean best-validation accuracy over the arm's units)",
            md_table(["study", "model", "pre-training", "task", "committee", "lr: mean val acc (n)", "chosen",
                      "at grid edge"], rows)]


def last_epoch_section(df: pd.DataFrame) -> list[str]:
    """How often the best-validation epoch was the last one (then fine-tuning may have stopped too early)."""
    units = df[(df["status"] == "ok") & df["committee_k"].isna() & df["selected_last_epoch"].notna()]
    units = units.drop_duplicates("unit")
    if units.empty:
        return []
    last = units["selected_last_epoch"].astype(bool)
    chosen = units["lr_chosen"].astype(bool)
    rows = [["all units (every lr)", f"{last.mean():.3f}", int(last.sum()), len(last)],
            ["units at the chosen lr", f"{last[chosen].mean():.3f}" if chosen.any() else "",
             int(last[chosen].sum()), int(chosen.sum())]]
    return ["## selected epoch: fraction of fine-tuning units whose best-validation epoch was the last",
            md_table(["units", "fraction last", "last", "units"], rows)]


def slices_section(df: pd.DataFrame) -> list[str]:
    """Per task: the validation and test slice sizes and the binomial standard error sqrt(p (1 - p) / n) of an
    accuracy measured on them, at p = 0.5 (the largest) and at the mean accuracy of the chosen units."""
    units = df[(df["status"] == "ok") & df["committee_k"].isna()]
    if units.empty:
        return []
    rows = []
    for task, g in units.groupby("task", sort=False):
        n_val, n_test = int(g["n_val"].median()), int(g["n_test"].median())
        p = float(g[g["lr_chosen"].astype(bool)]["accuracy"].mean())
        rows.append([task, n_val, n_test, f"{binomial_se(0.5, n_val):.4f}", f"{binomial_se(0.5, n_test):.4f}",
                     f"{p:.3f}", f"{binomial_se(p, n_val):.4f}", f"{binomial_se(p, n_test):.4f}"])
    return ["## slices: binomial standard error of one accuracy, sqrt(p (1 - p) / n)",
            md_table(["task", "val rows", "test rows", "SE val (p 0.5)", "SE test (p 0.5)", "mean accuracy p",
                      "SE val (p)", "SE test (p)"], rows)]
