"""Figures of the five studies, drawn from the experiment CSVs only (never from models or units).

    python -m plots.make_figures --results results/cpu [--out plots]
    python plots/make_figures.py --results results/cpu

Reads `<results>/results.csv` (and `overlap.csv`, `latency.csv` when present), written by
`python -m tinybert.experiments run`, and writes `<out>/<preset>_<study>.png` for every registered study
(tinybert/experiments/studies: each Study names its figure function, the ones below for the built-in studies):

  pretrain_gap  test accuracy from scratch vs pre-trained, per task and model
  size          pre-training gap (and accuracy) vs number of pre-training articles
  overlap       token overlap vs corpus size; gap vs overlap; the controlled high/random/low sets
  reset_unseen  the gap with the never-seen tokens' embedding rows, or the transformer blocks, re-initialised
  committee     soft-committee accuracy vs K against the deep model; inference latency

Only the units at their arm's chosen fine-tuning lr are drawn (results.csv's `lr_chosen`; older CSVs without it:
all). Error bars are 95% Student-t intervals over fine-tuning seeds (tinybert/experiments/stats.py); a gap is
paired by seed (pre-trained minus scratch of the same model, task and seed) and read from results.csv's `gap`
column, never recomputed here. The bag-of-words baseline on the same rows is drawn in every figure: a dashed
line at its accuracy on accuracy axes, and on gap axes at its accuracy minus the from-scratch accuracy (the gap
a pre-trained model would need to match it). Each figure carries a caption line: preset, machine, date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if not __package__:  # run as `python plots/make_figures.py`: the registry (tinybert) and `plots` live at the root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinybert.experiments.stats import ci_half  # noqa: E402

TASK_ORDER = ["agnews", "dbpedia", "fewrel"]
BASELINE = "bag-of-words"  # the baseline's model name in results.csv (tinybert/experiments/units.py)
ARM_ORDER = ["high", "random", "low"]


def load(results_dir: Path) -> dict:
    results_dir = Path(results_dir)
    path = results_dir / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `python -m tinybert.experiments run` first")
    data = {"results": pd.read_csv(path)}
    for name in ("overlap", "latency"):
        p = results_dir / f"{name}.csv"
        data[name] = pd.read_csv(p) if p.is_file() else pd.DataFrame()
    return data


def caption(fig, df: pd.DataFrame, what: str) -> None:
    preset = df["preset"].dropna().iloc[0] if "preset" in df and df["preset"].notna().any() else "?"
    devices = sorted(df["device"].dropna().unique()) if "device" in df else []
    dates = df["date"].dropna() if "date" in df else pd.Series(dtype=str)
    date = f"{dates.min()[:10]} to {dates.max()[:10]}" if len(dates) and dates.min()[:10] != dates.max()[:10] else (
        dates.max()[:10] if len(dates) else "?")
    n_seeds = df["seed"].nunique() if "seed" in df else 0
    fig.text(0.01, 0.005, f"{what} | preset {preset} | {'; '.join(devices) or '?'} | {date} | "
                          f"error bars: 95% t-interval over {n_seeds} seeds | dashed: bag-of-words baseline",
             fontsize=7, color="0.3", ha="left", va="bottom")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """Finished rows at their arm's chosen lr (every row of a CSV written before the lr grid), one per
    fine-tuning seed (`seed_means`)."""
    ok = df["status"] == "ok"
    if "lr_chosen" in df:
        ok &= df["lr_chosen"].astype(str).str.lower().isin(["true", "1", "1.0"])
    return seed_means(df[ok])


# An arm at one fine-tuning seed: the columns that stay equal across its pre-training seeds.
ARM_SEED_KEYS = ("study", "model", "family", "pretrained", "pretrain_articles", "corpus", "vocab", "task", "setting",
                 "committee", "member", "committee_k", "seed", "lr")


def seed_means(df: pd.DataFrame) -> pd.DataFrame:
    """Pre-trained units of one arm and fine-tuning seed from several pre-training seeds averaged into one row,
    as the tables do (`summarize` in tinybert/experiments/tables.py: the fine-tuning seed is the replicate, so
    an error bar over 3 seeds x 2 pre-training seeds is a t-interval over 3 values, not 6). The committee
    study's rows, whose members differ by pre-training seed, stay as they are."""
    if "pretrain_seed" not in df or df.empty:
        return df
    merge = (df["study"] != "committee") & df["pretrain_seed"].notna()
    if not merge.any():
        return df
    keys = [k for k in ARM_SEED_KEYS if k in df]
    numeric = [c for c in df.select_dtypes("number").columns if c not in keys]
    rest = [c for c in df.columns if c not in keys and c not in numeric]
    agg = {**{c: "mean" for c in numeric}, **{c: "first" for c in rest}}
    merged = df[merge].groupby(keys, dropna=False, sort=False).agg(agg).reset_index()
    return pd.concat([df[~merge], merged[df.columns]], ignore_index=True)


