"""The experiment runner (tinybert/experiments) end to end on the smoke preset, and the figures from its CSVs.

One smoke run (every study, 2 seeds, a small synthetic Wikipedia source so the test does not read the 108 MB
corpus) is shared by the tests of this module: columns, caching, resuming a grown grid, a failing unit, plots.
"""

import ast
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tinybert.data_dir import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent
EXPECTED_COLUMNS = {"study", "model", "pretrain_articles", "vocab", "task", "setting", "seed", "pretrained",
                    "accuracy", "final_accuracy", "pretrain_seconds", "finetune_seconds", "status", "error",
                    "overlap_tokens", "overlap_types", "committee", "committee_k", "corpus", "unit", "lr", "lr_chosen",
                    "selected_last_epoch", "pretrain_seed", "best_val_accuracy"}
STUDY_NAMES = ["baseline", "pretrain_gap", "size", "overlap", "reset_unseen", "committee"]


def _data_dir():
    """The full data or, in a fresh clone, the embedded sample: the runner finds the same one by itself."""
    return resolve_data_dir()


# Every run pins device and precision: `auto` would be bf16 on CPUs with AMX and fp32 here, and these tests mean fp32.
PINNED = ["--device", "cpu", "--precision", "fp32"]


def make_source(path: Path, n: int = 500) -> Path:
    """Articles of random real words (so the bert-base vocab gives real ids), one per line."""
    vocab = (_data_dir() / "bert_vocab" / "vocab.txt").read_text().split("\n")
    words = [w for w in vocab[2000:12000] if w.isalpha()]
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(words, size=int(rng.integers(5, 50)))) for _ in range(n)) + "\n")
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from tinybert.experiments import main

    root = tmp_path_factory.mktemp("smoke")
    args = ["--preset", "smoke", "--out", str(root / "out"), "--source", str(make_source(root / "wiki.txt")),
            "--cache-dir", str(root / "cache")]
    assert main(["run", "--study", "all", *args, *PINNED]) == 0
    return root / "out", args


def test_results_csv_columns_and_rows(smoke):
    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    assert EXPECTED_COLUMNS <= set(df.columns)
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["study", "model", "task", "error"]]
    assert set(df["study"]) == set(STUDY_NAMES)
    assert set(df["task"]) == {"agnews", "dbpedia", "fewrel"}
    assert set(df["seed"]) == {0, 1}
    gap = df[df["study"] == "pretrain_gap"]
    # models x tasks x seeds x lrs x (scratch + one pre-trained unit per pre-training seed)
    assert len(gap) == 2 * 3 * 2 * 2 * (1 + 2)
    assert gap["accuracy"].between(0, 1).all() and gap["final_accuracy"].between(0, 1).all()
    assert set(df[df["study"] == "size"]["pretrain_articles"]) == {0, 100, 200}
    assert set(df[df["study"] == "overlap"]["corpus"]) == {"none", "high", "random", "low"}
    reset = df[df["study"] == "reset_unseen"]
    assert set(reset["corpus"]) == {"none", "nested", "nested-reset", "nested-blocks"}
    assert set(reset["pretrain_articles"]) == {0, 100, 200}
    units_dir = out / "units"
    n_reset = [json.loads((units_dir / f"ft-{u}.json").read_text())["reset_rows"]
               for u in reset[reset["corpus"] == "nested-reset"]["unit"]]
    assert all(n > 0 for n in n_reset)
    pre = df[df["pretrained"] & df["committee_k"].isna()]
    assert (pre["overlap_tokens"] > 0).all() and (pre["pretrain_seconds"] > 0).all()
    assert (df[~df["pretrained"] & (df["model"] != "bag-of-words")]["overlap_tokens"] == 0).all()
    ks = df[df["committee_k"].notna()]
    assert set(ks["committee"]) == {"variants", "seeds"} and set(ks["committee_k"]) == {1, 2}
    summary = pd.read_csv(out / "summary.csv")
    assert {"accuracy_mean", "accuracy_std", "n", "gap_mean", "gap_std", "gap_positive"} <= set(summary.columns)
    arms = summary[summary["corpus"].isin(["nested-reset", "nested-blocks"])]
    assert len(arms) and arms["vs_as_pretrained_mean"].notna().all()
    assert arms["vs_as_pretrained_positive"].between(0, 2).all()
    assert summary[summary["corpus"] == "nested"]["vs_as_pretrained_mean"].isna().all()
    assert (summary["n"] == 2).all()
    assert {"accuracy_ci", "gap_ci", "pseed_diff_mean", "pseed_diff_ci", "n_units"} <= set(summary.columns)
    ov = pd.read_csv(out / "overlap.csv")
    assert set(ov["task"]) == {"agnews", "dbpedia", "fewrel"}
    nested = ov[ov["corpus"] == "nested"].groupby(["task", "seed"])
    for _, g in nested:  # nested corpora: a larger corpus covers at least as much of the task
        assert g.sort_values("pretrain_articles")["overlap_tokens"].is_monotonic_increasing
    seen = ov[ov["corpus"] != "none"]  # (c): share of the corpus's tokens that are task types; none: no corpus
    assert seen["corpus_share"].between(0, 1).all() and ov[ov["corpus"] == "none"]["corpus_share"].isna().all()
    lat = pd.read_csv(out / "latency.csv")
    assert {"bert6", "committee-variants", "committee-seeds"} <= set(lat["model"]) and (lat["median_ms"] > 0).all()
    par = lat[lat["mode"] == "parallel-processes"]  # members side by side, one process each (CPU, fp32)
    assert set(par["model"]) == {"committee-variants", "committee-seeds"} and (par["cores"] > 0).all()
    assert (par["threads"] == 1).all()  # one thread per member process
    from tinybert.experiments.studies.committee import latency_threads
    single = lat[lat["mode"] == "single"]  # in-process modes at 1 thread and at one per core
    assert sorted(set(single["threads"])) == list(latency_threads(torch.device("cpu")))
    assert len(single) == len(set(single["threads"])) * lat["batch"].nunique() * single["model"].nunique()
    tables = (out / "tables.md").read_text()
    assert "## pretrain_gap" in tables and "## baseline" in tables
    assert "corpus share (c)" in tables
    record = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()][0]
    assert len(record["commit"]) == 40 and record["failed_rows"] == 0 and record["end"] >= record["start"]
    assert record["studies"] == STUDY_NAMES
    assert record["units_to_run"] > 0


