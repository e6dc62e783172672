"""train.py end to end on a tiny corpus: plan, checkpoint, resume, and clear errors for bad input."""

import csv
import json
import math

import pytest
import torch

import train
from tinybert.checkpoint import load_checkpoint
from tinybert.data_dir import resolve_data_dir
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
    try:
        path = resolve_data_dir() / "bert_vocab" / "vocab.txt"
    except FileNotFoundError:
        path = None
    if path is None or not path.exists():
        pytest.skip("shared data (bert_vocab/vocab.txt) not found")
    return str(path)


def argv(tmp_path, corpus, *extra):
    return ["--preset", "tiny", "--source", str(corpus), "--vocab", vocab_path(), "--wiki-size", "48",
            "--eval-articles", "8", "--batch-size", "8", "--lr", "1e-3", "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-every", "2", "--device", "cpu",
            "--precision", "fp32", *extra]  # pinned: `auto` is bf16 on CPUs with AMX, fp32 on ours


def test_train_then_resume(tmp_path, corpus, capsys):
    assert train.main(argv(tmp_path, corpus, "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "tokens/epoch" in out and "estimated total time" in out
    assert "precision fp32" in out
    run = tmp_path / "run"
    assert {"checkpoint.pt", "metrics.csv", "run.json", "vocab.txt"} <= {p.name for p in run.iterdir()}
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
