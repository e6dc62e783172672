"""train.py end to end on a tiny corpus: plan, checkpoint, resume, and clear errors for bad input."""

import csv
import dataclasses
import json
import math

import pytest
import torch

import train
from tinybert.checkpoint import load_checkpoint
from tinybert.data_dir import resolve_data_dir
from tinybert.optim import pretrain_lr_multiplier as lr_multiplier
from tinybert.pretrain import PretrainConfig
from tinybert.runtime import choose_precision

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park with a ball .", "music is played by the band .",
             "rain fell over the quiet town .", "the river flows to the sea ."]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "wiki.jsonl"
    lines = [json.dumps({"text": " ".join(SENTENCES[(i + j) % 5] for j in range(3))}) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    return path


def vocab_path():
    path = resolve_data_dir() / "bert_vocab" / "vocab.txt"  # the full data's or the embedded sample's
    assert path.is_file(), f"{path} missing"
    return str(path)


def argv(tmp_path, corpus, *extra):
    return ["--preset", "tiny", "--source", str(corpus), "--vocab", vocab_path(), "--wiki-size", "48",
            "--eval-articles", "8", "--batch-size", "8", "--lr", "1e-3", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-every", "2", "--device", "cpu",
            "--precision", "fp32", *extra]  # pinned: `auto` is bf16 on CPUs with AMX, fp32 on ours


def test_train_then_resume(tmp_path, corpus, capsys):
    assert train.main(argv(tmp_path, corpus, "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "tokens/epoch" in out and "projected total time" in out
    assert "precision fp32" in out
    assert out.startswith(f"output folder: {tmp_path / 'run'} (made when training starts)\n")
    assert "note: this run is projected" not in out  # seconds, not hours
    run = tmp_path / "run"
    assert {"checkpoint.pt", "metrics.csv", "run.json", "vocab.txt"} <= {p.name for p in run.iterdir()}
    record = json.loads((run / "run.json").read_text())
    assert record["tf32"] is False and record["segments"][0]["tf32"] is False  # TF32: opt-in, and CUDA only
    # a second start without --resume must not overwrite the run
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(argv(tmp_path, corpus, "--epochs", "1"))
    # resume with more epochs: flags come from the checkpoint, only --epochs changes
    assert train.main(["--out", str(run), "--resume", "--epochs", "2", "--no-progress",
                       "--cache-dir", str(tmp_path / "cache"), "--source", str(corpus)]) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt", kind="mlm")
    assert ckpt["progress"]["epoch"] == 2
    assert ckpt["model_config"]["heads"] == 2 and len(ckpt["vocab"]) == 30522


def test_resume_refuses_changed_model_flag(tmp_path, corpus):
    assert train.main(argv(tmp_path, corpus, "--epochs", "1")) == 0
    with pytest.raises(SystemExit, match="--heads"):
        train.main(["--out", str(tmp_path / "run"), "--resume", "--heads", "4"])


def test_bad_flags_and_checkpoints(tmp_path, corpus):
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.main(["--out", str(tmp_path / "nothing"), "--resume"])
    with pytest.raises(SystemExit):
        train.parse_args(["--conv-kernel", "3y4"])
    with pytest.raises(SystemExit):
        train.parse_args(["--preset", "no-such-model"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="corrupt or truncated"):
        train.main(["--out", str(bad), "--resume"])
    with pytest.raises(SystemExit, match="missing.jsonl: cannot read"):
        train.main(argv(tmp_path, corpus, "--source", str(tmp_path / "missing.jsonl")))
    with pytest.raises(SystemExit, match="fp16 is not supported on CPU"):
        train.main(argv(tmp_path, corpus, "--precision", "fp16", "--device", "cpu"))
    with pytest.raises(SystemExit, match=r"--batch-size 64 is more than the 48 training rows \(--wiki-size 48\)"):
        train.main(argv(tmp_path, corpus, "--batch-size", "64"))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_bf16_run_and_auto_on_resume(tmp_path, corpus, capsys):
    """bf16 autocast through the whole CLI on every host (emulated, slower, on CPUs without native bf16), and
    `--precision auto` on resume, which prints what auto resolves to on this host."""
    assert train.main(argv(tmp_path, corpus, "--epochs", "1", "--precision", "bf16")) == 0
    assert "precision bf16 (requested with --precision)" in capsys.readouterr().out
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["precision"] == "bf16"
    with open(run / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert math.isfinite(float(row["train_loss"])) and 0 <= float(row["eval_acc"]) <= 1
    assert train.main(["--out", str(run), "--resume", "--epochs", "2", "--precision", "auto", "--no-progress",
                       "--cache-dir", str(tmp_path / "cache"), "--source", str(corpus)]) == 0
    auto = choose_precision("auto", torch.device("cpu")).name  # bf16 on CPUs with AMX / AVX512-BF16, else fp32
    assert f"precision {auto} (auto:" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoint.pt", kind="mlm")["progress"]["epoch"] == 2


# ---------------------------------------------------------------------------------------------------- resume


def quick_argv(tmp_path, corpus, out, *extra):
    """README's quick pair, scaled down: a tiny preset, a small trained vocab, 3 epochs."""
    return ["--preset", "tiny", "--source", str(corpus), "--wiki-size", "48", "--eval-articles", "8",
            "--vocab-size", "120", "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--log-every", "2",
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu",
            "--precision", "fp32", *extra]


def record_logs(monkeypatch, logs, stop_at_epoch=None):
    """Wrap train.pretrain to record every log row; Ctrl-C (KeyboardInterrupt) at the first log of an epoch."""
    real = getattr(train.pretrain, "__wrapped__", train.pretrain)  # the library function, not an earlier wrapper

    def pretrain(model, data, cfg, run):
        def on_log(row):
            logs.append(row)
            if row["epoch"] == stop_at_epoch:
                raise KeyboardInterrupt

        return real(model, data, cfg, dataclasses.replace(run, on_log=on_log))

    pretrain.__wrapped__ = real
    monkeypatch.setattr(train, "pretrain", pretrain)


def metric_rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "elapsed_s")} for row in csv.DictReader(f)]


def test_resume_without_flags_is_the_uninterrupted_run(tmp_path, corpus, monkeypatch, capsys):
    whole_logs, cut_logs, resumed_logs = [], [], []
    record_logs(monkeypatch, whole_logs)
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "whole")) == 0
    record_logs(monkeypatch, cut_logs, stop_at_epoch=1)  # Ctrl-C early in epoch 1: the checkpoint of epoch 0 stays
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "cut")) == 130
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["progress"] == {"epoch": 1, "batch": 0, "step": 6}
    record_logs(monkeypatch, resumed_logs)
    capsys.readouterr()
    assert train.main(["--out", str(tmp_path / "cut"), "--resume"]) == 0  # no other flag: all from the checkpoint
    assert "3 epochs" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ckpt["cli"]["epochs"] == 3 and ckpt["progress"]["epoch"] == 3
    assert ckpt["cli"]["source"] == [str(corpus)] and ckpt["cli"]["cache_dir"] == str(tmp_path / "cache")
    lr_whole = {row["step"]: row["lr"] for row in whole_logs}
    lr_cut = {row["step"]: row["lr"] for row in cut_logs + resumed_logs}
    assert lr_cut == lr_whole and len(lr_whole) == 9
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "whole")
    # run.json: one segment per start and resume, each with how and when it ended; the final metrics on top
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert [(s["status"], s["epochs"]) for s in record["segments"]] == [("interrupted", 3), ("done", 3)]
    assert all(s["ended"] for s in record["segments"]) and record["status"] == "done"
    last = metric_rows(tmp_path / "cut")[-1]
    assert record["final"]["eval_acc"] == pytest.approx(float(last["eval_acc"]))
    assert record["final"]["step"] == 18 and record["ended"] == record["segments"][-1]["ended"]


