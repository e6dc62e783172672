"""The model: a post-LN BERT encoder with the paper's optional conv front end, an MLM head and a classifier.

Where it sits in the flow (tokens -> batches -> model -> loss): batches of token ids (B, T) and an
attention mask (B, T) come in; the MLM model returns the masked-LM loss, the classifier returns logits.
The model reads no data and no flags; it is built from a tinybert.config.ModelConfig.

    input_ids ─> Embeddings ─> [ConvFrontEnd] ─> Block x layers ─> hidden (B, T, H)     = BertEncoder
    hidden at the (B, M) target positions ─> MLMHead ─> cross-entropy                  = BertForMaskedLM
    hidden[:, 0] ─> pooler (dense + tanh) ─> dropout ─> linear                          = BertForSequenceClassification

It matches Hugging Face's BertForMaskedLM / BertForSequenceClassification (the authors' model,
docs/paper-recipe.md#architecture) numerically, up to the fused QKV projection (tinybert/interop.py converts the
weights both ways), with two deliberate fixes to the authors' code: no `padding_idx` on the word embeddings (their
builders swapped [PAD]/[CLS] and froze the [CLS] row at zero), and a conv front end that does not let padding leak
into real tokens (docs/paper-recipe.md#where-we-differ-from-the-authors-code). The MLM head runs only on the masked
positions (for BERT-1 the 30522-way decoder is most of the compute: for bert1-h8, predicting only the 15% masked
positions cuts a step's FLOPs ~3.4x, tests/test_model.py), and so does the last block after its keys and values.
The host picks those positions (tinybert.masking.mlm_targets: M slots per row, M rounded up to a multiple of 8) and
the used slots among them (masking.compact_targets: N_pad rows, a multiple of 64: after attention the last block and
the head run on those only, not on all B x M slots), so the forward has static shapes and never waits on the device
(tests/test_sync_free.py); `forward_dense` keeps the obviously-correct dense version as a reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinybert.config import ModelConfig

IGNORE_INDEX = -100  # label value of positions that are not predicted (as in HF and F.cross_entropy)


# ----------------------------------------------------------------------------------------------------------
# attention


def attention_bias(key_padding_mask, dtype: torch.dtype):
    """(B, T) bool key-padding mask (True = real token) -> its additive form (B, 1, 1, T): 0 for real keys, -inf
    for padded ones, in `dtype` (the dtype of the attention scores). SDPA turns a bool mask into exactly this
    itself (convert_boolean_attn_mask, in the query's dtype), once per call; BertEncoder builds it once per
    forward instead, so the blocks share one tensor and no layer repeats the conversion."""
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    return bias.masked_fill_(~key_padding_mask, float("-inf"))[:, None, None, :]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on `x` produce here: the autocast dtype inside an enabled autocast, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def sdpa_attention(q, k, v, key_padding_mask=None, dropout_p: float = 0.0):
    """Fast attention. q, k, v: (B, heads, T, head_size); key_padding_mask: (B, T) bool, True = real token, or
    its additive (B, 1, 1, T) form from `attention_bias` (in q's dtype), as BertEncoder passes it.

    With no mask we pass attn_mask=None, so on GPU the flash kernel can be used (PyTorch does not dispatch to
    it when attn_mask is not None). The mask only hides padded *keys*; padded queries still get (ignored) outputs.
    """
    attn_mask = key_padding_mask
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = attention_bias(attn_mask, q.dtype)
    elif attn_mask is not None and attn_mask.dtype != q.dtype:
        # the encoder's guess of the compute dtype missed (CPU autocast does not reach matmuls under vmap, as in
        # committee.py's BatchedCommittee): SDPA needs the mask in q's dtype
        attn_mask = attn_mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def reference_attention(q, k, v, key_padding_mask=None):
    """Slow, obviously-correct oracle for sdpa_attention: softmax(Q K^T / sqrt(d)) V, no dropout."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection (rows: all of Q, then K, then V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_size, self.hidden = config.heads, config.head_size, config.hidden
        self.qkv = nn.Linear(self.hidden, 3 * self.hidden)
        self.out = nn.Linear(self.hidden, self.hidden)
        self.attention_dropout = config.attention_dropout

    def forward(self, x, key_padding_mask=None, x_rows=None, used=None):
        """x: (B, T, H) -> (B, T, H). With x_rows, (B, M, H) rows of x (the sparse MLM path), only their queries
        are computed (keys and values still cover every token) -> (B, M, H); with `used` too, (N,) flat indices
        into those B*M rows, only those rows of the attention output go through the out-projection -> (N, H)."""
        if x_rows is not None:
            return self._forward_rows(x, key_padding_mask, x_rows, used)
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.hidden, dim=-1)
        # (B, T, H) -> (B, heads, T, head_size); head i owns rows [i*head_size, (i+1)*head_size), as in HF
        q, k, v = (t.view(B, T, self.heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        dropout_p = self.attention_dropout if self.training else 0.0
        y = sdpa_attention(q, k, v, key_padding_mask, dropout_p)
        y = y.transpose(1, 2).reshape(B, T, self.hidden)
        return self.out(y)

    def _forward_rows(self, x, key_padding_mask, x_rows, used):
        # Queries of the M selected rows of each sequence only; K and V over all T tokens.
        B, T, H = x.shape
        M = x_rows.size(1)
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x_rows, w[:H], b[:H]).view(B, M, self.heads, self.head_size).transpose(1, 2)
        k, v = F.linear(x, w[H:], b[H:]).split(H, dim=-1)
        k, v = (t.view(B, T, self.heads, self.head_size).transpose(1, 2) for t in (k, v))
        dropout_p = self.attention_dropout if self.training else 0.0
        y = sdpa_attention(q, k, v, key_padding_mask, dropout_p)  # (B, heads, M, head_size)
        y = y.transpose(1, 2).reshape(B, M, H)
        if used is not None:
            y = y.reshape(B * M, H)[used]  # (N, H): the out-projection only on the used slots
        return self.out(y)


class Block(nn.Module):
    """Post-LN BERT block: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x))), FFN = Linear-GELU-Linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.norm1 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden, config.intermediate)
        self.fc2 = nn.Linear(config.intermediate, config.hidden)
        self.norm2 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, key_padding_mask=None, positions=None, used=None):
        """x: (B, T, H) -> (B, T, H). With `positions` (B, M), indices into each row's T tokens, only those
        positions are computed, attending to all tokens, -> (B, M, H). Everything after attention is per
        position, so this equals the full block followed by picking those rows. With `used` too, (N,) flat indices
        into the B*M slots (masking.CompactTargets), the queries and attention still run on the (B, M) slots (a
        rectangular batch for SDPA, and cheap), but the out-projection, FFN and norms only on those N rows
        -> (N, H): with per-row counts that vary, B*M is ~1.7x the used slots."""
        if positions is None:
            residual, attended = x, self.attn(x, key_padding_mask)
        else:
            B, T, H = x.shape
            flat = positions + torch.arange(B, device=positions.device)[:, None] * T  # (B, M) into B*T
            # a gather whose shape comes with the input (M), no host sync; not index_select: slow CPU backward
            rows = x.reshape(B * T, H)[flat]
            residual = rows if used is None else x.reshape(B * T, H)[flat.reshape(-1)[used]]  # (N, H)
            attended = self.attn(x, key_padding_mask, x_rows=rows, used=used)
        x = self.norm1(residual + self.drop(attended))
        x = self.norm2(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))  # exact (erf) GELU, as BERT
        return x


# ----------------------------------------------------------------------------------------------------------
# embeddings and the conv front end


class Embeddings(nn.Module):
    """word + absolute position + token type embeddings, then LayerNorm and dropout.

    No `padding_idx`: the authors' builders passed pad=101 ([CLS]) by mistake, which zeroed the [CLS] row and
    froze it (docs/paper-recipe.md#special-token-ids). Padded positions are handled by the attention mask instead.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_position, config.hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids, token_type_ids=None):
        T = input_ids.size(1)
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} > max_position {self.position_embeddings.num_embeddings}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # all segment 0, without building a zeros tensor
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.drop(self.norm(x))


class ConvFrontEnd(nn.Module):
    """The paper's optional conv block, placed between the embeddings and the transformer blocks.

    The (B, T, H) embeddings are seen as a one-channel image (B, 1, T, H) (axes: sequence x hidden), then
    conv_layers x [Conv2d(kernel, padding='same') -> BatchNorm2d -> GELU] with channels [1] + [D] * conv_layers,
    then Conv2d(D -> 1, 1x1) -> BatchNorm2d(1) -> GELU, and back to (B, T, H). No residual, no LayerNorm, exactly as
    the authors' ConvolutionLayers (docs/paper-recipe.md#conv-front-end). A kernel (16, 3) spans 16 tokens and 3
    hidden units; PyTorch pads an even 'same' kernel asymmetrically (7 before, 8 after).

    Padding, a deliberate change: the authors ignored the mask, so padded positions leaked into real tokens
    through the kernel and a real token's output depended on the pad embeddings. We zero the padded rows
    before every conv and on the output, so real tokens only ever see zeros where padding is (the same as
    the conv's own 'same' zero padding at the ends of the sequence). BatchNorm statistics in training mode
    still include those zero rows, so how much padding a batch has still shifts the normalisation a little;
    in eval mode (running statistics) real-token outputs do not depend on padding at all.

    Initialisation: the conv and BatchNorm layers keep PyTorch's default init (init_weights skips them), as in
    the authors' code, where the block was inserted after Hugging Face's post_init.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        channels = [1] + [config.conv_channels] * config.conv_layers
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, config.conv_kernel, padding="same") for c_in, c_out in zip(channels, channels[1:])
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in channels[1:])
        self.proj = nn.Conv2d(channels[-1], 1, kernel_size=1)
        self.proj_norm = nn.BatchNorm2d(1)

    def forward(self, x, key_padding_mask=None):
        keep = None if key_padding_mask is None else key_padding_mask[:, None, :, None]  # (B, 1, T, 1)
        # On CUDA, runtime.channels_last_convs stores the conv weights channels-last (NHWC); cuDNN then runs every
        # conv in that layout and the rest of the stack (BatchNorm, GELU, the masking) keeps it. The input is
        # not converted here: a 1-channel image is the same in both layouts, and under vmap (the batched
        # committee) a memory-format change is not supported.
        x = x.unsqueeze(1)  # (B, 1, T, H)
        for conv, norm in zip(self.convs, self.norms):
            if keep is not None:
                x = x * keep.to(x.dtype)
            x = F.gelu(norm(conv(x)))
        x = F.gelu(self.proj_norm(self.proj(x)))  # 1x1: mixes channels only, so no zeroing needed before it
        if keep is not None:
            x = x * keep.to(x.dtype)
        return x.squeeze(1)


# ----------------------------------------------------------------------------------------------------------
# encoder and heads


class BertEncoder(nn.Module):
    """embeddings -> optional conv front end -> transformer blocks. Returns hidden states (B, T, H)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.conv = ConvFrontEnd(config) if config.conv_layers > 0 else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.apply(init_weights)  # so a bare encoder is usable too; the task models re-apply it to their heads

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None, used=None):
        """input_ids: (B, T) long. attention_mask: (B, T) bool/int, True/1 = real token, or None when every
        position is real (then SDPA gets no mask and may use the flash kernel; we never inspect the mask's
        values to decide that, which would cost a host sync). token_type_ids: (B, T) or None (= all 0).
        positions: optional (B, M) long, indices into each row's T tokens: the last block computes only those
        positions and the result is (B, M, H) instead of (B, T, H) (the sparse MLM path). used: optional (N,)
        long with positions, flat indices into the B*M slots: the last block computes those rows only after
        attention and the result is (N, H) (Block.forward)."""
        key_padding_mask = None if attention_mask is None else attention_mask.bool()
        if positions is not None and (positions.dim() != 2 or positions.size(0) != input_ids.size(0)):
            raise ValueError(f"positions must be (B, M) with B = {input_ids.size(0)} rows, "
                             f"got {tuple(positions.shape)}")
        if used is not None and (positions is None or used.dim() != 1):
            raise ValueError(f"used must be (N,) flat indices into the (B, M) positions, got "
                             f"{tuple(used.shape)}{' without positions' if positions is None else ''}")
        x = self.embeddings(input_ids, token_type_ids)
        if self.conv is not None:
            x = self.conv(x, key_padding_mask)
        # the mask's additive form, built once for all blocks (not once per layer inside SDPA)
        bias = None if key_padding_mask is None else attention_bias(key_padding_mask, compute_dtype(x))
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, bias, positions if i == last else None, used if i == last else None)
        return x


