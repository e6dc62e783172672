"""--compile: torch.compile where it works, a one-line warning and eager training where it does not, at whichever
step it fails (the failed step reruns eagerly from the same RNG state and BatchNorm statistics). One graph serves
batches of every width and number of target slots: a counting backend sees exactly one.

Checkpoints always hold the unwrapped model's keys. The success path runs with the 'eager' dynamo backend
(traces the model with dynamo, no code generation): it takes seconds. Inductor itself took ~1.5 min for this
tiny model on 2 CPU cores (it passes), so its test only runs with TINYBERT_TEST_INDUCTOR=1.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import train
from tinybert.checkpoint import load_checkpoint
from tinybert.config import make_model_config
from tinybert.model import BertForMaskedLM
from tinybert.masking import compact_targets, mlm_targets
from tinybert.model import IGNORE_INDEX
from tinybert.optim import Optimisation
from tinybert.pretrain import ForwardBackward, MLMData, PretrainConfig, RunOptions, pretrain
from tinybert.runtime import Precision

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(20)]
CFG = PretrainConfig(epochs=1, batch_size=8, lr=3e-3, seed=1, log_every=1, max_steps=3)


def corpus(rows=24, width=12, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, width), dtype=np.uint16)
    for r in range(rows):
        n = int(rng.integers(5, width - 1))
        out[r, 0], out[r, 1:n + 1], out[r, n + 1] = 2, rng.integers(5, len(VOCAB), n), 3
    return out


def run(out, compile=False, dropout=0.1, cfg=CFG, conv=0):
    torch.manual_seed(0)
    model = BertForMaskedLM(make_model_config("tiny", vocab_size=len(VOCAB), max_position=12, dropout=dropout,
                                              attention_dropout=dropout, conv_layers=conv, conv_channels=2))
    final = pretrain(model, MLMData(VOCAB, 4, 0, corpus(), corpus(8, seed=1)), cfg,
                     RunOptions(out, torch.device("cpu"), Precision("fp32", "test"), show_progress=False,
                                compile=compile))
    return model, final


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def unprefixed(path):
    keys = list(load_checkpoint(path / "checkpoint.pt", kind="mlm")["model"])
    assert keys and not any(k.startswith(("_orig_mod.", "module.")) or "._orig_mod." in k for k in keys)
    return keys


def test_compile_refused_falls_back_with_one_warning(tmp_path, monkeypatch, capsys):
    eager, _ = run(tmp_path / "eager")
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", refuse)
    model, _ = run(tmp_path / "refused", compile=True)
    err = capsys.readouterr().err
    assert err.count("warning: --compile") == 1 and "no compiler here" in err and "second line" not in err
    assert_same_weights(eager, model)
    assert unprefixed(tmp_path / "refused") == list(eager.state_dict())


def test_failure_at_first_compiled_step_reruns_it_eagerly(tmp_path, monkeypatch, capsys):
    """torch.compile is lazy: a missing C++ compiler shows at the first call. That step is rerun eagerly from
    the same RNG state (dropout), so the run equals an eager one."""
    eager, _ = run(tmp_path / "eager")
    capsys.readouterr()

    class FailsWhenCalled:
        def __init__(self, module):
            self.module = module

        def __call__(self, *args):
            torch.rand(1000)  # consumes RNG like a partial forward would
            raise RuntimeError("InductorError: C++ compile error")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: FailsWhenCalled(module))
    model, _ = run(tmp_path / "lazy", compile=True)
    assert capsys.readouterr().err.count("warning: --compile") == 1
    assert_same_weights(eager, model)


def test_failure_at_a_later_step_reruns_it_eagerly_and_stays_eager(tmp_path, monkeypatch, capsys):
    """A compiled step can fail after the first (a new shape, a recompile, the lazily compiled backward): that
    step reruns eagerly from its RNG state and BatchNorm statistics (the conv front end), and the run stays eager
    and equals an eager run."""
    cfg = dataclasses.replace(CFG, epochs=2, max_steps=5)
    eager, eager_final = run(tmp_path / "eager", cfg=cfg, conv=1)
    capsys.readouterr()
    calls = []

    class FailsAtStep3:
        def __init__(self, module):
            self.module = module

        def __call__(self, *args):
            calls.append(len(calls) + 1)
            out = self.module(*args)  # a whole forward: dropout draws, BatchNorm statistics updated
            if len(calls) == 3:
                raise RuntimeError("InductorError: recompiling for a new shape failed")
            return out

    monkeypatch.setattr(torch, "compile", lambda module, **kw: FailsAtStep3(module))
    model, final = run(tmp_path / "late", compile=True, cfg=cfg, conv=1)
    assert capsys.readouterr().err.count("warning: --compile") == 1
    assert calls == [1, 2, 3]  # steps 4 and 5 ran eagerly
    assert_same_weights(eager, model)  # includes the BatchNorm running statistics
    assert final == {**eager_final, "tokens_per_s": final["tokens_per_s"], "elapsed_s": final["elapsed_s"]}


def counting_backend(graphs):
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward  # run the captured graph as it is (like backend 'eager')
    return backend


def test_one_graph_across_widths_and_target_buckets(tmp_path):
    """Batches of different token widths, M buckets and compacted row counts run the one compiled graph: no
    recompile, no graph break."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = BertForMaskedLM(make_model_config("tiny", vocab_size=len(VOCAB), max_position=40, dropout=0.0,
                                              attention_dropout=0.0, conv_layers=1, conv_channels=2))
    opt = Optimisation.create(model, 1e-3, 0.0, lambda s: 1.0, torch.device("cpu"), Precision("fp32", "t"),
                              fused=True, grad_clip=1.0)
    graphs = []
    step = ForwardBackward(model, counting_backend(graphs), opt, torch.device("cpu"), Precision("fp32", "t"), False)
    g = torch.Generator().manual_seed(0)
    # M = 8, 16, 16, 24, 8; used rows 4 x predicted, compacted to a multiple of 8: 16, 48, 40, 80, 8 (of B*M = 32,
    # 64, 64, 96, 32), as step_inputs builds them (with USED_MULTIPLE = 64, all these tiny batches would be capped)
    for width, predicted in [(16, 3), (24, 12), (12, 9), (32, 20), (40, 2)]:
        ids = torch.randint(5, len(VOCAB), (4, width), generator=g)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, 1:predicted + 1] = ids[:, 1:predicted + 1]
        attn = torch.arange(width)[None, :] < torch.tensor([width, width - 1, width - 2, predicted + 1])[:, None]
        out = step(ids, attn, compact_targets(mlm_targets(labels), multiple=8), None)
        opt.step()
        assert torch.isfinite(out.loss)
    assert step.compiled and len(graphs) == 1


