"""CLI: train a WordPiece vocab on the same Wikipedia articles the pre-training corpus is built from.

Where it sits in the flow: raw Wikipedia files -> data_prep/corpus.py `select_articles` (same N, seed and sources
as prepare_wiki/train.py) -> tinybert/wordpiece_trainer.py -> vocab.txt, which tinybert/tokenizer.py then loads to
build the token arrays. A `<out>.meta.json` next to the vocab records how it was made.

    python -m data_prep.train_vocab --wiki-size 40000 --seed 42 --vocab-size 30522 --out runs/vocab40k/vocab.txt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from data_prep.corpus import select_articles
from data_prep.wikipedia import CorpusReadError, ReadStats
from tinybert.data_dir import DatasetNotFound


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m data_prep.train_vocab", description=__doc__.split("\n")[0])
    p.add_argument("--wiki-size", type=int, default=40000, help="number of articles N (as for the corpus)")
    p.add_argument("--seed", type=int, default=42, help="selection seed (as for the corpus)")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--min-frequency", type=int, default=2, help="wordpiece: pairs seen fewer times are not merged (sentencepiece ignores it)")
    p.add_argument("--method", choices=("wordpiece", "sentencepiece"), default="wordpiece")
    p.add_argument("--out", type=Path, required=True, help="vocab.txt to write (a directory gets vocab.txt inside)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--data-dir", type=Path, default=None, help="data directory (default: see tinybert/data_dir.py)")
    p.add_argument("--source", type=Path, nargs="+", default=None,
                   help="article files instead of <data dir>/wikipedia/*.tar.xz (WikiExtractor, .jsonl, .txt)")
    p.add_argument("--allow-fewer", action="store_true", help="take all articles if the sources hold fewer than N")
    p.add_argument("--workers", type=int, default=2, help="processes for word counting")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    out = args.out / "vocab.txt" if args.out.is_dir() else args.out
    if out.exists() and not args.force:
        print(f"error: {out} already exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        train = _trainer(args.method)
        stats = ReadStats()
        texts = select_articles(args.source, args.wiki_size, args.seed, stats, allow_fewer=args.allow_fewer,
                                data_dir=args.data_dir, show_progress=not args.quiet)
        print(f"{stats.summary()}; training on {len(texts):,} (N={args.wiki_size:,}, seed {args.seed})")
        tokenizer = train(texts, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out)
    except (CorpusReadError, DatasetNotFound, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    meta = {"method": args.method, "vocab_size": tokenizer.vocab_size, "requested_vocab_size": args.vocab_size,
            "min_frequency": args.min_frequency, "wiki_size": args.wiki_size, "seed": args.seed,
            "sources": [str(s) for s in args.source] if args.source else "default (<data dir>/wikipedia/*.tar.xz)",
            "articles": len(texts), "read_stats": stats.as_dict(), "vocab_hash": tokenizer.vocab_hash,
            "seconds": round(seconds, 1), "command": " ".join(sys.argv)}
    out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {tokenizer.vocab_size:,} tokens (sha256 {tokenizer.vocab_hash[:12]}) in {seconds:.1f} s")
    return 0


def _trainer(method: str):
    """A function (texts, args) -> tokenizer for the method, from tinybert/wordpiece_trainer.py."""
    try:  # imported late: --help and the overwrite check need no trainer
        from tinybert import wordpiece_trainer as wt
    except ImportError as e:
        raise ValueError(f"cannot import tinybert.wordpiece_trainer ({e})") from e

    if method == "wordpiece":
        def train(texts, args):
            return wt.train_wordpiece(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                      show_progress=not args.quiet, workers=args.workers)
        return train

    def train(texts, args):
        try:
            return wt.train_sentencepiece_wordpiece(texts, vocab_size=args.vocab_size, show_progress=not args.quiet)
        except ImportError as e:
            raise ValueError(f"--method sentencepiece needs the sentencepiece package ({e})") from e
    return train


if __name__ == "__main__":
    sys.exit(main())