def baseline_accuracy(df: pd.DataFrame, task: str) -> float:
    """Mean test accuracy of the bag-of-words baseline on `task` (NaN when it has not run)."""
    b = _ok(df)
    b = b[(b["model"] == BASELINE) & (b["task"] == task)]["accuracy"]
    return float(b.mean()) if len(b) else float("nan")


def scratch_accuracy(df: pd.DataFrame, task: str, model: str | None = None) -> float:
    """Mean from-scratch test accuracy on `task` (of `model`, default every model but the baseline)."""
    d = _ok(df)
    d = d[(d["task"] == task) & ~d["pretrained"].astype(bool) & d["committee_k"].isna() & (d["model"] != BASELINE)]
    if model is not None:
        d = d[d["model"] == model]
    return float(d.drop_duplicates("unit")["accuracy"].mean()) if len(d) else float("nan")


def baseline_line(ax, value: float, color="0.25", label="bag-of-words (same rows)") -> None:
    """The baseline as a dashed horizontal line (nothing when it is NaN)."""
    if value == value:
        ax.axhline(value, color=color, ls="--", lw=1.1, label=label)


def _tasks(df) -> list:
    present = list(dict.fromkeys(df["task"]))
    return [t for t in TASK_ORDER if t in present] + [t for t in present if t not in TASK_ORDER]


def paired_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """The finished pre-trained unit rows (no committee curves), with results.csv's per-seed `gap` column."""
    units = _ok(df)
    units = units[units["committee_k"].isna()]
    return units[units["pretrained"].astype(bool)]


def _std(x) -> float:
    """The error bar: the 95% t half-width of the values (0 for fewer than two); the name is historical."""
    x = pd.Series(x).dropna()
    return float(ci_half(x)) if len(x) > 1 else 0.0


def grouped_bars(ax, arms, keys) -> np.ndarray:
    """Bars side by side at each of `keys`, one colour per arm: arms = [(label, color, SeriesGroupBy by key)],
    height = mean, error bar = 95% t-interval over seeds. Returns the x positions of the groups."""
    x = np.arange(len(keys))
    width = 0.8 / len(arms)
    for j, (label, color, g) in enumerate(arms):
        ax.bar(x + (j - (len(arms) - 1) / 2) * width, [g.mean().get(k, np.nan) for k in keys], width,
               yerr=[_std(g.get_group(k)) if k in g.groups else 0 for k in keys], capsize=3, label=label,
               color=color)
    return x


# ----------------------------------------------------------------------------------------------------------