def test_pretrain_compiles_one_graph(tmp_path, capsys):
    """The whole run: batches trimmed to different widths, some with padding, some maybe without (the compiled
    step then keeps the all-true mask: one graph), different M buckets."""
    torch._dynamo.reset()
    graphs = []
    cfg = dataclasses.replace(CFG, epochs=2, max_steps=6)
    run(tmp_path / "counted", compile=counting_backend(graphs), cfg=cfg)
    assert "warning: --compile" not in capsys.readouterr().err and len(graphs) == 1


def test_compiled_run_matches_eager_and_saves_plain_keys(tmp_path, capsys):
    eager, eager_final = run(tmp_path / "eager", dropout=0.0)
    model, final = run(tmp_path / "compiled", compile="eager", dropout=0.0)  # dynamo tracing, eager kernels
    assert "warning: --compile" not in capsys.readouterr().err
    assert final["train_loss"] == pytest.approx(eager_final["train_loss"], rel=1e-6)
    for (name, x), y in zip(model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)
    assert unprefixed(tmp_path / "compiled") == list(eager.state_dict())


@pytest.mark.skipif(os.environ.get("TINYBERT_TEST_INDUCTOR") != "1",
                    reason="inductor compiles for ~1.5 min on 2 CPU cores; set TINYBERT_TEST_INDUCTOR=1 to run")
def test_inductor(tmp_path, capsys):
    run(tmp_path / "inductor", compile=True)
    assert "warning: --compile" not in capsys.readouterr().err
    unprefixed(tmp_path / "inductor")


def test_cli_flag(tmp_path, monkeypatch, capsys):
    sentences = ["the cat sat on the mat .", "a dog ran in the park ."]
    (tmp_path / "wiki.jsonl").write_text("\n".join(json.dumps({"text": sentences[i % 2] * (1 + i % 3)})
                                                   for i in range(24)) + "\n")
    words = sorted({w for s in sentences for w in s.split()})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))

    def refuse(*args, **kwargs):
        raise RuntimeError("compiling is off today")

    monkeypatch.setattr(torch, "compile", refuse)
    argv = ["--preset", "tiny", "--source", str(tmp_path / "wiki.jsonl"), "--vocab", str(tmp_path / "vocab.txt"),
            "--wiki-size", "16", "--eval-articles", "4", "--batch-size", "8", "--epochs", "1", "--seq-len", "16",
            "--no-progress", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--compile",
            "--device", "cpu", "--precision", "fp32"]  # pinned: `auto` is bf16 on CPUs with AMX
    assert train.main(argv) == 0
    captured = capsys.readouterr()
    assert "torch.compile on" in captured.out and captured.err.count("warning: --compile") == 1
    unprefixed(tmp_path / "run")
    # --compile may change on resume (a run-time choice)
    assert train.main(["--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--no-progress",
                       "--cache-dir", str(tmp_path / "cache"), "--source", str(tmp_path / "wiki.jsonl")]) == 0
