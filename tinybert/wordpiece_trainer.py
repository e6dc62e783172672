"""Train a BERT-style WordPiece vocabulary (vocab.txt) from raw text.

Where it sits: raw text -> [this file: word counts -> vocab] -> tokenizer.py (greedy longest-match encoding)
-> token arrays on disk -> batches -> model.

Two steps:

1. ``count_words``: run the BERT BasicTokenizer (``tokenizer.basic_tokenize``) over the corpus once and count the
   resulting words. The corpus is never looked at again.
2. ``train_wordpiece``: learn subword pieces on the (word, count) table.

Scoring choice. Google never published its WordPiece trainer (ANCHORS §3.3a). The default, ``score="count"``, is what
Hugging Face ``tokenizers``' WordPieceTrainer does: BPE where non-initial pieces carry the ``##`` prefix, each step
merging the most frequent adjacent pair. We default to it because it is the trainer behind most BERT-family vocabs
people use today, it is fully specified by HF's code, and it is fast with incremental counts. Ties go to the
lexicographically smaller (left, right) piece strings (HF breaks them by internal ids instead).
``score="likelihood"`` merges the pair maximising count(ab) / (count(a) * count(b)), the HF course's description of
WordPiece; it needs symbol counts too and re-scores every pair touching a merged symbol, so it is ~4x slower. It
is also a much worse vocab on Wikipedia: the score is pointwise mutual information, which favours pairs of rare
symbols, so the vocab fills with Greek/Cyrillic fragments and numbers (a 30,522 vocab from 50 MB gives 3.26 held-out
tokens per word against 1.105 for "count"; raising min_frequency helps only partly). It is kept for comparison.
Either way the merges are thrown away: encoding is greedy longest-match (tokenizer.py), not replaying merges.

Vocab order, as BERT's: [PAD]=0 [UNK] [CLS] [SEP] [MASK], then every alphabet character in word-initial form, then
the same characters in ``##`` form, then learned pieces in the order they were merged. Because every alphabet
character is there in both forms, every training word made of alphabet characters encodes without [UNK].

Alphabet (``limit_alphabet``): only the most frequent characters are kept (by occurrences, weighted by word count).
Words containing any other character are left out of training altogether; they will encode to [UNK] (HF instead
deletes the character and trains on the rest of the word). Words longer
than ``max_chars_per_word`` are left out too, since the encoder turns them into [UNK] whatever the vocab holds.

Speed (tinybert/bench_trainer.py): a 30,522 vocab from 50 MB of Wikipedia takes ~12 s of CPU on one core, about
4 s counting words and 8 s merging. Merging is fast because words are strings of symbol ids, so str.find/str.replace
scan them in C, and each merge updates only the pairs next to its merge sites in the words that hold the pair.
``tinybert/wordpiece_trainer_reference.py`` is the same merge loop written naively (recount every pair before each
merge; no ``limit_alphabet``, no word-length cap): read it first. ``tests/test_wordpiece_trainer.py`` checks that
both give the same vocab.

``train_sentencepiece_wordpiece`` is an alternative learner: SentencePiece (BPE or unigram) on BasicTokenizer
output, its pieces mapped to WordPiece form (see that function).
"""

from __future__ import annotations

import collections
import heapq
import io
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

from tinybert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize

PREFIX = "##"  # marks a piece that continues a word

# -----------------------------------------------------------------------------
# Step 1: counting words


def _iter_items(texts_or_paths):
    """Yield text from each item: ``str`` items are texts, path-like items are files read line by line."""
    if isinstance(texts_or_paths, (str, os.PathLike)):
        texts_or_paths = [texts_or_paths]  # one text or one file, not an iterable of characters
    for item in texts_or_paths:
        if isinstance(item, str):
            yield item
        elif isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"training text file not found: {path}")
            with open(path, encoding="utf-8") as f:
                yield from f
        else:
            raise TypeError(f"expected str texts or pathlib.Path files, got {type(item).__name__}")


