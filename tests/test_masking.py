"""Masking statistics and invariants (tinybert/masking.py)."""

import pytest
import torch

from tinybert.masking import MLMMasker, compact_targets, is_special_token, mlm_targets
from tinybert.model import IGNORE_INDEX

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"] + [f"w{i}" for i in range(200)]
PAD, UNK, CLS, SEP, MASK = range(5)


def make_batch(rows=256, length=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, len(VOCAB), (rows, length), generator=g)
    ids[:, 0] = CLS
    lengths = torch.randint(10, length, (rows,), generator=g)
    for r, n in enumerate(lengths.tolist()):
        ids[r, n] = SEP
        ids[r, n + 1:] = PAD
    ids[::7, 5] = UNK
    return ids


def test_special_token_rule():
    assert is_special_token("[PAD]") and is_special_token("[unused12]")
    assert not is_special_token("[") and not is_special_token("word") and not is_special_token("##]")


def test_rates_and_targets():
    ids = make_batch()
    masker = MLMMasker(VOCAB, MASK, 0.15)
    masked, labels = masker(ids, torch.Generator().manual_seed(1))
    selected = labels != -100
    maskable = ids >= 6
    # only maskable positions are ever selected, and labels hold the original ids
    assert not (selected & ~maskable).any()
    assert torch.equal(labels[selected], ids[selected])
    rate = selected.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    # 80 / 10 / 10 among the selected
    n = selected.sum().item()
    to_mask = (masked == MASK) & selected
    unchanged = (masked == ids) & selected
    random = selected & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.03
    # a random replacement can coincide with the original id (1/200), so "unchanged" is ~10% + a hair
    assert abs(unchanged.sum().item() / n - 0.1) < 0.02
    assert abs(random.sum().item() / n - 0.1) < 0.02
    # random replacements are never special tokens; unselected positions are untouched
    assert (masked[random] >= 6).all()
    assert torch.equal(masked[~selected], ids[~selected])


def test_deterministic_given_generator():
    ids = make_batch(rows=8)
    masker = MLMMasker(VOCAB, MASK)
    a = masker(ids, torch.Generator().manual_seed(3))
    b = masker(ids, torch.Generator().manual_seed(3))
    c = masker(ids, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_every_row_with_maskable_tokens_gets_a_target():
    ids = torch.tensor([[CLS, 10, SEP, PAD], [CLS, SEP, PAD, PAD]])
    masker = MLMMasker(VOCAB, MASK, 0.01)
    for seed in range(20):
        _, labels = masker(ids, torch.Generator().manual_seed(seed))
        assert (labels[0] != -100).sum() >= 1
        assert (labels[1] == -100).all()  # nothing maskable in that row


# --------------------------------------------------------------------------------------------------------
# host-side target gathering (the static-shape MLM step)

def _reference_targets(labels):
    """Slow oracle: per row, the (position, label) pairs of the predicted tokens in order."""
    return [[(t, int(y)) for t, y in enumerate(row) if y != IGNORE_INDEX] for row in labels.tolist()]


@pytest.mark.parametrize("multiple", [1, 8, 5])
def test_mlm_targets_match_the_per_row_reference(multiple):
    g = torch.Generator().manual_seed(3)
    labels = torch.where(torch.rand(6, 20, generator=g) < 0.3, torch.randint(5, 99, (6, 20), generator=g),
                         torch.full((6, 20), IGNORE_INDEX))
    labels[2] = IGNORE_INDEX  # a row with nothing to predict
    out = mlm_targets(labels, multiple)
    most = max(len(r) for r in _reference_targets(labels))
    assert out.positions.shape == out.labels.shape == (6, min(-(-most // multiple) * multiple, 20))
    for row, (pos, lab) in enumerate(zip(out.positions.tolist(), out.labels.tolist())):
        pairs = [(p, y) for p, y in zip(pos, lab) if y != IGNORE_INDEX]
        assert pairs == _reference_targets(labels)[row]
        assert all(p == 0 for p, y in zip(pos, lab) if y == IGNORE_INDEX)


def test_mlm_targets_keeps_leading_dims_and_caps_slots_at_the_row_length():
    labels = torch.arange(2 * 3 * 5).view(2, 3, 5)  # every position predicted
    out = mlm_targets(labels, multiple=8)
    assert out.positions.shape == (2, 3, 5)
    assert torch.equal(out.labels, labels)
    with pytest.raises(ValueError, match="multiple"):
        mlm_targets(labels, multiple=0)


@pytest.mark.parametrize("multiple,n_pad", [(1, None), (7, None), (64, 60)])  # 64: capped at B*M = 6 x 10
def test_compact_targets_list_the_used_slots_in_order_then_padding(multiple, n_pad):
    g = torch.Generator().manual_seed(4)
    labels = torch.where(torch.rand(6, 20, generator=g) < 0.3, torch.randint(5, 99, (6, 20), generator=g),
                         torch.full((6, 20), IGNORE_INDEX))
    labels[2] = IGNORE_INDEX  # a row with nothing to predict
    slots = mlm_targets(labels, multiple=10)
    out = compact_targets(slots, multiple)
    assert torch.equal(out.positions, slots.positions) and torch.equal(out.labels, slots.labels)
    # the slow way: walk the B x M slots row by row
    flat = slots.labels.reshape(-1).tolist()
    used = [i for i, y in enumerate(flat) if y != IGNORE_INDEX]
    n_pad = n_pad or -(-len(used) // multiple) * multiple
    assert len(used) % 7 != 0  # multiple 7 really pads
    assert out.used.tolist() == used + [0] * (n_pad - len(used))
    assert out.used_labels.tolist() == [flat[i] for i in used] + [IGNORE_INDEX] * (n_pad - len(used))
    assert out.used.dtype == out.used_labels.dtype == torch.long


def test_compact_targets_of_nothing_keeps_a_row_and_rejects_bad_input():
    out = compact_targets(mlm_targets(torch.full((3, 5), IGNORE_INDEX)), multiple=4)
    assert out.used.tolist() == [0] * 4 and out.used_labels.tolist() == [IGNORE_INDEX] * 4  # M = 5: 15 slots
    assert compact_targets(mlm_targets(torch.full((1, 2), IGNORE_INDEX)), multiple=64).used.numel() == 2  # B*M
    with pytest.raises(ValueError, match="multiple"):
        compact_targets(mlm_targets(torch.zeros(2, 3, dtype=torch.long)), multiple=0)
    with pytest.raises(ValueError, match=r"\(B, M\)"):
        compact_targets(mlm_targets(torch.zeros(2, 3, 4, dtype=torch.long)))