def test_resume_keeps_the_source_and_extends_only(tmp_path, corpus, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train.main(quick_argv(tmp_path, corpus, run, "--epochs", "1")) == 0
    logs = []
    record_logs(monkeypatch, logs)
    # no --source (it would otherwise default to the Wikipedia archives) and no --cache-dir
    assert train.main(["--out", str(run), "--resume", "--epochs", "2"]) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["cli"]["source"] == [str(corpus)] and ckpt["progress"]["epoch"] == 2
    assert [entry["path"] for entry in ckpt["data"]["train"]["sources"]] == [str(corpus.resolve())]
    # a longer --epochs re-plans the linear schedule over the new total, as if the run had started with it
    steps_per_epoch = 6
    assert [row["lr"] for row in logs] == pytest.approx(
        [1e-3 * lr_multiplier(row["step"], PretrainConfig(epochs=2), steps_per_epoch) for row in logs])
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text())
    for flags, words in [(["--epochs", "1"], ["--epochs 1 would shorten", "--epochs 2"]),
                         (["--source", str(other)], [str(other), str(corpus)]),
                         (["--lr", "0.5"], ["--lr was 0.001", "not 0.5"]),
                         (["--max-steps", "3"], ["--max-steps 3 would shorten", "--max-steps 0"])]:
        with pytest.raises(SystemExit) as exc:
            train.main(["--out", str(run), "--resume", *flags])
        assert all(w in str(exc.value) for w in words), (flags, str(exc.value))


