"""eval.py end to end through main(argv), on a tiny CSV task in tmp_path (CPU, tiny models, 1-2 epochs).

The task reader (data_prep/tasks.py) is replaced by a small stub that follows its contract, so these tests do not
depend on it; `test_real_reader_csv` runs the real one when it is importable.
"""

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.tasks import Example, TaskData
from tinybert import evaluation, finetune_unit
from tinybert.checkpoint import save_checkpoint
from tinybert.config import make_model_config
from tinybert.model import BertForMaskedLM

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
evalcli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evalcli)

WORDS = ["good", "bad"] + [f"w{i}" for i in range(12)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS



# ---------------------------------------------------------------------------------------- stub task reader


class StubTaskDataError(ValueError):
    pass


def read_rows(path, text_col, label_col):
    if not Path(path).is_file():
        raise StubTaskDataError(f"{path} does not exist")
    with open(path, newline="") as f:
        return [(r[text_col], r[label_col]) for r in csv.DictReader(f)]


def stub_load_task(name, data_dir=None, *, setting=None, train_per_label=None, test_per_label=None,
                   val_per_label=None, seed=0, train_file=None, test_file=None, text_col=None, label_col=None):
    assert name == "csv"
    train = read_rows(train_file, text_col or "text", label_col or "label")
    test = read_rows(test_file, text_col or "text", label_col or "label")
    names = sorted({y for _, y in train})
    random.Random(seed).shuffle(train)
    n_val = len(train) // 4
    ex = lambda rows: [Example(t, names.index(y)) for t, y in rows]
    return TaskData("csv", setting or "default", names, ex(train[n_val:]), ex(train[:n_val]), ex(test),
                    notes=[f"stub reader, seed {seed}"], sources=[str(train_file)])


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(evalcli, "task_reader", lambda: (stub_load_task, StubTaskDataError))


# ----------------------------------------------------------------------------------------------- fixtures


def write_csv(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "sentiment"])
        for i in range(n):
            label = ["pos", "neg"][i % 2]
            words = [f"w{rng.randrange(12)}" for _ in range(rng.randrange(2, 8))]
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), "good" if label == "pos" else "bad")
            w.writerow([" ".join(words), label])
    return path


@pytest.fixture
def files(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return {"train": write_csv(tmp_path / "train.csv", 40, 0), "test": write_csv(tmp_path / "test.csv", 12, 1),
            "vocab": tmp_path / "vocab.txt", "dir": tmp_path}


def checkpoint(path, seed, **overrides):
    torch.manual_seed(seed)
    cfg = make_model_config("tiny", vocab_size=len(VOCAB), max_position=16, pad_id=0, **overrides)
    save_checkpoint(path, {"kind": "mlm", "model_config": cfg.to_dict(), "vocab": VOCAB,
                           "model": BertForMaskedLM(cfg).state_dict()})
    return str(path)


def base_args(files, out, *extra):
    return ["--task", "csv", "--train", str(files["train"]), "--test", str(files["test"]),
            "--text-col", "sentence", "--label-col", "sentiment", "--out", str(out), "--device", "cpu",
            "--precision", "fp32", "--batch-size", "8", "--max-length", "16", "--lr", "1e-3", "--no-progress",
            *extra]


# ------------------------------------------------------------------------------------------------- runs


def test_scratch_two_seeds(stub, files, capsys):
    out = files["dir"] / "scratch"
    rc = evalcli.main(base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]),
                                "--epochs", "2", "--seeds", "0", "1"))
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "csv" and res["setting"] == "default" and res["complete"] is True
    assert res["pretrained"] is False and res["checkpoints"] == [] and res["seeds"] == [0, 1]
    assert res["label_names"] == ["neg", "pos"]
    assert res["notes"] == ["stub reader, seed 0", "stub reader, seed 1"]
    assert res["config"]["finetune"]["epochs"] == 2 and res["config"]["models"][0]["heads"] == 2
    assert len(res["runs"]) == 2
    for run in res["runs"]:
        assert run["data"] == {"train": 30, "val": 10, "test": 12, "num_labels": 2}
        (member,) = run["members"]
        assert len(member["curve"]) == 2 and member["selection"] == "val"
        assert np.array(member["confusion"]).shape == (2, 2) and np.sum(member["confusion"]) == 12
        assert member["selected_test_acc"] == member["curve"][member["selected_epoch"]]["test_acc"]
        assert "committee" not in run
    summary = res["summary"]
    accs = [r["members"][0]["selected_test_acc"] for r in res["runs"]]
    assert summary["selected_test_acc"]["values"] == accs
    assert summary["selected_test_acc"]["mean"] == pytest.approx(np.mean(accs))
    assert summary["selected_test_acc"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert "final_test_acc" in summary and "committee" not in summary
    probs = np.load(out / "probs_seed1.npz")
    assert probs["probs"].shape == (1, 12, 2) and probs["labels"].shape == (12,)
    assert not (out / "results.partial.json").exists()
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert last.startswith("csv: tiny (random init) test acc") and "2 seed(s)" in last
    assert "note: stub reader, seed 0\nnote: stub reader, seed 1\n" in printed  # every data note on the console

    # an existing results.json is never overwritten silently
    rc = evalcli.main(base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]),
                                "--epochs", "1"))
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["seeds"] == [0, 1]
    rc = evalcli.main(base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]),
                                "--epochs", "1", "--overwrite"))
    assert rc == 0 and json.loads((out / "results.json").read_text())["seeds"] == [0]


