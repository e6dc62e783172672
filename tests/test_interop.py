"""Tests for tinybert/interop.py: Hugging Face BERT names and shapes, round trips, strictness."""

import json

import pytest
import torch

from tinybert.config import make_model_config
from tinybert.interop import config_from_hf, from_hf_state_dict, to_hf_config, to_hf_state_dict
from tinybert.model import BertEncoder, BertForMaskedLM, BertForSequenceClassification

V, P, H, I = 50, 16, 32, 128  # vocab, positions, hidden, intermediate of the config below



def cfg(**kw):
    return make_model_config("tiny", layers=2, vocab_size=V, max_position=P, dropout=0.0, attention_dropout=0.0,
                             **kw)


def hf_layer(i):
    """HF BertLayer parameters (modeling_bert.py: BertSelfAttention, BertSelfOutput, BertIntermediate, BertOutput)."""
    p = f"bert.encoder.layer.{i}."
    return {
        p + "attention.self.query.weight": (H, H), p + "attention.self.query.bias": (H,),
        p + "attention.self.key.weight": (H, H), p + "attention.self.key.bias": (H,),
        p + "attention.self.value.weight": (H, H), p + "attention.self.value.bias": (H,),
        p + "attention.output.dense.weight": (H, H), p + "attention.output.dense.bias": (H,),
        p + "attention.output.LayerNorm.weight": (H,), p + "attention.output.LayerNorm.bias": (H,),
        p + "intermediate.dense.weight": (I, H), p + "intermediate.dense.bias": (I,),
        p + "output.dense.weight": (H, I), p + "output.dense.bias": (H,),
        p + "output.LayerNorm.weight": (H,), p + "output.LayerNorm.bias": (H,),
    }


HF_EMBEDDINGS = {
    "bert.embeddings.word_embeddings.weight": (V, H),
    "bert.embeddings.position_embeddings.weight": (P, H),
    "bert.embeddings.token_type_embeddings.weight": (2, H),
    "bert.embeddings.LayerNorm.weight": (H,),
    "bert.embeddings.LayerNorm.bias": (H,),
}
HF_MLM = {  # BertForMaskedLM (add_pooling_layer=False) + BertOnlyMLMHead
    **HF_EMBEDDINGS, **hf_layer(0), **hf_layer(1),
    "cls.predictions.bias": (V,),
    "cls.predictions.transform.dense.weight": (H, H),
    "cls.predictions.transform.dense.bias": (H,),
    "cls.predictions.transform.LayerNorm.weight": (H,),
    "cls.predictions.transform.LayerNorm.bias": (H,),
    "cls.predictions.decoder.weight": (V, H),
    "cls.predictions.decoder.bias": (V,),
}
HF_CLS = {  # BertForSequenceClassification: BertModel with pooler + classifier
    **HF_EMBEDDINGS, **hf_layer(0), **hf_layer(1),
    "bert.pooler.dense.weight": (H, H),
    "bert.pooler.dense.bias": (H,),
    "classifier.weight": (3, H),
    "classifier.bias": (3,),
}


