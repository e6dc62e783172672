"""The batched ensemble (tinybert/ensemble.py) against K separate plain models, llm.c style: K = 3 members with
different seeds, each plain model fed its member's own batch; forward losses/logits, gradients, and the weights
after a few AdamW steps must agree to fp32 rounding (dropout 0 for exactness), with and without the conv front end."""

import pytest
import torch
import torch.nn.functional as F

from tinybert.config import make_model_config
from tinybert.ensemble import EnsembleClassifier, EnsembleMLM, clip_grad_norm_per_member
from tinybert.masking import mlm_targets
from tinybert.model import IGNORE_INDEX, BertForMaskedLM, BertForSequenceClassification

V, K, B, T, C = 61, 3, 4, 10, 5
SEEDS = [3, 11, 29]


def cfg(conv=0, dropout=0.0, layers=2):
    return make_model_config("tiny", vocab_size=V, max_position=16, layers=layers, head_size=8, dropout=dropout,
                             attention_dropout=dropout, conv_layers=conv, conv_channels=3)


def plain_models(build):
    out = []
    for s in SEEDS:
        torch.manual_seed(s)
        out.append(build())
    return out


def batch(step=0, p=0.3):
    """Per-member ids, padding masks (each member pads differently) and MLM labels (K, B, T)."""
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(5, V, (K, B, T), generator=g)
    lengths = torch.randint(3, T + 1, (K, B), generator=g)
    lengths[:, 0] = T  # every member has a full row
    mask = torch.arange(T) < lengths[..., None]
    pick = (torch.rand(ids.shape, generator=g) < p) & mask
    pick[:, :, 1] = True
    labels = ids.masked_fill(~pick, IGNORE_INDEX)
    return ids.masked_fill(~mask, 0), mask, labels


def member_grads(ens):
    """{plain key: (K, *plain shape) gradients}; the tied decoder's gradient is inside the word embeddings'."""
    plain = ens.members()[0].state_dict()
    return {n: p.grad.view(K, *plain[n].shape) for n, p in ens.named_parameters()}


def assert_weights_close(ens, plains, noise_atol=None):
    """Members' weights equal to fp32 rounding; with noise_atol, the parameters whose true gradient is zero (see
    _zero_gradient) are compared with that absolute tolerance instead."""
    for k, (got, want) in enumerate(zip(ens.members(), plains)):
        got, want = got.state_dict(), want.state_dict()
        assert got.keys() == want.keys()
        for n in want:
            a, b = got[n], want[n]
            if noise_atol and n.endswith("attn.qkv.bias"):  # the key third: a zero true gradient
                H = a.numel() // 3
                torch.testing.assert_close(a[H:2 * H], b[H:2 * H], rtol=0, atol=noise_atol,
                                           msg=lambda m: f"member {k} {n}: {m}")
                a, b = torch.cat([a[:H], a[2 * H:]]), torch.cat([b[:H], b[2 * H:]])
            atol = noise_atol if noise_atol and _pre_bn_bias(n) else WEIGHT_ATOL
            torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=lambda m: f"member {k} {n}: {m}")


def _pre_bn_bias(name):
    """The conv biases before a BatchNorm, and the BatchNorm running means that follow them."""
    if not name.startswith("bert.conv."):
        return False
    return (name.endswith(".bias") and ("convs." in name or "proj." in name)) or name.endswith("running_mean")


# Parameters with a zero true gradient: the conv biases just before a BatchNorm (the norm subtracts the batch mean)
# and the key bias of attention (it adds q.b_k to every score of a query, which the softmax cancels). What autograd
# gives them is rounding noise (~1e-12 .. 1e-9) that differs between the batched and the plain computation, and
# AdamW divides it by its own tiny sqrt(v): each step moves them by up to ~lr in a direction set by the noise, in
# either model (and the BatchNorm running means follow them). After AdamW steps they are compared only to that
# bound (2 lr per step); their gradients are compared to 1e-7 absolute (noise level) at step 0, their effect on the
# outputs is nil (the same cancellation, checked by the losses at 1e-6 after every step), and with SGD (noise x lr)
# they agree to 1e-6 like the rest.
LR, STEPS = 1e-3, 3  # AdamW turns a gradient's relative rounding error into an absolute one of ~lr x it
NOISE_ATOL = 2 * LR * STEPS
# every other weight after the steps: AdamW scales a gradient's relative rounding error by lr, and the few elements
# whose gradient is tiny carry the largest relative error (measured: up to 1.5e-6 with the conv front end)
WEIGHT_ATOL = 2e-6


def adamw(params):
    return torch.optim.AdamW(params, lr=LR, weight_decay=0.01)


def sgd(params):
    return torch.optim.SGD(params, lr=10 * LR, momentum=0.9)