class MLMHead(nn.Module):
    """dense H->H + GELU + LayerNorm, then the decoder (weight tied to the word embeddings) + a vocab bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden, config.vocab_size, bias=False)  # weight tied by the owner
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h):
        h = self.norm(F.gelu(self.dense(h)))
        # bias inside the linear: one fused addmm, and under autocast the logits stay bf16 (adding an fp32
        # parameter afterwards would promote the whole (N, V) tensor to fp32)
        return F.linear(h, self.decoder.weight, self.bias)


class MLMOutput(NamedTuple):
    loss: torch.Tensor | None    # scalar mean cross-entropy over the predicted positions
    logits: torch.Tensor         # (N_pad, V) for CompactTargets' used rows, (B*M, V) for MLMTargets' B x M slots;
                                 # (B, T, V) when no labels were given
    labels: torch.Tensor | None  # targets matching logits' rows, IGNORE_INDEX in the unused slots and the padding


class BertForMaskedLM(nn.Module):
    """Encoder + MLM head. Pre-training model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.bert = BertEncoder(config)
        self.mlm_head = MLMHead(config)
        self.mlm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tie, as BERT does
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None) -> MLMOutput:
        """labels: a tinybert.masking.CompactTargets (the training loop's: (B, M) positions and their labels, and
        the N_pad used slots among them, built on the host), a plain MLMTargets (no compaction), or (B, T) long
        dense labels with IGNORE_INDEX (-100) where the position is not predicted (a convenience: turned into
        CompactTargets here, which reads them on the host, a sync on CUDA).

        Only the B x M target slots are computed after the last block's keys and values: its queries and
        attention; with CompactTargets the out-projection, FFN, norms and the head then run on the N_pad used
        rows only: logits (N_pad, V), labels (N_pad,), the padding rows ignored by the loss. With MLMTargets all
        of it runs on the slots: logits (B*M, V), labels (B*M,), unused slots ignored by the loss.
        With either kind of targets nothing here depends on the data's values: no `nonzero`, no `.item()`, no
        shape that the device must report (tests/test_sync_free.py). Without labels, logits for every position
        (B, T, V). `forward_dense` is the reference.
        """
        if labels is None:
            return MLMOutput(None, self.mlm_head(self.bert(input_ids, attention_mask, token_type_ids)), None)
        targets = dense_to_targets(labels) if isinstance(labels, torch.Tensor) else labels
        used = getattr(targets, "used", None)  # CompactTargets has it; a plain MLMTargets does not
        hidden = self.bert(input_ids, attention_mask, token_type_ids, positions=targets.positions, used=used)
        logits = self.mlm_head(hidden).reshape(-1, self.config.vocab_size)  # (N_pad or B*M, V)
        flat_labels = targets.labels.reshape(-1) if used is None else targets.used_labels
        # sum / count with the count on the device (clamped: nothing to predict gives loss 0 with a graph, not NaN)
        count = flat_labels.ne(IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(logits.float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum") / count
        return MLMOutput(loss, logits, flat_labels)

    def forward_dense(self, input_ids, attention_mask=None, labels=None, token_type_ids=None) -> MLMOutput:
        """Reference: the head on every position (as HF does), CE with ignore_index. logits (B, T, V);
        labels (B, T) dense."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.mlm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return MLMOutput(loss, logits, labels)


def dense_to_targets(labels: torch.Tensor):
    """(B, T) dense labels on any device -> CompactTargets on that device (built from the host copy)."""
    from tinybert.masking import compact_targets, mlm_targets  # here: masking imports IGNORE_INDEX from this module
    return compact_targets(mlm_targets(labels.cpu())).to(labels.device)


class LoadReport(NamedTuple):
    missing_keys: list[str]  # encoder keys the state dict did not have (left as initialised)
    unused_keys: list[str]   # state dict keys that were not encoder weights (e.g. the MLM head)


class BertForSequenceClassification(nn.Module):
    """Encoder + pooler (dense + tanh on [CLS], position 0) + dropout + linear. Fine-tuning model.

    As in the authors' setup, the pooler is not part of pre-training (BertForMaskedLM has none), so it starts
    fresh together with the classifier, in both the pre-trained and the from-scratch arms.
    """

    def __init__(self, config: ModelConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = BertEncoder(config)
        self.pooler = nn.Linear(config.hidden, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, num_labels)
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> logits (B, num_labels)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(self.drop(pooled))

    def load_encoder_state(self, state_dict: dict) -> LoadReport:
        """Copy encoder weights from a BertForMaskedLM (keys 'bert.*') or a bare BertEncoder state dict.

        Returns the encoder keys not found and the given keys not used; a shape mismatch is an error (the
        authors' load_state_dict(strict=False) hid real mismatches, docs/paper-recipe.md#checkpoint-loading).
        """
        state_dict = _strip_wrapper_prefixes(state_dict)
        if any(k.startswith("bert.") for k in state_dict):
            source = {k[len("bert."):]: v for k, v in state_dict.items() if k.startswith("bert.")}
            unused = [k for k in state_dict if not k.startswith("bert.")]
        else:
            source, unused = dict(state_dict), []
        own = self.bert.state_dict()
        missing = [f"bert.{k}" for k in own if k not in source]
        unused += [f"bert.{k}" for k in source if k not in own]
        for k, v in source.items():
            if k in own and own[k].shape != v.shape:
                raise ValueError(f"load_encoder_state: shape mismatch for bert.{k}: checkpoint "
                                 f"{tuple(v.shape)} vs model {tuple(own[k].shape)} (different config?)")
        with torch.no_grad():
            for k, v in source.items():
                if k in own:
                    own[k].copy_(v)
        return LoadReport(sorted(missing), sorted(unused))


def _strip_wrapper_prefixes(state_dict: dict) -> dict:
    """Drop the prefixes torch.compile ('_orig_mod.') and DDP ('module.') add, so they cannot make every key
    look missing."""
    out = {}
    for k, v in state_dict.items():
        while k.startswith(("_orig_mod.", "module.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------------------
# init, parameter counts, FLOPs


INIT_STD = 0.02  # BERT's initializer_range


def init_weights(module: nn.Module) -> None:
    """BERT init (initializer_range 0.02): Linear/Embedding weights N(0, 0.02), biases 0, LayerNorm 1/0.

    Conv2d and BatchNorm2d keep PyTorch's default init, as in the authors' code
    (docs/paper-recipe.md#conv-front-end).
    Use as model.apply(init_weights).
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, MLMHead):
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter values; a tied weight is counted once (BatchNorm running stats are
    buffers and are not counted). Matches the counts in docs/paper-recipe.md#parameter-counts-and-compute."""
    return sum(p.numel() for p in model.parameters())


def conv_macs_per_token(config: ModelConfig) -> int:
    """Multiply-adds of the conv front end per token: every token is H 'pixels' of the (T, H) image."""
    if config.conv_layers == 0:
        return 0
    kh, kw = config.conv_kernel
    channels = [1] + [config.conv_channels] * config.conv_layers
    per_pixel = sum(c_in * c_out * kh * kw for c_in, c_out in zip(channels, channels[1:]))
    per_pixel += channels[-1]  # the final 1x1 conv to one channel
    return per_pixel * config.hidden


def encoder_macs_per_token(config: ModelConfig, seq_len: int = 128) -> int:
    """Forward multiply-adds of the encoder per token (weights of the matmuls, attention scores and
    weighted sum over seq_len keys, the conv front end); embeddings lookups, norms and biases are ignored.
    128 * this matches the "forward GMACs" column of docs/paper-recipe.md#parameter-counts-and-compute."""
    H = config.hidden
    per_layer = 4 * H * H + 2 * H * config.intermediate  # QKV + out projection, FFN
    per_layer += 2 * seq_len * H                          # Q K^T and P V
    return config.layers * per_layer + conv_macs_per_token(config)


def flops_per_token(config: ModelConfig, mlm_fraction: float = 0.15, seq_len: int = 128) -> float:
    """Training FLOPs per input token of BertForMaskedLM (used for MFU by the benchmark).

    6 x forward MACs (2 FLOPs per MAC, backward ~ 2x forward), the usual approximation; it includes the
    attention term and the conv front end. The MLM head (dense H*H + tied decoder H*V) runs only on the
    masked fraction of tokens, as in BertForMaskedLM.forward; pass mlm_fraction=1.0 for forward_dense.
    """
    head = config.hidden * config.hidden + config.hidden * config.vocab_size
    return 6.0 * (encoder_macs_per_token(config, seq_len) + mlm_fraction * head)
