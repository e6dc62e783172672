"""The MLM loop (tinybert/pretrain.py): learning, exact resume, divergence handling, schedules."""

import csv

import numpy as np
import pytest
import torch

from tinybert.checkpoint import load_checkpoint
from tinybert.config import make_model_config
from tinybert.model import BertForMaskedLM
from tinybert.optim import pretrain_lr_multiplier as lr_multiplier
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, TrainingDiverged, pretrain
from tinybert.runtime import Precision

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]
FP32 = Precision("fp32", "test")
CPU = torch.device("cpu")


def corpus(rows=48, width=16, seed=0):
    """Rows of a tiny language: each row alternates two words, drawn with Zipf-like frequencies (learnable)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, width), dtype=np.uint16)
    for r in range(rows):
        n = rng.integers(8, width - 1)
        a, b = 5 + np.minimum(rng.zipf(1.5, size=2) - 1, 44)
        out[r, 0] = 2
        out[r, 1:n + 1] = np.where(np.arange(n) % 2 == 0, a, b)
        out[r, n + 1] = 3
    return out


def model(seed=0):
    torch.manual_seed(seed)
    cfg = make_model_config("tiny", vocab_size=len(VOCAB), max_position=16, dropout=0.1, attention_dropout=0.1)
    return BertForMaskedLM(cfg)


def run(out, cfg, resume=False, net=None, m=None, eval_rows=None):
    m = m or model()
    eval_rows = corpus(16, seed=1) if eval_rows is None else eval_rows
    return m, pretrain(m, MLMData(VOCAB, 4, 0, corpus(), eval_rows), cfg,
                       RunOptions(out, CPU, FP32, resume=resume, ddp_model=net, show_progress=False))


def test_loss_falls_and_metrics_written(tmp_path):
    cfg = PretrainConfig(epochs=12, batch_size=8, lr=1e-2, seed=0, log_every=3)
    _, final = run(tmp_path, cfg, eval_rows=corpus()[:16])  # memorising the training rows is enough here
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(12))
    first, last = float(rows[0]["eval_loss"]), float(rows[-1]["eval_loss"])
    assert last < first - 0.4, (first, last)
    assert float(rows[-1]["eval_acc"]) >= float(rows[0]["eval_acc"])
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", kind="mlm")
    assert ckpt["progress"] == {"epoch": 12, "batch": 0, "step": 12 * 6}
    assert ckpt["vocab"] == VOCAB


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    cfg = PretrainConfig(epochs=3, batch_size=8, lr=1e-3, seed=3, log_every=2)
    whole, _ = run(tmp_path / "a", cfg)
    # interrupted after 8 steps (epoch 1, batch 2), then resumed in a fresh model
    cut = PretrainConfig(**{**cfg.__dict__, "max_steps": 8})
    run(tmp_path / "b", cut)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["progress"] == {"epoch": 1, "batch": 2, "step": 8}
    resumed, _ = run(tmp_path / "b", cfg, resume=True, m=model(seed=123))
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]


def test_resume_rejects_changed_settings(tmp_path):
    cfg = PretrainConfig(epochs=1, batch_size=8, seed=0)
    run(tmp_path, cfg)
    with pytest.raises(ValueError, match="'lr'"):
        run(tmp_path, PretrainConfig(epochs=2, batch_size=8, seed=0, lr=1.0), resume=True)


class NaNAfter(torch.nn.Module):
    """Wraps a model and poisons its loss from the n-th call on."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, *args):
        out = self.inner(*args)
        self.calls += 1
        return out._replace(loss=out.loss * float("nan")) if self.calls >= self.n else out


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = PretrainConfig(epochs=1, batch_size=8, seed=0, log_every=1)
    run(tmp_path, cfg)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    m = model()
    cfg2 = PretrainConfig(epochs=3, batch_size=8, seed=0, log_every=1)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        run(tmp_path, cfg2, resume=True, net=NaNAfter(m, 2), m=m)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


