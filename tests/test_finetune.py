"""Fine-tuning (tinybert/finetune.py): learning, selection on validation, padding, encoder loading."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tinybert.checkpoint import CheckpointError, save_checkpoint
from tinybert.config import make_model_config
from tinybert.finetune import (
    DeviceBatches,
    EncodedExamples,
    FinetuneConfig,
    build_classifier,
    confusion_matrix,
    encode_examples,
    finetune,
    predict_logits,
)
from tinybert.model import BertForMaskedLM, BertForSequenceClassification
from tinybert.optim import finetune_lr_multiplier
from tinybert.runtime import Precision, seed_everything
from tinybert.tokenizer import WordPieceTokenizer

FP32 = Precision("fp32", "test")
CPU = torch.device("cpu")
WORDS = ["alpha", "beta", "gamma"] + [f"filler{i}" for i in range(20)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS



@dataclass
class Example:
    text: str
    label: int


def synthetic(n, seed, num_labels=2):
    """Label l's texts hold the word WORDS[l] three times, among 2-9 random filler words (varying lengths)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % num_labels
        words = [f"filler{j}" for j in rng.integers(0, 20, size=rng.integers(2, 10))]
        for _ in range(3):
            words.insert(int(rng.integers(0, len(words) + 1)), WORDS[label])
        out.append(Example(" ".join(words), label))
    return out


def tok():
    return WordPieceTokenizer(VOCAB)


def config(**kw):
    base = dict(vocab_size=len(VOCAB), max_position=16, dropout=0.0, attention_dropout=0.0, pad_id=0)
    base.update(kw)
    return make_model_config("tiny", **base)


def encoded(n, seed, num_labels=2, max_length=16):
    return encode_examples(tok(), synthetic(n, seed, num_labels), max_length)


def test_encode_examples_truncates_and_keeps_labels():
    ex = [Example("alpha beta gamma filler1 filler2", 1), Example("beta", 0)]
    enc = encode_examples(tok(), ex, max_length=4)
    assert enc.labels == [1, 0]
    assert enc.ids[0] == [2, 5, 6, 3] and enc.ids[1] == [2, 6, 3]
    assert len(enc) == 2


def test_lr_schedules():
    cfg = FinetuneConfig(epochs=4)
    assert finetune_lr_multiplier(0, cfg, 10) == 1.0
    assert finetune_lr_multiplier(39, cfg, 10) == pytest.approx(1 / 40)
    paper = FinetuneConfig(epochs=4, schedule="paper-epoch")
    assert [finetune_lr_multiplier(s, paper, 10) for s in (0, 9, 10, 35)] == [1.0, 1.0, 0.75, 0.25]
    warm = FinetuneConfig(epochs=1, warmup_steps=4)
    assert [finetune_lr_multiplier(s, warm, 10) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="schedule"):
        FinetuneConfig(schedule="cosine")


