"""tinybert/pretrain_batched.py: K members pre-trained as one batched model equal K separate pretrain() runs.

Tiny config, dropout 0, fp32. Compared with two separate runs with the same seeds: every step's loss (log_every 1),
each epoch's metrics.csv row, and each member's checkpoint: weights, AdamW moments, schedule, progress, the saved
config. Gradient clipping is on and binds (grad_clip below the norms), so clipping all members by one norm would
fail the test. The corpus rows have uneven lengths, so the members' batches have different widths and get padded.

Tolerances: the batched model sums in another order (batched matmuls over K members, padded widths), ~1e-7
relative per step. The weights of the QKV bias's key part get a gradient that is zero in exact arithmetic (softmax
ignores a constant added to every key score): pure rounding noise, which AdamW divides by its own tiny RMS, so
those entries (and only those) move by run-dependent amounts; they are compared with ATOL_NOISE.
"""

import csv
import dataclasses

import numpy as np
import pytest
import torch

from tinybert import pretrain_batched as pb
from tinybert.checkpoint import load_checkpoint
from tinybert.config import make_model_config
from tinybert.model import BertForMaskedLM
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, pretrain
from tinybert.runtime import Precision

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]
FP32 = Precision("fp32", "test")
CPU = torch.device("cpu")
SEEDS = (3, 11)
CFG = PretrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_steps=2, grad_clip=0.5, log_every=1)
RTOL, ATOL, ATOL_NOISE = 1e-5, 1e-6, 1e-5


