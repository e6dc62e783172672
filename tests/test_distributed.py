"""Data-parallel pre-training on CPU over loopback (gloo): 2 processes give the 1-process result.

* pretrain() in 2 spawned processes: the per-step loss curve equals the 1-process curve (same global batch,
  dropout 0), the 2-rank checkpoint resumes in a single process and lands where the 1-process run does, and
  with dropout > 0 an interrupted 2-rank run resumed with 2 ranks is bit-exact.
* train.py in 2 processes (the environment torchrun sets): metrics equal to the 1-process run; the checkpoint
  resumes in one process; --committee trains one independent member per process.
All of it in one pair of spawned processes (starting processes and importing torch dominate the run time).

Tolerances: the two runs sum in different orders (all-reduce, batched matmuls of 4 vs 8 rows), ~1e-7 relative
per step. Weights are compared with an absolute tolerance: the key part of the QKV bias has a gradient that is
zero in exact arithmetic (softmax ignores a constant added to every key score), so it is pure rounding noise,
and AdamW divides it by its own tiny RMS, moving those entries by lr-sized but run-dependent steps.
"""

import contextlib
import csv
import io
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import train
from tinybert.checkpoint import load_checkpoint
from tinybert.config import make_model_config
from tinybert.data import TokenBatches, prefetch
from tinybert.distributed import DistContext, all_reduce_sum, init_from_env, shutdown
from tinybert.model import BertForMaskedLM
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, pretrain
from tinybert.runtime import Precision

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]
FP32 = Precision("fp32", "test")
CPU = torch.device("cpu")
RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corpus(rows, width=16, seed=0):
    """Rows of two alternating Zipf-drawn words, [PAD]-padded to different lengths (learnable, uneven)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, width), dtype=np.uint16)
    for r in range(rows):
        n = rng.integers(6, width - 1)
        a, b = 5 + np.minimum(rng.zipf(1.5, size=2) - 1, 44)
        out[r, 0] = 2
        out[r, 1:n + 1] = np.where(np.arange(n) % 2 == 0, a, b)
        out[r, n + 1] = 3
    return out


def tiny_model(dropout=0.0):
    torch.manual_seed(0)
    cfg = make_model_config("tiny", vocab_size=len(VOCAB), max_position=16, dropout=dropout,
                            attention_dropout=dropout)
    return BertForMaskedLM(cfg)


TRAIN, EVAL = corpus(48), corpus(9, seed=1)  # 9 eval rows, batch 8: the last eval batch leaves rank 1 empty
HOLLOW = TRAIN.copy()  # rows 0-23 hold only [CLS] [SEP]: in many batches rank 0 has nothing to predict
HOLLOW[:24] = 0
HOLLOW[:24, :2] = [2, 3]
CFG = PretrainConfig(epochs=2, batch_size=8, lr=3e-3, seed=5, log_every=1, grad_clip=1.0, warmup_steps=2)


def run_pretrain(out, cfg, world=1, rank=0, dropout=0.0, resume=False, log=None, model=None, train=TRAIN,
                 **kwargs):
    model = model or tiny_model(dropout)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    on_log = (lambda row: log.append(row["train_loss"])) if log is not None else None
    final = pretrain(model, MLMData(VOCAB, 4, 0, train, EVAL), cfg,
                     RunOptions(out, CPU, FP32, resume=resume, rank=rank, world_size=world, ddp_model=ddp,
                                show_progress=False, on_log=on_log, **kwargs))
    return model, final


# ----------------------------------------------------------------------------------------------------------
# what torchrun starts, in 2 spawned processes: pretrain() directly, train.py, train.py --committee

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park with a ball .", "music is played by the band .",
             "rain fell over the quiet town .", "the river flows to the sea ."]


@pytest.fixture()
def files(tmp_path):
    """A jsonl corpus and a vocab.txt of its words: no shared data needed."""
    lines = [json.dumps({"text": " ".join(SENTENCES[(i + j) % 5] for j in range(1 + i % 3))}) for i in range(80)]
    (tmp_path / "wiki.jsonl").write_text("\n".join(lines) + "\n")
    words = sorted({w for s in SENTENCES for w in s.split()})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return tmp_path


def cli(files, out, *extra):
    """train.py's flags for the DDP runs. Precision is pinned to fp32: the DDP-vs-one-process comparison is at
    fp32 rounding (RTOL); `auto` would be bf16 on CPUs with AMX, whose rounding is ~2^-8, not ~1e-7."""
    return ["--preset", "tiny", "--source", str(files / "wiki.jsonl"), "--vocab", str(files / "vocab.txt"),
            "--wiki-size", "64", "--eval-articles", "12", "--seq-len", "32", "--batch-size", "8", "--lr", "3e-3",
            "--dropout", "0", "--epochs", "2", "--log-every", "1", "--no-progress", "--out", str(out),
            "--cache-dir", str(files / "cache"), "--device", "cpu", "--precision", "fp32", *extra]


def _worker(rank, world, ports, tmp):
    """One of the 2 processes. torchrun would set exactly these variables (and OMP_NUM_THREADS=1)."""
    tmp = Path(tmp)
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      TINYBERT_DIST_TIMEOUT_MIN="1", TINYBERT_DIST_SETUP_TIMEOUT_MIN="1")  # a hang fails
    torch.set_num_threads(1)

    # 1. pretrain() under DDP
    os.environ["MASTER_PORT"] = str(ports[0])
    ctx = init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (rank, world, "gloo", rank == 0)
    try:
        assert all_reduce_sum(torch.tensor([float(rank + 1)]), world).item() == 3.0
        log = []
        _, final = run_pretrain(tmp / "ddp", CFG, world, rank, log=log)
        # dropout > 0: interrupted after 5 steps and resumed with the same 2 ranks == uninterrupted
        whole, _ = run_pretrain(tmp / "drop_whole", CFG, world, rank, dropout=0.1)
        cut = PretrainConfig(**{**CFG.__dict__, "max_steps": 5})
        run_pretrain(tmp / "drop_cut", cut, world, rank, dropout=0.1)
        resumed, _ = run_pretrain(tmp / "drop_cut", CFG, world, rank, dropout=0.1, resume=True)
        exact = all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
        hollow = []
        run_pretrain(tmp / "hollow", PretrainConfig(**{**CFG.__dict__, "epochs": 1}), world, rank, log=hollow,
                     train=HOLLOW)
        # a time-based checkpoint is a collective: one rank's clock says "due" (here rank 0's, always), the
        # other's never; the vote in the log all-reduce makes both save (a one-sided save would hang the group)
        vote = PretrainConfig(**{**CFG.__dict__, "epochs": 1, "checkpoint_minutes": 1e-9 if rank == 0 else 0})
        saved = []

        def peek(row):  # at step 3's log point, the checkpoint written after step 2's
            if rank == 0 and row["step"] == 3:
                saved.append(load_checkpoint(tmp / "vote" / "checkpoint.pt")["progress"])

        model = tiny_model()
        pretrain(model, MLMData(VOCAB, 4, 0, TRAIN, EVAL), vote,
                 RunOptions(tmp / "vote", CPU, FP32, rank=rank, world_size=world, show_progress=False, on_log=peek,
                            ddp_model=torch.nn.parallel.DistributedDataParallel(model)))
        if rank == 0:
            (tmp / "result.json").write_text(json.dumps({"log": log, "final": final, "exact": exact,
                                                         "hollow": hollow, "vote": saved}))
    finally:
        shutdown()

    # 2. train.py (it starts and ends its own process group)
    os.environ["MASTER_PORT"] = str(ports[1])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train.main(cli(tmp, tmp / "ddp_cli")) == 0
    (tmp / f"stdout-{rank}.txt").write_text(printed.getvalue())

    # 3. train.py --committee: one member per process
    os.environ["MASTER_PORT"] = str(ports[2])
    assert train.main(cli(tmp, tmp / "com", "--committee", "--seeds", "1", "2", "--epochs", "1")) == 0


def metrics(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_two_processes_equal_one(files, capsys):
    tmp = files
    mp.spawn(_worker, args=(2, [free_port() for _ in range(3)], str(tmp)), nprocs=2, join=True)

    # 1. pretrain(): the per-step loss curve, final metrics, weights; exact 2-rank resume with dropout
    got = json.loads((tmp / "result.json").read_text())
    log = []
    single, final = run_pretrain(tmp / "single", CFG, log=log)
    assert len(got["log"]) == len(log) == 12
    np.testing.assert_allclose(got["log"], log, rtol=RTOL)
    for key in ("train_loss", "eval_loss", "eval_acc"):
        assert got["final"][key] == pytest.approx(final[key], rel=RTOL), key
    assert got["exact"], "2-rank resume with dropout was not bit-exact"
    assert got["vote"] == [{"epoch": 0, "batch": 2, "step": 2}]  # time-based checkpoints, decided by a vote
    hollow = []
    run_pretrain(tmp / "hollow", PretrainConfig(**{**CFG.__dict__, "epochs": 1}), log=hollow, train=HOLLOW)
    np.testing.assert_allclose(got["hollow"], hollow, rtol=RTOL)
    ckpt = load_checkpoint(tmp / "ddp" / "checkpoint.pt", kind="mlm")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=0, atol=1e-5, msg=name)
    # the 2-rank checkpoint resumes in one process and lands where the 1-process run does
    more = PretrainConfig(**{**CFG.__dict__, "epochs": 3})
    resumed, res_final = run_pretrain(tmp / "ddp", more, resume=True, model=tiny_model())
    cont, cont_final = run_pretrain(tmp / "single", more, resume=True, model=tiny_model())
    assert res_final["eval_loss"] == pytest.approx(cont_final["eval_loss"], rel=RTOL)
    for (name, a), b in zip(resumed.state_dict().items(), cont.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)

    # 2. train.py: the plan line, only rank 0 prints, metrics as in one process, resumable in one process
    out0, out1 = ((tmp / f"stdout-{r}.txt").read_text() for r in (0, 1))
    assert "effective (global) 8 = 2 process(es) x 4 per process" in out0 and "lr 0.003" in out0
    assert "done:" in out0 and out1 == ""
    assert train.main(cli(tmp, tmp / "one")) == 0
    for a, b in zip(metrics(tmp / "ddp_cli"), metrics(tmp / "one"), strict=True):
        for key in ("step", "lr", "train_loss", "eval_loss", "eval_acc"):
            assert a[key] == pytest.approx(b[key], rel=RTOL), key
    capsys.readouterr()
    assert train.main(["--out", str(tmp / "ddp_cli"), "--resume", "--epochs", "3", "--no-progress",
                       "--cache-dir", str(tmp / "cache"), "--source", str(tmp / "wiki.jsonl")]) == 0
    assert "written by 2 rank(s), this run has 1" in capsys.readouterr().out
    assert load_checkpoint(tmp / "ddp_cli" / "checkpoint.pt")["progress"]["epoch"] == 3

    # 3. committee: independent members, each an ordinary run with its seed and the committee's data seed
    assert json.loads((tmp / "com" / "committee.json").read_text())["seeds"] == [1, 2]
    members = {s: load_checkpoint(tmp / "com" / f"member-{s}" / "checkpoint.pt") for s in (1, 2)}
    for seed, ckpt in members.items():
        assert ckpt["cli"]["seed"] == seed and ckpt["cli"]["data_seed"] == 42 and ckpt["world_size"] == 1
        assert (tmp / "com" / f"member-{seed}" / "metrics.csv").exists()
    a, b = (members[s]["model"]["bert.embeddings.word_embeddings.weight"] for s in (1, 2))
    assert not torch.allclose(a, b)
    assert train.main(cli(tmp, tmp / "solo", "--seed", "1", "--data-seed", "42", "--epochs", "1")) == 0
    solo = load_checkpoint(tmp / "solo" / "checkpoint.pt")["model"]
    for name, value in solo.items():
        torch.testing.assert_close(members[1]["model"][name], value, rtol=0, atol=1e-5, msg=name)
    # resuming the committee (here in one process, which trains both members in turn)
    assert train.main(cli(tmp, tmp / "com", "--committee", "--seeds", "1", "2", "--resume", "--epochs", "2")) == 0
    for s in (1, 2):
        assert load_checkpoint(tmp / "com" / f"member-{s}" / "checkpoint.pt")["progress"]["epoch"] == 2


def test_committee_seed_assignment_and_errors(monkeypatch, files):
    args = train.parse_args(cli(files, files / "c", "--committee", "--seeds", "7", "8", "9"))
    assert [m.seed for m in train.committee_members(args, 0, 2)] == [7, 9]
    assert [m.out for m in train.committee_members(args, 1, 2)] == [str(files / "c" / "member-8")]
    with pytest.raises(SystemExit, match="needs --seeds"):
        train.parse_args(cli(files, files / "c", "--committee"))
    with pytest.raises(SystemExit, match="for --committee"):
        train.parse_args(cli(files, files / "c", "--seeds", "1", "2"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="3 processes but 2 seeds"):
        train.main(cli(files, files / "c", "--committee", "--seeds", "1", "2"))


def test_shards_are_slices_of_the_global_batch():
    one = TokenBatches(TRAIN, 8, 0, seed=3, drop_last=True)
    ranks = [TokenBatches(TRAIN, 8, 0, seed=3, drop_last=True, rank=r, world_size=4) for r in range(4)]
    for b, (ids, attn) in enumerate(one.global_epoch(1)):
        shards = [next(iter(r.epoch(1, start_batch=b))) for r in ranks]
        assert all(s[0].shape == (2, ids.shape[1]) for s in shards)  # the global width is kept
        assert torch.equal(torch.cat([s[0] for s in shards]), ids)
        assert torch.equal(torch.cat([s[1] for s in shards]), attn)
    short = TokenBatches(EVAL, 8, 0, shuffle=False, rank=1, world_size=2)  # last batch: 1 row
    assert [r.shard_slice(1) for r in (one, short)] == [slice(0, 1), slice(1, 1)]


def test_prefetch_thread():
    """The GPU loop builds and masks batches in a background thread (data.prefetch): same items, same order,
    errors surface, and breaking out stops the thread."""
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def fails():
        yield 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list(prefetch(fails()))
    gen = prefetch(iter(range(10**6)), depth=2)
    assert next(gen) == 0
    gen.close()
    assert not any(t.name == "tinybert-prefetch" for t in threading.enumerate())


def test_prefetched_run_equals_plain_run(tmp_path):
    one_epoch = PretrainConfig(**{**CFG.__dict__, "epochs": 1})
    a, _ = run_pretrain(tmp_path / "a", one_epoch, dropout=0.1)
    b, _ = run_pretrain(tmp_path / "b", one_epoch, dropout=0.1, prefetch_batches=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_single_process_context(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = init_from_env("cpu")
    assert ctx == DistContext(0, 1, 0, CPU, None) and ctx.is_main and not ctx.distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="--device cuda:1"):
        init_from_env("cuda:1")