# fine-tuning units of one fine-tuning seed in the smoke preset (every study, shared units counted once): see
# test_the_unit_count_per_seed_is_what_the_grid_says
N_UNITS_PER_SEED = 115


def test_the_unit_count_per_seed_is_what_the_grid_says(smoke):
    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    units = df[df["committee_k"].isna() & (df["seed"] == 0)]
    assert units["unit"].nunique() == N_UNITS_PER_SEED


def test_baseline_units_see_the_fine_tuning_units_rows(smoke):
    """One bag-of-words unit per task and fine-tuning seed, on exactly the rows that seed's units use."""
    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    base = df[df["model"] == "bag-of-words"]
    assert set(base["study"]) == {"baseline"} and set(base["corpus"]) == {"baseline"}
    assert len(base) == 3 * 2 and (base["status"] == "ok").all() and base["accuracy"].between(0, 1).all()
    assert base["lr"].isna().all() and base["lr_chosen"].all()
    units = df[(df["study"] == "pretrain_gap") & (df["model"] == "bert6")]
    for r in base.itertuples():
        ft = units[(units["task"] == r.task) & (units["seed"] == r.seed)].iloc[0]
        assert (r.n_train, r.n_val, r.n_test) == (ft["n_train"], ft["n_val"], ft["n_test"])
        units_dir = out / "units"
        with np.load(units_dir / f"baseline-{r.unit}.npz") as b, np.load(units_dir / f"ft-{ft['unit']}.npz") as f:
            assert np.array_equal(b["labels"], f["labels"])  # the same test rows, in the same order
            assert b["probs"].shape == f["probs"].shape
    tables = (out / "tables.md").read_text()
    for section in tables.split("\n## ")[1:]:  # every study's results table carries the baseline's row
        if section.startswith(("pretrain_gap:", "size:", "overlap: controlled", "reset_unseen:", "committee:")):
            assert "bag-of-words (same rows)" in section, section[:80]


def test_the_lr_is_chosen_per_arm_on_validation(smoke):
    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    units = df[df["committee_k"].isna() & df["lr"].notna()]
    assert set(units["lr"]) == {1e-3, 3e-3}
    arm = ["study", "model", "pretrained", "pretrain_articles", "corpus", "task", "committee"]
    units = units.fillna({"committee": ""})
    for key, g in units.groupby(arm):
        val = g[g["status"] == "ok"].groupby("lr")["best_val_accuracy"].mean()
        best = val[val == val.max()].index.min()  # highest mean validation accuracy, ties to the smaller lr
        assert set(g[g["lr_chosen"]]["lr"]) == {best}, key
        assert g[g["lr_chosen"]]["pretrain_seed"].nunique() == g["pretrain_seed"].nunique()  # all seeds kept
    sel = pd.read_csv(out / "lr_selection.csv").fillna({"committee": ""})
    assert (sel.groupby(arm)["chosen"].sum() == 1).all()
    assert len(sel) == 2 * units.groupby(arm).ngroups
    # every fine-tuning unit records its lr and whether the selected epoch was its last
    rec = json.loads(next((out / "units").glob("ft-*.json")).read_text())
    assert rec["lr"] == rec["spec"]["finetune"]["lr"] and isinstance(rec["selected_last_epoch"], bool)
    tables = (out / "tables.md").read_text()
    assert "## fine-tuning lr chosen per arm" in tables and "## selected epoch" in tables


def test_pretraining_seeds_pair_with_fine_tuning_seeds_and_intervals_are_t_intervals(smoke):
    from tinybert.experiments.stats import mean_ci

    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    ok = df[(df["status"] == "ok") & df["lr_chosen"] & df["committee_k"].isna()]
    pre = ok[(ok["study"] == "size") & ok["pretrained"]]
    assert set(pre["pretrain_seed"]) == {0, 1}
    assert pre.groupby(["task", "pretrain_articles", "seed"])["pretrain_seed"].nunique().eq(2).all()
    assert pre["pretrain_unit"].nunique() == 2 * 2  # sizes x pre-training seeds, shared by the tasks
    summary = pd.read_csv(out / "summary.csv")
    for (task, n), g in pre.groupby(["task", "pretrain_articles"]):
        s = summary[(summary["study"] == "size") & (summary["task"] == task) & (summary["pretrain_articles"] == n)
                    & (summary["corpus"] == "nested")].iloc[0]
        per_seed = g.groupby("seed")[["accuracy", "gap"]].mean()  # averaged over the pre-training seeds
        for col in ("accuracy", "gap"):
            mean, half, k = mean_ci(per_seed[col])
            assert (s[f"{col}_mean"], s[f"{col}_ci"], s["n"]) == (pytest.approx(mean), pytest.approx(half), k)
        acc = g.set_index(["seed", "pretrain_seed"])["accuracy"]
        mean, half, k = mean_ci([acc[(f, 1)] - acc[(f, 0)] for f in (0, 1)])
        assert (s["pseed_diff_mean"], s["pseed_diff_ci"], s["pseed_pair"]) == (pytest.approx(mean),
                                                                               pytest.approx(half), "1-0")
        assert s["n_units"] == 4 and s["n_pretrain_seeds"] == 2
    tables = (out / "tables.md").read_text()
    assert "±" in tables and "verdict" in tables and "pre-seed b−a" in tables and "(seeds 1-0)" in tables
    assert "## slices: binomial standard error" in tables
    assert "## size effect" in tables and "## overlap effect" in tables  # the effects, beside pre-seed differences
    assert "not supported" in tables or "supported (" in tables


