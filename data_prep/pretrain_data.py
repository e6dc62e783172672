"""Everything train.py needs before the model exists: tokenizer, training token array, held-out token array.

Where it sits in the flow: Wikipedia files -> (vocab: given, or trained here and cached) -> data_prep/corpus.py
token arrays (cached) -> this bundle -> tinybert/pretrain.py.

  * Training rows: `wiki_size` articles drawn with `seed` (data_prep/corpus.py, the paper's selection).
  * Held-out rows: the next `eval_articles` articles of the same seeded permutation, so they are disjoint from
    the training articles and do not change which articles are trained on.
  * Vocabulary: a given tokenizer (resume), a given vocab.txt, or a WordPiece vocab trained on the training
    articles, cached in the cache folder under a key of everything that shapes it (sources, N, seed, size).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.corpus import (_source_entries, default_cache_dir, forget_texts, load_or_build_corpus,
                              select_articles)
from data_prep.wikipedia import default_wiki_sources
from tinybert.tokenizer import WordPieceTokenizer

VOCAB_CACHE_VERSION = 1


@dataclass
class PretrainingData:
    tokenizer: WordPieceTokenizer
    train_tokens: np.ndarray   # (rows, seq_len), memory-mapped
    eval_tokens: np.ndarray
    meta: dict                 # provenance: vocab source, both sidecars

    @property
    def tokens_per_epoch(self) -> int:
        return int(self.meta["train"]["counts"]["tokens"])


def load_or_train_vocab(sources, wiki_size: int, seed: int, vocab_size: int, cache_dir,
                        min_frequency: int = 2, show_progress: bool = True) -> tuple[WordPieceTokenizer, dict]:
    """A WordPiece vocab trained on the selected articles, reused from the cache when the inputs match."""
    from tinybert.wordpiece_trainer import train_wordpiece  # only needed on a cache miss path

    entries = _source_entries(sources)
    blob = json.dumps([VOCAB_CACHE_VERSION, entries, wiki_size, seed, vocab_size, min_frequency], sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()
    path = Path(cache_dir) / f"vocab-wp{vocab_size}-{wiki_size}-s{seed}-{key[:12]}.txt"
    if path.is_file():
        return WordPieceTokenizer.from_vocab(path), {"vocab": str(path), "trained": True, "reused": True}
    start = time.perf_counter()
    texts = select_articles(sources, wiki_size, seed, show_progress=show_progress)
    print(f"training a {vocab_size:,}-token WordPiece vocab on {len(texts):,} articles ...")
    tokenizer = train_wordpiece(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                                show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)  # atomic
    seconds = round(time.perf_counter() - start, 1)
    print(f"vocab: {tokenizer.vocab_size:,} tokens in {seconds} s -> {path}")
    return tokenizer, {"vocab": str(path), "trained": True, "reused": False, "seconds": seconds}


def prepare_pretraining_data(*, data_dir=None, tokenizer=None, vocab_path=None, vocab_size: int = 30522,
                             wiki_size: int = 40000, eval_articles: int = 500, seed: int = 42,
                             layout: str = "paper", seq_len: int = 128, cache_dir=None, sources=None,
                             show_progress: bool = True) -> PretrainingData:
    if eval_articles < 1:
        raise ValueError(f"--eval-articles must be >= 1, got {eval_articles}")
    sources = default_wiki_sources(data_dir) if sources is None else [Path(s) for s in sources]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if tokenizer is not None:
        vocab_meta = {"vocab": "from checkpoint"}
    elif vocab_path is not None:
        tokenizer = WordPieceTokenizer.from_vocab(vocab_path)
        vocab_meta = {"vocab": str(vocab_path), "trained": False}
    else:
        tokenizer, vocab_meta = load_or_train_vocab(sources, wiki_size, seed, vocab_size, cache_dir,
                                                    show_progress=show_progress)
    common = dict(seed=seed, layout=layout, seq_len=seq_len, sources=sources, cache_dir=cache_dir,
                  show_progress=show_progress)
    try:
        train, train_meta = load_or_build_corpus(tokenizer, wiki_size, **common)
        held_out, eval_meta = load_or_build_corpus(tokenizer, eval_articles, skip=wiki_size, **common)
    finally:
        forget_texts()  # the texts were read at most once for the vocab and both arrays
    meta = {"vocab": {**vocab_meta, "vocab_hash": tokenizer.vocab_hash, "vocab_size": tokenizer.vocab_size},
            "train": train_meta, "eval": eval_meta}
    return PretrainingData(tokenizer, train, held_out, meta)
