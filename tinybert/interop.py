"""Hugging Face BERT parameter names, both ways, without importing any Hugging Face package.

Where it sits in the flow (tokens -> batches -> model -> loss): beside tinybert/model.py, for exchanging
weights with the outside world: export our trained models so `transformers.BertForMaskedLM` /
`BertForSequenceClassification` can load them, or load an HF BERT state dict into our classes.

The layouts differ in two ways only: names, and our fused QKV projection (HF has separate query/key/value
Linears; ours stacks their rows as [Q; K; V]). The decoder weight is tied to the word embeddings in both.
The conv front end has no HF counterpart (the authors' own loader lost it, docs/paper-recipe.md#checkpoint-loading),
so models with one are refused.
"""

from __future__ import annotations

import torch

from tinybert.config import ModelConfig
from tinybert.model import BertEncoder, BertForMaskedLM, BertForSequenceClassification

# HF names that may appear but carry nothing we need: non-learned buffers of older checkpoints.
_IGNORED_HF_KEYS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")


def _encoder_names(config: ModelConfig) -> list[tuple[str, str, int | None]]:
    """(our key, HF key, QKV part or None) for the encoder; HF keys without the 'bert.' prefix."""
    names = [
        ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", None),
        ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight", None),
        ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight", None),
        ("embeddings.norm.weight", "embeddings.LayerNorm.weight", None),
        ("embeddings.norm.bias", "embeddings.LayerNorm.bias", None),
    ]
    for i in range(config.layers):
        ours, hf = f"blocks.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            for part, qkv in enumerate(("query", "key", "value")):
                names.append((ours + f"attn.qkv.{p}", hf + f"attention.self.{qkv}.{p}", part))
            names += [
                (ours + f"attn.out.{p}", hf + f"attention.output.dense.{p}", None),
                (ours + f"norm1.{p}", hf + f"attention.output.LayerNorm.{p}", None),
                (ours + f"fc1.{p}", hf + f"intermediate.dense.{p}", None),
                (ours + f"fc2.{p}", hf + f"output.dense.{p}", None),
                (ours + f"norm2.{p}", hf + f"output.LayerNorm.{p}", None),
            ]
    return names


def _model_names(config: ModelConfig, kind: str) -> list[tuple[str, str, int | None]]:
    """Full name table for kind 'encoder' (HF BertModel without pooler), 'mlm' or 'cls'."""
    if kind == "encoder":
        return _encoder_names(config)
    names = [("bert." + o, "bert." + h, part) for o, h, part in _encoder_names(config)]
    if kind == "mlm":
        names += [
            ("mlm_head.dense.weight", "cls.predictions.transform.dense.weight", None),
            ("mlm_head.dense.bias", "cls.predictions.transform.dense.bias", None),
            ("mlm_head.norm.weight", "cls.predictions.transform.LayerNorm.weight", None),
            ("mlm_head.norm.bias", "cls.predictions.transform.LayerNorm.bias", None),
            ("mlm_head.bias", "cls.predictions.bias", None),
        ]
    else:
        names += [
            ("pooler.weight", "bert.pooler.dense.weight", None),
            ("pooler.bias", "bert.pooler.dense.bias", None),
            ("classifier.weight", "classifier.weight", None),
            ("classifier.bias", "classifier.bias", None),
        ]
    return names


def _check_no_conv(config: ModelConfig) -> None:
    if config.conv_layers > 0:
        raise ValueError("models with a conv front end (conv_layers > 0) have no Hugging Face BERT equivalent")


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """Our BertForMaskedLM / BertForSequenceClassification (or bare BertEncoder) -> HF state dict.

    Names follow HF BertForMaskedLM (with both tied copies: cls.predictions.decoder.weight and
    cls.predictions.decoder.bias), BertForSequenceClassification, or BertModel without pooler. Tensors are
    detached copies, so the result can be saved (e.g. with safetensors) without shared storage.
    """
    if isinstance(model, BertForMaskedLM):
        kind = "mlm"
    elif isinstance(model, BertForSequenceClassification):
        kind = "cls"
    elif isinstance(model, BertEncoder):
        kind = "encoder"
    else:
        raise ValueError(f"to_hf_state_dict: unsupported model type {type(model).__name__}")
    config = model.config
    _check_no_conv(config)
    ours = model.state_dict()
    H = config.hidden
    out = {}
    for our_key, hf_key, part in _model_names(config, kind):
        t = ours[our_key]
        if part is not None:
            t = t[part * H:(part + 1) * H]
        out[hf_key] = t.detach().clone()
    if kind == "mlm":
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"].clone()
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].clone()
    return out


