"""Bad numbers are refused while train.py / eval.py parse their flags: exit 2, one line naming the flag, and
nothing made on disk (no run folder, no cache). The checks live in tinybert/cli_types.py."""

import argparse
import importlib.util
from pathlib import Path

import pytest

import train
from tinybert import cli_types

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("eval_cli_validation", ROOT / "eval.py")
evalcli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evalcli)

TRAIN_BAD = [("--batch-size", "0"), ("--batch-size", "abc"), ("--epochs", "0"), ("--wiki-size", "0"),
             ("--heads", "0"), ("--layers", "0"), ("--head-size", "0"), ("--vocab-size", "0"), ("--seq-len", "2"),
             ("--eval-articles", "0"), ("--log-every", "0"), ("--checkpoint-every", "-1"),
             ("--checkpoint-minutes", "-1"), ("--checkpoint-minutes", "nan"), ("--lr", "nan"), ("--lr", "inf"),
             ("--lr", "-1"), ("--lr", "0"), ("--weight-decay", "nan"), ("--weight-decay", "-0.1"),
             ("--dropout", "1"), ("--dropout", "-0.1"), ("--mlm-prob", "1.5"), ("--mlm-prob", "0"),
             ("--mlm-prob", "1"), ("--grad-clip", "inf"), ("--grad-clip", "-1"), ("--warmup-steps", "-1"),
             ("--conv-layers", "-1"), ("--conv-channels", "0"), ("--max-steps", "-1"), ("--seed", "-1"),
             ("--seed", "3000000"), ("--data-seed", "x")]
EVAL_BAD = [("--batch-size", "0"), ("--epochs", "0"), ("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"),
            ("--weight-decay", "-1"), ("--warmup-steps", "-1"), ("--max-length", "2"), ("--orders", "0"),
            ("--log-every", "0"), ("--dropout", "1"), ("--heads", "0"), ("--layers", "0"), ("--head-size", "0"),
            ("--train-per-label", "0"), ("--test-per-label", "0"), ("--val-per-label", "-1"), ("--seeds", "-1")]


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, not argparse's usage block
    return lines[0]


@pytest.mark.parametrize("flag, value", TRAIN_BAD)
def test_train_refuses_bad_numbers_before_any_work(tmp_path, capsys, flag, value):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--preset", "tiny", "--source", str(tmp_path / "wiki.jsonl"), "--epochs", "1", "--out", str(out),
            "--cache-dir", str(cache), flag, value]
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert f"argument {flag}" in line and repr(value) in line
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("flag, value", EVAL_BAD)
def test_eval_refuses_bad_numbers_before_any_work(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    argv = ["--task", "csv", "--train", str(tmp_path / "t.csv"), "--no-pretrain", "--preset", "tiny",
            "--out", str(out), flag, value]
    assert evalcli.main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert f"argument {flag}" in line and repr(value) in line
    assert not out.exists()


def test_validators():
    assert cli_types.positive_int("3") == 3 and cli_types.nonnegative_int("0") == 0
    assert cli_types.finite_positive_float("1e-3") == 1e-3 and cli_types.finite_nonnegative_float("0") == 0
    assert cli_types.probability("0.15") == 0.15 and cli_types.dropout_rate("0") == 0
    assert cli_types.sequence_length("3") == 3 and cli_types.seed_int("999999") == 999999
    for check, text in [(cli_types.positive_int, "1.5"), (cli_types.finite_positive_float, "-inf"),
                        (cli_types.probability, "nan"), (cli_types.sequence_length, "2")]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            check(text)