# BasicTokenizer deletes control characters, then splits on what str.split() splits on. Five of those split
# characters are themselves control characters (so deleted first, joining their neighbours); take them out before
# splitting. Wikipedia has none, so this is a no-op search there.
_CONTROL_SPACE = re.compile("[\x0b\x0c\x1c-\x1f\x85]")


def _whitespace_split(text: str) -> list[str]:
    if _CONTROL_SPACE.search(text) is not None:
        text = _CONTROL_SPACE.sub("", text)
    return text.split()


def _count_block(texts) -> collections.Counter:
    """Word counts of an iterable of texts (see count_words)."""
    chunks = collections.Counter()
    for text in texts:
        chunks.update(_whitespace_split(text))
    words = collections.Counter()
    for chunk, n in chunks.items():
        for word in basic_tokenize(chunk):
            words[word] += n
    return words


def _blocks(texts, block_chars=8_000_000):
    """Group texts into lists of about block_chars characters: the unit of work for one process."""
    block, size = [], 0
    for text in texts:
        block.append(text)
        size += len(text)
        if size >= block_chars:
            yield block
            block, size = [], 0
    if block:
        yield block


def count_words(texts_or_paths, workers: int = 1, show_progress: bool = False) -> collections.Counter:
    """Counter of BasicTokenizer words over a corpus: the sum of Counter(basic_tokenize(t)) over all texts.

    Speed: BasicTokenizer never joins or splits across whitespace (Google's code applies every rule per
    whitespace-split token; the tests check that this equality holds for our basic_tokenize), so we split on
    whitespace and count chunks in C, then run basic_tokenize once per *distinct* chunk: 0.5M calls for 50 MB of
    Wikipedia instead of tokenizing 8.5M chunks.
    ``workers > 1`` counts blocks of ~8M characters in separate processes; it pays off only on idle cores and
    larger corpora, since each block re-tokenizes its own distinct chunks and the counts must be sent back.
    """
    t0 = time.time()
    texts = _iter_items(texts_or_paths)
    if workers <= 1:
        words = _count_block(texts)
    else:
        words = collections.Counter()
        with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
            for block_counts in pool.imap_unordered(_count_block, _blocks(texts)):
                words.update(block_counts)
    if show_progress:
        print(f"count_words: {sum(words.values()):,} words ({len(words):,} distinct) "
              f"in {time.time() - t0:.1f}s", file=sys.stderr)
    return words


# -----------------------------------------------------------------------------
# Step 2: learning pieces on the (word, count) table


def _char_counts(word_counts) -> collections.Counter:
    """Occurrences of each character, weighted by word count."""
    by_count = collections.defaultdict(list)  # words sharing a count are counted in one C-level Counter call
    for word, n in word_counts.items():
        by_count[n].append(word)
    char_counts = collections.Counter()
    for n, words in by_count.items():
        for ch, k in collections.Counter("".join(words)).items():
            char_counts[ch] += k * n
    return char_counts


def _base_vocab(char_counts, limit_alphabet, vocab_size) -> list[str]:
    """Specials, then the alphabet (the limit_alphabet most frequent characters, sorted), then its ## forms."""
    ranked = sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))
    alphabet = sorted(ranked if limit_alphabet is None else ranked[:limit_alphabet])
    vocab = list(SPECIAL_TOKENS) + alphabet + [PREFIX + ch for ch in alphabet]
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size={vocab_size} is too small: {len(SPECIAL_TOKENS)} special tokens + 2 x "
                         f"{len(alphabet)} alphabet characters (word-initial and ## forms) = {len(vocab)}; "
                         "raise vocab_size or lower limit_alphabet")
    return vocab