@pytest.mark.parametrize("conv,optimizer", [(0, adamw), (2, adamw), (2, sgd)])
def test_mlm_equals_separate_models(conv, optimizer):
    config = cfg(conv)
    plains = plain_models(lambda: BertForMaskedLM(config))
    ens = EnsembleMLM(config, K, SEEDS)
    assert_weights_close(ens, plains)  # member k's init is a separate run's init with seed k (exactly, here)
    for a, b in zip(ens.members(), plains):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    opts = [optimizer(m.parameters()) for m in plains]
    ens_opt = optimizer(ens.parameters())
    for step in range(STEPS):
        ids, mask, labels = batch(step)
        losses = ens(ids, mask, mlm_targets(labels))
        assert losses.shape == (K,) and losses.dtype == torch.float32
        want = torch.stack([m(ids[k], mask[k], labels[k]).loss for k, m in enumerate(plains)])
        torch.testing.assert_close(losses, want, rtol=1e-6, atol=1e-6)
        losses.sum().backward()
        want.sum().backward()  # one forward per step, as the ensemble (BatchNorm counts its forwards)
        if step == 0:
            grads = member_grads(ens)
            for k, m in enumerate(plains):
                for n, p in m.named_parameters():
                    atol = 1e-7 if _pre_bn_bias(n) else 1e-6
                    torch.testing.assert_close(grads[n][k], p.grad, rtol=1e-5, atol=atol, msg=f"grad {k} {n}")
        ens_opt.step()
        ens_opt.zero_grad()
        for o in opts:
            o.step()
            o.zero_grad()
    assert_weights_close(ens, plains, noise_atol=NOISE_ATOL if optimizer is adamw else None)
    # BatchNorm running statistics are per member too
    if conv:
        for got, want in zip(ens.members(), plains):
            torch.testing.assert_close(got.bert.conv.norms[0].running_var, want.bert.conv.norms[0].running_var)


@pytest.mark.parametrize("conv", [0, 2])
def test_classifier_equals_separate_models(conv):
    config = cfg(conv)
    plains = plain_models(lambda: BertForSequenceClassification(config, C))
    ens = EnsembleClassifier(config, C, K, SEEDS)
    opts = [adamw(m.parameters()) for m in plains]
    ens_opt = adamw(ens.parameters())
    for step in range(STEPS):
        ids, mask, _ = batch(step)
        y = torch.randint(0, C, (K, B), generator=torch.Generator().manual_seed(step))
        logits = ens(ids, mask)
        assert logits.shape == (K, B, C)
        want = torch.stack([m(ids[k], mask[k]) for k, m in enumerate(plains)])
        torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)
        F.cross_entropy(logits.reshape(K * B, C), y.reshape(-1), reduction="none").view(K, B).mean(1).sum().backward()
        sum(F.cross_entropy(want[k], y[k]) for k in range(K)).backward()
        if step == 0:
            grads = member_grads(ens)
            for k, m in enumerate(plains):
                for n, p in m.named_parameters():
                    atol = 1e-7 if _pre_bn_bias(n) else 1e-6
                    torch.testing.assert_close(grads[n][k], p.grad, rtol=1e-5, atol=atol, msg=f"grad {k} {n}")
        ens_opt.step()
        ens_opt.zero_grad()
        for o in opts:
            o.step()
            o.zero_grad()
    assert_weights_close(ens, plains, noise_atol=NOISE_ATOL)
    # eval mode: the BatchNorm running means follow the noise-driven conv biases (see NOISE_ATOL), and in eval mode
    # they no longer cancel, so with the conv front end the outputs agree to a looser absolute tolerance
    ens.eval()
    ids, mask, _ = batch(9)
    want = torch.stack([m.eval()(ids[k], mask[k]) for k, m in enumerate(plains)])
    torch.testing.assert_close(ens(ids, mask), want, rtol=1e-5, atol=2e-5 if conv else 1e-6)


@pytest.mark.parametrize("conv", [0, 2])
def test_round_trip_is_exact(conv):
    config = cfg(conv)
    plains = plain_models(lambda: BertForMaskedLM(config))
    ens = EnsembleMLM.from_members(plains)
    back = ens.members()
    assert len(back) == K
    for a, b in zip(back, plains):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(sa[n].shape == sb[n].shape and torch.equal(sa[n], sb[n]) for n in sb)
        assert a.mlm_head.decoder.weight is a.bert.embeddings.word_embeddings.weight  # still tied
    again = EnsembleMLM.from_members(back)
    assert all(torch.equal(x, y) for x, y in zip(again.state_dict().values(), ens.state_dict().values()))
    # copies, not views: changing the ensemble leaves its members alone
    with torch.no_grad():
        ens.bert.embeddings.word_embeddings.weight.add_(1.0)
    assert torch.equal(back[0].bert.embeddings.word_embeddings.weight, plains[0].bert.embeddings.word_embeddings.weight)

    cls = plain_models(lambda: BertForSequenceClassification(config, C))
    for a, b in zip(EnsembleClassifier.from_members(cls).members(), cls):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        assert a.num_labels == C