def test_committee_of_checkpoints(stub, files, capsys):
    a, b = checkpoint(files["dir"] / "a" / "checkpoint.pt", 0), checkpoint(files["dir"] / "b" / "checkpoint.pt", 1)
    out = files["dir"] / "committee"
    # --no-batch: one member at a time, each with its own dropout stream (checked below against a single run)
    assert evalcli.main(base_args(files, out, "--checkpoint", a, b, "--epochs", "2", "--orders", "5",
                                  "--no-batch")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["pretrained"] is True and res["checkpoints"] == [a, b]
    run = res["runs"][0]
    assert [m["init_seed"] for m in run["members"]] == [0, evalcli.MEMBER_SEED_STRIDE]
    report = run["members"][0]["load_report"]
    assert report["missing_keys"] == [] and all(k.startswith("mlm_head.") for k in report["unused_keys"])
    for agg in ("probs", "logits"):
        curve = run["committee"][agg]
        assert curve["k"] == [1, 2] and curve["orders"] == 5 and len(curve["random_mean"]) == 2
        assert curve["given"][0] == pytest.approx(run["members"][0]["selected_test_acc"])
    com = res["summary"]["committee"]["probs"]
    assert com["given"][1]["values"] == [run["committee"]["probs"]["given"][1]]
    assert res["summary"]["selected_test_acc"] == com["given"][-1]
    assert [m["name"] for m in res["summary"]["members"]] == ["a", "b"]
    assert np.load(out / "probs_seed0.npz")["probs"].shape == (2, 12, 2)
    assert "committee of 2" in capsys.readouterr().out.strip().splitlines()[-1]

    # member 0 of the committee is the same run as evaluating that checkpoint alone
    single = files["dir"] / "single"
    assert evalcli.main(base_args(files, single, "--checkpoint", a, "--epochs", "2")) == 0
    alone = json.loads((single / "results.json").read_text())["runs"][0]["members"][0]
    assert alone["curve"] == [{**row, "elapsed_s": alone["curve"][i]["elapsed_s"]}
                              for i, row in enumerate(run["members"][0]["curve"])]

    # the same checkpoint without its weights: the control arm
    scratch = files["dir"] / "scratch"
    assert evalcli.main(base_args(files, scratch, "--checkpoint", a, "--no-pretrain", "--epochs", "1")) == 0
    res = json.loads((scratch / "results.json").read_text())
    assert res["pretrained"] is False and res["runs"][0]["members"][0]["load_report"] is None


def comparable(results: dict) -> dict:
    """results.json without what differs between two runs of the same work (times, dates, the command)."""
    drop = {"elapsed_s", "train_seconds", "started", "command"}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(results)


def assert_close_records(a, b, path="results"):
    """The same structure and keys; numbers equal to 1e-5 relative (fp32 rounding), everything else equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close_records(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_records(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("kind", ["seeds", "committee"])
def test_batched_equals_one_at_a_time(stub, files, capsys, kind):
    """eval.py batches seeds and committee members sharing an architecture by default; with dropout 0 its
    results.json and probs_seed*.npz equal --no-batch's to fp32 rounding, in exactly the same format."""
    if kind == "seeds":
        args = ["--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]), "--dropout", "0",
                "--seeds", "0", "1", "--epochs", "2"]
    else:
        ckpts = [checkpoint(files["dir"] / f"{n}.pt", s, dropout=0.0, attention_dropout=0.0) for n, s in
                 (("a", 0), ("b", 1))]
        args = ["--checkpoint", *ckpts, "--seeds", "3", "4", "--epochs", "2", "--orders", "5"]
    batched, alone = files["dir"] / "batched", files["dir"] / "alone"
    assert evalcli.main(base_args(files, batched, *args)) == 0
    printed = capsys.readouterr().out
    n = 2 if kind == "seeds" else 4
    assert f"fine-tuning {n} members as one batched model" in printed
    assert evalcli.main(base_args(files, alone, *args, "--no-batch")) == 0
    assert "batched model" not in capsys.readouterr().out
    a = json.loads((batched / "results.json").read_text())
    b = json.loads((alone / "results.json").read_text())
    assert a["command"] != b["command"]  # the flags are recorded
    assert_close_records(comparable(a), comparable(b))
    for seed in a["seeds"]:
        pa, pb = np.load(batched / f"probs_seed{seed}.npz"), np.load(alone / f"probs_seed{seed}.npz")
        assert sorted(pa.files) == sorted(pb.files)
        for key in pa.files:
            assert pa[key].shape == pb[key].shape and pa[key].dtype == pb[key].dtype
            np.testing.assert_allclose(pa[key], pb[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_bf16_run(stub, files, capsys):
    """bf16 autocast through eval.py on every host (emulated on CPUs without native bf16; base_args pins fp32)."""
    out = files["dir"] / "bf16"
    ckpt = checkpoint(files["dir"] / "c.pt", 0)
    assert evalcli.main(base_args(files, out, "--checkpoint", ckpt, "--epochs", "1", "--precision", "bf16",
                                  "--tf32")) == 0
    assert "precision bf16 (requested with --precision)" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["precision"] == "bf16" and res["complete"]
    # --tf32 was asked for; results.json records whether it took effect (CUDA only)
    assert res["config"]["tf32"] is res["config"]["device"].startswith("cuda")
    assert 0 <= res["summary"]["selected_test_acc"]["mean"] <= 1


def test_plan_output_folder_projected_time_and_cpu_note(stub, files, monkeypatch, capsys):
    out = files["dir"] / "plan"
    args = base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]), "--epochs", "1")
    assert evalcli.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"output folder: {out} (made when training starts)\n")
    assert "projected total time" in printed and "note: this run is projected" not in printed
    monkeypatch.setattr(evaluation, "estimate_step_seconds", lambda *a, **k: 1000.0)  # as if a big model
    assert evalcli.main(args + ["--overwrite"]) == 0
    printed = capsys.readouterr().out
    # 30 training rows in batches of 8: 4 steps x 1000 s, plus 22 validation and test rows at a third of a step
    # per batch of 8: 4917 s
    assert "projected total time ~82 min (1 seed(s) x 1 member(s) x 1 epochs x 4 steps at ~1e+03 s/step" in printed
    assert ("note: this run is projected to take ~82 min on this CPU; the paper's settings are sized for a GPU. "
            "For a run that fits a laptop in ~15 min: python -m tinybert.quickstart") in printed


