"""Batched ensembles: K models of one architecture trained as one model, equal to K separate runs.

Where it sits in the flow: the same place as tinybert/model.py (batches -> model -> loss), with a leading member
axis K on everything. `EnsembleMLM` mirrors `BertForMaskedLM` and `EnsembleClassifier` mirrors
`BertForSequenceClassification` (post-LN blocks, fused QKV, exact GELU, tied MLM decoder, pooler + tanh + dropout
+ classifier, the optional conv front end), but every weight carries a leading K dimension and every matmul is
one batched matmul over the members (torch.baddbmm):

    input_ids (K, B, T) ─> embeddings (per-member tables) ─> [conv front end, grouped: K*C channels]
        ─> blocks: QKV / out / FFN as (K, B*T, H) @ (K, H, H') ; attention over (K*B, heads, T, d) in ONE SDPA call
        ─> MLM: the last block's queries at MLMTargets' (K, B, M) positions only -> head -> CE -> losses (K,)
        ─> classifier: hidden[:, :, 0] -> pooler -> tanh -> dropout -> linear -> logits (K, B, C)

Why not torch.func.vmap over a plain model (as committee.py's inference-only BatchedCommittee does): vmap has no
batching rule for scaled_dot_product_attention on CPU and loops over the members for it. Here the members are
folded into attention's batch axis explicitly.

Equality with separate runs (tests/test_ensemble.py): member k sees only its own rows of the input, its own mask
and its own weights, and the loss is a sum of per-member losses, so member k's gradient is exactly what a plain
model fed its batch gets. AdamW is elementwise, so one AdamW over the stacked tensors is K separate AdamWs (same
lr and weight decay by construction). Gradient clipping is not elementwise: `clip_grad_norm_per_member` clips
each member by its own norm. Dropout draws one mask over the whole (K, ...) tensor: each member gets its own
masks, but not the stream a separate run seeded with that member's seed would draw (with dropout 0 the runs are
equal to rounding). The conv front end's BatchNorm is per member: a grouped conv over K*C channels, so each
BatchNorm channel is one member's channel and its batch statistics are that member's alone.

State dicts: the ensemble's keys are the plain model's keys (less the tied `mlm_head.decoder.weight`), each value
member k's tensors stacked on a new leading axis (the grouped conv / BatchNorm tensors: concatenated along their
first axis, the same memory). `from_members` and `members` convert both ways, exactly (from_members keeps which
weights are frozen), except BatchNorm's batch counter (num_batches_tracked, which no output depends on): one for
all members, the first's. Segment ids are not supported (everything is segment 0, as in pre-training and
fine-tuning here).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .masking import MLMTargets
from .model import IGNORE_INDEX, BertForMaskedLM, BertForSequenceClassification


def ens_linear(x, weight, bias=None):
    """x (K, ..., in), weight (K, out, in), bias (K, out) -> (K, ..., out): member k's F.linear, one baddbmm."""
    K, shape = x.size(0), x.shape[1:-1]
    x2 = x.reshape(K, -1, x.size(-1))
    w = weight.transpose(1, 2)
    y = torch.bmm(x2, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), x2, w)
    return y.view(K, *shape, weight.size(1))


class StackedLinear(nn.Module):
    """K nn.Linear(in, out) layers: weight (K, out, in), bias (K, out)."""

    def __init__(self, K: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(K, d_out))

    def forward(self, x):
        return ens_linear(x, self.weight, self.bias)


class StackedLayerNorm(nn.Module):
    """K nn.LayerNorm(H): normalise without affine, then member k's scale and shift."""

    def __init__(self, K: int, hidden: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, hidden))
        self.bias = nn.Parameter(torch.empty(K, hidden))
        self.eps = eps

    def forward(self, x):  # x (K, ..., H)
        shape = (x.size(0),) + (1,) * (x.dim() - 2) + (x.size(-1),)
        y = F.layer_norm(x, (x.size(-1),), eps=self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


class StackedTable(nn.Module):
    """K embedding tables: weight (K, rows, H) (named `weight`, as nn.Embedding's)."""

    def __init__(self, K: int, rows: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, rows, hidden))

    def forward(self, ids):  # ids (K, ...) -> (K, ..., H): member k looks up its own table
        K, rows = self.weight.shape[:2]
        offset = (torch.arange(K, device=ids.device) * rows).view(K, *([1] * (ids.dim() - 1)))
        return F.embedding(ids + offset, self.weight.view(K * rows, -1))


