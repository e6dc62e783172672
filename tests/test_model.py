"""Tests for tinybert/config.py and tinybert/model.py. Tiny configs; the whole file runs in seconds on CPU."""

import pytest
import torch

import tinybert.model as model_mod
from tinybert.config import MODEL_PRESETS, ModelConfig, make_model_config, parse_conv_kernel
from tinybert.model import (
    IGNORE_INDEX,
    BertEncoder,
    BertForMaskedLM,
    BertForSequenceClassification,
    ConvFrontEnd,
    SelfAttention,
    attention_bias,
    conv_macs_per_token,
    count_parameters,
    encoder_macs_per_token,
    flops_per_token,
    reference_attention,
    sdpa_attention,
)

V = 97  # small vocab keeps the tests fast



def tiny(**kw):
    base = dict(vocab_size=V, max_position=32, dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return make_model_config("tiny", **base)


def batch(B=3, T=12, seed=0):
    """Random ids with right padding: row b has T - 3*b real tokens; returns ids, mask (bool)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.tensor([T - 3 * b for b in range(B)])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return ids.masked_fill(~mask, 0), mask


def mlm_labels(ids, mask, p=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    pick = (torch.rand(ids.shape, generator=g) < p) & mask
    pick[0, 1] = True  # never empty
    return ids.masked_fill(~pick, IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------------- config


def test_parse_conv_kernel():
    assert parse_conv_kernel("3") == (3, 3)
    assert parse_conv_kernel("16x3") == (16, 3)
    assert parse_conv_kernel([16, 3]) == (16, 3)
    for bad in ("", "3x", "x3", "3x3x3", "a", "0", "-3", 1.5):
        with pytest.raises(ValueError):
            parse_conv_kernel(bad)


def test_config_roundtrip_and_strictness():
    c = make_model_config("bert1-h12-c2k16x3d64", vocab_size=1000, pad_id=0)
    assert c.conv_kernel == (16, 3) and c.hidden == 768 and c.intermediate == 3072
    d = c.to_dict()
    assert d["conv_kernel"] == [16, 3]
    assert ModelConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**d, "bogus": 1})
    d.pop("heads")
    with pytest.raises(ValueError, match="heads"):
        ModelConfig.from_dict(d)


def test_make_model_config():
    assert make_model_config("bert6", heads=None).heads == 12  # None = keep the preset
    assert make_model_config("bert6", heads=4).heads == 4
    assert make_model_config(conv_kernel="16x3").conv_kernel == (16, 3)
    with pytest.raises(ValueError, match="bert6"):
        make_model_config("bert7")
    with pytest.raises(ValueError, match="hiddn"):
        make_model_config("bert6", hiddn=3)
    for name in MODEL_PRESETS:
        make_model_config(name)


# ---------------------------------------------------------------------------------------------------- attention


def test_sdpa_matches_reference_with_padding():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 12, 16) for _ in range(3))
    _, mask = batch()
    torch.testing.assert_close(sdpa_attention(q, k, v, mask), reference_attention(q, k, v, mask))
    torch.testing.assert_close(sdpa_attention(q, k, v, None), reference_attention(q, k, v, None))


def test_the_additive_mask_is_the_bool_mask_and_is_built_once_per_forward(monkeypatch):
    """attention_bias is what SDPA makes of a bool mask (0 / -inf in the scores' dtype), so passing it gives the
    same attention; BertEncoder builds it once for all its blocks."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 12, 16) for _ in range(3))
    _, mask = batch()
    bias = attention_bias(mask, q.dtype)
    assert bias.shape == (3, 1, 1, 12) and bias.dtype == q.dtype
    assert torch.equal(bias[:, 0, 0] == 0, mask) and bool((bias[:, 0, 0][~mask] == float("-inf")).all())
    assert torch.equal(sdpa_attention(q, k, v, bias), sdpa_attention(q, k, v, mask))
    torch.testing.assert_close(sdpa_attention(q, k, v, bias), reference_attention(q, k, v, mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention_bias(mask, model_mod.compute_dtype(q)).dtype == torch.bfloat16

    calls = []
    real = model_mod.attention_bias
    monkeypatch.setattr(model_mod, "attention_bias", lambda *a: calls.append(1) or real(*a))
    enc = BertEncoder(tiny(layers=3)).eval()
    ids, mask = batch()
    enc(ids, mask)
    assert len(calls) == 1
    enc(ids, None)  # no mask, no bias (SDPA may use its flash kernel)
    assert len(calls) == 1


def test_self_attention_module_matches_reference():
    torch.manual_seed(0)
    c = tiny()
    attn = SelfAttention(c).eval()
    x = torch.randn(3, 12, c.hidden)
    _, mask = batch()
    q, k, v = attn.qkv(x).split(c.hidden, dim=-1)
    q, k, v = (t.view(3, 12, c.heads, c.head_size).transpose(1, 2) for t in (q, k, v))
    ref = attn.out(reference_attention(q, k, v, mask).transpose(1, 2).reshape(3, 12, c.hidden))
    torch.testing.assert_close(attn(x, mask), ref)


# ---------------------------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("conv", [0, 2])
def test_padding_content_does_not_change_real_tokens(conv):
    torch.manual_seed(0)
    model = BertEncoder(tiny(conv_layers=conv, conv_channels=4)).eval()
    ids, mask = batch()
    other = torch.where(mask, ids, torch.randint(1, V, ids.shape))  # new content in the padded positions
    assert not torch.equal(ids, other)
    with torch.no_grad():
        a, b = model(ids, mask), model(other, mask)
    torch.testing.assert_close(a[mask], b[mask])


def test_conv_padding_invariance_in_train_mode():
    # in train mode BatchNorm uses batch statistics; zeroing the pads keeps them independent of pad content
    torch.manual_seed(0)
    model = BertEncoder(tiny(conv_layers=2, conv_channels=4)).train()
    ids, mask = batch()
    other = torch.where(mask, ids, torch.randint(1, V, ids.shape))
    torch.testing.assert_close(model(ids, mask)[mask], model(other, mask)[mask])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # (16, 3): PyTorch pads 7/8
@pytest.mark.parametrize("kernel", [(3, 3), (16, 3)])
def test_conv_front_end_shapes_and_zeroed_pads(kernel):
    c = tiny(conv_layers=2, conv_kernel=kernel, conv_channels=4)
    conv = ConvFrontEnd(c)
    assert conv.convs[0].kernel_size == kernel and conv.convs[0].in_channels == 1
    assert conv.proj.out_channels == 1
    _, mask = batch(T=20)
    x = torch.randn(3, 20, c.hidden)
    y = conv(x, mask)
    assert y.shape == x.shape
    assert torch.all(y[~mask] == 0) and y[mask].abs().sum() > 0
    assert conv(x).shape == x.shape  # no mask


def test_no_mask_equals_all_ones_mask():
    torch.manual_seed(0)
    model = BertEncoder(tiny()).eval()
    ids = torch.randint(1, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids, torch.ones_like(ids)))


def test_sequence_too_long_is_an_error():
    with pytest.raises(ValueError, match="max_position"):
        BertEncoder(tiny(max_position=8))(torch.ones(1, 9, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------- heads


@pytest.mark.parametrize("conv", [0, 2])
def test_sparse_mlm_matches_dense(conv):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny(conv_layers=conv, conv_channels=4)).eval()
    ids, mask = batch()
    labels = mlm_labels(ids, mask)
    sparse = model(ids, mask, labels)
    dense = model.forward_dense(ids, mask, labels)
    sel, used = labels != IGNORE_INDEX, sparse.labels != IGNORE_INDEX  # used: the filled ones of the B x M slots
    assert sparse.logits.shape == (len(used), V) and int(used.sum()) == int(sel.sum())
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(sparse.logits[used], dense.logits[sel])
    torch.testing.assert_close(sparse.labels[used], labels[sel])
    # no labels: dense logits for every position, no loss
    out = model(ids, mask)
    assert out.loss is None and out.logits.shape == (3, 12, V)


def test_mlm_nothing_masked_gives_zero_loss():
    model = BertForMaskedLM(tiny())
    ids, mask = batch()
    out = model(ids, mask, torch.full_like(ids, IGNORE_INDEX))
    assert out.loss.item() == 0.0 and out.logits.shape == (3 * 8, V)  # 8 slots per row, all unused
    out.loss.backward()  # still has a graph


def test_decoder_is_tied():
    model = BertForMaskedLM(tiny())
    assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_classifier_shapes():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny(conv_layers=1, conv_channels=4), num_labels=5)
    ids, mask = batch()
    logits = model(ids, mask)
    assert logits.shape == (3, 5)
    logits.sum().backward()


def test_init_statistics():
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny(vocab_size=2000, conv_layers=1, conv_channels=4))
    w = model.bert.embeddings.word_embeddings.weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    fc1 = model.bert.blocks[0].fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.003 and torch.all(fc1.bias == 0)
    assert torch.all(model.bert.blocks[0].norm1.weight == 1) and torch.all(model.bert.blocks[0].norm1.bias == 0)
    assert torch.all(model.mlm_head.bias == 0)
    # conv keeps PyTorch's default (kaiming-uniform) init: its std is far from 0.02 for a 9-weight fan-in
    assert model.bert.conv.convs[0].weight.std().item() > 0.1


# ---------------------------------------------------------------------------------------------------- sizes


def _meta(cls, config, *args):
    with torch.device("meta"):  # count 66M parameters without allocating or initialising them
        return cls(config, *args)


@pytest.mark.parametrize("preset, embeddings, per_layer, conv, encoder, mlm, fewrel, gmacs", [
    ("bert6", 23_542_272, 7_087_872, 0, 66_069_504, 66_692_154, 66_709_312, 5.587),
    ("bert1-h24", 47_084_544, 28_331_520, 0, 75_416_064, 77_810_490, 77_875_264, 3.674),
    ("bert1-h12", 23_542_272, 7_087_872, 0, 30_630_144, 31_252_794, 31_269_952, 0.931),
    ("bert1-h12-c2k3d64", 23_542_272, 7_087_872, 37_891, 30_668_035, 31_290_685, 31_307_843, 4.618),
    ("bert1-h8-c2k3d64", 15_694_848, 3_152_384, 37_891, 18_885_123, 19_179_325, 19_180_611, 2.877),
    ("bert1-h12-c3k3d32", 23_542_272, 7_087_872, 19_043, 30_649_187, 31_271_837, 31_288_995, 2.775),
    ("bert1-h12-c2k16x3d64", 23_542_272, 7_087_872, 200_131, 30_830_275, 31_452_925, 31_470_083, 20.567),
])
def test_parameter_counts_and_macs_match_paper(preset, embeddings, per_layer, conv, encoder, mlm, fewrel, gmacs):
    # vocab 30522, 128 positions, 2 token types, as in docs/paper-recipe.md#parameter-counts-and-compute
    c = make_model_config(preset)
    enc = _meta(BertEncoder, c)
    assert count_parameters(enc.embeddings) == embeddings
    assert count_parameters(enc.blocks[0]) == per_layer
    assert (count_parameters(enc.conv) if enc.conv is not None else 0) == conv
    assert count_parameters(enc) == encoder
    assert count_parameters(_meta(BertForMaskedLM, c)) == mlm
    assert count_parameters(_meta(BertForSequenceClassification, c, 64)) == fewrel
    assert round(128 * encoder_macs_per_token(c, 128) / 1e9, 3) == gmacs


def test_flops_per_token():
    c = make_model_config("bert1-h8-c2k3d64")
    H, Vv = c.hidden, c.vocab_size
    enc = 12 * H * H + 2 * 128 * H + conv_macs_per_token(c)
    assert flops_per_token(c) == pytest.approx(6 * (enc + 0.15 * (H * H + H * Vv)))
    # without conv, the 30522-way decoder dominates BERT-1: predicting only the 15% masked positions saves ~3.4x
    c = make_model_config("bert1-h8")
    assert flops_per_token(c, mlm_fraction=1.0) / flops_per_token(c) == pytest.approx(3.39, abs=0.01)


# ---------------------------------------------------------------------------------------------------- training


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny())
    ids, mask = batch(B=4, T=16)
    labels = mlm_labels(ids, mask, p=0.5)
    inputs = ids.masked_fill(labels != IGNORE_INDEX, 1)  # "[MASK]" = 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(inputs, mask, labels).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())  # measured ~0.11


@pytest.mark.parametrize("conv", [0, 2])
def test_bf16_autocast_close_to_fp32(conv):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny(conv_layers=conv, conv_channels=4)).eval()
    ids, mask = batch()
    labels = mlm_labels(ids, mask)
    with torch.no_grad():
        ref = model(ids, mask, labels)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            low = model(ids, mask, labels)
    assert low.logits.dtype == torch.bfloat16 and low.loss.dtype == torch.float32
    # Tolerances from bf16 rounding: each rounding is off by up to u = 2^-8 relative; the few layers of this model
    # add up a handful of them (measured: 1-2 u of the logits' scale), so allow 8 u of that scale.
    u = torch.finfo(torch.bfloat16).eps / 2
    assert abs(low.loss.item() - ref.loss.item()) < 8 * u * ref.loss.item()
    torch.testing.assert_close(low.logits.float(), ref.logits, rtol=0, atol=8 * u * ref.logits.abs().max().item())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # and a backward pass
        model.train()(ids, mask, labels).loss.backward()


