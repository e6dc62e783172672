"""The pre-training corpus: article selection, token-array layouts, and the on-disk cache.

Where it sits in the flow: raw files -> data_prep/wikipedia.py (readers) -> **data_prep/corpus.py** -> token
arrays (`.npy` + `.json` sidecar, cached) -> tinybert/data.py batches -> model.

Selection (as the paper's `wiki.shuffle(seed).select(range(N))`, docs/paper-recipe.md#pre-training): read every
non-empty article of the sources in order, draw a permutation with `numpy.random.default_rng(seed)`, take its first
N indices and keep them in corpus order. So a seed picks the same articles for the same source list, and for one
seed the N=20k set is a subset of the N=40k set, which is a subset of the N=90k set (as with the paper's
shuffle+select).

Layouts (rows of `seq_len` token ids; dtype uint16 when the vocab fits, else int32):
  * `paper`: one row per article, its first seq_len tokens `[CLS] t1 ... [SEP]`, right-padded with `[PAD]`. The
    rest of the article is dropped (the paper's `truncation=True, padding="max_length"`).
  * `packed`: every article's full token stream followed by `[SEP]` (`t1 ... tn [SEP] u1 ... um [SEP] ...`),
    cut into pieces of seq_len-1 tokens; each row is `[CLS]` + one piece. So every row starts with `[CLS]` as in
    the paper layout and BERT, `[SEP]` marks article ends (also mid-row), a row may end mid-article, and there is
    no `[PAD]`. The last partial piece is dropped.

Cache: `<cache_dir>/wiki-<layout>-<N>-s<seed>-<key12>.npy` + `.json`. The key hashes the tokenizer fingerprint,
the source files (path, size, content sha256), N, seed, layout, seq_len and FORMAT_VERSION; a file is reused only when its
sidecar holds the same key. Both files are written to temporary names and moved into place with `os.replace`
(the `.npy` first, the sidecar last), so a crash never leaves a half-written cache and an older cache survives.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.wikipedia import CorpusReadError, ReadStats, default_wiki_sources, iter_articles
from tinybert.atomic import replacing
from tinybert.data_dir import REPO_ROOT

FORMAT_VERSION = 1  # bump when the layouts or the selection change, to invalidate old caches
LAYOUTS = ("paper", "packed")
# The paper layout encodes only as much of each article as it needs (see encode_first_tokens). This Wikipedia has
# about 4.6 characters per token, so a first piece of 5 characters per missing token is usually enough; the
# articles that come out short get a second, small piece. (Measured: 4, 5 and 6 cost about the same.)
PREFIX_CHARS_PER_TOKEN = 5
_SPACE = re.compile("[ \n]")
_CHUNK = 500  # articles per worker task: big enough to amortise pickling, small enough for a smooth progress bar
_MIN_PARALLEL = 4 * _CHUNK  # below this, worker start-up costs more than it saves


# ---------------------------------------------------------------------------------------------------------------
# selection


def select_articles(sources=None, wiki_size: int = 40000, seed: int = 42, stats: ReadStats | None = None, *,
                    allow_fewer: bool = False, data_dir=None, show_progress: bool = False, skip: int = 0) -> list[str]:
    """N article texts drawn uniformly without replacement (see module docstring), in corpus order.

    `sources` defaults to the real WikiExtractor tarballs (`default_wiki_sources(data_dir)`). Fewer than N
    non-empty articles is an error unless `allow_fewer`, which then returns all of them. The vocab trainer uses
    this too, so a vocab can be trained on exactly the articles the corpus is built from.
    `skip` drops the first `skip` articles of the permutation: `skip=N` draws a held-out set disjoint from the
    N training articles (train.py's per-epoch evaluation slice).
    """
    if wiki_size < 1:
        raise ValueError(f"wiki_size must be >= 1, got {wiki_size}")
    stats = stats if stats is not None else ReadStats()
    sources = default_wiki_sources(data_dir) if sources is None else [Path(s) for s in sources]
    texts = read_all_texts(sources, stats, show_progress)
    if len(texts) < skip + wiki_size and not allow_fewer:
        raise CorpusReadError(f"asked for {skip + wiki_size:,} articles but the sources hold only {len(texts):,} non-empty "
                              f"ones ({stats.summary()}); use a smaller --wiki-size or add sources")
    chosen = np.random.default_rng(seed).permutation(len(texts))[skip:skip + wiki_size]
    return [texts[i] for i in np.sort(chosen)]


_texts_memo: dict = {}  # {source fingerprint: (texts, ReadStats)}: the last sources read, see read_all_texts


def read_all_texts(sources, stats: ReadStats, show_progress: bool = False) -> list[str]:
    """Every non-empty article text of `sources`, in corpus order; `stats` gets the read counts.

    The last result is kept in memory (keyed by path, size and content hash of each source) until `forget_texts()`,
    because one train.py start selects from the same sources up to three times (vocab, training rows, held-out
    rows) and each read of the 8 tarballs costs ~12 s of decompression.
    """
    key = json.dumps(_source_entries(sources))
    if key not in _texts_memo:
        read_stats = ReadStats()
        # Read in this process: decompressing is ~70% of the work and shipping 400 MB of text back from worker
        # processes cost more CPU than it saved (measured: 17.8 CPU-s with 2 workers vs 11.3 s in-process).
        articles = iter_articles(sources, read_stats)
        texts = [a.text for a in tqdm(articles, desc="reading", unit="art", disable=not show_progress)]
        _texts_memo.clear()
        _texts_memo[key] = (texts, read_stats)
    texts, read_stats = _texts_memo[key]
    stats.merge(read_stats)
    return texts


def forget_texts() -> None:
    """Drop the in-memory copy of the article texts (hundreds of MB for the full corpus)."""
    _texts_memo.clear()


# ---------------------------------------------------------------------------------------------------------------
# layouts


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def build_token_array(texts: list[str], tokenizer, layout: str, seq_len: int = 128, workers: int = 2,
                      show_progress: bool = False) -> np.ndarray:
    """Encode `texts` into a (rows, seq_len) array in the given layout (see module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 to hold [CLS] and [SEP], got {seq_len}")
    dtype = token_dtype(tokenizer.vocab_size)
    global _shared
    # Forked workers inherit the tokenizer and the texts, so a task is just (start, stop, ...): no text is pickled.
    _shared = (tokenizer, texts)
    tasks = [(i, min(i + _CHUNK, len(texts)), layout, seq_len, dtype) for i in range(0, len(texts), _CHUNK)]
    bar = tqdm(total=len(texts), desc=f"tokenizing ({layout})", unit="art", disable=not show_progress)
    parts = []
    try:
        with _pool(workers, len(texts) >= _MIN_PARALLEL) as pool:
            for part, n in (pool.imap(_encode_chunk, tasks) if pool else map(_encode_chunk, tasks)):
                parts.append(part)
                bar.update(n)
    finally:
        _shared = None
        bar.close()
    if layout == "paper":
        return np.concatenate(parts) if parts else np.zeros((0, seq_len), dtype)
    # packed: one stream of `tokens [SEP]` per article, cut into rows of [CLS] + seq_len-1 stream tokens
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype)
    n_rows = len(stream) // (seq_len - 1)
    rows = np.empty((n_rows, seq_len), dtype)
    rows[:, 0] = tokenizer.cls_id
    rows[:, 1:] = stream[: n_rows * (seq_len - 1)].reshape(n_rows, seq_len - 1)
    return rows


_shared = None  # (tokenizer, texts) while build_token_array runs; forked workers see it too


def _encode_chunk(task) -> tuple[np.ndarray, int]:
    start, stop, layout, seq_len, dtype = task
    tok, texts = _shared
    if layout == "paper":
        rows = np.full((stop - start, seq_len), tok.pad_id, dtype)
        for i in range(start, stop):
            ids = encode_first_tokens(tok, texts[i], seq_len)
            rows[i - start, : len(ids)] = ids
        return rows, stop - start
    stream = []
    for i in range(start, stop):
        stream.extend(tok.encode(texts[i], add_special_tokens=False))
        stream.append(tok.sep_id)
    return np.asarray(stream, dtype), stop - start


def encode_first_tokens(tokenizer, text: str, seq_len: int) -> list[int]:
    """`tokenizer.encode(text, max_length=seq_len)`, but encoding only as much of the text as needed.

    The text is encoded piece by piece, each piece cut at a space or newline. BERT splits on whitespace before
    anything else, so the pieces' tokens, concatenated, are exactly the full text's tokens; we stop as soon as
    there are enough. Each piece is sized from the tokens still missing at PREFIX_CHARS_PER_TOKEN characters each.
    """
    need = seq_len - 2  # content tokens between [CLS] and [SEP]
    ids: list[int] = []
    pos = 0
    while len(ids) < need and pos < len(text):
        end = pos + max(64, (need - len(ids)) * PREFIX_CHARS_PER_TOKEN)
        if end < len(text):
            cut = max(text.rfind(" ", pos, end), text.rfind("\n", pos, end))
            if cut > pos:
                end = cut
            else:  # no space in the piece (one very long "word"): extend it to the next space
                space = _SPACE.search(text, end)
                end = space.start() if space else len(text)
        ids.extend(tokenizer.encode(text[pos:end], add_special_tokens=False))
        pos = end
    return [tokenizer.cls_id, *ids[:need], tokenizer.sep_id]


def array_counts(rows: np.ndarray, tokenizer) -> dict:
    """Row/token counts and the [PAD] and [UNK] fractions, for the sidecar and the CLI summary."""
    n_pad = int(np.count_nonzero(rows == tokenizer.pad_id))
    n_special = n_pad + int(np.count_nonzero((rows == tokenizer.cls_id) | (rows == tokenizer.sep_id)))
    content = rows.size - n_special
    return {
        "rows": int(rows.shape[0]),
        "tokens": int(rows.size - n_pad),  # everything but [PAD]
        "content_tokens": int(content),  # also without [CLS]/[SEP]
        "pad_fraction": n_pad / rows.size if rows.size else 0.0,
        "unk_fraction": int(np.count_nonzero(rows == tokenizer.unk_id)) / content if content else 0.0,
    }


class _NoPool:
    """Stands in for a Pool when running in-process, so callers use one `with` either way."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _pool(workers: int, worth_it: bool):
    if workers <= 1 or not worth_it:
        return _NoPool()
    return multiprocessing.get_context("fork").Pool(workers)


# ---------------------------------------------------------------------------------------------------------------
# cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("TINYBERT_CACHE") or REPO_ROOT / "cache")


# {(path, inode, size, mtime_ns, ctime_ns): sha256}: each source file is hashed once per process. ctime is in the
# key because no tool can set it back: a same-size edit whose mtime was restored is still re-hashed.
_sha256_memo: dict = {}


def _file_sha256(path: Path, st) -> str:
    memo_key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo_key not in _sha256_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _sha256_memo[memo_key] = digest.hexdigest()
    return _sha256_memo[memo_key]


def _source_entries(sources) -> list[dict]:
    """Path, size and content hash of each source file: what the caches are keyed on.

    The content, not the modification time: a data folder that is copied or re-mounted (new mtimes, same bytes)
    must still hit the cache, or every fresh copy re-trains the vocab and re-tokenizes the corpus. Hashing the
    ~110 MB of Wikipedia tarballs takes about a second, once per process.
    """
    entries = []
    for s in sources:
        path = Path(s).resolve()
        try:
            st = path.stat()
            sha256 = _file_sha256(path, st)
        except OSError as e:
            raise CorpusReadError(f"{path}: cannot read ({e.strerror})") from e
        entries.append({"path": str(path), "size": st.st_size, "sha256": sha256})
    return entries


def cache_key(tokenizer, source_entries: list[dict], wiki_size: int, seed: int, layout: str, seq_len: int,
              allow_fewer: bool = False, skip: int = 0) -> str:
    # The fingerprint covers the vocab and the encoding rules; fall back to the vocab hash for other tokenizers.
    fingerprint = getattr(tokenizer, "fingerprint", tokenizer.vocab_hash)
    blob = json.dumps([FORMAT_VERSION, fingerprint, source_entries, wiki_size, seed, layout, seq_len, allow_fewer, skip],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_paths(cache_dir, layout: str, wiki_size: int, seed: int, key: str, skip: int = 0) -> tuple[Path, Path]:
    held_out = f"-skip{skip}" if skip else ""
    stem = Path(cache_dir) / f"wiki-{layout}-{wiki_size}{held_out}-s{seed}-{key[:12]}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def load_or_build_corpus(tokenizer, wiki_size: int, seed: int, layout: str, seq_len: int = 128, sources=None,
                         cache_dir=None, show_progress: bool = True, *, data_dir=None, allow_fewer: bool = False,
                         workers: int = 2, rebuild: bool = False, skip: int = 0) -> tuple[np.ndarray, dict]:
    """The (rows, seq_len) token array, memory-mapped from the cache (built first on a miss), and its sidecar.

    `meta["reused"]` says whether the cache was hit. `rebuild=True` builds even on a hit.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    sources = default_wiki_sources(data_dir) if sources is None else [Path(s) for s in sources]
    entries = _source_entries(sources)
    key = cache_key(tokenizer, entries, wiki_size, seed, layout, seq_len, allow_fewer, skip)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npy_path, json_path = cache_paths(cache_dir, layout, wiki_size, seed, key, skip)

    if not rebuild:
        hit = _load_cached(npy_path, json_path, key)
        if hit is not None:
            return hit

    start = time.perf_counter()
    stats = ReadStats()
    texts = select_articles(sources, wiki_size, seed, stats, allow_fewer=allow_fewer, show_progress=show_progress,
                            skip=skip)
    read_seconds = time.perf_counter() - start
    rows = build_token_array(texts, tokenizer, layout, seq_len, workers=workers, show_progress=show_progress)
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "vocab_hash": tokenizer.vocab_hash,
        "tokenizer_fingerprint": getattr(tokenizer, "fingerprint", None),
        "vocab_size": tokenizer.vocab_size,
        "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "cls": tokenizer.cls_id,
                        "sep": tokenizer.sep_id, "mask": tokenizer.mask_id},
        "sources": entries,
        "wiki_size": wiki_size,
        "seed": seed,
        "skip": skip,
        "layout": layout,
        "seq_len": seq_len,
        "dtype": rows.dtype.name,
        "shape": list(rows.shape),
        "counts": {"read": stats.read, "skipped_empty": stats.skipped_empty,
                   "skipped_malformed": stats.skipped_malformed, "kept": stats.kept, "selected": len(texts),
                   **array_counts(rows, tokenizer)},
        "kept_per_source": stats.kept_per_source,
        "problems": stats.problems,
        "read_seconds": round(read_seconds, 2),
        "build_seconds": round(time.perf_counter() - start, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_atomic(rows, meta, npy_path, json_path)
    return np.load(npy_path, mmap_mode="r"), {**meta, "reused": False, "path": str(npy_path)}


def _load_cached(npy_path: Path, json_path: Path, key: str):
    """(array, meta) when both files exist and the sidecar holds `key` and matches the array; else None."""
    if not (npy_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        rows = np.load(npy_path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # unreadable: rebuild over it
    if meta.get("key") != key or list(rows.shape) != meta.get("shape") or rows.dtype.name != meta.get("dtype"):
        return None
    return rows, {**meta, "reused": True, "path": str(npy_path)}


def _write_atomic(rows: np.ndarray, meta: dict, npy_path: Path, json_path: Path) -> None:
    """Write both files under temporary names, then move them into place: the .npy first, the sidecar last."""
    # the inner block ends first: the .npy is in place before the sidecar that vouches for it
    with replacing(json_path) as tmp_json, replacing(npy_path) as tmp_npy:
        with open(tmp_npy, "wb") as f:
            np.save(f, rows)
        _write_sidecar(tmp_json, meta)


def _write_sidecar(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta, indent=2) + "\n")
