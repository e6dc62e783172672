"""The soft committee (tinybert/committee.py) and the latency benchmark (tinybert/bench_latency.py)."""

import itertools
import json

import numpy as np
import pytest
import torch

from tinybert import bench_latency
from tinybert.committee import (
    BatchedCommittee,
    CommitteeRunner,
    committee_accuracy_curve,
    committee_predict,
    member_by_member,
)
from tinybert.config import make_model_config
from tinybert.model import BertForSequenceClassification

V = 61



# --------------------------------------------------------------------------------------------- accuracy curve

# 3 members, 4 examples, 2 classes; labels all 0.
P = [np.array([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.3, 0.7]]),   # member 0: right on example 0 only
     np.array([[0.4, 0.6], [0.9, 0.1], [0.45, 0.55], [0.2, 0.8]]),  # member 1: right on example 1 only
     np.array([[0.6, 0.4], [0.6, 0.4], [0.8, 0.2], [0.1, 0.9]])]   # member 2: right on 0, 1, 2
LABELS = np.array([0, 0, 0, 0])
# By hand: mean class-0 probability per example
#   {0}: .9 .4 .4 .3 -> 1/4      {1}: .4 .9 .45 .2 -> 1/4     {2}: .6 .6 .8 .1 -> 3/4
#   {0,1}: .65 .65 .425 .25 -> 2/4
#   {0,2}: .75 .5 .6 .2 -> 3/4 (example 1 is a 0.5/0.5 tie, and argmax takes the first class, 0)
#   {1,2}: .5 .75 .625 .15 -> 3/4 (the tie is on example 0)
#   {0,1,2}: .633 .633 .55 .2 -> 3/4
SUBSET_ACC = {(0,): .25, (1,): .25, (2,): .75, (0, 1): .5, (0, 2): .75, (1, 2): .75, (0, 1, 2): .75}


def test_curve_in_given_order_by_hand():
    c = committee_accuracy_curve(P, LABELS, orders=[[0, 1, 2]])
    assert c["k"] == [1, 2, 3]
    assert c["given"] == pytest.approx([.25, .5, .75])
    assert c["members"] == pytest.approx([.25, .25, .75])
    assert c["random_mean"] == pytest.approx([.25, .5, .75]) and c["random_std"] == pytest.approx([0, 0, 0])
    c = committee_accuracy_curve(P, LABELS, orders=[[2, 0, 1]])
    assert c["random_mean"] == pytest.approx([.75, .75, .75])


def test_curve_mean_over_orders_by_hand():
    all_orders = list(itertools.permutations(range(3)))
    c = committee_accuracy_curve(P, LABELS, orders=all_orders)
    expected = [np.mean([SUBSET_ACC[tuple(sorted(o[:k]))] for o in all_orders]) for k in (1, 2, 3)]
    assert c["random_mean"] == pytest.approx(expected)  # = [5/12, 2/3, 3/4]
    assert c["random_mean"] == pytest.approx([5 / 12, 2 / 3, 3 / 4])
    assert c["orders"] == 6
    # random orders: seeded, and the full committee is order-independent
    r1 = committee_accuracy_curve(P, LABELS, orders=50, seed=3)
    r2 = committee_accuracy_curve(P, LABELS, orders=50, seed=3)
    assert r1 == r2 and r1["orders"] == 50
    assert r1["random_mean"][-1] == pytest.approx(.75) and r1["random_std"][-1] == pytest.approx(0)
    assert 0.25 <= r1["random_mean"][0] <= 0.75


def test_committee_predict_and_logits_aggregate():
    assert committee_predict(P).tolist() == [0, 0, 0, 1]
    logits = [np.log(p) for p in P]  # mean of log-probs: a geometric-mean committee
    c = committee_accuracy_curve(logits, LABELS, orders=1, aggregate="logits")
    assert c["aggregate"] == "logits" and c["members"] == pytest.approx([.25, .25, .75])
    with pytest.raises(ValueError, match="aggregate"):
        committee_accuracy_curve(P, LABELS, aggregate="vote")
    with pytest.raises(ValueError, match="permutation"):
        committee_accuracy_curve(P, LABELS, orders=[[0, 0, 1]])
    with pytest.raises(ValueError, match="labels"):
        committee_accuracy_curve(P, LABELS[:3])


# ----------------------------------------------------------------------------------------------- inference


def members(n, **kw):
    base = dict(vocab_size=V, max_position=24, dropout=0.1, attention_dropout=0.1)
    base.update(kw)
    cfg = make_model_config("tiny", **base)
    out = []
    for s in range(n):
        torch.manual_seed(s)
        m = BertForSequenceClassification(cfg, 3)
        for mod in m.modules():  # non-trivial BatchNorm running statistics
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
        out.append(m.eval())
    return out


def inputs(B=4, T=10):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 6:] = False
    mask[3, 3:] = False
    return ids.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("kw", [{}, dict(conv_layers=2, conv_channels=3, conv_kernel=(3, 3))], ids=["plain", "conv"])
def test_batched_equals_member_by_member(kw):
    models = members(3, **kw)
    ids, mask = inputs()
    ref = member_by_member(models, ids, mask)
    assert ref.shape == (3, 4, 3)
    batched = BatchedCommittee(models)
    assert len(batched) == 3
    assert torch.allclose(batched(ids, mask), ref, atol=1e-5)
    assert torch.allclose(batched(ids), member_by_member(models, ids), atol=1e-5)  # no mask
    with torch.inference_mode():
        assert torch.allclose(batched(ids, mask), ref, atol=1e-5)
    assert not torch.allclose(ref[0], ref[1])  # the members really differ


def test_batched_under_bf16_autocast_runs():
    models = members(2)
    ids, mask = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BatchedCommittee(models)(ids, mask)
    assert out.shape == (2, 4, 3)
    ref = member_by_member(models, ids, mask)
    u = torch.finfo(torch.bfloat16).eps / 2  # bf16 rounding: 2^-8 relative; allow 8 of them at the outputs' scale
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=8 * u * ref.abs().max().item())


def test_mixed_architectures_fall_back():
    plain, conv = members(2), members(2, conv_layers=1, conv_channels=2)
    with pytest.raises(ValueError, match="one architecture"):
        BatchedCommittee([plain[0], conv[0]])
    wide = members(1, heads=4)
    models = [plain[0], conv[0], wide[0], plain[1], conv[1]]
    runner = CommitteeRunner(models)
    assert sorted(len(idx) for idx, _ in runner.groups) == [1, 2, 2]
    ids, mask = inputs()
    assert torch.allclose(runner(ids, mask), member_by_member(models, ids, mask), atol=1e-5)
    serial = CommitteeRunner(models, batched=False)
    assert len(serial.groups) == 5
    assert torch.allclose(serial(ids, mask), member_by_member(models, ids, mask), atol=1e-6)


def test_bench_latency_smoke(capsys, tmp_path):
    rc = bench_latency.main(["--device", "cpu", "--precision", "fp32", "--deep-preset", "tiny",
                             "--shallow-preset", "tiny", "--members", "2", "--batch-sizes", "1", "2",
                             "--seq-len", "16", "--repeats", "1", "--warmup", "0", "--vocab-size", "50",
                             "--json", str(tmp_path / "lat.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "batched (vmap)" in out and "member by member" in out
    rows = json.loads((tmp_path / "lat.json").read_text())["rows"]
    assert len(rows) == 2 * 4 and all(r["median_ms"] > 0 for r in rows)
    assert {r["members"] for r in rows} == {1, 2}