def test_round_trip_keeps_per_member_batchnorm_statistics():
    config = cfg(conv=2)
    plains = plain_models(lambda: BertForSequenceClassification(config, C))
    for k, m in enumerate(plains):
        ids, mask, _ = batch(k)
        m.train()(ids[k], mask[k])  # each member's running statistics move differently
    assert not torch.equal(plains[0].bert.conv.norms[0].running_mean, plains[1].bert.conv.norms[0].running_mean)
    for a, b in zip(EnsembleClassifier.from_members(plains).members(), plains):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # BatchNorm's batch counter (no output depends on it) is one for all members: members that differ in it stack
    plains[1](batch(5)[0][1], None)  # a second forward: its counter is 2, the others' 1
    back = EnsembleClassifier.from_members(plains).members()
    assert int(back[1].bert.conv.norms[0].num_batches_tracked) == 1  # the first member's
    assert torch.equal(back[1].bert.conv.norms[0].running_mean, plains[1].bert.conv.norms[0].running_mean)


@pytest.mark.parametrize("conv", [0, 2])
def test_members_are_independent_and_padding_is_per_member(conv):
    """Member 0's output does not change when another member's input does, nor when its own padded positions
    hold other ids (eval mode: BatchNorm uses running statistics)."""
    ens = EnsembleClassifier(cfg(conv), C, K, SEEDS).eval()
    ids, mask, _ = batch(0)
    base = ens(ids, mask)
    other = ids.clone()
    other[1:] = torch.randint(5, V, other[1:].shape)
    torch.testing.assert_close(ens(other, mask)[0], base[0], rtol=0, atol=0)
    assert not torch.allclose(ens(other, mask)[1], base[1])
    pad = ids.masked_fill(~mask, 7)
    torch.testing.assert_close(ens(pad, mask), base, rtol=1e-6, atol=1e-6)
    # and the masks are each member's own: member 1 with member 0's mask is another result
    swapped = mask.clone()
    swapped[1] = mask[0]
    assert not torch.allclose(ens(ids, swapped)[1], base[1])


def test_dropout_masks_differ_per_member():
    config = cfg(dropout=0.3)
    torch.manual_seed(0)
    one = BertForSequenceClassification(config, C)
    ens = EnsembleClassifier.from_members([one, one, one])
    ids, mask, _ = batch(0)
    same_ids, same_mask = ids[:1].expand(K, -1, -1), mask[:1].expand(K, -1, -1)
    ens.eval()
    out = ens(same_ids, same_mask)
    torch.testing.assert_close(out[1], out[0], rtol=1e-6, atol=1e-6)
    ens.train()
    out = ens(same_ids, same_mask)
    assert not torch.allclose(out[1], out[0]) and not torch.allclose(out[2], out[0])
    assert not torch.allclose(out[2], out[1])


@pytest.mark.parametrize("conv", [0, 2])
def test_sparse_mlm_equals_dense(conv):
    ens = EnsembleMLM(cfg(conv), K, SEEDS).eval()
    ids, mask, labels = batch(1)
    labels[1] = IGNORE_INDEX  # a member with nothing to predict: loss 0, not NaN
    torch.testing.assert_close(ens(ids, mask, mlm_targets(labels)), ens.forward_dense(ids, mask, labels))
    assert ens(ids, mask, mlm_targets(labels))[1].item() == 0.0


def test_clip_grad_norm_per_member_equals_separate_clipping():
    config = cfg()
    plains = plain_models(lambda: BertForMaskedLM(config))
    ens = EnsembleMLM.from_members(plains)
    ids, mask, labels = batch(0)
    ens(ids, mask, mlm_targets(labels)).sum().mul(50).backward()  # large enough for every member to be clipped
    norms = clip_grad_norm_per_member(ens, 1.0)
    want = []
    for k, m in enumerate(plains):
        m(ids[k], mask[k], labels[k]).loss.mul(50).backward()
        want.append(torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0))
    torch.testing.assert_close(norms, torch.stack(want))
    assert (norms > 1.0).all()
    grads = member_grads(ens)
    for k, m in enumerate(plains):
        for n, p in m.named_parameters():
            torch.testing.assert_close(grads[n][k], p.grad, rtol=1e-5, atol=1e-7, msg=n)


def test_bad_input_is_a_clear_error():
    config = cfg()
    ens = EnsembleClassifier(config, C, K, SEEDS)
    ids, mask, _ = batch(0)
    with pytest.raises(ValueError, match="K=3"):
        ens(ids[:2], mask[:2])
    with pytest.raises(ValueError, match="attention_mask"):
        ens(ids, mask[:, :, :-1])
    with pytest.raises(ValueError, match="seeds"):
        EnsembleMLM(config, K, [1, 2])
    with pytest.raises(ValueError, match="one ModelConfig"):
        EnsembleMLM.from_members([BertForMaskedLM(config), BertForMaskedLM(cfg(layers=1))])
    with pytest.raises(ValueError, match="labels"):
        EnsembleClassifier.from_members([BertForSequenceClassification(config, 2),
                                         BertForSequenceClassification(config, 3)])
