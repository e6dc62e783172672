"""Batches from token arrays: the step between the cached .npy corpus (data_prep/) and the model.

A token array is (rows, seq_len) of uint16/int32 ids, [PAD]-padded on the right (paper layout) or full
(packed layout). `TokenBatches` yields (input_ids, attention_mask) tensors:
  * the row order is a seeded permutation per epoch, so a run (and a resumed run) sees the same batches;
  * each batch is trimmed to its longest row, so padding costs no compute beyond that row's length;
  * with several ranks (DDP), every global batch is split into contiguous per-rank shards, so the global
    batch, and therefore the result, does not depend on the number of ranks.

Global batch first, shard second: `global_epoch` yields the whole global batch (its rows sorted, trimmed to its
longest row) and `shard` cuts this rank's contiguous rows out of it, keeping the global batch's width. The
pre-training loop masks the *global* batch with the batch's generator and then takes its shard, so the masks,
the shapes and the per-row computation are the same for any number of ranks (pretrain.py). The price: every
rank reads and masks the whole global batch instead of only its 1/world share (measured on our 2-core CI
machine at B = 256, T = 128: ~0.5 ms to read, ~5 ms to mask; on CUDA pretrain.py does this in a background
thread, `prefetch`, overlapping the GPU step). `epoch` yields this rank's shards only.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

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
        """This rank's shards of the batches of `epoch`, from batch index `start_batch` (to resume mid-epoch)."""
        for ids, attn in self.global_epoch(epoch, start_batch):
            yield self.shard(ids, attn)

    def global_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole global batches of `epoch` (the same on every rank), from batch index `start_batch`."""
        n = len(self.tokens)
        order = epoch_permutation(n, self.seed, epoch) if self.shuffle else torch.arange(n)
        order = order.numpy()
        for b in range(start_batch, len(self)):
            rows = np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])  # sorted: faster memmap reads
            yield self.make_batch(rows)

    def shard_slice(self, rows: int) -> slice:
        """This rank's contiguous rows of a global batch of `rows` rows (empty for a short last batch)."""
        per = -(-rows // self.world_size)
        lo = min(self.rank * per, rows)
        return slice(lo, min(lo + per, rows))

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's rows of (B, ...) tensors of one global batch; the width is kept (same shapes on all
        ranks, and BatchNorm in the conv front end sees the same padding as in one process)."""
        if self.world_size == 1:
            return tensors
        sl = self.shard_slice(tensors[0].shape[0])
        return tuple(t[sl] for t in tensors)

    def make_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        block = np.asarray(self.tokens[rows])
        real = block != self.pad_id
        width = max(int(real.any(axis=0).nonzero()[0].max(initial=0)) + 1, 1)  # trim trailing all-pad columns
        ids = torch.from_numpy(block[:, :width].astype(np.int64))
        return ids, torch.from_numpy(real[:, :width])


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Yield the items of `items`, produced by a background thread up to `depth` items ahead.

    For the GPU loop: building, masking and pinning the next batches on the host overlaps the current step
    (torch ops release the GIL). The items are the same, in the same order; an exception in the producer is
    raised here; closing the generator (e.g. `break` out of the loop) stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(_Raised(exc))

    thread = threading.Thread(target=work, name="tinybert-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