def train_wordpiece(texts_or_paths=(), vocab_size: int = 30522, min_frequency: int = 2,
                    limit_alphabet: int | None = 1000, score: str = "count", show_progress: bool = True,
                    word_counts=None, workers: int = 1, max_chars_per_word: int = 100) -> WordPieceTokenizer:
    """Learn a WordPiece vocab of exactly ``vocab_size`` entries (fewer only if no pair occurs ``min_frequency`` times).

    ``word_counts`` (a word -> count mapping, e.g. from ``count_words``) skips reading ``texts_or_paths``.
    """
    if score not in ("count", "likelihood"):
        raise ValueError(f"score must be 'count' or 'likelihood', got {score!r}")
    t0 = time.time()
    if word_counts is None:
        word_counts = count_words(texts_or_paths, workers=workers, show_progress=show_progress)
    word_counts = {w: n for w, n in word_counts.items() if 0 < len(w) <= max_chars_per_word and n > 0}
    if not word_counts:
        raise ValueError("no words to train on: the corpus is empty (or every word is longer than "
                         f"max_chars_per_word={max_chars_per_word})")

    vocab = _base_vocab(_char_counts(word_counts), limit_alphabet, vocab_size)
    alphabet = [tok for tok in vocab[len(SPECIAL_TOKENS):] if not tok.startswith(PREFIX)]
    token_id = {tok: i for i, tok in enumerate(vocab)}

    # Each distinct word becomes a string of symbol ids, one character chr(id) per symbol: the first character of the
    # word in initial form, the rest in ## form. Strings let str.find/str.replace do the merge scans in C.
    initial = {ord(ch): chr(token_id[ch]) for ch in alphabet}
    continuation = {ord(ch): chr(token_id[PREFIX + ch]) for ch in alphabet}
    allowed = set(alphabet)
    words, counts = [], []
    for word, n in word_counts.items():
        if allowed.issuperset(word):  # words with characters outside the alphabet are dropped (-> [UNK])
            words.append(word[0].translate(initial) + word[1:].translate(continuation))
            counts.append(n)
    merges = _merge(words, counts, vocab, token_id, vocab_size, min_frequency, score, show_progress)
    if show_progress:
        print(f"train_wordpiece: {merges:,} merges on {len(words):,} words -> vocab {len(vocab):,} "
              f"in {time.time() - t0:.1f}s", file=sys.stderr)
    return WordPieceTokenizer(vocab, max_chars_per_word=max_chars_per_word)


def _merge(words, counts, vocab, token_id, vocab_size, min_frequency, score, show_progress):
    """Merge the best adjacent pair until the vocab is full. Mutates words, vocab and token_id; returns #merges.

    Bookkeeping (as HF tokenizers' BPE trainer): pair counts weighted by word counts, pair -> indices of words that
    (may) contain it (``_count_pairs``), and a lazy max-heap whose entries are checked against the live score when
    popped. A pair is the 2-character string of its two symbols (see train_wordpiece), and a merge only touches the
    words that hold it, and in them only the pairs next to each merge site (``_merge_pair``).
    """
    pair_counts, where = _count_pairs(words, counts)
    likelihood = score == "likelihood"
    min_count = max(min_frequency, 1)  # a pair that no longer occurs is never merged, whatever min_frequency says
    if likelihood:
        symbol_counts, pairs_of = _count_symbols(words, counts, pair_counts)

    def priority(pair):
        # heapq is a min-heap: negate the score; ties go to the lexicographically smaller (left, right) strings.
        s = pair_counts.get(pair, 0)
        if likelihood:
            s /= symbol_counts[pair[0]] * symbol_counts[pair[1]]
        return (-s, vocab[ord(pair[0])], vocab[ord(pair[1])], pair)

    heap = [priority(p) for p in pair_counts]
    heapq.heapify(heap)
    n_merges, t0 = 0, time.time()
    while len(vocab) < vocab_size and heap:
        top = heapq.heappop(heap)
        pair = top[3]
        n = pair_counts.get(pair, 0)
        if n < min_count:
            if not likelihood and n == -top[0]:
                break  # the most frequent pair is too rare: nothing left worth merging
            continue  # (stale, or under likelihood a rare pair out-scoring frequent ones): drop it, go on
        current = priority(pair)
        if current != top:  # stale entry: re-queue at its live score
            heapq.heappush(heap, current)
            continue

        a, b = pair
        c = chr(_add_piece(vocab[ord(a)] + vocab[ord(b)][len(PREFIX):], vocab, token_id))
        n_merges += 1
        changed, merged = _merge_pair(pair, c, words, counts, pair_counts, where)
        del pair_counts[pair]
        # Every other pair's count only fell, so its heap entry is at worst stale-high and the pop-time check catches
        # it. Under the likelihood score, pairs touching a or b rise too (smaller denominator): re-queue them.
        if likelihood:
            symbol_counts[a] -= merged
            symbol_counts[b] -= merged
            symbol_counts[c] += merged
            _add_rescored_pairs(changed, a, b, pairs_of, pair_counts, min_count)
        for p in changed:
            heapq.heappush(heap, priority(p))

        if show_progress and n_merges % 2000 == 0:
            print(f"  merges {n_merges:,}, vocab {len(vocab):,}/{vocab_size:,}, "
                  f"{time.time() - t0:.1f}s", file=sys.stderr)
    return n_merges


