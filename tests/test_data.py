"""Batching of token arrays (tinybert/data.py)."""

import numpy as np
import pytest
import torch

from tinybert.data import TokenBatches


def array(rows=10, width=8):
    a = np.zeros((rows, width), dtype=np.uint16)
    for r in range(rows):
        a[r, : 2 + r % 5] = np.arange(1, 3 + r % 5) + 100 * r
    return a


def test_every_row_once_per_epoch_and_order_depends_on_epoch():
    tokens = array()
    batches = TokenBatches(tokens, 3, pad_id=0, seed=1)
    assert len(batches) == 4
    seen = [ids[:, 0].tolist() for ids, _ in batches.epoch(0)]
    firsts = sorted(x for b in seen for x in b)
    assert firsts == sorted(tokens[:, 0].tolist())
    other = [ids[:, 0].tolist() for ids, _ in batches.epoch(1)]
    assert seen != other
    assert seen == [ids[:, 0].tolist() for ids, _ in batches.epoch(0)]  # reproducible


def test_trim_to_longest_row_and_mask():
    tokens = array()
    ids, mask = TokenBatches(tokens, 10, pad_id=0, shuffle=False).make_batch(np.arange(10))
    assert ids.shape == (10, 6) and ids.dtype == torch.int64
    assert torch.equal(mask, ids != 0)


def test_start_batch_resumes_mid_epoch():
    batches = TokenBatches(array(), 2, pad_id=0, seed=5)
    full = [ids for ids, _ in batches.epoch(2)]
    tail = [ids for ids, _ in batches.epoch(2, start_batch=3)]
    assert all(torch.equal(a, b) for a, b in zip(full[3:], tail))


def test_rank_shards_cover_the_global_batch():
    tokens = array(rows=12)
    one = [set(ids[:, 0].tolist()) for ids, _ in TokenBatches(tokens, 4, 0, seed=2).epoch(0)]
    r0 = TokenBatches(tokens, 4, 0, seed=2, rank=0, world_size=2)
    r1 = TokenBatches(tokens, 4, 0, seed=2, rank=1, world_size=2)
    for whole, (a, _), (b, _) in zip(one, r0.epoch(0), r1.epoch(0)):
        assert len(a) == len(b) == 2
        assert set(a[:, 0].tolist()) | set(b[:, 0].tolist()) == whole
    with pytest.raises(ValueError, match="divisible"):
        TokenBatches(tokens, 3, 0, world_size=2)