# ------------------------------------------------------------------------------------ messages name real files


def test_ctrl_c_names_the_checkpoint_only_when_there_is_one(tmp_path, corpus, monkeypatch, capsys):
    run = tmp_path / "run"
    record_logs(monkeypatch, [], stop_at_epoch=0)  # Ctrl-C before the first checkpoint
    assert train.main(quick_argv(tmp_path, corpus, run)) == 130
    err = capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists()
    assert "before the first checkpoint" in err and "checkpoint.pt" not in err and "--resume" not in err
    record_logs(monkeypatch, [], stop_at_epoch=1)  # the same command again; Ctrl-C after epoch 0's checkpoint
    assert train.main(quick_argv(tmp_path, corpus, run)) == 130
    err = capsys.readouterr().err
    assert f"the last checkpoint is {run / 'checkpoint.pt'}" in err and (run / "checkpoint.pt").is_file()
    assert f"python train.py --out {run} --resume" in err
    record_logs(monkeypatch, [])
    assert train.main(["--out", str(run), "--resume"]) == 0
    assert f"done: {run / 'checkpoint.pt'}" in capsys.readouterr().out
    # resuming a finished run: nothing to do, and no claim that anything was written
    assert train.main(["--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "done:" not in out


def test_outputs_are_readable_like_any_written_file(tmp_path, corpus):
    """Every file of a run (and the trained vocab in the cache) gets the mode open() gives under this umask
    (0644 under the usual 022), also those written through a temporary file (mkstemp makes them 0600)."""
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "run", "--epochs", "1")) == 0
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    mode = reference.stat().st_mode & 0o777
    written = list((tmp_path / "run").iterdir()) + list((tmp_path / "cache").glob("vocab-*.txt"))
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: mode for p in written}
    assert {"vocab.txt", "checkpoint.pt", "metrics.csv", "run.json"} <= {p.name for p in written}


def test_plan_projects_the_time_and_notes_long_cpu_runs(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setattr(train, "estimate_step_seconds", lambda *args, **kwargs: 1000.0)  # as if a big model
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "run", "--epochs", "1")) == 0
    out = capsys.readouterr().out
    # 6 steps x 1000 s + 1 held-out batch at a third of a step = 6333 s
    assert "projected total time ~1.8 h (6 steps at ~1e+03 s/step, plus held-out evaluation)" in out
    assert ("note: this run is projected to take ~1.8 h on this CPU; the paper's settings are sized for a GPU. "
            "For a run that fits a laptop in ~15 min: python -m tinybert.quickstart") in out
    # the note changes nothing: `python train.py --layers 1 --heads 8` keeps the paper's recipe
    args = train.parse_args(["--layers", "1", "--heads", "8"])
    assert (args.epochs, args.wiki_size, args.batch_size, args.lr, args.seq_len, args.vocab_size, args.mlm_prob,
            args.weight_decay, args.schedule, args.layout) == (50, 40000, 32, 5e-5, 128, 30522, 0.15, 0.01,
                                                                "linear", "paper")


# ---------------------------------------------------------------------------------- committee in one process


