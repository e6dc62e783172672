"""Batched fine-tuning (tinybert/finetune_batched.py, finetune_unit.run_members_batched) against K separate
finetune() runs (dropout 0, fp32): the same result dicts, curves to ~1e-5, the same selected epochs and predictions.
Members draw different rows and batch orders (as seeds do) and pad to different widths."""

import numpy as np
import pytest
import torch

from tinybert.config import make_model_config
from tinybert.ensemble import EnsembleClassifier
from tinybert.finetune import EncodedExamples, FinetuneConfig
from tinybert.finetune_batched import finetune_batched, stack_batches
from tinybert.finetune_unit import MemberSpec, member_seed, run_member, run_members_batched
from tinybert.runtime import Precision

FP32 = Precision("fp32", "test")
CPU = torch.device("cpu")
V, C = 40, 2


def encoded(n, seed):
    """n rows of 3-12 tokens; label l rows carry token 5 + l a few times (learnable, so accuracy moves)."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(n):
        label = int(rng.integers(0, C))
        row = [int(t) for t in rng.integers(8, V, size=rng.integers(1, 10))]
        for _ in range(3):
            row.insert(int(rng.integers(0, len(row) + 1)), 5 + label)
        ids.append([2] + row + [3])
        labels.append(label)
    return EncodedExamples(ids, labels)


def config(conv=0):
    return make_model_config("tiny", vocab_size=V, max_position=16, dropout=0.0, attention_dropout=0.0,
                             pad_id=0, conv_layers=conv, conv_channels=2)


def data_for(seed, val=True):
    return (encoded(64, seed), encoded(16, seed + 100) if val else None, encoded(16, seed + 200))


EXACT = ("selection", "selected_epoch", "steps", "confusion")
SCALARS = ("best_val_acc", "selected_test_acc", "final_val_acc", "final_test_acc")


def assert_same_result(got, want):
    assert got.keys() == want.keys()
    for key in EXACT:
        assert got[key] == want[key], key
    for key in SCALARS:
        assert (got[key] is None and want[key] is None) or got[key] == pytest.approx(want[key], abs=1e-6), key
    assert len(got["curve"]) == len(want["curve"])
    for a, b in zip(got["curve"], want["curve"]):
        assert a.keys() == b.keys()
        for key in a:
            if key != "elapsed_s" and a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
            else:
                assert (a[key] is None) == (b[key] is None)
    np.testing.assert_array_equal(got["test_logits"].argmax(-1), want["test_logits"].argmax(-1))  # predictions
    for key in ("test_logits", "test_probs", "final_test_probs"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
    np.testing.assert_array_equal(got["test_labels"], want["test_labels"])


@pytest.mark.parametrize("conv,val,restore", [(0, True, True), (0, False, True), (0, True, False)])
def test_batched_equals_separate_runs(conv, val, restore):
    """Three seeds: each its own rows, batch order and init (member_seed), as eval.py --seeds 0 1 2 runs them."""
    seeds = [0, 1, 2]
    specs = [MemberSpec(None, config(conv), data_for(s, val),
                        FinetuneConfig(epochs=6, batch_size=16, lr=5e-3, eval_batch_size=5, seed=s,
                                       restore_best=restore), member_seed(s, 0)) for s in seeds]
    batched = run_members_batched(specs, C, CPU, FP32)
    for spec, got in zip(specs, batched):
        want = run_member(None, spec.config, C, spec.data, spec.cfg, CPU, FP32, init_seed=spec.init_seed)
        assert (got.seed, got.init_seed, got.params, got.load_report) == (want.seed, want.init_seed, want.params,
                                                                            want.load_report)
        assert_same_result(got.result, want.result)


def freeze_pre_batchnorm_biases(model):
    for name, p in model.named_parameters():
        if name.startswith("bert.conv.") and name.endswith(".bias") and ("convs." in name or "proj." in name):
            p.requires_grad_(False)


def test_batched_committee_with_conv_front_end_equals_separate_runs():
    """A committee of 3 within one seed (same rows and order, member seeds differ): with the conv front end too
    (the members share batch widths, so per-member BatchNorm sees what a separate run sees).

    The conv biases before a BatchNorm have a zero true gradient; AdamW moves them by ~lr per step in a direction
    set by rounding noise (tests/test_ensemble.py, NOISE_ATOL), differently in the two computations, and the
    BatchNorm running means follow them, so eval-mode outputs drift apart (measured: val loss 3e-3 relative after
    4 epochs). That is AdamW on a gradient of pure noise, not the batching, so here those biases are frozen in
    both runs (through `prepare`; from_members keeps them frozen) and everything else must agree as tightly as
    without the conv front end."""
    data = data_for(7)
    specs = [MemberSpec(None, config(conv=2), data, FinetuneConfig(epochs=4, batch_size=16, lr=5e-3, seed=7),
                        member_seed(7, m)) for m in range(3)]
    batched = run_members_batched(specs, C, CPU, FP32, prepare=freeze_pre_batchnorm_biases)
    for spec, got in zip(specs, batched):
        want = run_member(None, spec.config, C, spec.data, spec.cfg, CPU, FP32, init_seed=spec.init_seed,
                          prepare=freeze_pre_batchnorm_biases)
        assert_same_result(got.result, want.result)


def test_restore_best_leaves_each_member_with_its_selected_weights():
    cfgs = [FinetuneConfig(epochs=6, batch_size=16, lr=5e-3, seed=s) for s in (0, 1)]
    data = [data_for(s) for s in (0, 1)]
    torch.manual_seed(0)
    ens = EnsembleClassifier(config(), C, 2, seeds=[0, 1])
    res = finetune_batched(ens, data, cfgs, CPU, FP32, show_progress=False)
    assert all(r["selected_epoch"] < 5 for r in res), [r["curve"] for r in res]  # so restoring changes weights
    # the kept weights give the selected test outputs: evaluate the members one by one
    from tinybert.finetune import DeviceBatches, predict_logits
    for k, member in enumerate(ens.members()):
        logits = predict_logits(member, DeviceBatches(data[k][2], 0, CPU), 7, CPU, FP32)
        np.testing.assert_allclose(logits.numpy(), res[k]["test_logits"], rtol=1e-5, atol=1e-6)


def test_stack_batches_pads_to_the_widest():
    a = (torch.tensor([[2, 7, 3]]), None, torch.tensor([1]))
    b = (torch.tensor([[2, 3]]), None, torch.tensor([0]))
    ids, mask, labels = stack_batches([a, b], pad_id=0)
    assert ids.tolist() == [[[2, 7, 3]], [[2, 3, 0]]]
    assert mask.tolist() == [[[True, True, True]], [[True, True, False]]]
    assert labels.tolist() == [[1], [0]]
    ids, mask, _ = stack_batches([a, a], pad_id=0)
    assert mask is None and ids.shape == (2, 1, 3)


def test_mismatched_members_are_errors():
    ens = EnsembleClassifier(config(), C, 2, seeds=[0, 1])
    cfg = FinetuneConfig(epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="same number"):
        finetune_batched(ens, [data_for(0), (encoded(30, 1), encoded(16, 2), encoded(16, 3))], [cfg, cfg], CPU, FP32)
    with pytest.raises(ValueError, match="only the seed"):
        finetune_batched(ens, [data_for(0), data_for(1)], [cfg, FinetuneConfig(epochs=2, batch_size=16)], CPU, FP32)
    with pytest.raises(ValueError, match="2 members"):
        finetune_batched(ens, [data_for(0)], [cfg], CPU, FP32)