def fig_pretrain_gap(data: dict, out: Path):
    df = _ok(data["results"])
    df = df[df["study"] == "pretrain_gap"]
    if df.empty:
        return None
    tasks = _tasks(df)
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.2), squeeze=False)
    gaps = paired_gaps(data["results"])
    for ax, task in zip(axes[0], tasks):
        d = df[df["task"] == task]
        x = grouped_bars(ax, [(label, color, d[d["pretrained"].astype(bool) == pre].groupby("model")["accuracy"])
                              for pre, label, color in ((False, "from scratch", "#999999"),
                                                        (True, "pre-trained", "#1f77b4"))], models)
        for i, m in enumerate(models):
            gm = gaps[(gaps["study"] == "pretrain_gap") & (gaps["task"] == task) & (gaps["model"] == m)]["gap"]
            if len(gm):
                top = d[d["model"] == m]["accuracy"].max()
                ax.annotate(f"gap {gm.mean():+.3f}", (i, top), textcoords="offset points", xytext=(0, 8),
                            ha="center", fontsize=8)
        if d["num_labels"].notna().any():
            ax.axhline(1 / d["num_labels"].dropna().iloc[0], color="0.4", ls=":", lw=1, label="chance")
        base = baseline_accuracy(data["results"], task)
        baseline_line(ax, base)
        ax.set_xticks(x, models, rotation=15, fontsize=8)
        ax.set_title(task)
        ax.set_ylabel("test accuracy (best-val epoch)")
        ax.set_ylim(0, min(1.0, max(d["accuracy"].max(), base if base == base else 0) * 1.25 + 0.02))
    axes[0][0].legend(fontsize=8, loc="lower left")
    pre = df["pretrained"].astype(bool)
    art = int(df[pre]["pretrain_articles"].max()) if pre.any() else 0
    fig.suptitle(f"Pre-training gap: models pre-trained on {art:,} Wikipedia articles vs from scratch")
    caption(fig, df, "pretrain_gap")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def fig_size(data: dict, out: Path):
    df = _ok(data["results"])
    df = df[df["study"] == "size"]
    if df.empty:
        return None
    gaps = paired_gaps(data["results"])
    gaps = gaps[gaps["study"] == "size"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for task in _tasks(df):
        g = gaps[gaps["task"] == task].groupby("pretrain_articles")["gap"]
        xs = [0] + sorted(g.groups)
        line = ax1.errorbar(xs, [0] + [g.get_group(n).mean() for n in xs[1:]],
                            yerr=[0] + [_std(g.get_group(n)) for n in xs[1:]], marker="o", capsize=3, label=task)
        color = line[0].get_color()
        base = baseline_accuracy(data["results"], task)
        model = df["model"].iloc[0]
        baseline_line(ax1, base - scratch_accuracy(df, task, model), color, f"{task}: bag-of-words - scratch")
        a = df[df["task"] == task].groupby("pretrain_articles")["accuracy"]
        xs = sorted(a.groups)
        ax2.errorbar(xs, [a.get_group(n).mean() for n in xs], yerr=[_std(a.get_group(n)) for n in xs], marker="o",
                     capsize=3, label=task, color=color)
        baseline_line(ax2, base, color, f"{task}: bag-of-words")
    ax1.axhline(0, color="0.6", lw=0.8)
    ax1.set_xlabel("pre-training articles (0 = none)")
    ax1.set_ylabel("gap: pre-trained - scratch accuracy")
    ax1.set_title("Gap vs pre-training set size")
    ax2.set_xlabel("pre-training articles (0 = from scratch)")
    ax2.set_ylabel("test accuracy (best-val epoch)")
    ax2.set_title("Accuracy vs pre-training set size")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    model = df["model"].iloc[0]
    fig.suptitle(f"{model}: pre-training gap vs number of pre-training articles")
    caption(fig, df, "size")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def fig_overlap(data: dict, out: Path):
    res = data["results"]
    ov = data["overlap"]
    gaps = paired_gaps(res)
    ctrl = gaps[gaps["study"] == "overlap"]
    size = gaps[gaps["study"] == "size"]
    if ov.empty and ctrl.empty and size.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    if not ov.empty:
        nested = ov[ov["corpus"].isin(["none", "nested"])]
        for task in _tasks(nested):
            t = nested[nested["task"] == task].groupby("pretrain_articles")
            xs = sorted(t.groups)
            line = ax.errorbar(xs, [t.get_group(n)["overlap_tokens"].mean() for n in xs],
                               yerr=[_std(t.get_group(n)["overlap_tokens"]) for n in xs], marker="o", capsize=2,
                               label=f"{task} (a) tokens")
            ax.plot(xs, [t.get_group(n)["overlap_types"].mean() for n in xs], ls="--", marker=".",
                    color=line[0].get_color(), label=f"{task} (b) types")
        ax.set_xlabel("pre-training articles")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")
        ax.set_ylabel("overlap with the task")
        ax.set_title("Token overlap vs corpus size")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        ax.set_axis_off()
    ax = axes[1]
    # x: the corpus share (c) where overlap.csv has it: with a vocabulary trained on the pool, (a) sits at ~1.0
    # for every corpus and cannot separate them; older CSVs without (c) fall back to (a).
    use_c = "corpus_share" in ov

    def x_of(rows, task, corpus, n=None):
        if not use_c:
            return rows["overlap_tokens"].mean()
        o = ov[(ov["task"] == task) & (ov["corpus"] == corpus)]
        return o[o["pretrain_articles"] == n]["corpus_share"].mean() if n is not None else o["corpus_share"].mean()

    for task in _tasks(size) if not size.empty else []:
        t = size[size["task"] == task].groupby("pretrain_articles")
        xs = [x_of(t.get_group(n), task, "nested", n) for n in sorted(t.groups)]
        ys = [t.get_group(n)["gap"].mean() for n in sorted(t.groups)]
        es = [_std(t.get_group(n)["gap"]) for n in sorted(t.groups)]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, ls=":", label=f"{task} (size study)")
    if not ctrl.empty:
        for arm, marker in zip(ARM_ORDER, ("^", "s", "v")):
            a = ctrl[ctrl["corpus"] == arm]
            if len(a):
                ax.errorbar([x_of(a, a["task"].iloc[0], arm)], [a["gap"].mean()], yerr=[_std(a["gap"])], marker=marker,
                            ms=8, capsize=3, color="k", ls="none", label=f"{a['task'].iloc[0]} {arm} overlap")
    ax.axhline(0, color="0.6", lw=0.8)
    for task in (_tasks(ctrl) if not ctrl.empty else []):
        baseline_line(ax, baseline_accuracy(res, task) - scratch_accuracy(res[res["study"] == "overlap"], task),
                      label=f"{task}: bag-of-words - scratch")
    ax.set_xlabel("corpus share (c)" if use_c else "token-occurrence overlap (a)")
    ax.set_ylabel("gap: pre-trained - scratch accuracy")
    ax.set_title("Gap vs overlap")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[2]
    if not ctrl.empty:
        arms = [a for a in ARM_ORDER if a in set(ctrl["corpus"])]
        means = [ctrl[ctrl["corpus"] == a]["gap"].mean() for a in arms]
        stds = [_std(ctrl[ctrl["corpus"] == a]["gap"]) for a in arms]
        ax.bar(arms, means, yerr=stds, capsize=4, color=["#2ca02c", "#7f7f7f", "#d62728"][:len(arms)])
        ticks = []
        for a in arms:  # the overlap values go under the tick labels, where no error bar can cross them
            o = ctrl[ctrl["corpus"] == a]["overlap_tokens"].mean()
            share = x_of(ctrl, ctrl["task"].iloc[0], a) if use_c else float("nan")
            ticks.append(f"{a}\n(a) {o:.3f}" + ("" if np.isnan(share) else f"\n(c) {share:.3f}"))
        ax.set_xticks(range(len(arms)), ticks)
        ax.axhline(0, color="0.6", lw=0.8)
        task = ctrl["task"].iloc[0]
        baseline_line(ax, baseline_accuracy(res, task) - scratch_accuracy(res[res["study"] == "overlap"], task),
                      label=f"{task}: bag-of-words - scratch")
        ax.legend(fontsize=7)
        n = int(ctrl["pretrain_articles"].iloc[0])
        ax.set_title(f"Controlled sets of {n:,} articles\n(by overlap with {ctrl['task'].iloc[0]})", fontsize=10)
        ax.set_ylabel("gap: pre-trained - scratch accuracy")
        ax.set_xlabel("pre-training set")
    else:
        ax.set_axis_off()
    fig.suptitle("Pre-training gap and token overlap (a: share of task token occurrences seen in pre-training; "
                 "b: share of task token types; c: share of pre-training tokens that are task types)", fontsize=10)
    caption(fig, res[res["study"].isin(["overlap", "size"])] if len(res) else res, "overlap")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def latency_label(r) -> str:
    """A latency bar's label: model, committee size and mode, and the torch threads per process when recorded
    (parallel-processes: one process per member, 1 thread each)."""
    threads = getattr(r, "threads", float("nan"))
    thr = "" if pd.isna(threads) else f", {int(threads)} thr"
    if r.mode == "single":
        return f"{r.model}{thr}"
    return f"{r.model} K={int(r.members)}\n{r.mode}{thr}"