def corpus(rows, width=16, seed=0):
    """Rows of two alternating Zipf-drawn words, [PAD]-padded to different lengths (learnable, uneven)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, width), dtype=np.uint16)
    for r in range(rows):
        n = rng.integers(3, width - 5)
        a, b = 5 + np.minimum(rng.zipf(1.5, size=2) - 1, 44)
        out[r, 0] = 2
        out[r, 1:n + 1] = np.where(np.arange(n) % 2 == 0, a, b)
        out[r, n + 1] = 3
    return out


DATA = MLMData(VOCAB, 4, 0, corpus(40), corpus(10, seed=1))


def model(seed, **overrides):
    torch.manual_seed(seed)  # as train.py: the member's seed, then the model
    return BertForMaskedLM(make_model_config("tiny", vocab_size=len(VOCAB), max_position=16, dropout=0.0,
                                             attention_dropout=0.0, **overrides))


def options(out, log=None, **kwargs):
    on_log = (lambda row: log.append(row)) if log is not None else None
    return RunOptions(out, CPU, FP32, show_progress=False, on_log=on_log, **kwargs)


def metrics(path):
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_same_checkpoint(got, want):
    assert got.keys() == want.keys()
    for key in ("kind", "model_config", "train_config", "vocab", "progress", "world_size"):
        assert got[key] == want[key], key
    for name, w in want["model"].items():
        noise = "attn.qkv.bias" in name
        torch.testing.assert_close(got["model"][name], w, rtol=RTOL, atol=ATOL_NOISE if noise else ATOL, msg=name)
    g_opt, w_opt = got["optimizer"], want["optimizer"]
    assert g_opt["param_groups"] == w_opt["param_groups"]
    assert g_opt["state"].keys() == w_opt["state"].keys()
    for i, w in w_opt["state"].items():
        assert torch.equal(g_opt["state"][i]["step"], w["step"])
        for key in ("exp_avg", "exp_avg_sq"):  # the moments carry the key-bias noise too: an absolute floor
            torch.testing.assert_close(g_opt["state"][i][key], w[key], rtol=RTOL, atol=1e-7, msg=f"{i} {key}")
    assert got["scheduler"] == want["scheduler"]


def test_batched_members_equal_separate_runs(tmp_path):
    cfgs = [dataclasses.replace(CFG, seed=s) for s in SEEDS]
    logs = {s: [] for s in SEEDS}
    finals = pb.pretrain_batched([model(s) for s in SEEDS], DATA, cfgs,
                                 [options(tmp_path / f"member-{s}", logs[s]) for s in SEEDS])
    for seed, cfg, final in zip(SEEDS, cfgs, finals):
        log = []
        want = pretrain(model(seed), DATA, cfg, options(tmp_path / f"solo-{seed}", log))
        got_log = logs[seed]
        assert [r["step"] for r in got_log] == [r["step"] for r in log] == list(range(1, 11))
        np.testing.assert_allclose([r["train_loss"] for r in got_log], [r["train_loss"] for r in log], rtol=RTOL)
        assert [r["lr"] for r in got_log] == [r["lr"] for r in log]
        for key in ("train_loss", "eval_loss", "eval_acc"):
            assert final[key] == pytest.approx(want[key], rel=RTOL), key
        got_rows, want_rows = metrics(tmp_path / f"member-{seed}"), metrics(tmp_path / f"solo-{seed}")
        assert len(got_rows) == len(want_rows) == 2
        for g, w in zip(got_rows, want_rows):
            for key in ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc"):
                assert float(g[key]) == pytest.approx(float(w[key]), rel=RTOL), key
        assert_same_checkpoint(load_checkpoint(tmp_path / f"member-{seed}" / "checkpoint.pt", kind="mlm"),
                               load_checkpoint(tmp_path / f"solo-{seed}" / "checkpoint.pt", kind="mlm"))
    # the members are different runs, and clipping bound (the losses would not match otherwise, see the docstring)
    assert logs[SEEDS[0]][0]["train_loss"] != logs[SEEDS[1]][0]["train_loss"]


def test_member_checkpoint_resumes_as_a_separate_run(tmp_path):
    # a member's checkpoint is a separate run's: pretrain() resumes it and lands where the separate run does
    cut = [dataclasses.replace(CFG, seed=s, max_steps=7) for s in SEEDS]
    pb.pretrain_batched([model(s) for s in SEEDS], DATA, cut, [options(tmp_path / f"m-{s}") for s in SEEDS])
    seed = SEEDS[1]
    resumed, whole = model(seed), model(seed)
    final = pretrain(resumed, DATA, dataclasses.replace(CFG, seed=seed), options(tmp_path / f"m-{seed}", resume=True))
    want = pretrain(whole, DATA, dataclasses.replace(CFG, seed=seed), options(tmp_path / "whole"))
    assert final["eval_loss"] == pytest.approx(want["eval_loss"], rel=RTOL)
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL_NOISE if "attn.qkv.bias" in name else ATOL, msg=name)


def test_full_width_rows_with_conv_front_end(tmp_path):
    # The conv front end's BatchNorm is per member; with rows of one width (no padding) the batched members are
    # the separate runs. How the conv front end is compared: the convs' own biases sit right before a BatchNorm,
    # which subtracts the batch mean, so their gradient is zero in exact arithmetic and pure rounding noise;
    # AdamW turns that noise into steps of about lr each, in run-dependent directions. So those biases, and the
    # BatchNorm running means that average the biased conv outputs, are only bounded: within lr x steps (the
    # furthest AdamW can move an entry). Every other tensor, BatchNorm's weights and running variances included,
    # is compared at ATOL, and the held-out loss (which runs on the running statistics) at 1e-3 relative.
    full = corpus(40, width=16)
    full[:, -1] = 3  # every row reaches the last column: all batches are 16 wide
    data = dataclasses.replace(DATA, train_tokens=full)
    conv = dict(conv_layers=1, conv_channels=2)
    cfgs = [dataclasses.replace(CFG, seed=s, epochs=1) for s in SEEDS]
    finals = pb.pretrain_batched([model(s, **conv) for s in SEEDS], data, cfgs,
                                 [options(tmp_path / f"m-{s}") for s in SEEDS])
    steps = len(full) // CFG.batch_size
    for seed, cfg, final in zip(SEEDS, cfgs, finals):
        solo = model(seed, **conv)
        want = pretrain(solo, data, cfg, options(tmp_path / f"solo-{seed}"))
        assert final["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-3)
        got = load_checkpoint(tmp_path / f"m-{seed}" / "checkpoint.pt")["model"]
        bounded = ["bert.conv.convs.0.bias", "bert.conv.proj.bias", "bert.conv.norms.0.running_mean",
                   "bert.conv.proj_norm.running_mean"]
        for name, w in solo.state_dict().items():
            atol = CFG.lr * steps if name in bounded else ATOL_NOISE if "attn.qkv.bias" in name else ATOL
            torch.testing.assert_close(got[name], w, rtol=RTOL, atol=atol, msg=name)


def test_refusals(tmp_path):
    cfgs = [dataclasses.replace(CFG, seed=s) for s in SEEDS]
    models = [model(s) for s in SEEDS]
    runs = [options(tmp_path / f"m-{s}") for s in SEEDS]

    def refused(match, models=models, cfgs=cfgs, runs=runs):
        with pytest.raises(ValueError, match=match):
            pb.pretrain_batched(models, DATA, cfgs, runs)

    refused("does not resume", runs=[options(tmp_path / "a", resume=True), runs[1]])
    refused("no DDP", runs=[options(tmp_path / "a", world_size=2, rank=0), runs[1]])
    refused("does not compile", runs=[options(tmp_path / "a", compile=True), runs[1]])
    refused("own seed", cfgs=[cfgs[0], cfgs[0]])
    refused("only in the seed", cfgs=[cfgs[0], dataclasses.replace(cfgs[1], lr=1e-3)])
    refused("one model configuration", models=[models[0], model(1, heads=4)])
    refused("own out_dir", runs=[runs[0], runs[0]])
    refused("one of each", cfgs=cfgs[:1])
    assert not any((tmp_path / f"m-{s}").exists() for s in SEEDS)  # refused before anything was written


def test_ensemble_steps_pad_and_mask_like_separate_runs():
    from tinybert.data import TokenBatches
    from tinybert.masking import MLMMasker
    from tinybert.pretrain import mask_generator
    masker = MLMMasker(VOCAB, 4)
    batches = [TokenBatches(DATA.train_tokens, 8, 0, seed=s, drop_last=True) for s in SEEDS]
    widths_differ = False
    for b, ids, attn, targets, tokens in pb.ensemble_steps(batches, masker, list(SEEDS), 1, 0, pin=False):
        for k, seed in enumerate(SEEDS):
            one, one_attn = list(batches[k].global_epoch(1))[b]
            masked, labels = masker(one, mask_generator(seed, 1, b))
            w = one.shape[1]
            widths_differ |= w < ids.shape[2]
            assert torch.equal(ids[k, :, :w], masked) and (ids[k, :, w:] == 0).all()
            assert attn is not None and torch.equal(attn[k, :, :w], one_attn) and not attn[k, :, w:].any()
            assert tokens[k] == int(one_attn.sum())
            used = targets.labels[k] != -100
            assert int(used.sum()) == int((labels != -100).sum())
            rows = torch.arange(8)[:, None].expand_as(used)
            assert torch.equal(targets.labels[k][used], labels[rows[used], targets.positions[k][used]])
    assert widths_differ  # the padding path was exercised


def test_a_diverging_member_stops_the_run_and_is_named(tmp_path):
    models = [model(s) for s in SEEDS]
    with torch.no_grad():
        models[1].mlm_head.bias.fill_(float("nan"))  # member 1's loss is NaN from the first step
    cfgs = [dataclasses.replace(CFG, seed=s) for s in SEEDS]
    with pytest.raises(pb.MembersDiverged) as caught:
        pb.pretrain_batched(models, DATA, cfgs, [options(tmp_path / f"m-{s}") for s in SEEDS])
    assert list(caught.value.diverged) == [1]
    assert f"member seed {SEEDS[1]}: loss became nan at epoch 0, step 1" in str(caught.value)
    assert "No checkpoint had been written yet" in str(caught.value)
