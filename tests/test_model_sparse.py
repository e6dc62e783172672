"""The restricted last block of BertForMaskedLM.forward (tinybert/model.py): only the (B, M) target slots that
tinybert.masking.mlm_targets picks on the host are computed in the last transformer block, and with
masking.compact_targets only the used ones among them after attention. It must give the loss, logits and gradients
of the dense reference (`forward_dense`: full encoder, head on every position) in fp32 with dropout off, whatever
the number of slots (M rounded up to a multiple of 8, or exact, or every position) and of compacted rows (exact,
padded, capped at B*M, or not compacted)."""

import pytest
import torch

from tinybert.config import make_model_config
from tinybert.masking import CompactTargets, compact_targets, mlm_targets
from tinybert.model import IGNORE_INDEX, BertEncoder, BertForMaskedLM

V = 97



def cfg(**kw):
    base = dict(vocab_size=V, max_position=32, dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return make_model_config("tiny", **base)


def data(B=4, T=12, p=0.3, seed=0, padded=True):
    """Ids, a padding mask (row b has T - 3b real tokens) and labels; row 1 has nothing selected, so the
    per-row counts differ and one is zero."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.tensor([T - 3 * b for b in range(B)]) if padded else torch.full((B,), T)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    pick = (torch.rand(ids.shape, generator=g) < p) & mask
    pick[0, 1] = pick[0, 2] = pick[0, 3] = True  # row 0 has the most
    pick[1] = False
    return ids.masked_fill(~mask, 0), mask, ids.masked_fill(~pick, IGNORE_INDEX)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# compact: None = plain MLMTargets (every slot runs the whole last block); else compact_targets' multiple: 1 = exactly
# the used rows, 5 = a few padding rows, 64 = capped at B*M (as many rows as slots, the padding pointing at slot 0)
@pytest.mark.parametrize("layers,conv,padded,multiple,compact", [
    (1, 0, True, 8, None), (2, 0, True, 1, None), (2, 0, False, 8, None), (1, 2, True, 8, None),
    (2, 0, True, 12, None), (1, 0, True, 8, 1), (2, 0, True, 8, 5), (2, 0, False, 1, 64), (1, 2, True, 12, 5),
    (2, 0, True, 12, 64)])
def test_restricted_last_block_matches_dense(layers, conv, padded, multiple, compact):
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg(layers=layers, conv_layers=conv, conv_channels=4)).eval()
    ids, mask, labels = data(padded=padded)
    attn = mask if padded else None
    sel = labels != IGNORE_INDEX
    targets = mlm_targets(labels, multiple)  # multiple 12 = T: every position is a slot
    rows = targets.positions.numel()
    if compact is not None:
        targets = compact_targets(targets, compact)
        rows = min(-(-int(sel.sum()) // compact) * compact, rows)
        assert int(sel.sum()) % compact != 0 or compact == 1  # the cases below do pad (a test that can fail)

    sparse = model(ids, attn, targets)
    sparse.loss.backward()
    g_sparse = grads(model)
    model.zero_grad(set_to_none=True)
    dense = model.forward_dense(ids, attn, labels)
    dense.loss.backward()
    g_dense = grads(model)

    used = sparse.labels != IGNORE_INDEX
    assert sparse.logits.shape == (rows, V) and int(used.sum()) == int(sel.sum())
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(sparse.logits[used], dense.logits[sel])  # slots are row-major, positions ascending
    torch.testing.assert_close(sparse.labels[used], labels[sel])
    assert g_sparse.keys() == g_dense.keys()
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], atol=1e-6, rtol=1e-4, msg=name)


def test_dense_labels_are_turned_into_targets():
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg(layers=2)).eval()
    ids, mask, labels = data()
    a, b = model(ids, mask, labels), model(ids, mask, compact_targets(mlm_targets(labels)))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.labels, b.labels)
    plain = model(ids, mask, mlm_targets(labels))  # and the uncompacted path gives the same loss
    torch.testing.assert_close(plain.loss, a.loss)


def test_compacted_rows_equal_picking_rows_of_the_slots():
    torch.manual_seed(0)
    enc = BertEncoder(cfg(layers=2)).eval()
    ids, mask, labels = data()
    targets = compact_targets(mlm_targets(labels), multiple=8)
    assert isinstance(targets, CompactTargets) and targets.used.numel() % 8 == 0
    with torch.no_grad():
        slots = enc(ids, mask, positions=targets.positions)
        rows = enc(ids, mask, positions=targets.positions, used=targets.used)
    torch.testing.assert_close(rows, slots.reshape(-1, slots.size(-1))[targets.used])
    with pytest.raises(ValueError, match="used must be"):
        enc(ids, mask, used=targets.used)
    with pytest.raises(ValueError, match="used must be"):
        enc(ids, mask, positions=targets.positions, used=targets.used[None])


def test_encoder_positions_equal_picking_rows_of_the_full_output():
    torch.manual_seed(0)
    enc = BertEncoder(cfg(layers=2)).eval()
    ids, mask, labels = data()
    positions = mlm_targets(labels).positions
    with torch.no_grad():
        full = enc(ids, mask)
        part = enc(ids, mask, positions=positions)
    assert part.shape == (*positions.shape, full.size(-1))
    torch.testing.assert_close(part, torch.stack([full[b, positions[b]] for b in range(len(ids))]))
    with pytest.raises(ValueError, match="positions must be"):
        enc(ids, mask, positions=positions[:2])


def test_restricted_path_trains_with_dropout_and_bf16():
    # train mode (dropout draws differ from the dense path, so only shapes and finiteness are checked)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg(layers=2, dropout=0.1, attention_dropout=0.1)).train()
    ids, mask, labels = data()
    for autocast in (False, True):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(ids, mask, labels)
        out.loss.backward()
        rows = compact_targets(mlm_targets(labels)).used.numel()
        assert torch.isfinite(out.loss) and out.logits.shape == (rows, V)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