def test_figures_from_the_csvs(smoke, tmp_path):
    out, _ = smoke
    sys.path.insert(0, str(REPO))  # `plots` is a top-level folder, not an installed package
    try:
        make_figures = importlib.import_module("plots.make_figures")
    finally:
        sys.path.remove(str(REPO))
    written = make_figures.make_figures(out, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["smoke_committee.png", "smoke_overlap.png", "smoke_pretrain_gap.png", "smoke_reset_unseen.png",
                     "smoke_size.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    data = make_figures.load(out)
    for name, fn in make_figures.figures().items():  # every figure draws the baseline
        fig = fn(data, tmp_path)
        if fig is None:
            continue
        labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
        assert any("bag-of-words" in label for label in labels), name
    # a study whose own rows have not run draws nothing, even where it shares units with another study (as the
    # committee's BERT-6 reference and the interventions' 'as is' arm share the gap study's)
    res = data["results"]
    partial = {**data, "results": res[res["committee_k"].isna() & ~res["corpus"].isin(["nested-reset",
                                                                                         "nested-blocks"])]}
    assert make_figures.fig_committee(partial, tmp_path) is None
    assert make_figures.fig_reset_unseen(partial, tmp_path) is None
    assert make_figures.fig_pretrain_gap(partial, tmp_path) is not None


def test_figure_error_bars_are_the_tables_intervals(smoke):
    """Two pre-training seeds per arm: the figures average them per fine-tuning seed as the tables do, so an
    error bar is the table's t-interval over the fine-tuning seeds (not one over seeds x pre-training seeds)."""
    out, _ = smoke
    sys.path.insert(0, str(REPO))
    try:
        make_figures = importlib.import_module("plots.make_figures")
    finally:
        sys.path.remove(str(REPO))
    res = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    gaps = make_figures.paired_gaps(res)
    size = gaps[(gaps["study"] == "size")]
    assert len(size) and not size.duplicated(["model", "task", "pretrain_articles", "seed"]).any()
    checked = 0
    for (task, n), g in size.groupby(["task", "pretrain_articles"]):
        row = summary[(summary["study"] == "size") & (summary["task"] == task) & (summary["pretrain_articles"] == n)
                      & summary["pretrained"].astype(bool)]
        assert len(row) == 1 and row["n_pretrain_seeds"].iloc[0] == 2
        assert make_figures._std(g["gap"]) == pytest.approx(row["gap_ci"].iloc[0])
        assert g["gap"].mean() == pytest.approx(row["gap_mean"].iloc[0])
        checked += 1
    assert checked >= 2


def test_a_study_registered_here_reaches_the_plan_the_tables_and_the_figures(smoke, tmp_path, monkeypatch,
                                                                             capsys):
    """A study is one object: a toy one registered in this test (no other file edited) is planned by the runner,
    gets rows in results.csv and a section in tables.md, and is drawn by the figure loop."""
    import shutil

    import matplotlib.pyplot as plt

    from tinybert.experiments import main, studies
    from tinybert.experiments.md import md_table

    out, args = smoke
    copy = tmp_path / "out"
    shutil.copytree(out, copy)  # the toy rows must not leak into the smoke results the other tests read
    drawn = []

    def grid(study, p, ws):  # the deep model from scratch on the first task: units the smoke run has cached
        return [studies.make_row(ws, study.name, p.deep, p.tasks[0], seed) for seed in p.seeds]

    def table(inp):
        rows = [[r.task, f"{r.accuracy_mean:.3f}", int(r.n)] for r in inp.rows.itertuples()]
        return ["## toy: a study registered by a test", md_table(["task", "accuracy", "n"], rows)] if rows else []

    def figure(data, out_dir):
        toy = data["results"][data["results"]["study"] == "toy"]
        drawn.append(len(toy))
        fig, ax = plt.subplots()
        ax.bar(toy["seed"], toy["accuracy"])
        return fig

    monkeypatch.setitem(studies.REGISTRY, "toy", studies.Study("toy", grid, table, figure))
    toy_args = [str(copy) if a == str(out) else a for a in args]
    capsys.readouterr()
    assert main(["estimate", "--study", "toy", *toy_args, *PINNED]) == 0
    printed = capsys.readouterr().out
    # the baseline goes with every study: 2 toy units + 3 tasks x 2 seeds of baseline, all cached
    assert "studies baseline, toy;" in printed and "plan: 8 fine-tuning units (8 cached, 0 to run)" in printed
    main(["tables", *toy_args, *PINNED])  # its exit code counts failed units of other tests' grown grids
    df = pd.read_csv(copy / "results.csv")
    toy = df[df["study"] == "toy"]
    assert len(toy) == 2 and (toy["status"] == "ok").all() and toy["gap"].isna().all()  # scratch: no gap
    assert "## toy: a study registered by a test" in (copy / "tables.md").read_text()
    sys.path.insert(0, str(REPO))
    try:
        make_figures = importlib.import_module("plots.make_figures")
    finally:
        sys.path.remove(str(REPO))
    written = make_figures.make_figures(copy, tmp_path / "figures", ["toy"])
    assert [p.name for p in written] == ["smoke_toy.png"] and drawn == [2]


def test_the_gap_column_is_pre_trained_minus_scratch_paired_by_seed(smoke):
    out, _ = smoke
    df = pd.read_csv(out / "results.csv")
    units = df[(df["status"] == "ok") & df["committee_k"].isna()]
    scratch = units[~units["pretrained"]].drop_duplicates(["model", "task", "seed"]).set_index(
        ["model", "task", "seed"])["accuracy"]
    pre = units[units["pretrained"]]
    # models with no scratch run (the committee's other BERT-1 variants) have no gap
    expected = [a - scratch.get((m, t, s), np.nan)
                for a, m, t, s in zip(pre["accuracy"], pre["model"], pre["task"], pre["seed"])]
    assert np.allclose(pre["gap"], expected, equal_nan=True) and pre["gap"].notna().sum() > 0
    assert df[~df["pretrained"] | df["committee_k"].notna()]["gap"].isna().all()


def test_rerun_is_a_cache_hit_and_a_grown_grid_runs_only_what_is_new(smoke, capsys, monkeypatch):
    from tinybert import finetune_unit
    from tinybert.experiments import main

    out, args = smoke
    before = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("ft-*.json")}
    calls = []
    real_finetune = finetune_unit.finetune  # the one fine-tuning unit calls it

    def no_work(*a, **k):
        calls.append(1)
        return real_finetune(*a, **k)

    monkeypatch.setattr(finetune_unit, "finetune", no_work)
    capsys.readouterr()
    assert main(["run", "--study", "all", *args, *PINNED]) == 0
    assert calls == []
    n_units = N_UNITS_PER_SEED * 2
    assert f"({n_units} cached, 0 to run)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("ft-*.json")} == before

    # Grow the grid by a seed; DBpedia's new units raise. They are recorded as failed and the others go on.
    def flaky(model, train, val, test, cfg, *a, **k):
        if model.num_labels == 14:
            raise RuntimeError("injected failure")
        calls.append(1)
        return real_finetune(model, train, val, test, cfg, *a, **k)

    monkeypatch.setattr(finetune_unit, "finetune", flaky)
    assert main(["run", "--study", "all", *args, *PINNED, "--seeds", "0", "1", "2"]) == 1  # 1: some units failed
    assert f"({n_units} cached, {N_UNITS_PER_SEED} to run)" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("ft-*.json")}
    assert all(after[name] == t for name, t in before.items())  # old units untouched
    df = pd.read_csv(out / "results.csv")
    failed = df[df["status"] == "failed"]
    assert len(failed) and set(failed["task"]) == {"dbpedia"} and set(failed["seed"]) == {2}
    assert failed["error"].str.contains("RuntimeError: injected failure").all()
    assert (df[df["seed"] == 2]["task"] != "dbpedia").sum() > 0
    assert (df[(df["seed"] == 2) & (df["task"] != "dbpedia")]["status"] == "ok").all()
    bad = json.loads(next(p for p in (out / "units").glob("ft-*.json")
                          if json.loads(p.read_text())["status"] == "failed").read_text())
    assert "injected failure" in bad["error"] and "Traceback" in bad["traceback"]

    # The next run retries only the failed units.
    monkeypatch.setattr(finetune_unit, "finetune", real_finetune)
    assert main(["run", "--study", "pretrain_gap", *args, *PINNED, "--seeds", "0", "1", "2"]) == 0
    # pretrain_gap's DBpedia units of seed 2: 2 models x 2 lrs x (scratch + 2 pre-training seeds)
    assert ", 12 to run, 12 of them failed before)" in capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert (df[df["study"] == "pretrain_gap"]["status"] == "ok").all()