# ----------------------------------------------------------------------------------------------------------
# the encoder


def attention(q, k, v, key_padding_mask, dropout_p: float):
    """q (K, B, Tq, heads, d), k/v (K, B, T, heads, d), key_padding_mask (K, B, T) bool or None
    -> (K, B, Tq, heads * d). The members are folded into SDPA's batch axis: one call for all of them."""
    K, B, Tq, heads, d = q.shape
    T = k.size(2)
    q = q.reshape(K * B, Tq, heads, d).transpose(1, 2)
    k, v = (t.reshape(K * B, T, heads, d).transpose(1, 2) for t in (k, v))
    mask = None if key_padding_mask is None else key_padding_mask.reshape(K * B, 1, 1, T)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (K*B, heads, Tq, d)
    return y.transpose(1, 2).reshape(K, B, Tq, heads * d)


class EnsembleSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        self.heads, self.head_size, self.hidden = config.heads, config.head_size, config.hidden
        self.qkv = StackedLinear(K, self.hidden, 3 * self.hidden)
        self.out = StackedLinear(K, self.hidden, self.hidden)
        self.attention_dropout = config.attention_dropout

    def forward(self, x, key_padding_mask=None, x_rows=None):
        """x (K, B, T, H) -> (K, B, T, H). With x_rows (K, B, M, H) (the rows at the predicted positions),
        only their queries are computed (keys and values still over all T tokens) -> (K, B, M, H)."""
        K, B, T, H = x.shape
        split = (K, B, -1, self.heads, self.head_size)
        if x_rows is None:
            q, k, v = (t.reshape(split) for t in self.qkv(x).split(H, dim=-1))
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = ens_linear(x_rows, w[:, :H], b[:, :H]).reshape(split)
            k, v = (t.reshape(split) for t in ens_linear(x, w[:, H:], b[:, H:]).split(H, dim=-1))
        dropout_p = self.attention_dropout if self.training else 0.0
        return self.out(attention(q, k, v, key_padding_mask, dropout_p))


class EnsembleBlock(nn.Module):
    """Post-LN block, as model.Block, for K members."""

    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        H, eps = config.hidden, config.layer_norm_eps
        self.attn = EnsembleSelfAttention(config, K)
        self.norm1 = StackedLayerNorm(K, H, eps)
        self.fc1 = StackedLinear(K, H, config.intermediate)
        self.fc2 = StackedLinear(K, config.intermediate, H)
        self.norm2 = StackedLayerNorm(K, H, eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, key_padding_mask=None, positions=None):
        """x (K, B, T, H) -> (K, B, T, H); with positions (K, B, M) only those rows -> (K, B, M, H)."""
        if positions is None:
            residual = x
        else:
            residual = torch.gather(x, 2, positions.unsqueeze(-1).expand(-1, -1, -1, x.size(-1)))
        x = self.norm1(residual + self.drop(self.attn(x, key_padding_mask, None if positions is None else residual)))
        return self.norm2(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class EnsembleEmbeddings(nn.Module):
    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        self.word_embeddings = StackedTable(K, config.vocab_size, config.hidden)
        self.position_embeddings = StackedTable(K, config.max_position, config.hidden)
        self.token_type_embeddings = StackedTable(K, config.type_vocab_size, config.hidden)
        self.norm = StackedLayerNorm(K, config.hidden, config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids):  # (K, B, T) -> (K, B, T, H), all segment 0
        T, max_position = input_ids.size(2), self.position_embeddings.weight.size(1)
        if T > max_position:
            raise ValueError(f"sequence length {T} > max_position {max_position}")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:, None, :T]
        x = x + self.token_type_embeddings.weight[:, None, None, 0]
        return self.drop(self.norm(x))