class PoisonAt(torch.nn.Module):
    """Wraps a model and sets one of its weights to NaN just before its n-th forward (the loss then is NaN too,
    but with log_every large no log point reads it before the checkpoint is due)."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, *args):
        self.calls += 1
        if self.calls == self.n:
            with torch.no_grad():
                self.inner.mlm_head.dense.weight[0, 0] = float("nan")
        return self.inner(*args)


@pytest.mark.parametrize("kind", ["step", "epoch"])
def test_a_nan_parameter_never_overwrites_the_last_checkpoint(tmp_path, kind):
    """The NaN check runs before every checkpoint write, not only at log points: a step-based (checkpoint_every)
    or end-of-epoch write of a diverged state is refused and the previous file stays as it was."""
    cfg = PretrainConfig(epochs=1, batch_size=8, seed=0, log_every=1000, checkpoint_minutes=0)
    run(tmp_path, cfg)  # 6 steps: the good checkpoint
    before = (tmp_path / "checkpoint.pt").read_bytes()
    longer = dict(cfg.__dict__, epochs=3, checkpoint_every=2 if kind == "step" else 0)
    m = model()
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        run(tmp_path, PretrainConfig(**longer), resume=True, net=PoisonAt(m, 1), m=m)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_checkpoint_epochs_writes_every_nth_epoch_end_and_the_last(tmp_path, monkeypatch):
    import tinybert.pretrain as pt
    written = []
    real = pt.save_checkpoint
    monkeypatch.setattr(pt, "save_checkpoint", lambda path, payload: written.append(payload["progress"]["epoch"])
                        or real(path, payload))
    cfg = PretrainConfig(epochs=4, batch_size=8, seed=0, checkpoint_minutes=0)
    pretrain(model(), MLMData(VOCAB, 4, 0, corpus(), corpus(16, seed=1)), cfg,
             RunOptions(tmp_path, CPU, FP32, show_progress=False, checkpoint_epochs=3))
    assert written == [3, 4]  # after epoch index 2 (the 3rd) and after the last
    assert load_checkpoint(tmp_path / "checkpoint.pt")["progress"] == {"epoch": 4, "batch": 0, "step": 24}


def test_schedules():
    cfg = PretrainConfig(epochs=4, warmup_steps=0)
    assert lr_multiplier(0, cfg, 10) == 1.0
    assert lr_multiplier(20, cfg, 10) == pytest.approx(0.5)
    assert lr_multiplier(39, cfg, 10) == pytest.approx(1 / 40)
    warm = PretrainConfig(epochs=4, warmup_steps=4)
    assert lr_multiplier(0, warm, 10) == pytest.approx(0.25) and lr_multiplier(3, warm, 10) == 1.0
    paper = PretrainConfig(epochs=4, schedule="paper-epoch")
    assert [lr_multiplier(s, paper, 10) for s in (0, 9, 10, 25, 39)] == [0, 0, 1, pytest.approx(2 / 3),
                                                                         pytest.approx(1 / 3)]


def test_time_based_checkpoints_are_exact_resume_points(tmp_path):
    """checkpoint_minutes: a checkpoint at the first log point after that long (here: every log point). Ctrl-C
    mid-epoch then loses at most a log interval, and resuming from such a checkpoint is exact."""
    cfg = PretrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=3, log_every=1)
    whole, _ = run(tmp_path / "whole", cfg)

    def stop_at_step_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    often = PretrainConfig(**{**cfg.__dict__, "checkpoint_minutes": 1e-9})
    with pytest.raises(KeyboardInterrupt):
        pretrain(model(), MLMData(VOCAB, 4, 0, corpus(), corpus(16, seed=1)), often,
                 RunOptions(tmp_path / "cut", CPU, FP32, show_progress=False, on_log=stop_at_step_3))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["progress"] == {"epoch": 0, "batch": 2, "step": 2}
    resumed, _ = run(tmp_path / "cut", often, resume=True, m=model(seed=123))
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    # checkpoint_minutes 0: only epoch ends write checkpoints
    off = PretrainConfig(**{**cfg.__dict__, "checkpoint_minutes": 0})
    with pytest.raises(KeyboardInterrupt):
        pretrain(model(), MLMData(VOCAB, 4, 0, corpus(), corpus(16, seed=1)), off,
                 RunOptions(tmp_path / "off", CPU, FP32, show_progress=False, on_log=stop_at_step_3))
    assert not (tmp_path / "off" / "checkpoint.pt").exists()


def test_metrics_csv_has_unix_line_endings(tmp_path):
    run(tmp_path, PretrainConfig(epochs=2, batch_size=8, seed=0))
    data = (tmp_path / "metrics.csv").read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 3
    run(tmp_path, PretrainConfig(epochs=3, batch_size=8, seed=0), resume=True)  # rewritten on resume
    data = (tmp_path / "metrics.csv").read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 4