def test_one_process_committee_is_batched_and_equals_sequential_members(tmp_path, corpus, capsys):
    """train.py --committee without torchrun trains the members as one batched model (pretrain_batched.py); each
    member's folder holds what the --sequential path (one plain run per member) writes, with the same numbers
    (dropout 0, fp32; tolerances as in tests/test_pretrain_batched.py); --resume continues member by member."""
    com, seq = tmp_path / "com", tmp_path / "seq"
    flags = ["--committee", "--seeds", "1", "2", "--epochs", "2", "--dropout", "0", "--grad-clip", "0.5"]
    assert train.main(quick_argv(tmp_path, corpus, com, *flags)) == 0
    out = capsys.readouterr().out
    assert "2 members (seeds 1 2) as one batched model" in out and "one batched model (one forward" in out
    assert "projected total time" in out and out.count("done:") == 2
    assert json.loads((com / "committee.json").read_text())["batched"] is True
    assert train.main(quick_argv(tmp_path, corpus, seq, *flags, "--sequential")) == 0
    assert "2 members (seeds 1 2) on 1 process(es)" in capsys.readouterr().out
    for seed in (1, 2):
        got, want = com / f"member-{seed}", seq / f"member-{seed}"
        assert {p.name for p in got.iterdir()} == {p.name for p in want.iterdir()} == {
            "checkpoint.pt", "metrics.csv", "run.json", "vocab.txt"}
        assert (got / "vocab.txt").read_text() == (want / "vocab.txt").read_text()
        record, want_record = (json.loads((d / "run.json").read_text()) for d in (got, want))
        assert record.keys() == want_record.keys() and record["status"] == "done"
        for key in ("model_config", "train_config", "processes", "per_process_batch"):
            assert record[key] == want_record[key], key
        assert record["data"]["train"]["shape"] == want_record["data"]["train"]["shape"]  # (the cache was warm)
        assert record["train_config"]["seed"] == seed
        for a, b in zip(metric_rows(got), metric_rows(want), strict=True):
            for key in ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc"):
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
        ckpt, want_ckpt = (load_checkpoint(d / "checkpoint.pt", kind="mlm") for d in (got, want))
        assert ckpt.keys() == want_ckpt.keys()
        assert ckpt["cli"] == {**want_ckpt["cli"], "sequential": False, "out": str(got)}
        assert ckpt["progress"] == want_ckpt["progress"] == {"epoch": 2, "batch": 0, "step": 12}
        for name, w in want_ckpt["model"].items():
            atol = 1e-5 if "attn.qkv.bias" in name else 1e-6  # the key bias's rounding noise, see that test file
            torch.testing.assert_close(ckpt["model"][name], w, rtol=1e-5, atol=atol, msg=name)
    # the members' checkpoints are ordinary runs': --resume continues them one after another
    assert train.main(quick_argv(tmp_path, corpus, com, *flags, "--resume", "--epochs", "3")) == 0
    assert "on 1 process(es)" in capsys.readouterr().out
    for seed in (1, 2):
        assert load_checkpoint(com / f"member-{seed}" / "checkpoint.pt")["progress"]["epoch"] == 3
    # refused before anything is written
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(quick_argv(tmp_path, corpus, com, *flags))
    with pytest.raises(SystemExit, match="add --sequential"):
        train.main(quick_argv(tmp_path, corpus, tmp_path / "c", *flags, "--compile"))
    with pytest.raises(SystemExit, match="--sequential is for --committee"):
        train.parse_args(quick_argv(tmp_path, corpus, tmp_path / "c", "--sequential"))
    assert not (tmp_path / "c").exists()


def test_one_process_committee_ctrl_c_and_divergence_are_recorded(tmp_path, corpus, monkeypatch, capsys):
    from tinybert.pretrain_batched import MembersDiverged
    flags = ["--committee", "--seeds", "1", "2", "--epochs", "1"]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "pretrain_batched", interrupted)
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "a", *flags)) == 130
    assert "nothing to resume" in capsys.readouterr().err
    for seed in (1, 2):
        assert json.loads((tmp_path / "a" / f"member-{seed}" / "run.json").read_text())["status"] == "interrupted"

    def diverged(*args):
        raise MembersDiverged({1: "member seed 2: loss became nan"})

    monkeypatch.setattr(train, "pretrain_batched", diverged)
    assert train.main(quick_argv(tmp_path, corpus, tmp_path / "b", *flags)) == 1
    assert "error: member seed 2: loss became nan" in capsys.readouterr().err
    records = [json.loads((tmp_path / "b" / f"member-{s}" / "run.json").read_text()) for s in (1, 2)]
    assert [r["status"] for r in records] == ["interrupted", "diverged"]
    assert "stops as a whole" in records[0]["error"] and records[1]["error"] == "member seed 2: loss became nan"
