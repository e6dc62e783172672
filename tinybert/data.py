"""Batches from token arrays: the step between the cached .npy corpus (data_prep/) and the model.

A token array is (rows, seq_len) of uint16/int32 ids, [PAD]-padded on the right (paper layout) or full
(packed layout). `TokenBatches` yields (input_ids, attention_mask) tensors:
  * the row order is a seeded permutation per epoch, so a run (and a resumed run) sees the same batches;
  * each batch is trimmed to its longest row, so padding costs no compute beyond that row's length;
  * with several ranks (DDP), every global batch is split into contiguous per-rank shards, so the global
    batch, and therefore the result, does not depend on the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> torch.Tensor:
    """The row order of one epoch: a pure function of (seed, epoch), so resuming mid-run is exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=g)


class TokenBatches:
    def __init__(self, tokens: np.ndarray, batch_size: int, pad_id: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if tokens.ndim != 2:
            raise ValueError(f"token array must be 2-D (rows, seq_len), got shape {tokens.shape}")
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by the {world_size} ranks")
        self.tokens = tokens
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        n = len(self.tokens)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch`, starting at batch index `start_batch` (for resuming mid-epoch)."""
        n = len(self.tokens)
        order = epoch_permutation(n, self.seed, epoch) if self.shuffle else torch.arange(n)
        order = order.numpy()
        for b in range(start_batch, len(self)):
            rows = order[b * self.batch_size:(b + 1) * self.batch_size]
            shard = -(-len(rows) // self.world_size)
            rows = np.sort(rows[self.rank * shard:(self.rank + 1) * shard])  # sorted: faster memmap reads
            yield self.make_batch(rows)

    def make_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        block = np.asarray(self.tokens[rows])
        real = block != self.pad_id
        width = max(int(real.any(axis=0).nonzero()[0].max(initial=0)) + 1, 1)  # trim trailing all-pad columns
        ids = torch.from_numpy(block[:, :width].astype(np.int64))
        return ids, torch.from_numpy(real[:, :width])
