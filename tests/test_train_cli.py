"""train.py end to end on a tiny corpus: plan, checkpoint, resume, and clear errors for bad input."""

import json

import pytest

import train
from tinybert.checkpoint import load_checkpoint
from tinybert.data_dir import resolve_data_dir

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
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-every", "2", *extra]


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