class EnsembleConvFrontEnd(nn.Module):
    """model.ConvFrontEnd for K members as grouped convs: member k owns channels [k*C, (k+1)*C) of every layer
    (groups=K keeps the members apart), so each BatchNorm channel's statistics are one member's. The padded rows
    are zeroed before every conv and on the output, as in the plain front end."""

    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        channels = [1] + [config.conv_channels] * config.conv_layers
        self.convs = nn.ModuleList(
            nn.Conv2d(K * c_in, K * c_out, config.conv_kernel, padding="same", groups=K)
            for c_in, c_out in zip(channels, channels[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(K * c) for c in channels[1:])
        self.proj = nn.Conv2d(K * channels[-1], K, kernel_size=1, groups=K)
        self.proj_norm = nn.BatchNorm2d(K)

    def forward(self, x, key_padding_mask=None):  # x (K, B, T, H): member k is image channel k of each row
        K, B, T, H = x.shape
        keep = None if key_padding_mask is None else key_padding_mask.transpose(0, 1).reshape(B, K, 1, T, 1)

        def zero_padding(x):  # (B, K*C, T, H): member k's C channels get member k's mask
            return (x.view(B, K, -1, T, H) * keep.to(x.dtype)).view(B, -1, T, H)

        x = x.transpose(0, 1)  # (B, K, T, H)
        for conv, norm in zip(self.convs, self.norms):
            if keep is not None:
                x = zero_padding(x)
            x = F.gelu(norm(conv(x)))
        x = F.gelu(self.proj_norm(self.proj(x)))  # 1x1: mixes channels only, so no zeroing needed before it
        if keep is not None:
            x = zero_padding(x)
        return x.transpose(0, 1)


class EnsembleEncoder(nn.Module):
    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        self.embeddings = EnsembleEmbeddings(config, K)
        self.conv = EnsembleConvFrontEnd(config, K) if config.conv_layers > 0 else None
        self.blocks = nn.ModuleList(EnsembleBlock(config, K) for _ in range(config.layers))

    def forward(self, input_ids, key_padding_mask=None, positions=None):
        """input_ids (K, B, T), key_padding_mask (K, B, T) bool or None -> (K, B, T, H); with positions (K, B, M)
        the last block computes only those rows -> (K, B, M, H)."""
        x = self.embeddings(input_ids)
        if self.conv is not None:
            x = self.conv(x, key_padding_mask)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask, positions if i == last else None)
        return x


# ----------------------------------------------------------------------------------------------------------
# the two models, and the conversion from and to plain models


class _Ensemble(nn.Module):
    """What both models share: K, the config, input checks, and the stacking/unstacking of state dicts."""

    def __init__(self, config: ModelConfig, K: int):
        super().__init__()
        if K < 1:
            raise ValueError(f"an ensemble needs K >= 1 members, got {K}")
        self.config, self.K = config, K

    def _plain(self) -> nn.Module:
        raise NotImplementedError

    def _check_inputs(self, input_ids, attention_mask):
        if input_ids.dim() != 3 or input_ids.size(0) != self.K:
            raise ValueError(f"input_ids must be (K={self.K}, B, T), got {tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                             f"{tuple(input_ids.shape)}")
        return None if attention_mask is None else attention_mask.bool()

    @classmethod
    def _stack(cls, ensemble: "_Ensemble", models: Sequence[nn.Module]) -> "_Ensemble":
        """Copy the members' weights into `ensemble` (stacked) and return it, on the first member's device."""
        states = [m.state_dict() for m in models]
        first = next(iter(states[0].values()))
        ensemble = ensemble.to(device=first.device)
        with torch.no_grad():
            for key, target in ensemble.state_dict().items():
                values = [s[key] for s in states]
                if target.dim() == 0:
                    # BatchNorm's num_batches_tracked: one counter for all members, the first member's. It changes
                    # no output (the momentum is fixed), so members that differ in it may still be stacked.
                    target.copy_(values[0])
                else:
                    target.copy_(torch.stack(values).reshape(target.shape))
        for name, param in ensemble.named_parameters():  # a weight frozen in the members stays frozen
            flags = {m.get_parameter(name).requires_grad for m in models}
            if len(flags) > 1:
                raise ValueError(f"{name} is trainable in some members and frozen in others")
            param.requires_grad_(flags.pop())
        return ensemble.train(models[0].training)

    def members(self) -> list[nn.Module]:
        """K plain models holding copies of the members' weights (and BatchNorm statistics), on this ensemble's
        device, in its train/eval mode. Their state dicts have the keys and shapes of any plain model's."""
        own = self.state_dict()
        device = next(iter(own.values())).device
        out = []
        for k in range(self.K):
            with torch.random.fork_rng(devices=[]):  # building draws an init we overwrite: leave the RNG alone
                model = self._plain()
            plain = model.state_dict()
            if k == 0:
                extra, only_plain = set(own) - set(plain), set(plain) - set(own)
                if extra or only_plain - {"mlm_head.decoder.weight"}:
                    raise RuntimeError(f"ensemble and plain keys differ: {sorted(extra)} / {sorted(only_plain)}")
            state = {}
            for key, value in plain.items():
                src = own[key] if key in own else own["bert.embeddings.word_embeddings.weight"]  # tied decoder
                state[key] = src if value.dim() == 0 else src.view(self.K, *value.shape)[k]
            model.load_state_dict(state)  # copies
            out.append(model.to(device).train(self.training))
        return out


class EnsembleMLM(_Ensemble):
    """K BertForMaskedLM members as one batched model. forward -> per-member losses (K,)."""

    def __init__(self, config: ModelConfig, K: int, seeds: Sequence[int] | None = None):
        """seeds: member k is initialised exactly as `torch.manual_seed(seeds[k]); BertForMaskedLM(config)`
        (K plain models are built and stacked; the global RNG is left as the last of them leaves it).
        seeds=None leaves the weights uninitialised (from_members fills them)."""
        super().__init__(config, K)
        self.bert = EnsembleEncoder(config, K)
        self.mlm_head = nn.Module()
        self.mlm_head.dense = StackedLinear(K, config.hidden, config.hidden)
        self.mlm_head.norm = StackedLayerNorm(K, config.hidden, config.layer_norm_eps)
        self.mlm_head.bias = nn.Parameter(torch.empty(K, config.vocab_size))
        if seeds is not None:
            _init_from_seeds(self, seeds, lambda: BertForMaskedLM(config))

    def _plain(self):
        return BertForMaskedLM(self.config)

    @classmethod
    def from_members(cls, models: Sequence[BertForMaskedLM]) -> "EnsembleMLM":
        """A new ensemble holding copies of `models`' weights (all of one config), stacked in their order."""
        config = _common_config(models, BertForMaskedLM)
        return cls._stack(cls(config, len(models)), models)

    def forward(self, input_ids, attention_mask, targets: MLMTargets) -> torch.Tensor:
        """input_ids (K, B, T); attention_mask (K, B, T) (True/1 = real token) or None; targets: MLMTargets with
        positions and labels (K, B, M) (masking.mlm_targets). -> losses (K,) fp32: member k's mean cross-entropy
        over its used slots (0 when it has none). Train with losses.sum().backward().

        Only the M slots per row are computed after the last block's keys and values (as BertForMaskedLM's
        sparse path). No host sync and no data-dependent shape: the per-member counts stay on the device."""
        mask = self._check_inputs(input_ids, attention_mask)
        positions, labels = targets
        K, B = input_ids.shape[:2]
        if positions.dim() != 3 or positions.shape[:2] != (K, B) or labels.shape != positions.shape:
            raise ValueError(f"targets must be (K={K}, B={B}, M); got positions {tuple(positions.shape)}, "
                             f"labels {tuple(labels.shape)}")
        h = self.bert(input_ids, mask, positions)  # (K, B, M, H)
        logits = self.mlm_logits(h)                # (K, B, M, V)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none").view(K, -1)
        count = labels.reshape(K, -1).ne(IGNORE_INDEX).sum(-1).clamp(min=1)
        return ce.sum(-1) / count

    def mlm_logits(self, h):
        """The MLM head on hidden states (K, ..., H) -> (K, ..., V); the decoder is the word embeddings (tied)."""
        head = self.mlm_head
        h = head.norm(F.gelu(head.dense(h)))
        return ens_linear(h, self.bert.embeddings.word_embeddings.weight, head.bias)

    def forward_dense(self, input_ids, attention_mask, labels) -> torch.Tensor:
        """Reference: the head on every position, labels (K, B, T) with IGNORE_INDEX -> losses (K,)."""
        mask = self._check_inputs(input_ids, attention_mask)
        logits = self.mlm_logits(self.bert(input_ids, mask))
        K = logits.size(0)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none").view(K, -1)
        return ce.sum(-1) / labels.reshape(K, -1).ne(IGNORE_INDEX).sum(-1).clamp(min=1)


class EnsembleClassifier(_Ensemble):
    """K BertForSequenceClassification members as one batched model. forward -> logits (K, B, C)."""

    def __init__(self, config: ModelConfig, num_labels: int, K: int, seeds: Sequence[int] | None = None):
        """seeds: as EnsembleMLM's (member k = `torch.manual_seed(seeds[k]); BertForSequenceClassification`)."""
        super().__init__(config, K)
        self.num_labels = num_labels
        self.bert = EnsembleEncoder(config, K)
        self.pooler = StackedLinear(K, config.hidden, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = StackedLinear(K, config.hidden, num_labels)
        if seeds is not None:
            _init_from_seeds(self, seeds, lambda: BertForSequenceClassification(config, num_labels))

    def _plain(self):
        return BertForSequenceClassification(self.config, self.num_labels)

    @classmethod
    def from_members(cls, models: Sequence[BertForSequenceClassification]) -> "EnsembleClassifier":
        """A new ensemble holding copies of `models`' weights (one config, one number of labels)."""
        config = _common_config(models, BertForSequenceClassification)
        if len({m.num_labels for m in models}) > 1:
            raise ValueError("ensemble members must have the same number of labels")
        return cls._stack(cls(config, models[0].num_labels, len(models)), models)

    def forward(self, input_ids, attention_mask=None) -> torch.Tensor:
        """input_ids (K, B, T), attention_mask (K, B, T) or None -> logits (K, B, num_labels)."""
        hidden = self.bert(input_ids, self._check_inputs(input_ids, attention_mask))
        pooled = torch.tanh(self.pooler(hidden[:, :, 0]))
        return self.classifier(self.drop(pooled))


def _common_config(models, plain_class) -> ModelConfig:
    models = list(models)
    if not models:
        raise ValueError("an ensemble needs at least one member")
    if not all(isinstance(m, plain_class) for m in models):
        raise ValueError(f"ensemble members must all be {plain_class.__name__}")
    if len({repr(m.config.to_dict()) for m in models}) > 1:
        raise ValueError("ensemble members must share one ModelConfig")
    return models[0].config


def _init_from_seeds(ensemble: _Ensemble, seeds: Sequence[int], build) -> None:
    seeds = list(seeds)
    if len(seeds) != ensemble.K:
        raise ValueError(f"{len(seeds)} seeds for {ensemble.K} members")
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build())
    ensemble._stack(ensemble, models)


# ----------------------------------------------------------------------------------------------------------
# per-member gradient clipping


def per_member_view(t: torch.Tensor, K: int) -> torch.Tensor:
    """A stacked tensor (K, ...) or grouped (K*C, ...) as (K, everything else): member k's values in row k."""
    return t.view(K, -1)


@torch.no_grad()
def clip_grad_norm_per_member(ensemble: _Ensemble, max_norm: float) -> torch.Tensor:
    """Clip each member's gradients by that member's total L2 norm, as torch.nn.utils.clip_grad_norm_ does for
    one model (coefficient max_norm / (norm + 1e-6), at most 1). Returns the norms before clipping, (K,)."""
    K = ensemble.K
    grads = [p.grad for p in ensemble.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(K)
    norms = torch.stack([per_member_view(g, K).float().pow(2).sum(-1) for g in grads]).sum(0).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        per_member_view(g, K).mul_(coef.to(g.dtype).unsqueeze(1))
    return norms