def from_hf_state_dict(state_dict: dict, config: ModelConfig, num_labels: int | None = None):
    """HF BERT state dict -> our BertForMaskedLM (if it has cls.predictions.*, or num_labels is None) or
    BertForSequenceClassification (num_labels given, or taken from classifier.weight).

    Strict: any missing or unexpected key, or a shape that does not fit `config`, is a ValueError naming the
    key. Keys without the 'bert.' prefix (BertModel-style checkpoints) are accepted. The decoder weight and
    bias, when present, must equal their tied sources (we cannot represent an untied decoder).
    """
    _check_no_conv(config)
    sd = dict(state_dict)
    if not any(k.startswith("bert.") for k in sd):
        sd = {k if k.startswith(("cls.", "classifier.")) else "bert." + k: v for k, v in sd.items()}
    for k in _IGNORED_HF_KEYS:
        sd.pop(k, None)

    has_mlm = any(k.startswith("cls.predictions.") for k in sd)
    if has_mlm and num_labels is not None:
        raise ValueError("from_hf_state_dict: state dict has an MLM head (cls.predictions.*) but num_labels "
                         f"={num_labels} asks for a classifier")
    if not has_mlm and num_labels is None and "classifier.weight" in sd:
        num_labels = sd["classifier.weight"].shape[0]
    if has_mlm or num_labels is None:
        kind, model = "mlm", BertForMaskedLM(config)
        optional = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    else:
        kind, model = "cls", BertForSequenceClassification(config, num_labels)
        optional = set()

    names = _model_names(config, kind)
    required = {hf for _, hf, _ in names}
    missing = sorted(required - set(sd))
    extra = sorted(set(sd) - required - optional)
    if missing or extra:
        raise ValueError(f"from_hf_state_dict ({kind}): missing keys {missing}, unexpected keys {extra}")

    own = model.state_dict()
    H = config.hidden
    parts: dict[str, list] = {}
    ours = {}
    for our_key, hf_key, part in names:
        t = sd[hf_key]
        expected = own[our_key].shape if part is None else (H,) + tuple(own[our_key].shape[1:])
        if tuple(t.shape) != tuple(expected):
            raise ValueError(f"from_hf_state_dict: shape mismatch for {hf_key}: got {tuple(t.shape)}, "
                             f"config expects {tuple(expected)}")
        if part is None:
            ours[our_key] = t
        else:
            parts.setdefault(our_key, [None] * 3)[part] = t
    for our_key, (q, k, v) in parts.items():
        ours[our_key] = torch.cat([q, k, v], dim=0)

    if kind == "mlm":
        word = sd["bert.embeddings.word_embeddings.weight"]
        for key, source in (("cls.predictions.decoder.weight", word),
                            ("cls.predictions.decoder.bias", sd["cls.predictions.bias"])):
            if key in sd and not torch.equal(sd[key], source):
                raise ValueError(f"from_hf_state_dict: {key} differs from the tensor it should be tied to")
        ours["mlm_head.decoder.weight"] = word
    # BatchNorm buffers do not exist without a conv front end, so `ours` covers every key
    model.load_state_dict(ours, strict=True)
    return model


def to_hf_config(config: ModelConfig, num_labels: int | None = None) -> dict:
    """config.json content for transformers.BertConfig (BertForMaskedLM, or classification if num_labels)."""
    _check_no_conv(config)
    d = {
        "architectures": ["BertForMaskedLM" if num_labels is None else "BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden,
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "intermediate_size": config.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_id,
        "position_embedding_type": "absolute",
    }
    if num_labels is not None:
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return d


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from an HF BertConfig dict (config.json); refuses what our model cannot express."""
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"only hidden_act 'gelu' is supported, got {hf['hidden_act']!r}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    if hf.get("intermediate_size", 4 * hidden) != 4 * hidden:
        raise ValueError(f"intermediate_size must be 4 * hidden_size = {4 * hidden}, got {hf['intermediate_size']}")
    return ModelConfig(
        vocab_size=hf["vocab_size"], layers=hf["num_hidden_layers"], heads=heads, head_size=hidden // heads,
        max_position=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), pad_id=hf.get("pad_token_id", 0),
    )