def test_learns_separable_task_and_returns_everything():
    seed_everything(0)
    model = BertForSequenceClassification(config(), 2)
    train, val, test = encoded(96, 0), encoded(30, 1), encoded(30, 2)
    cfg = FinetuneConfig(epochs=8, batch_size=16, lr=5e-3, seed=0, log_every=2)
    res = finetune(model, train, val, test, cfg, CPU, FP32, show_progress=False)
    assert res["selected_test_acc"] >= 0.9, res["curve"]
    assert res["final_test_acc"] >= 0.9
    assert len(res["curve"]) == 8 and res["steps"] == 8 * 6
    assert res["curve"][-1]["train_loss"] < res["curve"][0]["train_loss"]
    assert {"epoch", "lr", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(res["curve"][0])
    probs = res["test_probs"]
    assert probs.shape == (30, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(res["test_labels"], np.array(test.labels))
    conf = np.array(res["confusion"])
    assert conf.sum() == 30 and np.trace(conf) / 30 == pytest.approx(res["selected_test_acc"])
    assert np.array_equal(conf.sum(1), np.bincount(test.labels, minlength=2))


def test_selection_uses_val_not_test():
    """Val = the test texts with the labels flipped: val accuracy = 1 - test accuracy at every epoch, so the
    best-val epoch is the *worst* test epoch. Selecting on test would pick the best one instead."""
    seed_everything(1)
    model = BertForSequenceClassification(config(), 2)
    train, test = encoded(64, 0), encoded(24, 2)
    val = EncodedExamples(test.ids, [1 - y for y in test.labels])
    cfg = FinetuneConfig(epochs=6, batch_size=16, lr=5e-3, seed=0)
    res = finetune(model, train, val, test, cfg, CPU, FP32, show_progress=False)
    tests = [r["test_acc"] for r in res["curve"]]
    vals = [r["val_acc"] for r in res["curve"]]
    assert max(tests) > min(tests)  # the case is informative
    assert res["selection"] == "val"
    assert res["selected_epoch"] == int(np.argmax(vals))
    assert res["best_val_acc"] == max(vals)
    assert res["selected_test_acc"] == pytest.approx(min(tests))
    assert res["selected_test_acc"] < max(tests)
    assert res["final_test_acc"] == tests[-1]
    # the model now holds the selected weights
    logits = predict_logits(model, DeviceBatches(test, 0, CPU), 7, CPU, FP32)
    assert (logits.argmax(-1) == torch.tensor(test.labels)).float().mean().item() == pytest.approx(min(tests))


def test_without_validation_the_last_epoch_is_selected():
    seed_everything(2)
    model = BertForSequenceClassification(config(), 2)
    res = finetune(model, encoded(32, 0), None, encoded(10, 2), FinetuneConfig(epochs=2, batch_size=16),
                   CPU, FP32, show_progress=False)
    assert res["selection"] == "final" and res["selected_epoch"] == 1 and res["best_val_acc"] is None
    assert res["selected_test_acc"] == res["final_test_acc"]


@pytest.mark.parametrize("conv", [False, True])
def test_padding_to_longest_equals_full_padding(conv):
    kw = dict(conv_layers=2, conv_channels=4) if conv else {}
    seed_everything(3)
    model = BertForSequenceClassification(config(**kw), 2)
    if conv:  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    data = encoded(21, 4)
    assert len({len(x) for x in data.ids}) > 3
    short = predict_logits(model, DeviceBatches(data, 0, CPU), 5, CPU, FP32)
    full = predict_logits(model, DeviceBatches(data, 0, CPU, pad_to=16), 5, CPU, FP32)
    assert torch.allclose(short, full, atol=1e-5)
    one = predict_logits(model, DeviceBatches(data, 0, CPU), 1, CPU, FP32)  # no padding at all
    assert torch.allclose(short, one, atol=1e-5)


def test_batches_trim_and_mask():
    data = EncodedExamples([[2, 5, 3], [2, 5, 6, 7, 3], [2, 3]], [0, 1, 0])
    b = DeviceBatches(data, 0, CPU)
    ids, mask, labels = b.batch(np.array([0, 2]))
    assert ids.shape == (2, 3) and mask.tolist() == [[True] * 3, [True, True, False]]
    assert labels.tolist() == [0, 0]
    ids, mask, _ = b.batch(np.array([1]))
    assert ids.shape == (1, 5) and mask is None  # every row full length: no mask
    seen = sorted(i for ids, _, lab in b.train_batches(2, seed=0, epoch=0) for i in ids[:, 1].tolist())
    assert seen == [3, 5, 5]
    order0 = [rows.tolist() for rows, _ in b.eval_batches(2)]
    assert order0 == [[2, 0], [1]]


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_label_out_of_range_is_an_error():
    model = BertForSequenceClassification(config(), 2)
    bad = EncodedExamples([[2, 5, 3]], [2])
    with pytest.raises(ValueError, match="label 2"):
        finetune(model, bad, None, bad, FinetuneConfig(epochs=1), CPU, FP32, show_progress=False)


# ------------------------------------------------------------------------------------------- build_classifier


def mlm_checkpoint(path, cfg, state=None):
    mlm = BertForMaskedLM(cfg)
    save_checkpoint(path, {"kind": "mlm", "model_config": cfg.to_dict(), "vocab": VOCAB,
                           "model": state if state is not None else mlm.state_dict()})
    return mlm


def test_build_classifier_loads_the_encoder(tmp_path):
    torch.manual_seed(0)
    cfg = config(conv_layers=1, conv_channels=2)
    mlm = mlm_checkpoint(tmp_path / "c.pt", cfg)
    model, report = build_classifier(tmp_path / "c.pt", cfg, 5)
    assert report.missing_keys == []
    assert report.unused_keys and all(k.startswith("mlm_head.") for k in report.unused_keys)
    for k, v in mlm.bert.state_dict().items():
        assert torch.equal(model.bert.state_dict()[k], v), k
    assert model.classifier.out_features == 5
    same, _ = build_classifier(tmp_path / "c.pt", None, 5)  # config taken from the checkpoint
    assert same.config == cfg
    fresh, none = build_classifier(None, cfg, 5)
    assert none is None and not torch.equal(fresh.bert.embeddings.word_embeddings.weight,
                                            mlm.bert.embeddings.word_embeddings.weight)


def test_build_classifier_rejects_mismatches(tmp_path):
    cfg = config()
    two_layers = BertForMaskedLM(config(layers=2)).state_dict()
    mlm_checkpoint(tmp_path / "extra.pt", cfg, state=two_layers)          # weights of another model
    with pytest.raises(CheckpointError, match="the model lacks"):
        build_classifier(tmp_path / "extra.pt", None, 2)
    state = BertForMaskedLM(cfg).state_dict()
    del state["bert.blocks.0.fc1.weight"]
    mlm_checkpoint(tmp_path / "missing.pt", cfg, state=state)
    with pytest.raises(CheckpointError, match="missing"):
        build_classifier(tmp_path / "missing.pt", None, 2)
    mlm_checkpoint(tmp_path / "ok.pt", cfg)
    with pytest.raises(CheckpointError, match="heads"):
        build_classifier(tmp_path / "ok.pt", config(heads=4), 2)        # not the config it was trained with
    wide = BertForMaskedLM(config(head_size=8)).state_dict()
    mlm_checkpoint(tmp_path / "shape.pt", cfg, state=wide)
    with pytest.raises(CheckpointError, match="shape"):
        build_classifier(tmp_path / "shape.pt", None, 2)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_classifier(tmp_path / "nope.pt", None, 2)
