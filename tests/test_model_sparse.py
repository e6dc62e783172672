"""The restricted last block of BertForMaskedLM.forward (tinybert/model.py): only the masked query rows are computed
in the last transformer block. It must give the loss, logits and gradients of the dense reference
(`forward_dense`: full encoder, head on every position) in fp32 with dropout off."""

import pytest
import torch

from tinybert.config import make_model_config
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


@pytest.mark.parametrize("layers,conv,padded", [(1, 0, True), (2, 0, True), (2, 0, False), (1, 2, True)])
def test_restricted_last_block_matches_dense(layers, conv, padded):
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg(layers=layers, conv_layers=conv, conv_channels=4)).eval()
    ids, mask, labels = data(padded=padded)
    attn = mask if padded else None
    sel = labels != IGNORE_INDEX

    sparse = model(ids, attn, labels)
    sparse.loss.backward()
    g_sparse = grads(model)
    model.zero_grad(set_to_none=True)
    dense = model.forward_dense(ids, attn, labels)
    dense.loss.backward()
    g_dense = grads(model)

    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(sparse.logits, dense.logits[sel])
    torch.testing.assert_close(sparse.labels, labels[sel])
    assert g_sparse.keys() == g_dense.keys()
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], atol=1e-6, rtol=1e-4, msg=name)


def test_encoder_rows_equal_selecting_rows_of_the_full_output():
    torch.manual_seed(0)
    enc = BertEncoder(cfg(layers=2)).eval()
    ids, mask, labels = data()
    rows = (labels != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)
    with torch.no_grad():
        full = enc(ids, mask)
        part = enc(ids, mask, rows=rows)
        empty = enc(ids, mask, rows=rows[:0])
    torch.testing.assert_close(part, full.reshape(-1, full.size(-1))[rows])
    assert empty.shape == (0, full.size(-1))


def test_restricted_path_trains_with_dropout_and_bf16():
    # train mode (dropout draws differ from the dense path, so only shapes and finiteness are checked)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg(layers=2, dropout=0.1, attention_dropout=0.1)).train()
    ids, mask, labels = data()
    for autocast in (False, True):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(ids, mask, labels)
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.logits.shape == (int((labels != IGNORE_INDEX).sum()), V)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
