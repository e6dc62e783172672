"""Dynamic masking for masked-language-model pre-training (BERT's 80/10/10 rule), redrawn for every batch.

Of the maskable tokens (everything except [PAD], [UNK], [CLS], [SEP], [MASK] and other bracketed vocabulary
entries such as bert-base-uncased's [unused0..98]) each is selected with probability `mlm_prob` (0.15).
Of the selected: 80% become [MASK], 10% a random non-special token, 10% stay unchanged. Labels hold the
original id at selected positions and -100 elsewhere, so the loss (and the sparse MLM head) only sees the
selected positions.

Differences from the authors' code (see docs/paper-recipe.md#masking), on purpose:
  * random replacements are drawn from non-special tokens only (theirs could insert [CLS] or [unused7]);
  * [UNK] is never a target (predicting "unknown" teaches nothing);
  * a row with maskable tokens but no selection gets one random maskable position selected, so every batch has
    targets (the loss of an empty selection is undefined). At 15% of ~100 tokens this almost never triggers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .model import IGNORE_INDEX


def is_special_token(token: str) -> bool:
    """Special tokens are bracketed: [PAD], [CLS], [unused17], ... ."""
    return len(token) > 2 and token.startswith("[") and token.endswith("]")


class MLMMasker:
    """Holds the vocabulary-derived tables once; `__call__` masks one batch."""

    def __init__(self, vocab: list[str], mask_id: int, mlm_prob: float = 0.15):
        if not 0.0 < mlm_prob < 1.0:
            raise ValueError(f"mlm_prob must be in (0, 1), got {mlm_prob}")
        special = torch.tensor([is_special_token(t) for t in vocab], dtype=torch.bool)
        if special.all():
            raise ValueError("the vocabulary has no non-special token to predict")
        self.mask_id = mask_id
        self.mlm_prob = mlm_prob
        self.special = special                                    # (V,) bool lookup table
        self.replacement_ids = (~special).nonzero().squeeze(1)    # ids a random replacement may take

    def __call__(self, input_ids: torch.Tensor, generator: torch.Generator | None = None):
        """input_ids (B, T) long on CPU -> (masked input_ids, labels), both (B, T) long."""
        maskable = ~self.special[input_ids]
        rand = torch.rand(input_ids.shape, generator=generator)
        selected = (rand < self.mlm_prob) & maskable
        # Guarantee at least one target in rows that have any maskable token (see module docstring).
        empty_rows = ~selected.any(dim=1) & maskable.any(dim=1)
        if empty_rows.any():
            pick = torch.where(maskable, rand, torch.full_like(rand, 2.0)).argmin(dim=1)
            selected[empty_rows, pick[empty_rows]] = True

        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        # One uniform draw decides the 80/10/10 split of the selected positions.
        action = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (action < 0.8)
        to_random = selected & (action >= 0.8) & (action < 0.9)
        masked = input_ids.clone()
        masked[to_mask] = self.mask_id
        n_random = int(to_random.sum())
        if n_random:
            choice = torch.randint(len(self.replacement_ids), (n_random,), generator=generator)
            masked[to_random] = self.replacement_ids[choice]
        return masked, labels


class MLMTargets(NamedTuple):
    """The positions a masked-LM step predicts, gathered on the host from its labels, so that the model's forward
    has no shape that depends on data and never asks the device what it masked (no `nonzero`, no host sync).

    positions: (..., B, M) long, indices into each row's T tokens, predicted ones first in ascending order;
    labels:    (..., B, M) long, the target id in each used slot and IGNORE_INDEX in the unused ones (their
               position is 0, a real token, so gathering there is harmless and their loss is ignored).
    M is the largest number of predicted positions in any row, rounded up to a multiple of `multiple` (at most T):
    a compiled step then sees a handful of shapes, not one per batch.
    """
    positions: torch.Tensor
    labels: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "MLMTargets":
        return MLMTargets(self.positions.to(device, non_blocking=non_blocking),
                          self.labels.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MLMTargets":
        return MLMTargets(self.positions.pin_memory(), self.labels.pin_memory())


def mlm_targets(labels: torch.Tensor, multiple: int = 8) -> MLMTargets:
    """labels (..., B, T) with IGNORE_INDEX at positions not predicted (a CPU tensor: this is host-side work)
    -> MLMTargets with M slots per row (see MLMTargets)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    T = labels.size(-1)
    keep = labels.ne(IGNORE_INDEX)
    counts = keep.sum(-1)
    most = int(counts.max()) if counts.numel() else 0
    M = min(max(-(-most // multiple) * multiple, multiple), T)
    # a stable sort on "not predicted" puts each row's predicted positions first, in their original order
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :M]
    used = torch.arange(M) < counts.unsqueeze(-1)
    positions = torch.where(used, order, torch.zeros_like(order))
    targets = torch.gather(labels, -1, positions).masked_fill(~used, IGNORE_INDEX)
    return MLMTargets(positions, targets)


# The compacted rows are padded to a multiple of this. Why 64: the used count of a batch varies by a few dozen
# from batch to batch (32 x 128 at 15%: ~614 +- 23), so a multiple of 64 gives a compiled step a few buckets, not
# one shape per batch, while the padding (< 64 rows, under 10% there) stays small next to the B x M slots it
# replaces (~1.7x the used rows); and 64 rows is a whole number of GPU matmul tiles.
USED_MULTIPLE = 64


class CompactTargets(NamedTuple):
    """MLMTargets plus the compacted list of its used slots, so that the last block after attention and the MLM
    head run on the predicted rows only (plus a little padding), not on all B x M slots (tinybert/model.py).

    positions, labels: (B, M), as in MLMTargets (the last block's queries and attention still run on the slots);
    used:        (N_pad,) long, flat indices into the B*M slots of the used ones, in row-major order, then
                 padding entries pointing at slot 0; N_pad = the used count rounded up to a multiple of
                 `multiple` (USED_MULTIPLE), at least `multiple`, at most B*M;
    used_labels: (N_pad,) long, the labels of those slots, IGNORE_INDEX in the padding.
    A separate type, not two more fields of MLMTargets: code that unpacks `positions, labels = targets` (the
    batched ensembles' (K, B, M) targets) keeps working; the model takes either.
    """
    positions: torch.Tensor
    labels: torch.Tensor
    used: torch.Tensor
    used_labels: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "CompactTargets":
        return CompactTargets(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self) -> "CompactTargets":
        return CompactTargets(*(t.pin_memory() for t in self))


def compact_targets(targets: MLMTargets, multiple: int = USED_MULTIPLE) -> CompactTargets:
    """MLMTargets with (B, M) positions and labels (CPU tensors: host-side work) -> CompactTargets (see there)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if targets.labels.dim() != 2:
        raise ValueError(f"compact_targets needs (B, M) targets, got {tuple(targets.labels.shape)} "
                         f"(batched ensembles keep plain MLMTargets)")
    flat = targets.labels.reshape(-1)
    used = flat.ne(IGNORE_INDEX).nonzero().squeeze(1)  # on the host: no device sync
    n = used.numel()
    n_pad = min(max(-(-n // multiple) * multiple, multiple), flat.numel())  # >= n: n <= B*M
    used_labels = torch.cat([flat[used], flat.new_full((n_pad - n,), IGNORE_INDEX)])
    used = torch.cat([used, used.new_zeros(n_pad - n)])
    return CompactTargets(targets.positions, targets.labels, used, used_labels)