def test_ctrl_c_names_partial_results_only_when_written(stub, files, monkeypatch, capsys):
    real, calls = finetune_unit.finetune, []  # the one fine-tuning unit calls it

    def finetune_until(stop_call):
        def finetune(*args, **kwargs):
            calls.append(1)
            if len(calls) == stop_call:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return finetune

    args = ["--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]), "--epochs", "1", "--seeds", "0", "1",
            "--no-batch"]  # one seed at a time, so there is a finished seed to keep
    monkeypatch.setattr(finetune_unit, "finetune", finetune_until(1))  # Ctrl-C during the first seed
    assert evalcli.main(base_args(files, files["dir"] / "a", *args)) == 130
    err = capsys.readouterr().err
    assert "no results were written" in err and "results.partial.json" not in err
    calls.clear()
    monkeypatch.setattr(finetune_unit, "finetune", finetune_until(2))  # Ctrl-C during the second seed
    partial = files["dir"] / "b" / "results.partial.json"
    assert evalcli.main(base_args(files, files["dir"] / "b", *args)) == 130
    captured = capsys.readouterr()
    assert f"seed 0 done: the results of 1 of 2 seed(s) are in {partial}" in captured.out
    assert f"the results of the 1 finished seed(s) are in {partial}" in captured.err and partial.is_file()
    assert [r["seed"] for r in json.loads(partial.read_text())["runs"]] == [0]