def test_a_failing_pretraining_fails_its_units_only(tmp_path, monkeypatch):
    from tinybert.experiments import main, units

    real = units.pretrain
    every = []

    def boom(model, *a, **k):
        every.append(a[2].checkpoint_epochs)  # pretrain(model, data, cfg, run): the runner's checkpoint interval
        if model.config.layers == 2:  # the smoke preset's deep model
            raise ValueError("pre-training exploded")
        return real(model, *a, **k)

    monkeypatch.setattr(units, "pretrain", boom)
    out = tmp_path / "out"
    rc = main(["run", "--study", "pretrain_gap", "--preset", "smoke", "--out", str(out), "--seeds", "0", *PINNED,
               "--source", str(make_source(tmp_path / "wiki.txt", 400)), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 1
    df = pd.read_csv(out / "results.csv")
    df = df[df["study"] == "pretrain_gap"]  # (its units also appear as rows of the other studies that share them)
    bad = df[df["status"] == "failed"]
    # 3 tasks x 2 pre-training seeds x 2 lrs
    assert set(bad["model"]) == {"bert6"} and bad["pretrained"].all() and len(bad) == 3 * 2 * 2
    assert bad["error"].str.contains("pre-training exploded").all()
    assert len(df) == 2 * 3 * 2 * 3 and (df[df["model"] == "bert1-h2"]["status"] == "ok").all()
    assert (df[(df["model"] == "bert6") & ~df["pretrained"]]["status"] == "ok").all()
    assert every and set(every) == {units.CHECKPOINT_EPOCHS} and units.CHECKPOINT_EPOCHS > 1


def test_nested_selection_matches_load_or_build_corpus(tmp_path):
    """The runner cuts every size-N training set out of one pool; the rows must equal what train.py would use."""
    from data_prep.corpus import load_or_build_corpus
    from tinybert.experiments import get_preset
    from tinybert.experiments.units import Workspace

    src = make_source(tmp_path / "wiki.txt", 400)
    preset = get_preset("smoke")
    ws = Workspace(preset, tmp_path / "out", sources=[src], cache_dir=tmp_path / "cache")
    for n in (1, 37, 100, 200):
        rows = ws.corpus_rows(ws.corpus_spec("nested", n))
        ref, _ = load_or_build_corpus(ws.tokenizer, n, preset.corpus_seed, "paper", preset.seq_len, sources=[src],
                                      cache_dir=tmp_path / "cache2", show_progress=False)
        assert np.array_equal(rows, np.asarray(ref))
    held, _ = load_or_build_corpus(ws.tokenizer, preset.eval_articles, preset.corpus_seed, "paper", preset.seq_len,
                                   sources=[src], cache_dir=tmp_path / "cache2", show_progress=False,
                                   skip=preset.pool_size)
    assert np.array_equal(ws.eval_rows(), np.asarray(held))
    # the overlap arms come from the same pool, have the asked size and are ordered by overlap
    arms = {a: ws.corpus_rows(ws.corpus_spec(a, preset.overlap.size)) for a in ("high", "random", "low")}
    assert all(len(r) == preset.overlap.size for r in arms.values())
    ref_task = ws.reference_task()
    ov = {a: ws.task_overlap(ref_task, preset.corpus_seed, ws.corpus_spec(a, preset.overlap.size))["overlap_tokens"]
          for a in arms}
    assert ov["high"] >= ov["low"]


def test_embedding_stats_see_a_collapse_and_agree_with_the_pairwise_loop():
    from tinybert.experiments.embeddings import embedding_stats, mean_pairwise_cosine

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(50, 8, generator=g)
    unit = torch.nn.functional.normalize(rows, dim=1)
    loop = np.mean([float(unit[i] @ unit[j]) for i in range(50) for j in range(50) if i != j])
    assert mean_pairwise_cosine(rows) == pytest.approx(loop, abs=1e-6)
    # ids 0-1 special, 2-41 seen (random rows), 42-99 unseen (one shared direction plus a little noise)
    emb = torch.randn(100, 8, generator=g)
    emb[42:] = 3 * torch.ones(8) + 0.1 * torch.randn(58, 8, generator=g)
    seen = np.zeros(100, dtype=bool)
    seen[:42] = True
    s = embedding_stats(emb, seen, exclude=[0, 1])
    assert (s["seen_rows"], s["unseen_rows"]) == (40, 58)
    assert abs(s["seen_cosine"]) < 0.1 and s["unseen_cosine"] > 0.99 and s["unseen_norm"] > s["seen_norm"]


def test_embedding_report_reads_the_smoke_units(smoke, capsys):
    from tinybert.experiments.embeddings import main

    out, args = smoke
    assert main(args) == 0
    df = pd.read_csv(out / "embeddings.csv")
    n_units = len(list((out / "units").glob("pretrain-*/model.pt")))
    assert len(df) == n_units > 0
    assert (df["seen_rows"] + df["unseen_rows"] == 30522 - 5).all() and (df["seen_rows"] > 0).all()
    assert "cosine seen / unseen" in capsys.readouterr().out


def test_reset_unseen_rows_redraws_only_the_never_seen_tokens():
    from tinybert.config import ModelConfig
    from tinybert.experiments.units import reset_unseen_rows
    from tinybert.model import BertForSequenceClassification

    model = BertForSequenceClassification(ModelConfig(vocab_size=40, layers=1, heads=2, head_size=4), 3)
    emb = model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        emb.fill_(5.0)  # a "collapsed" table: every row the same large vector
    counts = np.zeros(40, dtype=np.int64)
    counts[10:30] = 7  # ids 10-29 seen in pre-training; 0-4 are special
    assert reset_unseen_rows(model, counts, exclude=[0, 1, 2, 3, 4], seed=0) == 40 - 20 - 5
    assert (emb[:5] == 5).all() and (emb[10:30] == 5).all()
    redrawn = torch.cat([emb[5:10], emb[30:]])
    assert redrawn.abs().max() < 0.2 and 0.01 < redrawn.std() < 0.03
    before = redrawn.clone()
    with torch.no_grad():
        emb.fill_(5.0)
    reset_unseen_rows(model, counts, exclude=[0, 1, 2, 3, 4], seed=0)
    assert torch.equal(torch.cat([emb[5:10], emb[30:]]), before)  # seeded


def test_reinit_blocks_keeps_the_embeddings_and_redraws_the_blocks():
    from tinybert.config import ModelConfig
    from tinybert.experiments.units import reinit_blocks
    from tinybert.model import BertForSequenceClassification

    model = BertForSequenceClassification(ModelConfig(vocab_size=40, layers=2, heads=2, head_size=4), 3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)  # stands for pre-trained weights
    rng_before = torch.get_rng_state()
    reinit_blocks(model, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert all((p == 3).all() for p in model.bert.embeddings.parameters())
    assert all((p == 3).all() for p in model.classifier.parameters())
    weights = [p for n, p in model.bert.blocks.named_parameters() if n.endswith("weight") and p.dim() == 2]
    assert weights and all(p.std() < 0.05 for p in weights)
    first = [p.clone() for p in model.bert.blocks.parameters()]
    reinit_blocks(model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, model.bert.blocks.parameters()))  # seeded


def test_each_parallel_worker_gets_its_own_gpu():
    from tinybert.experiments.runner import worker_device
    assert [worker_device("cuda", i, 4) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3",
                                                               "cuda:0", "cuda:1"]
    assert [worker_device("cuda", i, 1) for i in range(3)] == ["cuda"] * 3  # one GPU: all share it
    assert worker_device("cuda:2", 1, 4) == "cuda:2"  # an explicit GPU is kept
    assert worker_device("cpu", 3, 0) == "cpu"


def test_units_differing_only_in_seed_batch_to_the_records_of_separate_runs(tmp_path):
    """units.run_finetune_batched (what the runner uses for units that differ only in their seeds) writes, per
    unit, the records run_finetune writes: the same keys, and with dropout 0 the same numbers to fp32 rounding."""
    from tinybert.experiments.presets import get_preset
    from tinybert.experiments.runner import batches_of
    from tinybert.experiments.units import (Workspace, batch_key, finetune_spec, load_probs, run_finetune,
                                            run_finetune_batched)
    from tinybert.runtime import Precision

    preset = get_preset("smoke")
    spaces = [Workspace(preset, tmp_path / name, precision=Precision("fp32", "test")) for name in ("alone", "batched")]
    for ws in spaces:
        ws.units.mkdir(parents=True)
    model = preset.shallow[0]
    specs = []
    for seed, member in ((0, 0), (1, 0), (1, 1)):  # two seeds, and a second committee member of seed 1
        spec = finetune_spec(spaces[0], model, None, preset.tasks[0], seed, member)
        spec["model"].update(dropout=0.0, attention_dropout=0.0)
        specs.append(spec)
    assert len({batch_key(s) for s in specs}) == 1
    alone = [run_finetune(spaces[0], s, None, None) for s in specs]
    batched = run_finetune_batched(spaces[1], specs, None, None)
    for a, b, spec in zip(alone, batched, specs):
        assert a.keys() == b.keys()
        for key in ("accuracy", "final_accuracy", "best_val_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), key
        assert (b["selected_epoch"], b["steps"], b["n_train"], b["spec"]) == (a["selected_epoch"], a["steps"],
                                                                               a["n_train"], a["spec"])
        for ra, rb in zip(a["curve"], b["curve"]):
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
            assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-5)
        pa, pb = load_probs(spaces[0], spec), load_probs(spaces[1], spec)
        assert pa.keys() == pb.keys()
        np.testing.assert_allclose(pb["probs"], pa["probs"], rtol=1e-4, atol=1e-6)

    # the runner batches consecutive units with one key only; a conv model batches within one seed only
    conv = preset.shallow[1]
    conv_specs = [finetune_spec(spaces[0], conv, None, preset.tasks[0], seed, member)
                  for seed, member in ((0, 0), (0, 1), (1, 0))]
    rows = [type("Row", (), {"ft": s})() for s in specs + conv_specs]  # stand-ins for GridRow (batches_of reads .ft)
    assert [len(b) for b in batches_of(rows)] == [3, 2, 1]
    assert [len(b) for b in batches_of(rows, batch=False)] == [1] * 6


def test_the_runner_extends_the_lr_grid_where_the_choice_sits_at_an_end(tmp_path):
    """With lr_extensions = 1 the smoke grid (2 lrs: every choice is at an end) gets one more lr per arm and end at
    most, runs those units, records them in lr_extensions.json and chooses among all of them."""
    from dataclasses import replace

    from tinybert.experiments.presets import get_preset
    from tinybert.experiments.runner import run_studies
    from tinybert.experiments.units import Workspace, load_lr_extensions
    from tinybert.runtime import Precision

    preset = replace(get_preset("smoke"), lr_extensions=1, pretrain_seeds=(0,), seeds=(0,))
    ws = Workspace(preset, tmp_path / "out", sources=[make_source(tmp_path / "wiki.txt")],
                   cache_dir=tmp_path / "cache", precision=Precision("fp32", "test"))
    assert run_studies(preset, ws, ("baseline", "pretrain_gap"), models=["bert6"], tasks=["agnews"],
                       log=lambda *_: None) == 0
    ext = load_lr_extensions(tmp_path / "out")
    assert ext and all(len(lrs) <= 2 for lrs in ext.values())  # at most one step past each end
    assert all(lr not in preset.lrs for lrs in ext.values() for lr in lrs)
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    ft = df[(df["study"] == "pretrain_gap") & (df["status"] == "ok")]
    for (pretrained,), g in ft.groupby(["pretrained"]):
        key = ("bert6", bool(pretrained), 200 if pretrained else 0, "nested" if pretrained else "none", "agnews", "")
        assert set(g["lr"]) == set(preset.lrs) | set(ext.get(key, ())), key
        assert g["lr_chosen"].sum() == 1  # one fine-tuning seed: one unit at the chosen lr
    record = json.loads((tmp_path / "out" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["units_to_run"] == df["unit"].nunique() == 7  # baseline, 2 arms x (2 lrs + 1), all in one command


def test_mean_padded_width_is_the_mean_of_each_batchs_longest_row():
    from tinybert.data import epoch_permutation
    from tinybert.experiments.runner import mean_padded_width

    # sorted (evaluation): [1, 2] and [3, 10] -> widths 2 and 10
    assert mean_padded_width([3, 10, 1, 2], 2) == 6.0
    lengths = np.random.default_rng(0).integers(5, 128, size=101)
    order = epoch_permutation(101, 7, 0).numpy()  # training: the unit's epoch order, the last batch short
    expected = np.mean([lengths[order[i:i + 32]].max() for i in range(0, 101, 32)])
    assert mean_padded_width(lengths, 32, shuffle_seed=7) == pytest.approx(expected)
    # random batches pad much wider than sorted ones: the reason the estimate must not use the mean length
    assert mean_padded_width(lengths, 32) < mean_padded_width(lengths, 32, shuffle_seed=7)
    assert mean_padded_width(lengths, 32, shuffle_seed=7) > lengths.mean() + 30


def test_the_estimate_times_fine_tuning_steps_at_the_samples_padded_widths(tmp_path, monkeypatch):
    """Not at the task's mean text length: random training batches pad to their longest row, and an estimate at
    the mean length was 2.4x short for BERT-6 on AG News."""
    from dataclasses import replace

    from tinybert.experiments import runner
    from tinybert.experiments.presets import TaskSpec, get_preset
    from tinybert.experiments.units import Workspace
    from tinybert.runtime import Precision

    base = get_preset("smoke")
    preset = replace(base, tasks=(TaskSpec("agnews", 40, 10), *base.tasks[1:]), finetune={**base.finetune, "max_length": 128},
                     seeds=(0,), pretrain_seeds=(0,))
    ws = Workspace(preset, tmp_path / "out", sources=[make_source(tmp_path / "wiki.txt")],
                   cache_dir=tmp_path / "cache", precision=Precision("fp32", "test"))
    probed = []
    monkeypatch.setattr(runner, "probe_step", lambda config, kind, batch, length, *a, **k:
                        probed.append((kind, batch, length)) or 0.01)
    p = runner.plan(preset, ws, ("pretrain_gap",), models=["bert6"], tasks=["agnews"])
    spec = next(r.ft for r in p["todo"])
    seconds = runner.Estimator(ws, preset).finetune(spec)

    train, val, test = ws.encoded(preset.tasks[0], spec["seed"], 128)
    lengths = [len(x) for x in train.ids]
    train_w = runner.mean_padded_width(lengths, 16, shuffle_seed=spec["seed"])
    eval_w = runner.mean_padded_width([len(x) for x in val.ids + test.ids], 256)
    widths = [min(128, 8 * int(np.ceil(w / 8))) for w in (train_w, eval_w)]
    assert [length for _, _, length in probed] == widths[:1 + (widths[1] != widths[0])]
    assert widths[0] > np.mean(lengths) + 8  # (what the old estimate probed at, give or take its rounding)
    steps = int(np.ceil(4 * 36 / 16))  # 4 labels x (40 - 4 validation rows), one epoch, batch 16
    assert seconds == pytest.approx(steps * 0.01 + 4 * (4 + 10) / 16 * 0.01 / 3 + 1.0)


def test_a_finished_pretrainings_units_spread_over_the_workers():
    """Units of a pre-training still to train stay in one group (it is trained once, before them); once it is on
    disk, its units group by batch key like scratch ones, so two workers share them."""
    from types import SimpleNamespace

    from tinybert.experiments.runner import parallel_groups
    from tinybert.experiments.units import spec_hash

    def unit(pre, lr, seed):
        ft = {"kind": "finetune", "model": {"layers": 6}, "pretrain": None if pre is None else spec_hash(pre),
              "lr": lr, "seed": seed, "init_seed": seed}
        return SimpleNamespace(pretrain=pre, ft=ft, ft_hash=spec_hash(ft))

    trained, to_train = {"articles": 40}, {"articles": 20}
    todo = [unit(p, lr, s) for p in (trained, to_train, None) for lr in (1e-4, 1e-3) for s in (0, 1, 2)]
    estimates = {r.ft_hash: 1.0 for r in todo} | {spec_hash(to_train): 10.0}
    groups = parallel_groups(todo, estimates, {spec_hash(to_train): to_train})
    sizes = [(g[0].pretrain and g[0].pretrain["articles"], len(g)) for g in groups]
    assert sizes == [(20, 6), (40, 3), (40, 3), (None, 3), (None, 3)]  # longest first: the pre-training's group
    assert all(len({(r.ft["lr"], spec_hash(r.pretrain or {})) for r in g}) == 1 for g in groups[1:])
    # without batching, every unit of a finished pre-training is a group of its own
    assert len(parallel_groups(todo, estimates, {spec_hash(to_train): to_train}, batch=False)) == 1 + 12


def test_two_worker_processes_run_a_grown_grid_from_a_finished_pretraining(tmp_path):
    """run_parallel end to end (spawned workers): the pre-training runs in one process first; the seeds added
    later start from it on disk, and their units spread over 2 workers, one group per batch key."""
    from dataclasses import replace

    from tinybert.experiments.presets import get_preset
    from tinybert.experiments.runner import run_studies
    from tinybert.experiments.units import Workspace
    from tinybert.runtime import Precision

    def run(seeds, jobs):
        preset = replace(get_preset("smoke"), seeds=seeds, pretrain_seeds=(0,))
        ws = Workspace(preset, tmp_path / "out", sources=[make_source(tmp_path / "wiki.txt")],
                       cache_dir=tmp_path / "cache", precision=Precision("fp32", "test"))
        lines = []
        assert run_studies(preset, ws, ("pretrain_gap",), models=["bert6"], tasks=["agnews"], jobs=jobs,
                           threads=1, log=lines.append) == 0
        return lines

    run((0,), 1)
    lines = run((0, 1, 2), 2)
    # 2 arms x 2 lrs x 2 new seeds; one batched group per (arm, lr): none waits on the pre-training's worker
    assert "running 8 units in 4 groups on 2 worker processes x 1 thread(s)" in lines
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    ft = df[df["study"] == "pretrain_gap"]
    assert len(ft) == 12 and (ft["status"] == "ok").all() and sorted(set(ft["seed"])) == [0, 1, 2]


def test_an_arm_finished_in_an_earlier_run_extends_its_lr_grid_at_the_start_of_the_next(tmp_path):
    """AG News's arms finish in run 1 (no extensions then); run 2 extends them before it plans, so their new lr
    runs beside DBpedia's units; DBpedia's arms, still to run, extend only after their units finish."""
    from dataclasses import replace

    from tinybert.experiments.presets import get_preset
    from tinybert.experiments.runner import run_studies
    from tinybert.experiments.units import Workspace
    from tinybert.runtime import Precision

    def run(extensions, tasks):
        preset = replace(get_preset("smoke"), lr_extensions=extensions, pretrain_seeds=(0,), seeds=(0,))
        ws = Workspace(preset, tmp_path / "out", sources=[make_source(tmp_path / "wiki.txt")],
                       cache_dir=tmp_path / "cache", precision=Precision("fp32", "test"))
        lines = []
        assert run_studies(preset, ws, ("pretrain_gap",), models=["bert6"], tasks=tasks, log=lines.append) == 0
        return lines

    run(0, ["agnews"])
    lines = run(1, ["agnews", "dbpedia"])
    plan_at = next(i for i, line in enumerate(lines) if line.startswith("plan:"))
    early = [line for line in lines[:plan_at] if line.startswith("lr grid extended")]
    late = [line for line in lines[plan_at:] if line.startswith("lr grid extended")]
    # both AG News arms of the study, before the plan (and the committee's BERT-6 reference arm: the same units)
    def arms(found):
        return {ast.literal_eval(line.split("extended: ")[1].split(" gets")[0]) for line in found}

    assert arms(early) == {("bert6", False, 0, "none", "agnews", ""), ("bert6", True, 200, "nested", "agnews", ""),
                           ("bert6", True, 200, "nested", "agnews", "reference")}
    assert "4 cached, 6 to run" in lines[plan_at], lines  # DBpedia's 2 arms x 2 lrs, AG News's 2 extension units
    assert late and {arm[4] for arm in arms(late)} == {"dbpedia"}


def test_the_tables_read_only_the_newest_latency_record_of_this_machine(tmp_path):
    from tinybert.experiments.tables import latest_latency
    from tinybert.experiments.units import write_json_atomic

    def record(name, machine, date, ms):
        write_json_atomic(tmp_path / f"latency-{name}.json",
                          {"spec": {"machine": machine, "precision": "fp32"}, "date": date,
                           "rows": [{"model": "bert6", "median_ms": ms}]})

    assert latest_latency(tmp_path, "cpu A") is None
    record("a", "cpu A", "2026-11-30 07:38", 1.0)
    record("b", "cpu A", "2026-12-01 09:00", 2.0)  # remeasured after a change to what is timed
    record("c", "cpu B", "2026-12-02 09:00", 3.0)  # another machine, newer still
    assert latest_latency(tmp_path, "cpu A")["rows"] == [{"model": "bert6", "median_ms": 2.0}]
    assert latest_latency(tmp_path, "cpu B")["rows"][0]["median_ms"] == 3.0


def test_a_latency_measured_on_a_busy_machine_is_marked_and_measured_again(tmp_path, monkeypatch):
    """A second block running beside the one that ends inflates its latency: the record says so, the next run
    measures again, and the tables prefer an idle record over a newer busy one."""
    from types import SimpleNamespace

    import tinybert.bench_latency as bench_latency
    from tinybert.experiments.studies import committee
    from tinybert.experiments.tables import latest_latency

    ws = SimpleNamespace(units=tmp_path)
    measured, load = [], {"cores": 1.0}
    monkeypatch.setattr(committee, "latency_spec", lambda ws, preset: {"machine": "cpu A", "precision": "fp32"})
    monkeypatch.setattr(committee, "measure_latency",
                        lambda ws, preset, log: measured.append(1) or [{"model": "bert6", "median_ms": 9.0}])
    monkeypatch.setattr(bench_latency, "busy_cores", lambda: load["cores"])
    dates = iter(["2026-12-01 10:00", "2026-12-01 11:00", "2026-12-01 12:00"])
    monkeypatch.setattr(committee, "now", lambda: next(dates))
    preset, log = SimpleNamespace(name="cpu"), []

    committee.after_run(preset, ws, log.append)  # another block keeps a core busy
    (rec_path,) = tmp_path.glob("latency-*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["busy"] and rec["other_busy_cores"] == 1.0 and len(measured) == 1
    assert any("cores busy" in line for line in log)
    load["cores"] = 0.05
    committee.after_run(preset, ws, log.append)  # the busy record does not count as cached
    rec = json.loads(rec_path.read_text())
    assert len(measured) == 2 and not rec["busy"] and rec["other_busy_cores"] == 0.05
    committee.after_run(preset, ws, log.append)  # an idle record does
    assert len(measured) == 2

    # the tables: the newest idle record wins over a newer busy one (of another spec)
    idle = rec["date"]
    (tmp_path / "latency-other.json").write_text(json.dumps({**rec, "date": "2026-12-02 09:00", "busy": True}))
    assert latest_latency(tmp_path, "cpu A")["date"] == idle
    rec_path.unlink()
    assert latest_latency(tmp_path, "cpu A")["busy"]  # only busy ones: used, and marked


def test_busy_cores_reads_other_processes_cpu_time_from_proc_stat(tmp_path, monkeypatch):
    import os

    import tinybert.bench_latency as bench_latency

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")

    def sleep(_):  # 100 jiffies pass: 50 busy (user 30, system 20), 50 idle
        stat.write_text("cpu  130 0 120 850 0 0 0 0 0 0\n")
    monkeypatch.setattr(bench_latency.time, "sleep", sleep)
    cores = os.cpu_count() or 1
    assert bench_latency.busy_cores(stat_path=str(stat)) == pytest.approx(0.5 * cores)
    assert bench_latency.busy_cores(stat_path=str(tmp_path / "missing")) is None