def _count_pairs(words, counts):
    """Adjacent-pair counts weighted by word count, and pair -> indices of the words holding it."""
    pair_counts = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for i, (w, n) in enumerate(zip(words, counts)):
        for j in range(len(w) - 1):
            pair = w[j:j + 2]
            pair_counts[pair] += n
            where[pair].add(i)
    return pair_counts, where


def _count_symbols(words, counts, pair_counts):
    """For the likelihood score: symbol counts weighted by word count, and symbol -> the pairs holding it."""
    symbol_counts = collections.Counter()
    for w, n in zip(words, counts):
        for sym in w:
            symbol_counts[sym] += n
    pairs_of = collections.defaultdict(set)  # symbol -> pairs holding it, to re-score when its count drops
    for pair in pair_counts:
        pairs_of[pair[0]].add(pair)
        pairs_of[pair[1]].add(pair)
    return symbol_counts, pairs_of


def _add_piece(new_token, vocab, token_id) -> int:
    """The id of new_token, appended to vocab first if it is new."""
    new = token_id.get(new_token)
    if new is None:  # two different pairs can spell the same piece ("ab"+"##c", "a"+"##bc"); reuse its id
        new = token_id[new_token] = len(vocab)
        vocab.append(new_token)
    return new


def _merge_pair(pair, c, words, counts, pair_counts, where):
    """Replace every occurrence of pair (symbols a, b) by the symbol c in the words that hold it, updating the
    counts and the index of the pairs next to each merge site (the count of pair itself is left to the caller).

    Returns the pairs holding c (the only ones whose counts rose) and the number of merge sites weighted by word
    count (by how much the counts of a and b fell and the count of c rose).
    """
    a, b = pair
    changed, merged = set(), 0
    for i in where.pop(pair, ()):
        w = words[i]
        j = w.find(pair)
        if j < 0:
            continue  # stale index entry: an earlier merge already consumed this word's a, b
        n, end, sites, prev = counts[i], len(w) - 2, 0, -3
        # Visit the merge sites left to right, as str.replace will merge them. Around a site at j, the pairs
        # (x, a) and (b, y) become (x, new) and (new, y); two adjacent sites make one (new, new) between them.
        while j >= 0:
            nxt = w.find(pair, j + 2)
            if j > 0:
                if prev == j - 2:
                    p = c + c  # (b, a) between the sites was already taken off by the previous site
                else:
                    pair_counts[w[j - 1] + a] -= n
                    p = w[j - 1] + c
                pair_counts[p] += n
                where[p].add(i)
                changed.add(p)
            if j < end:
                pair_counts[b + w[j + 2]] -= n
                if nxt != j + 2:
                    p = c + w[j + 2]
                    pair_counts[p] += n
                    where[p].add(i)
                    changed.add(p)
            prev, j, sites = j, nxt, sites + 1
        words[i] = w.replace(pair, c)
        merged += sites * n
    return changed, merged


