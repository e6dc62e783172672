"""CLI: build (or find in the cache) the Wikipedia pre-training token array and print what it holds.

Where it sits in the flow: raw Wikipedia files -> **this command** (data_prep/corpus.py does the work) -> cached
`.npy` + `.json` sidecar -> tinybert/data.py batches. train.py calls the same `load_or_build_corpus`, so running
this first only warms the cache.

    python -m data_prep.prepare_wiki --wiki-size 90000 --seed 42 --layout paper
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from data_prep.corpus import LAYOUTS, default_cache_dir, load_or_build_corpus
from data_prep.wikipedia import CorpusReadError
from tinybert.data_dir import DatasetNotFound, dataset_dir


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.prepare_wiki", description=__doc__.split("\n")[0])
    p.add_argument("--wiki-size", type=int, default=40000, help="number of articles N (paper: 20000/40000/90000)")
    p.add_argument("--seed", type=int, default=42, help="selection seed (paper: 42)")
    p.add_argument("--layout", choices=LAYOUTS, default="paper",
                   help="paper: first seq_len tokens of each article, padded; packed: full articles cut into rows")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=Path, default=None, help="vocab.txt (default: <data dir>/bert_vocab/vocab.txt)")
    p.add_argument("--data-dir", type=Path, default=None, help="data directory (default: see tinybert/data_dir.py)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where the arrays go (default: $TINYBERT_CACHE or {default_cache_dir()})")
    p.add_argument("--source", type=Path, nargs="+", default=None,
                   help="article files instead of <data dir>/wikipedia/*.tar.xz (WikiExtractor, .jsonl, .txt)")
    p.add_argument("--allow-fewer", action="store_true", help="take all articles if the sources hold fewer than N")
    p.add_argument("--workers", type=int, default=2, help="processes for reading and tokenizing")
    p.add_argument("--rebuild", action="store_true", help="build even if a matching cache exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    from tinybert.tokenizer import WordPieceTokenizer  # here, so --help works without the tokenizer module

    start = time.perf_counter()
    try:
        vocab = args.vocab or dataset_dir("bert_vocab", args.data_dir, expected="vocab.txt") / "vocab.txt"
        if not Path(vocab).is_file():
            raise DatasetNotFound(f"vocab file {vocab} does not exist; pass --vocab PATH/vocab.txt")
        tokenizer = WordPieceTokenizer.from_vocab(vocab)
        rows, meta = load_or_build_corpus(
            tokenizer, args.wiki_size, args.seed, args.layout, args.seq_len, sources=args.source,
            cache_dir=args.cache_dir, show_progress=not args.quiet, data_dir=args.data_dir,
            allow_fewer=args.allow_fewer, workers=args.workers, rebuild=args.rebuild)
    except (CorpusReadError, DatasetNotFound, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(meta, vocab, time.perf_counter() - start))
    return 0


def summary(meta: dict, vocab, seconds: float) -> str:
    c = meta["counts"]
    state = "reused from cache" if meta["reused"] else f"built in {meta['build_seconds']:.1f} s " \
                                                       f"(reading + selection {meta['read_seconds']:.1f} s)"
    return "\n".join([
        f"articles: read {c['read']:,}, skipped {c['skipped_empty']:,} empty + {c['skipped_malformed']:,} malformed, "
        f"kept {c['kept']:,}, selected {c['selected']:,} (N={meta['wiki_size']:,}, seed {meta['seed']})",
        f"layout {meta['layout']}, seq_len {meta['seq_len']}: {c['rows']:,} rows, {c['tokens']:,} tokens "
        f"({c['content_tokens']:,} without [CLS]/[SEP]), dtype {meta['dtype']}",
        f"pad fraction {c['pad_fraction']:.4f}, unk fraction {c['unk_fraction']:.5f} (of content tokens)",
        f"vocab {vocab} (sha256 {meta['vocab_hash'][:12]}, {meta['vocab_size']:,} tokens)",
        f"{state}; total {seconds:.1f} s",
        f"cache: {meta['path']}",
    ])


if __name__ == "__main__":
    sys.exit(main())
