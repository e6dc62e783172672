"""The experiment design's pieces without a run: the lr choice per arm (lr_select.py) on fake results, the preset
fields (lr grid, pre-training seeds, trained vocabulary) and their checks, the grid they expand to."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tinybert.experiments import get_preset
from tinybert.experiments.lr_select import choose_lrs, chosen_grid, lr_chosen_column


def _rows(spec):
    """results.csv-like rows: (model, pretrained, lr, seed, best_val, status)."""
    return pd.DataFrame([{"study": "s", "model": m, "pretrained": p, "pretrain_articles": 100 if p else 0,
                          "corpus": "nested" if p else "none", "task": "agnews", "committee": "", "lr": lr,
                          "seed": seed, "best_val_accuracy": v, "status": st, "committee_k": None}
                         for m, p, lr, seed, v, st in spec])


def test_the_lr_with_the_best_mean_validation_accuracy_wins_per_arm():
    df = _rows([("a", False, 1e-3, 0, 0.5, "ok"), ("a", False, 1e-3, 1, 0.7, "ok"),   # mean 0.6
                ("a", False, 3e-3, 0, 0.9, "ok"), ("a", False, 3e-3, 1, 0.2, "ok"),   # mean 0.55
                ("a", True, 1e-3, 0, 0.4, "ok"), ("a", True, 3e-3, 0, 0.8, "ok"),     # the other arm: 3e-3
                ("a", True, 3e-3, 1, None, "failed"),                                  # failed units do not count
                ("b", False, 1e-3, 0, 0.5, "ok"), ("b", False, 3e-3, 0, 0.5, "ok"),   # a tie: the smaller lr
                ("c", False, 1e-3, 0, None, "failed")])                                # no choice yet
    chosen, table = choose_lrs(df)
    arms = {k[1:3]: v for k, v in chosen.items()}
    assert arms == {("a", False): 1e-3, ("a", True): 3e-3, ("b", False): 1e-3}
    assert lr_chosen_column(df, chosen) == [True, True, False, False, False, True, True, True, False, False]
    row = table[(table["model"] == "a") & ~table["pretrained"] & (table["lr"] == 3e-3)].iloc[0]
    assert row["val_accuracy_mean"] == pytest.approx(0.55) and row["n"] == 2 and not row["chosen"]
    assert table[table["model"] == "c"]["chosen"].sum() == 0 and math.isnan(table[table["model"] == "c"]
                                                                            ["val_accuracy_mean"].iloc[0])
    assert bool(table[(table["model"] == "a") & table["chosen"]]["at_grid_edge"].iloc[0])  # 2 lrs: always an edge


def test_rows_without_an_lr_are_always_kept():
    df = _rows([("a", False, 1e-3, 0, 0.5, "ok")])
    df.loc[1] = {**df.loc[0].to_dict(), "model": "bag-of-words", "lr": np.nan}
    chosen, _ = choose_lrs(df)
    assert lr_chosen_column(df, chosen) == [True, True]


def test_preset_defaults_keep_the_old_units_and_the_checks_catch_bad_values():
    v1 = get_preset("cpu-v1")  # the first cpu design: its recorded units keep their hashes
    assert v1.lrs == (v1.finetune["lr"],) and v1.pretrain_seeds == (0,) and v1.trained_vocab_size is None
    assert v1.sweep is v1.deep
    cpu = get_preset("cpu")
    assert len(cpu.lrs) == 3 and len(cpu.pretrain_seeds) == 2 and cpu.trained_vocab_size == 8192
    assert cpu.sweep is cpu.shallow[0] and dict(cpu.deep.pretrain)["lr"] != cpu.pretrain["lr"]
    smoke = get_preset("smoke")
    assert len(smoke.lrs) == 2 and len(smoke.pretrain_seeds) == 2
    assert get_preset("smoke", vocab="train:500").trained_vocab_size == 500
    for bad in ({"finetune_lrs": (1e-3, 1e-3)}, {"finetune_lrs": (0.0,)}, {"finetune_lrs": (float("nan"),)},
                {"pretrain_seeds": ()}, {"pretrain_seeds": (1, 1)}, {"vocab": "train:abc"}, {"vocab": "train:3"},
                {"sweep_model": "bert6"}):
        with pytest.raises(ValueError, match="preset smoke"):
            get_preset("smoke", **bad)


def test_the_grid_pairs_every_pretraining_seed_with_every_finetuning_seed_and_lr(tmp_path):
    """make_rows: a scratch row per lr; a pre-trained row per pre-training seed and lr; a unit at the recipe's lr
    keeps the hash it had before the grid (its spec is unchanged); the committee keeps its own seeds."""
    from tinybert.experiments.studies import build_grid, make_row
    from tinybert.experiments.units import Workspace

    preset = get_preset("smoke")
    (tmp_path / "wiki.txt").write_text("an article\n")  # specs name the source; the grid reads no article
    ws = Workspace(preset, tmp_path / "out", sources=[tmp_path / "wiki.txt"], cache_dir=tmp_path / "cache")
    rows = [r for r in build_grid(preset, ws, ["pretrain_gap"]) if r.model.name == "bert6" and r.task.name == "agnews"
            and r.seed == 0]
    assert sorted((-1 if r.pretrain_seed is None else r.pretrain_seed, r.lr) for r in rows) == sorted(
        [(-1, lr) for lr in preset.lrs] + [(s, lr) for s in preset.pretrain_seeds for lr in preset.lrs])
    assert len({r.ft_hash for r in rows}) == len(rows) and len({r.arm for r in rows}) == 2
    old = make_row(ws, "x", preset.deep, preset.tasks[0], 0, articles=200)  # no lr given: the recipe's
    same = make_row(ws, "x", preset.deep, preset.tasks[0], 0, articles=200, lr=preset.finetune["lr"])
    assert old.ft == same.ft and "lr" in old.ft["finetune"]
    com = build_grid(preset, ws, ["committee"])
    assert {r.pretrain_seed for r in com if r.committee == "seeds"} == set(range(preset.committee_seeds))
    assert {r.pretrain_seed for r in com if r.committee != "seeds"} == {0}
    base = build_grid(preset, ws, ["baseline"])
    assert len(base) == len(preset.tasks) * len(preset.seeds) and all(r.lr is None for r in base)
    assert chosen_grid(rows, {}, preset.lrs[0]) == [r for r in rows if r.lr == preset.lrs[0]]


def test_a_trained_vocab_is_learned_on_the_pool_cached_and_used(tmp_path):
    from tinybert.experiments.units import Workspace

    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    rng = np.random.default_rng(0)
    src = tmp_path / "wiki.txt"
    src.write_text("\n".join(" ".join(rng.choice(words, size=20)) for _ in range(400)) + "\n")
    preset = replace(get_preset("smoke"), vocab="train:60")
    ws = Workspace(preset, tmp_path / "out", sources=[src], cache_dir=tmp_path / "cache")
    assert ws.tokenizer.vocab_size <= 60 and "alpha" in ws.tokenizer.vocab
    assert ws.vocab_path.parent == tmp_path / "cache" and ws.vocab_path.is_file()
    assert "wordpiece-60" in ws.vocab_label
    again = Workspace(preset, tmp_path / "out", sources=[src], cache_dir=tmp_path / "cache")  # from the cache
    assert again.vocab_path == ws.vocab_path and again.tokenizer.vocab_hash == ws.tokenizer.vocab_hash
    rows = ws.corpus_rows(ws.corpus_spec("nested", 100))
    assert rows.max() < ws.tokenizer.vocab_size  # the pool is tokenized with the trained vocabulary
    counts = ws.corpus_counts(ws.corpus_spec("nested", 100))
    assert len(counts) == ws.tokenizer.vocab_size  # and the overlap measures follow it


def test_paired_contrast_pairs_by_finetuning_seed_and_averages_over_pretraining_seeds():
    from tinybert.experiments.stats import mean_ci
    from tinybert.experiments.studies.core import TableInput, paired_contrast

    acc = {("high", 0): (0.60, 0.70), ("high", 1): (0.50, 0.52), ("high", 2): (0.80, 0.60),
           ("low", 0): (0.40, 0.50), ("low", 1): (0.45, 0.45), ("low", 2): (0.55, 0.65)}
    rows = [{"study": "overlap", "task": "agnews", "corpus": arm, "seed": seed, "pretrain_seed": p, "accuracy": a,
             "status": "ok", "lr_chosen": True, "committee_k": np.nan}
            for (arm, seed), pair in acc.items() for p, a in enumerate(pair)]
    rows += [{**rows[0], "accuracy": 0.0, "lr_chosen": False},          # another lr: not the arm's choice
             {**rows[1], "accuracy": 0.0, "status": "failed"},           # a failed unit
             {**rows[2], "seed": 3}]                                    # a seed the other arm lacks
    inp = TableInput(None, None, None, None, [], pd.DataFrame(rows))
    diffs = [np.mean(acc[("high", s)]) - np.mean(acc[("low", s)]) for s in (0, 1, 2)]  # 0.2, 0.06, 0.1
    assert paired_contrast(inp, "overlap", "agnews", {"corpus": "high"}, {"corpus": "low"}) == pytest.approx(
        mean_ci(diffs))
    assert paired_contrast(TableInput(None, None, None, None, []), "overlap", "agnews", {}, {})[2] == 0


def test_minus_baseline_pairs_each_seed_with_the_baseline_on_its_rows():
    from tinybert.experiments.stats import mean_ci
    from tinybert.experiments.studies.core import TableInput, minus_baseline

    base = {0: 0.80, 1: 0.70, 2: 0.90}
    model = {(0, 0): 0.82, (0, 1): 0.84, (1, 0): 0.60, (1, 1): 0.62, (2, 0): 0.91, (2, 1): 0.89}
    common = {"task": "agnews", "status": "ok", "lr_chosen": True, "committee_k": np.nan}
    rows = [{**common, "study": "baseline", "model": "bag-of-words", "pretrained": False, "seed": s, "accuracy": a}
            for s, a in base.items()]
    rows += [{**common, "study": "pretrain_gap", "model": "m", "pretrained": True, "seed": s, "accuracy": a}
             for (s, _), a in model.items()]
    rows += [{**rows[-1], "lr_chosen": False, "accuracy": 0.0},             # another lr: not the arm's choice
             {**rows[-1], "seed": 7}]                                    # a seed the baseline lacks
    inp = TableInput(None, None, None, None, [], pd.DataFrame(rows))
    expected = mean_ci([0.83 - 0.80, 0.61 - 0.70, 0.90 - 0.90])
    assert minus_baseline(inp, "pretrain_gap", "agnews", {"model": "m", "pretrained": True}) == pytest.approx(expected)
    assert minus_baseline(inp, "pretrain_gap", "dbpedia", {"model": "m"})[2] == 0


def test_the_wider_bert1_variants_of_the_cpu_preset_pretrain_at_an_lr_scaled_by_8_over_heads():
    from types import SimpleNamespace

    from tinybert.experiments.units import pretrain_spec

    cpu = get_preset("cpu")
    # The spec's recipe part only; the model config (which needs the trained vocabulary) is not under test here.
    ws = SimpleNamespace(preset=cpu, model_config=lambda model: SimpleNamespace(to_dict=lambda: {}))
    lrs = {}
    for model in cpu.shallow:
        spec = pretrain_spec(ws, model, {"kind": "nested", "articles": 40000}, 0)
        lrs[(model.config_fields()["heads"], model.name)] = spec["train"]["lr"]
        assert {k: v for k, v in spec["train"].items() if k != "lr"} == {k: v for k, v in cpu.pretrain.items()
                                                                         if k != "lr"}
    base = cpu.pretrain["lr"]
    assert lrs[(8, "bert1-h8")] == base
    for (heads, name), lr in lrs.items():
        assert lr == pytest.approx(base * 8 / heads), name
    assert lrs[(24, "bert1-h24")] == pytest.approx(1e-3)


def test_a_block_of_a_run_keeps_only_the_named_models_tasks_and_pretraining_seeds(tmp_path):
    from tinybert.experiments.runner import plan
    from tinybert.experiments.units import Workspace

    preset = get_preset("smoke")
    (tmp_path / "wiki.txt").write_text("an article\n")  # the plan reads no article
    ws = Workspace(preset, tmp_path / "out", sources=[tmp_path / "wiki.txt"], cache_dir=tmp_path / "cache")
    everything = plan(preset, ws, ["baseline", "pretrain_gap"])["todo"]
    block = plan(preset, ws, ["baseline", "pretrain_gap"], models=["bert6"], tasks=["agnews"], pretrain_seeds=[1])
    rows = block["todo"]
    assert {r.task.name for r in rows} == {"agnews"} and {r.model.name for r in rows} == {"bert6", "bag-of-words"}
    assert {r.pretrain_seed for r in rows} == {None, 1}
    n_seeds, n_lrs = len(preset.seeds), len(preset.lrs)
    assert len(rows) == n_seeds + 2 * n_seeds * n_lrs  # baseline, scratch and pre-training seed 1 at every lr
    assert len(block["pretrains"]) == 1 and len(everything) > len(rows)
    assert all(r in everything for r in rows)


def test_the_run_order_puts_the_seeds_of_one_lr_together_so_they_batch(tmp_path):
    from tinybert.experiments.runner import batches_of, plan
    from tinybert.experiments.units import Workspace

    preset = get_preset("smoke")  # 2 lrs, 2 fine-tuning seeds, 2 pre-training seeds
    (tmp_path / "wiki.txt").write_text("an article\n")
    ws = Workspace(preset, tmp_path / "out", sources=[tmp_path / "wiki.txt"], cache_dir=tmp_path / "cache")
    todo = plan(preset, ws, ["pretrain_gap"], models=["bert6"])["todo"]  # no conv front end: seeds batch
    batches = batches_of(todo)
    assert [len(b) for b in batches] == [len(preset.seeds)] * (len(todo) // len(preset.seeds))
    assert all(len({r.lr for r in b}) == 1 and len({r.seed for r in b}) == len(b) for b in batches)


def test_next_lr_steps_along_the_1_3_ladder():
    from tinybert.experiments.lr_select import next_lr

    assert [next_lr(lr, down=True) for lr in (3e-4, 1e-4, 1e-3, 3e-3)] == [1e-4, 3e-5, 3e-4, 1e-3]
    assert [next_lr(lr, down=False) for lr in (3e-3, 1e-2, 3e-4)] == [1e-2, 3e-2, 1e-3]
    assert next_lr(5e-5, down=True) == pytest.approx(1.6e-5) and next_lr(5e-5, down=False) == pytest.approx(1.6e-4)


def test_an_arm_whose_choice_sits_at_an_end_of_its_grid_gets_the_next_lr_until_the_limit():
    from tinybert.experiments.lr_select import ARM_COLUMNS, extensions_needed

    def arm(model, per_lr, chosen, n=3):
        base = dict(zip(ARM_COLUMNS, ("pretrain_gap", model, False, 0, "none", "agnews", "")))
        return [{**base, "lr": lr, "val_accuracy_mean": v, "n": n, "chosen": lr == chosen, "at_grid_edge": False}
                for lr, v in per_lr.items()]

    grid = (3e-4, 1e-3, 3e-3)
    rows = (arm("low", {3e-4: 0.9, 1e-3: 0.8, 3e-3: 0.7}, 3e-4)            # lowest chosen: add 1e-4
            + arm("high", {3e-4: 0.7, 1e-3: 0.8, 3e-3: 0.9}, 3e-3)         # highest chosen: add 1e-2
            + arm("inside", {3e-4: 0.7, 1e-3: 0.9, 3e-3: 0.8}, 1e-3)       # inside: nothing
            + arm("done", {1e-4: 0.9, 3e-4: 0.8, 1e-3: 0.7, 3e-3: 0.6}, 1e-4)  # one step past the grid: the limit
            + arm("early", {3e-4: 0.9, 1e-3: 0.8}, 3e-4)[:1] + [{**arm("early", {1e-3: 0.8}, None)[0], "n": 1}])
    added = extensions_needed(pd.DataFrame(rows), grid, limit=1)
    assert added == [(("low", False, 0, "none", "agnews", ""), 1e-4), (("high", False, 0, "none", "agnews", ""), 1e-2)]
    assert (("done", False, 0, "none", "agnews", ""), 3e-5) in extensions_needed(pd.DataFrame(rows), grid, limit=2)
    assert extensions_needed(pd.DataFrame(rows), grid, limit=0) == []
    # an lr already recorded for the arm (its units not run yet, e.g. outside this block) is not proposed again
    recorded = {("low", False, 0, "none", "agnews", ""): (1e-4,)}
    assert extensions_needed(pd.DataFrame(rows), grid, limit=1, recorded=recorded) == [added[1]]


def test_recorded_extensions_enter_the_grid_of_every_study_sharing_the_arm(tmp_path):
    from tinybert.experiments.studies import build_grid
    from tinybert.experiments.units import Workspace, load_lr_extensions

    preset = get_preset("smoke")
    (tmp_path / "wiki.txt").write_text("an article\n")
    ws = Workspace(preset, tmp_path / "out", sources=[tmp_path / "wiki.txt"], cache_dir=tmp_path / "cache")
    before = build_grid(preset, ws, ["pretrain_gap", "size"])
    key = ("bert6", False, 0, "none", "agnews", "")  # bert6 from scratch on AG News
    (tmp_path / "out").mkdir()
    ws.add_lr_extensions([(key, 3e-4)], log=lambda *_: None)
    assert load_lr_extensions(tmp_path / "out") == {key: (3e-4,)}
    after = build_grid(preset, ws, ["pretrain_gap", "size"])
    new = [r for r in after if r not in before]
    assert new and all(r.lr == 3e-4 and r.arm[1:] == key for r in new)
    assert {r.study for r in new} == {"pretrain_gap", "size"} and len({r.ft_hash for r in new}) == len(preset.seeds)
    (tmp_path / "out" / "lr_extensions.json").write_text('[{"arm": ["bert6"]}]')
    with pytest.raises(ValueError, match="lr_extensions.json: entry 0"):
        load_lr_extensions(tmp_path / "out")