def _add_rescored_pairs(changed, a, b, pairs_of, pair_counts, min_count) -> None:
    """Likelihood score: index the new pairs in `changed` by symbol, forget dead pairs of a and b, and add to
    `changed` the live pairs holding a or b (their scores rose with the counts of a and b falling)."""
    for p in changed:
        pairs_of[p[0]].add(p)
        pairs_of[p[1]].add(p)
    for sym in (a, b):
        pairs_of[sym] = {p for p in pairs_of[sym] if pair_counts.get(p, 0) > 0}  # forget dead pairs
        changed.update(p for p in pairs_of[sym] if pair_counts[p] >= min_count)


# -----------------------------------------------------------------------------
# Alternative learner: SentencePiece, converted to WordPiece form


def train_sentencepiece_wordpiece(texts_or_paths, vocab_size: int = 30522, model_type: str = "bpe",
                                  limit_alphabet: int | None = 1000, show_progress: bool = True,
                                  max_chars_per_word: int = 100) -> WordPieceTokenizer:
    """Learn pieces with SentencePiece and return them as a WordPiece vocab (ANCHORS §3.3e).

    SentencePiece sees BasicTokenizer output joined by spaces, with ``split_by_whitespace`` so no piece crosses a
    word, identity normalisation (BasicTokenizer already normalised), character_coverage 1.0, no byte fallback.
    Conversion: ``▁x`` -> ``x`` (word-initial), any other piece ``y`` -> ``##y``, the bare ``▁`` is dropped; then, as
    in ``train_wordpiece``, specials first and every alphabet character in both forms, so nothing seen in training
    encodes to [UNK]. SentencePiece's scores and merges are not reused: our greedy longest-match encoder is.
    The result is truncated to ``vocab_size`` (least useful pieces last) and may come out a little smaller.
    """
    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    char_counts = collections.Counter()
    cache = {}

    def sentences():
        # Memoised per whitespace chunk, as in count_words: basic_tokenize runs once per distinct chunk.
        for text in _iter_items(texts_or_paths):
            words = []
            for chunk in _whitespace_split(text):
                ws = cache.get(chunk)
                if ws is None:
                    ws = cache[chunk] = basic_tokenize(chunk)
                words.extend(ws)
            for start in range(0, len(words), 256):  # short sentences: SentencePiece skips over-long ones
                line = " ".join(words[start:start + 256])
                char_counts.update(line.replace(" ", ""))
                yield line

    n_special = len(SPECIAL_TOKENS)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, model_type=model_type,
            vocab_size=max(vocab_size - n_special, 8), hard_vocab_limit=False, character_coverage=1.0,
            byte_fallback=False, split_by_whitespace=True, normalization_rule_name="identity",
            num_threads=os.cpu_count() or 1,
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=0 if show_progress else 2)
    except RuntimeError as e:
        if not char_counts:
            raise ValueError("no words to train on: the corpus is empty") from e
        raise
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_unknown(i) or sp.is_control(i))]
    vocab = _sentencepiece_to_wordpiece(pieces, _base_vocab(char_counts, limit_alphabet, vocab_size), vocab_size)
    return WordPieceTokenizer(vocab, max_chars_per_word=max_chars_per_word)


def _sentencepiece_to_wordpiece(pieces, base_vocab, vocab_size) -> list[str]:
    """Append SentencePiece pieces, in their order, to base_vocab in WordPiece form, up to vocab_size entries.

    ``▁x`` -> ``x``, ``y`` -> ``##y``; the bare ``▁``, pieces already present and pieces with characters outside the
    alphabet (which base_vocab holds as single characters) are skipped.
    """
    vocab = list(base_vocab)
    seen = set(vocab)
    alphabet = {tok for tok in vocab if len(tok) == 1}
    for piece in pieces:
        if len(vocab) >= vocab_size:
            break
        word = piece.lstrip("▁")
        token = word if piece.startswith("▁") else PREFIX + word
        if word and token not in seen and alphabet.issuperset(word):
            seen.add(token)
            vocab.append(token)
    return vocab