def randomize(model):
    """Give every parameter distinct random values, so a swapped or mis-split tensor cannot go unnoticed."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def test_mlm_names_and_shapes():
    sd = to_hf_state_dict(BertForMaskedLM(cfg()))
    assert {k: tuple(v.shape) for k, v in sd.items()} == HF_MLM


def test_classifier_names_and_shapes():
    sd = to_hf_state_dict(BertForSequenceClassification(cfg(), num_labels=3))
    assert {k: tuple(v.shape) for k, v in sd.items()} == HF_CLS


def test_qkv_split_and_tied_copies():
    model = randomize(BertForMaskedLM(cfg()))
    sd = to_hf_state_dict(model)
    qkv = model.bert.blocks[1].attn.qkv
    torch.testing.assert_close(sd["bert.encoder.layer.1.attention.self.query.weight"], qkv.weight[:H])
    torch.testing.assert_close(sd["bert.encoder.layer.1.attention.self.key.weight"], qkv.weight[H:2 * H])
    torch.testing.assert_close(sd["bert.encoder.layer.1.attention.self.value.bias"], qkv.bias[2 * H:])
    assert torch.equal(sd["cls.predictions.decoder.weight"], sd["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(sd["cls.predictions.decoder.bias"], sd["cls.predictions.bias"])
    assert sd["cls.predictions.decoder.weight"].data_ptr() != sd["bert.embeddings.word_embeddings.weight"].data_ptr()


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_mlm_round_trip_exact():
    model = randomize(BertForMaskedLM(cfg()))
    back = from_hf_state_dict(to_hf_state_dict(model), cfg())
    assert isinstance(back, BertForMaskedLM)
    _assert_same_state(model, back)
    assert back.mlm_head.decoder.weight is back.bert.embeddings.word_embeddings.weight  # still tied
    ids = torch.randint(0, V, (2, 7))
    torch.testing.assert_close(back.eval()(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def test_classifier_round_trip_exact():
    model = randomize(BertForSequenceClassification(cfg(), num_labels=3))
    sd = to_hf_state_dict(model)
    back = from_hf_state_dict(sd, cfg())  # num_labels read from classifier.weight
    assert isinstance(back, BertForSequenceClassification) and back.num_labels == 3
    _assert_same_state(model, back)


def test_hf_side_round_trip_exact():
    # HF dict -> ours -> HF dict gives back the same tensors (the other direction of the round trip)
    torch.manual_seed(1)
    hf = {k: torch.randn(s) for k, s in HF_MLM.items()}
    hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"].clone()
    hf["cls.predictions.decoder.bias"] = hf["cls.predictions.bias"].clone()
    again = to_hf_state_dict(from_hf_state_dict(hf, cfg()))
    assert again.keys() == hf.keys()
    for k in hf:
        assert torch.equal(hf[k], again[k]), k


def hf_style_forward(sd, ids, mask, heads):
    """Hugging Face BertForMaskedLM's forward, written from modeling_bert.py on the HF-named tensors:
    separate query/key/value, additive -inf-style extended mask, post-LN, dense MLM head."""
    F = torch.nn.functional
    lin = lambda x, name: F.linear(x, sd[name + ".weight"], sd[name + ".bias"])
    ln = lambda x, name: F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], 1e-12)
    B, T = ids.shape
    x = (sd["bert.embeddings.word_embeddings.weight"][ids] + sd["bert.embeddings.position_embeddings.weight"][:T]
         + sd["bert.embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "bert.embeddings.LayerNorm")
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        split = lambda t: t.view(B, T, heads, -1).transpose(1, 2)
        q, k, v = (split(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        probs = (q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5) + extended).softmax(-1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, T, -1)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        x = ln(lin(F.gelu(lin(x, p + "intermediate.dense")), p + "output.dense") + x, p + "output.LayerNorm")
    h = ln(F.gelu(lin(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
    return F.linear(h, sd["cls.predictions.decoder.weight"], sd["cls.predictions.bias"])


def test_matches_hf_style_forward():
    # the converted weights give the same logits through HF's computation as ours through our model
    model = randomize(BertForMaskedLM(cfg())).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.2)  # keep the random net in a sane range
    ids = torch.randint(0, V, (3, 9))
    mask = torch.arange(9)[None, :] < torch.tensor([9, 6, 2])[:, None]
    with torch.no_grad():
        ours = model(ids, mask).logits
        theirs = hf_style_forward(to_hf_state_dict(model), ids, mask, heads=cfg().heads)
    torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-4, rtol=1e-4)


def test_optional_keys_and_no_bert_prefix():
    model = randomize(BertForSequenceClassification(cfg(), num_labels=3))
    sd = to_hf_state_dict(model)
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}  # BertModel-style names
    sd["embeddings.position_ids"] = torch.arange(P)[None]  # old checkpoints carry this buffer
    back = from_hf_state_dict(sd, cfg(), num_labels=3)
    _assert_same_state(model, back)

    mlm = randomize(BertForMaskedLM(cfg()))
    sd = to_hf_state_dict(mlm)
    del sd["cls.predictions.decoder.weight"], sd["cls.predictions.decoder.bias"]  # tied copies may be dropped
    _assert_same_state(mlm, from_hf_state_dict(sd, cfg()))


def test_bare_encoder_names():
    sd = to_hf_state_dict(BertEncoder(cfg()))
    expected = {k.removeprefix("bert."): s for k, s in HF_MLM.items() if k.startswith("bert.")}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_errors_name_the_key():
    sd = to_hf_state_dict(BertForMaskedLM(cfg()))
    with pytest.raises(ValueError, match="cls.predictions.transform.dense.bias"):
        from_hf_state_dict({k: v for k, v in sd.items() if k != "cls.predictions.transform.dense.bias"}, cfg())
    with pytest.raises(ValueError, match="bert.pooler.dense.weight"):
        from_hf_state_dict({**sd, "bert.pooler.dense.weight": torch.zeros(H, H)}, cfg())
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        bad = dict(sd)
        bad["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(I + 1, H)
        from_hf_state_dict(bad, cfg())
    with pytest.raises(ValueError, match="shape mismatch"):
        from_hf_state_dict(sd, cfg(heads=4))
    with pytest.raises(ValueError, match="decoder.weight"):
        from_hf_state_dict({**sd, "cls.predictions.decoder.weight": torch.zeros(V, H)}, cfg())
    with pytest.raises(ValueError, match="num_labels"):
        from_hf_state_dict(sd, cfg(), num_labels=3)


def test_conv_models_refused():
    conv_cfg = cfg(conv_layers=1, conv_channels=4)
    with pytest.raises(ValueError, match="conv"):
        to_hf_state_dict(BertForMaskedLM(conv_cfg))
    with pytest.raises(ValueError, match="conv"):
        from_hf_state_dict(to_hf_state_dict(BertForMaskedLM(cfg())), conv_cfg)


def test_hf_config_round_trip():
    c = cfg(pad_id=0)
    d = to_hf_config(c, num_labels=4)
    json.dumps(d)
    assert d["hidden_size"] == H and d["intermediate_size"] == I and d["num_hidden_layers"] == 2
    assert d["architectures"] == ["BertForSequenceClassification"] and len(d["id2label"]) == 4
    assert config_from_hf(d) == c
    with pytest.raises(ValueError, match="intermediate_size"):
        config_from_hf({**d, "intermediate_size": 7})
