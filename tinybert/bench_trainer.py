"""Benchmark the WordPiece trainer on real Wikipedia text.

Where it sits: a check on the first step of text -> tokenizer -> token arrays; it writes nothing.

    python -m tinybert.bench_trainer [--data-dir DIR] [--mb 50] [--vocab-size 30522] [--workers 2]

Reads about ``--mb`` MB of article text from ``<data dir>/wikipedia/*.tar.xz`` (WikiExtractor format), counts words,
trains, and prints the sizes and timings, then tokens per word (and the [UNK] rate) on the next ~1 MB of articles,
which were not trained on, next to bert-base-uncased's vocab (``<data dir>/bert_vocab/vocab.txt``) when present.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import time

from tinybert.data_dir import dataset_dir
from tinybert.tokenizer import WordPieceTokenizer
from tinybert.wordpiece_trainer import count_words, train_wordpiece

DOC = re.compile(r'<doc id="(\d+)" url="([^"]*)" title="([^"]*)">\n(.*?)\n</doc>', re.S)


def iter_article_texts(wiki_dir):
    """Article bodies from every WikiExtractor tarball in the folder, in file order (a small stand-in for
    data_prep/wikipedia.py, so the benchmark depends on nothing but the tarballs)."""
    tarballs = sorted(wiki_dir.glob("*.tar.xz"))
    if not tarballs:
        raise FileNotFoundError(f"no *.tar.xz WikiExtractor tarballs in {wiki_dir}")
    for path in tarballs:
        with tarfile.open(path, "r:xz") as tar:
            for member in tar:
                if member.isfile():
                    for doc in DOC.finditer(tar.extractfile(member).read().decode("utf-8")):
                        yield doc.group(4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--mb", type=float, default=50.0, help="MB of UTF-8 article text to train on")
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--workers", type=int, default=1, help="count_words processes")
    ap.add_argument("--score", default="count", choices=["count", "likelihood"])
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of training")
    args = ap.parse_args(argv)

    t0 = time.time()
    train, held_out, n_bytes, n_held = [], [], 0, 0
    wiki_dir = dataset_dir("wikipedia", args.data_dir, expected="*.tar.xz WikiExtractor files")
    for text in iter_article_texts(wiki_dir):
        size = len(text.encode("utf-8"))
        if n_bytes < args.mb * 1e6:
            train.append(text)
            n_bytes += size
        else:
            held_out.append(text)
            n_held += size
            if n_held >= 1e6:
                break
    t_read = time.time() - t0
    print(f"read          {n_bytes / 1e6:.1f} MB ({len(train):,} articles) in {t_read:.1f}s")

    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    # Wall time is what the target is about; CPU time of this process shows how much of it was waiting for a
    # busy machine (with --workers > 1 the workers' CPU is not in it).
    t0, c0 = time.time(), time.process_time()
    counts = count_words(train, workers=args.workers)
    t_count, c_count = time.time() - t0, time.process_time() - c0
    print(f"count         {t_count:.1f}s ({c_count:.1f}s CPU): {sum(counts.values()):,} words, {len(counts):,} unique")
    t0, c0 = time.time(), time.process_time()
    tok = train_wordpiece(word_counts=counts, vocab_size=args.vocab_size, score=args.score, show_progress=False)
    t_merge, c_merge = time.time() - t0, time.process_time() - c0
    if profiler:
        profiler.disable()
    print(f"merge         {t_merge:.1f}s ({c_merge:.1f}s CPU)")
    print(f"total         {t_count + t_merge:.1f}s ({c_count + c_merge:.1f}s CPU) (count + merge; reading the "
          "tarballs not included)")
    print(f"vocab size    {tok.vocab_size:,}")

    n_words = sum(count_words(held_out).values())
    compare = [("ours", tok)]
    bert_vocab = wiki_dir.parent / "bert_vocab" / "vocab.txt"  # for comparison, when the data dir has it
    if bert_vocab.is_file():
        compare.append(("bert-base-uncased", WordPieceTokenizer.from_vocab(bert_vocab)))
    for name, t in compare:
        ids = t.encode("\n".join(held_out), add_special_tokens=False)
        print(f"held-out      {n_held / 1e6:.1f} MB, {name} vocab: {len(ids) / n_words:.3f} tokens/word, "
              f"{ids.count(t.unk_id) / len(ids):.4%} [UNK]")
    if profiler:
        import pstats
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