def test_one_class_predictions_are_flagged(stub, files, monkeypatch, capsys):
    real = finetune_unit.finetune

    def constant_guess(*args, **kwargs):  # as if the model had learned to always say 'pos' (label 1)
        res = real(*args, **kwargs)
        res["confusion"] = [[0, sum(row)] for row in res["confusion"]]
        return res

    monkeypatch.setattr(finetune_unit, "finetune", constant_guess)
    out = files["dir"] / "flat"
    assert evalcli.main(base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["vocab"]),
                                  "--epochs", "1")) == 0
    printed = capsys.readouterr().out
    assert "seed 0: warning: the model predicts 'pos' for every test example, a constant guess. Likely causes: a " \
           "learning rate too high or too low (--lr 0.001), too few epochs (--epochs 1), or a pre-trained model " \
           "that did not learn" in printed
    member = json.loads((out / "results.json").read_text())["runs"][0]["members"][0]
    assert member["warning"].startswith("warning: the model predicts 'pos'")
    assert evalcli.one_class_warning([[5, 1], [3, 2]], ["a", "b"], None) is None  # two classes predicted
    assert evalcli.one_class_warning([[0, 0], [0, 4]], ["a", "b"], None) is None  # only one class in the test set


@pytest.mark.skipif(importlib.util.find_spec("data_prep.tasks") is None, reason="data_prep/tasks.py not written yet")
def test_real_reader_tiny_csv_warns_on_the_console(files, capsys):
    three = files["dir"] / "three.csv"
    three.write_text("sentence,sentiment\ngood w1,pos\ngood w2,pos\nbad w3,neg\n")
    ckpt = checkpoint(files["dir"] / "c.pt", 0)
    args = [a for a in base_args(files, files["dir"] / "three", "--checkpoint", ckpt, "--epochs", "1")
            if a not in ("--test", str(files["test"]))]
    args[args.index(str(files["train"]))] = str(three)
    assert evalcli.main(args) == 0
    printed = capsys.readouterr().out
    assert "warning: the test set is too small to measure well: 2 of 2 classes have fewer than 10 test rows" in printed
    assert "note: no validation rows" in printed and "note: no test file" in printed


@pytest.mark.parametrize("case", ["missing-ckpt", "corrupt-ckpt", "task-error", "bad-epochs", "model-flag",
                                  "bad-task", "csv-no-train", "too-long", "bad-vocab", "bad-device", "no-choice"])
def test_error_exits(stub, files, capsys, case):
    out = files["dir"] / "err"
    ckpt = checkpoint(files["dir"] / "c.pt", 0)
    (files["dir"] / "junk.pt").write_bytes(b"not a checkpoint")
    args = {
        "missing-ckpt": base_args(files, out, "--checkpoint", str(files["dir"] / "nope.pt")),
        "corrupt-ckpt": base_args(files, out, "--checkpoint", str(files["dir"] / "junk.pt")),
        "task-error": [a if a != str(files["train"]) else str(files["dir"] / "none.csv")
                       for a in base_args(files, out, "--checkpoint", ckpt)],
        "bad-epochs": base_args(files, out, "--checkpoint", ckpt, "--epochs", "0"),
        "model-flag": base_args(files, out, "--checkpoint", ckpt, "--layers", "2"),
        "bad-task": ["--task", "imdb"],
        "csv-no-train": ["--task", "csv", "--checkpoint", ckpt],
        "too-long": base_args(files, out, "--checkpoint", ckpt, "--max-length", "64"),
        "bad-vocab": base_args(files, out, "--no-pretrain", "--preset", "tiny", "--vocab", str(files["train"])),
        "no-choice": base_args(files, out, "--preset", "tiny", "--vocab", str(files["vocab"])),
        "bad-device": base_args(files, out, "--checkpoint", ckpt, "--precision", "fp16"),
    }[case]
    assert evalcli.main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert not (out / "results.json").exists()
    if case == "no-choice":  # neither --checkpoint nor --no-pretrain: an error that names both
        assert "--checkpoint" in err and "--no-pretrain" in err and not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("data_prep.tasks") is None, reason="data_prep/tasks.py not written yet")
def test_real_reader_csv(files, tmp_path):
    ckpt = checkpoint(tmp_path / "c.pt", 0)
    out = tmp_path / "real"
    assert evalcli.main(base_args(files, out, "--checkpoint", ckpt, "--epochs", "1")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "csv" and len(res["runs"]) == 1 and res["complete"]
    assert res["setting"] == "csv:train.csv" and res["label_names"] == ["neg", "pos"]
    run = res["runs"][0]
    assert run["data"]["test"] == 12 and run["data"]["train"] + run["data"]["val"] == 40
    # a reader-side argument error (setting is for fewrel only) is a clean exit 2
    assert evalcli.main(base_args(files, tmp_path / "x", "--checkpoint", ckpt, "--setting", "val16")) == 2
    # no --test: the reader splits the training file
    args = [a for a in base_args(files, tmp_path / "y", "--checkpoint", ckpt, "--epochs", "1")
            if a not in ("--test", str(files["test"]))]
    assert evalcli.main(args) == 0