def fig_committee(data: dict, out: Path):
    res = _ok(data["results"])
    com = res[res["study"] == "committee"]
    if com.empty or com["committee_k"].isna().all():  # no curve yet (only units it shares with other studies)
        return None
    lat = data["latency"]
    tasks = _tasks(com)
    ncols = len(tasks) + (1 if not lat.empty else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(5.4 * ncols, 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        d = com[com["task"] == task]
        curves = d[d["committee_k"].notna()]
        for kind, color in (("variants", "#1f77b4"), ("seeds", "#ff7f0e")):
            c = curves[curves["committee"] == kind].groupby("committee_k")["accuracy"]
            ks = sorted(c.groups)
            if ks:
                ax.errorbar(ks, [c.get_group(k).mean() for k in ks], yerr=[_std(c.get_group(k)) for k in ks],
                            marker="o", capsize=3, color=color, label=f"committee of {kind} (BERT-1)")
        ref = d[(d["committee"] == "reference") & d["committee_k"].isna()]["accuracy"]
        if len(ref):
            m, s = ref.mean(), _std(ref)
            ax.axhline(m, color="k", lw=1.2, label=f"{d[d['committee'] == 'reference']['model'].iloc[0]} (deep)")
            ax.axhspan(m - s, m + s, color="k", alpha=0.1)
        baseline_line(ax, baseline_accuracy(data["results"], task))
        ax.set_xlabel("committee size K")
        ax.set_ylabel("test accuracy")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if len(curves):
            ax.set_xticks(sorted(curves["committee_k"].dropna().unique().astype(int)))
    if not lat.empty:
        # the claim's comparison only: the deep model, one committee member (the first BERT-1 timed) and the seeds
        # committee in every mode; the variants' rows stay in latency.csv
        first_bert1 = lat[lat["family"] == "bert1"]["model"].iloc[:1].tolist()
        lat = lat[(lat["family"] == "bert6") | lat["model"].isin(first_bert1 + ["committee-seeds"])]
        ax = axes[0][-1]
        batches = sorted(lat["batch"].unique())
        labels = [latency_label(r).replace("\n", " ") for r in lat[lat["batch"] == batches[0]].itertuples()]
        y = np.arange(len(labels))
        height = 0.8 / len(batches)
        for j, b in enumerate(batches):
            rows = lat[lat["batch"] == b]
            ax.barh(y + (j - (len(batches) - 1) / 2) * height, rows["median_ms"], height, label=f"batch {b}")
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("median forward latency (ms, log)")
        ax.set_title(f"Latency ({lat['device'].iloc[0][:40]})", fontsize=9)
        ax.set_xscale("log")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=7)
    art = int(com["pretrain_articles"].max())
    fig.suptitle(f"Soft committees of independently pre-trained BERT-1 models vs the deep model ({art:,} articles)")
    caption(fig, com, "committee")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def fig_reset_unseen(data: dict, out: Path):
    gaps = paired_gaps(data["results"])
    gaps = gaps[gaps["study"] == "reset_unseen"]
    if not gaps["corpus"].isin(["nested-reset", "nested-blocks"]).any():  # no intervention has run: no reading
        return None
    tasks = _tasks(gaps)
    sizes = sorted(gaps["pretrain_articles"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = gaps[gaps["task"] == task]
        x = grouped_bars(ax, [(label, color, t[t["corpus"] == corpus].groupby("pretrain_articles")["gap"])
                              for corpus, label, color in (("nested", "pre-trained as is", "#1f77b4"),
                                                           ("nested-reset", "never-seen rows re-drawn", "#ff7f0e"),
                                                           ("nested-blocks", "blocks re-initialised", "#2ca02c"))],
                         sizes)
        ax.axhline(0, color="0.4", lw=0.8)
        baseline_line(ax, baseline_accuracy(data["results"], task) -
                      scratch_accuracy(data["results"][data["results"]["study"] == "reset_unseen"], task,
                                       gaps["model"].iloc[0]), label="bag-of-words - scratch")
        ax.set_xticks(x, [f"{int(n):,}" for n in sizes])
        ax.set_xlabel("pre-training articles")
        ax.set_ylabel("gap: pre-trained - scratch accuracy")
        ax.set_title(task)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    model = gaps["model"].iloc[0]
    fig.suptitle(f"{model}: the gap with parts of the pre-trained model re-initialised before fine-tuning")
    caption(fig, gaps, "reset_unseen")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def figures() -> dict:
    """name -> figure function of every registered study that draws one (the registry names the functions)."""
    from tinybert.experiments.studies import registered

    return {s.name: s.figure_function() for s in registered() if s.figure is not None}


def make_figures(results_dir, out_dir="plots", studies=None) -> list[Path]:
    data = load(Path(results_dir))
    res = data["results"]
    preset = res["preset"].dropna().iloc[0] if "preset" in res and res["preset"].notna().any() else "results"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in figures().items():
        if studies and name not in studies:
            continue
        fig = fn(data, out)
        if fig is None:
            print(f"{name}: none of its own units has finished, no figure")
            continue
        path = out / f"{preset}_{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
        print(f"{name}: {path}")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="folder holding results.csv (e.g. results/cpu)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent), help="where the PNGs go (plots/)")
    p.add_argument("--study", nargs="+", choices=list(figures()), help="only these figures")
    args = p.parse_args(argv)
    try:
        make_figures(args.results, args.out, args.study)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