# ---------------------------------------------------------------------------------------------------- loading


def test_load_encoder_state_reports_and_checks_shapes():
    torch.manual_seed(0)
    c = tiny(conv_layers=1, conv_channels=4)
    mlm = BertForMaskedLM(c)
    clf = BertForSequenceClassification(c, num_labels=3)
    report = clf.load_encoder_state(mlm.state_dict())
    assert report.missing_keys == []
    assert "mlm_head.dense.weight" in report.unused_keys and "mlm_head.bias" in report.unused_keys
    assert not any(k.startswith("bert.") for k in report.unused_keys)
    for k, v in mlm.bert.state_dict().items():
        assert torch.equal(clf.bert.state_dict()[k], v), k

    # a bare encoder state dict, with torch.compile's prefix, and one key removed
    sd = {"_orig_mod." + k: v for k, v in mlm.bert.state_dict().items() if k != "blocks.0.fc1.bias"}
    report = clf.load_encoder_state(sd)
    assert report.missing_keys == ["bert.blocks.0.fc1.bias"] and report.unused_keys == []

    # extra encoder-looking keys are reported as unused
    report = clf.load_encoder_state({**mlm.state_dict(), "bert.blocks.9.fc1.bias": torch.zeros(4)})
    assert "bert.blocks.9.fc1.bias" in report.unused_keys

    other = BertForMaskedLM(tiny(heads=4, conv_layers=1, conv_channels=4))  # hidden 64 vs 32
    with pytest.raises(ValueError, match="shape mismatch"):
        clf.load_encoder_state(other.state_dict())
