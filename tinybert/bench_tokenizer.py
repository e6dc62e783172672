"""Tokenizer speed on real Wikipedia text: ``python -m tinybert.bench_tokenizer [--data-dir DIR] [--articles N]``.

Reads WikiExtractor articles from ``<data dir>/wikipedia/patcheddistro_enwiki2014_AA.tar.xz`` (streamed, never
unpacked), then encodes them one article at a time with a fresh tokenizer twice: cold (the word -> ids cache
starts empty, so WordPiece runs for every new word) and warm (the same articles again). Reading and
decompressing are not timed. Part of the tokenizer step in the flow: text -> **tokenizer** -> token arrays.
"""

from __future__ import annotations

import argparse
import re
import tarfile
import time

from tinybert.data_dir import dataset_dir
from tinybert.tokenizer import WordPieceTokenizer

ARCHIVE = "patcheddistro_enwiki2014_AA.tar.xz"
_DOC = re.compile(r"<doc [^>]*>\n(.*?)\n</doc>", re.S)


def read_articles(path, limit: int) -> list[str]:
    """The first ``limit`` article bodies (title line included) from a tar.xz of WikiExtractor files."""
    articles: list[str] = []
    with tarfile.open(path, mode="r:xz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            articles.extend(_DOC.findall(text))
            if len(articles) >= limit:
                break
    return articles[:limit]


def time_encode(tok: WordPieceTokenizer, articles: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, tokens). CPU time is the steadier number on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    n_tokens = sum(len(tok.encode(a, add_special_tokens=False)) for a in articles)
    return time.perf_counter() - wall, time.process_time() - cpu, n_tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data directory (default: see tinybert/data_dir.py)")
    parser.add_argument("--articles", type=int, default=10000, help="articles to encode (10000 is about 14 MB)")
    args = parser.parse_args(argv)

    wiki = dataset_dir("wikipedia", args.data_dir, expected=ARCHIVE)
    vocab = dataset_dir("bert_vocab", args.data_dir, expected="vocab.txt") / "vocab.txt"
    articles = read_articles(wiki / ARCHIVE, args.articles)
    megabytes = sum(len(a.encode("utf-8")) for a in articles) / 1e6
    ascii_share = sum(a.isascii() for a in articles) / max(1, len(articles))
    print(f"{len(articles)} articles, {megabytes:.1f} MB UTF-8, {ascii_share:.0%} of them pure ASCII")

    start = time.perf_counter()
    tok = WordPieceTokenizer.from_vocab(vocab)
    tok.encode("é")  # builds the unicode tables once (~0.3 s); timed separately, not part of either pass
    print(f"load vocab + build unicode tables: {time.perf_counter() - start:.2f} s")
    for name in ("cold", "warm"):
        wall, cpu, n_tokens = time_encode(tok, articles)
        print(f"{name}: {n_tokens:,} tokens; wall {wall:.2f} s = {n_tokens / wall:,.0f} tokens/s, "
              f"{megabytes / wall:.1f} MB/s; CPU {cpu:.2f} s = {n_tokens / cpu:,.0f} tokens/s "
              f"({len(tok._chunk_ids):,} chunks and {len(tok._word_ids):,} words cached)")


if __name__ == "__main__":
    main()
