"""BERT's uncased tokenizer: text normalisation, WordPiece encode/decode and vocab.txt I/O.

Where it sits: text -> **tokenizer** -> token arrays (data_prep/) -> batches (data.py) -> model.

Two stages, exactly as google-research/bert ``tokenization.py`` with ``do_lower_case=True``:

1. ``basic_tokenize``: drop U+0000, U+FFFD and control characters (Cc/Cf except \\t \\n \\r), treat whitespace
   (space, \\t, \\n, \\r, Zs) as a separator, put every CJK ideograph in its own token, lowercase, NFD and drop
   accents (Mn), and split every punctuation character (ASCII 33-47, 58-64, 91-96, 123-126, or category P*) into
   its own token.
2. ``WordPieceTokenizer.word_to_ids``: greedy longest-match-first WordPiece with ``##`` continuations. A word longer
   than ``max_chars_per_word`` or with any piece that has no match becomes ONE ``[UNK]``.

Choices worth knowing:

* ``max_chars_per_word`` defaults to 100, the value in Hugging Face's bert-base-uncased tokenizer (Google's original
  code uses 200). Words of 101-200 characters encode differently between the two, so the cap is part of
  ``WordPieceTokenizer.fingerprint``.
* Special-token strings in raw text get no special treatment, as in Google's code: "[MASK]" in a document becomes
  ``[``, ``mask``, ``]``. Only ``encode(add_special_tokens=True)`` adds ``[CLS]``/``[SEP]``.
* Like Google's code, the word split is Python's ``str.split()``, which also splits on U+2028/U+2029 (these are
  neither control nor BERT whitespace, so cleaning keeps them).
* Character classes come from Python's ``unicodedata`` (Unicode 14 for Python 3.11), like Google's code. The Unicode
  version is part of ``fingerprint`` too.
* ``decode(skip_special_tokens=True)`` drops [PAD], [CLS] and [SEP] but keeps [UNK] and [MASK] (each stands for a
  word); Hugging Face drops all five.

Speed (>1 M tokens/s on Wikipedia, see ``python -m tinybert.bench_tokenizer``): no Python loop per character.
The rules run on whole texts with C-level string methods and precompiled regexes: a short path for pure-ASCII text,
and regexes over character classes built once from ``unicodedata`` for the rest. Both must agree with the
character-by-character reference in ``tinybert/tokenizer_reference.py`` (read it first; ``tests/test_tokenizer.py``
checks the two against each other). ``encode`` goes further: once control characters are gone, Google's code
handles each whitespace-separated chunk on its own, so it caches chunk -> ids ("world," -> [2088, 1010]) and a
warm cache encodes a text with one ``str.split()`` and a dict lookup per chunk.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import sys
import unicodedata
from pathlib import Path

from .atomic import write_bytes_atomic

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# HF's value for bert-base-uncased; Google's original WordpieceTokenizer uses 200. A constructor argument.
DEFAULT_MAX_CHARS_PER_WORD = 100
# Entries each of the chunk -> ids and word -> ids caches hold before being cleared. Word frequencies are Zipfian,
# so the frequent ones are back within a few documents; at ~200 bytes an entry, the worst case is ~200 MB in all.
DEFAULT_CACHE_SIZE = 500_000
# Bump when a change to this file changes encodings, so caches keyed on `fingerprint` are invalidated.
ALGORITHM_VERSION = 1

CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)

# ---------------------------------------------------------------------------------------------------------------
# Basic tokenizer

# After removing these, an ASCII string holds only whitespace, [a-z0-9] (once lowercased) and punctuation, so one
# small regex finds the tokens. \x0b, \x0c and \x1c-\x1f are control characters to BERT, not whitespace: they
# must be deleted (joining their neighbours), never split on.
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_WHITESPACE = str.maketrans("\t\n\r", "   ")
_ASCII_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def _char_class(ranges) -> str:
    """A regex character class body for (lo, hi) code point ranges, merging ranges that touch."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in merged)


class _Regexes:
    """The compiled regexes of the non-ASCII path, for one alphabet (see _UnicodeRegexes)."""

    def __init__(self, control, whitespace, marks, punct, keep_astral: bool):
        def char_class(ranges):
            return _char_class(r for r in ranges if keep_astral or r[0] < 0x10000)

        self.control = re.compile(f"[{char_class(control)}]")
        self.whitespace = re.compile(f"[{char_class(whitespace)}]")
        self.marks = re.compile(f"[{char_class(marks)}]")
        self.cjk = re.compile(f"[{char_class(CJK_RANGES)}]")
        # A punctuation char or CJK ideograph is a token on its own; anything else runs until whitespace or one of
        # those. \s is str.isspace(), the same set str.split() uses in Google's code.
        single = char_class(punct + list(CJK_RANGES))
        self.token = re.compile(f"[{single}]|[^\\s{single}]+")


class _UnicodeRegexes:
    """Regexes over character classes built once from unicodedata (~0.3 s, so only on first non-ASCII text).

    Python's re compiles a class of BMP code points to a bitmap, but appends code points above U+FFFF as a list of
    ranges that every non-matching character is compared against: 50x slower with the hundreds of astral Mn and
    punctuation ranges. So there are two sets: ``bmp`` (classes cut to the BMP) for text without astral characters,
    and ``full`` for the rare text with some (emoji, historic scripts, CJK extensions).
    """

    def __init__(self):
        # Every code point's category, as runs (category, first, last): a few thousand runs instead of 1.1 M chars.
        runs, lo = [], 0
        for cat, group in itertools.groupby(map(unicodedata.category, map(chr, range(sys.maxunicode + 1)))):
            n = len(list(group))
            runs.append((cat, lo, lo + n - 1))
            lo += n

        def where(test):
            return [(lo, hi) for cat, lo, hi in runs if test(cat)]

        # Cc/Cf are only ~230 code points, so listing them one by one is cheap; \t \n \r count as whitespace.
        control = [(cp, cp) for lo, hi in where(lambda c: c in ("Cc", "Cf")) for cp in range(lo, hi + 1)
                   if cp not in (9, 10, 13)] + [(0, 0), (0xFFFD, 0xFFFD)]
        whitespace = where(lambda c: c == "Zs") + [(9, 10), (13, 13)]
        marks = where(lambda c: c == "Mn")
        punct = where(lambda c: c[0] == "P") + [(33, 47), (58, 64), (91, 96), (123, 126)]
        self.bmp = _Regexes(control, whitespace, marks, punct, keep_astral=False)
        self.full = _Regexes(control, whitespace, marks, punct, keep_astral=True)


@functools.cache
def _unicode_regexes() -> _UnicodeRegexes:
    return _UnicodeRegexes()


_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")


def _regexes_for(text: str) -> _Regexes:
    # Pick again after NFD: a few BMP compatibility ideographs (U+FA6C, U+FACF...) decompose to astral ones.
    u = _unicode_regexes()
    return u.full if _ASTRAL.search(text) else u.bmp


def normalize(text: str) -> str:
    """BERT's text normalisation (uncased): clean, space out CJK ideographs, lowercase, NFD, drop accents (Mn).

    Whitespace becomes a space but runs are not collapsed. ``basic_tokenize(t)`` equals splitting
    ``normalize(t).split()`` further at punctuation.
    """
    if text.isascii():
        return _ASCII_CONTROL.sub("", text).translate(_ASCII_WHITESPACE).lower()
    u = _regexes_for(text)
    text = u.whitespace.sub(" ", u.control.sub("", text))
    text = unicodedata.normalize("NFD", u.cjk.sub(r" \g<0> ", text).lower())
    return _regexes_for(text).marks.sub("", text)


def basic_tokenize(text: str) -> list[str]:
    """BERT's BasicTokenizer (uncased): normalised words with each punctuation char and CJK ideograph split off.

    Doing lowercase/NFD/accent-stripping on the whole text instead of per word (as Google's code does) gives the
    same result: whitespace is neither cased nor case-ignorable (so Greek final sigma sees the same context), and
    NFD never reorders across a space. The CJK split can wait until after NFD because the only characters that
    decompose to ideographs are the compatibility ideographs, which are in the CJK ranges themselves.
    """
    if text.isascii():
        return _ASCII_TOKEN.findall(_ASCII_CONTROL.sub("", text).lower())
    text = unicodedata.normalize("NFD", _regexes_for(text).control.sub("", text).lower())
    u = _regexes_for(text)
    return u.token.findall(u.marks.sub("", text))


def _chunks(text: str) -> list[str]:
    """The whitespace-separated chunks of the cleaned, lowercased text: the units Google's code handles one by one.

    ``basic_tokenize(text)`` equals the concatenation of ``basic_tokenize(chunk)`` over these chunks. CJK spacing,
    NFD and accent stripping happen inside a chunk and never create whitespace, so they can wait.
    """
    if text.isascii():
        return _ASCII_CONTROL.sub("", text).lower().split()
    return _regexes_for(text).control.sub("", text).lower().split()


# ---------------------------------------------------------------------------------------------------------------
# WordPiece


class _Cache(dict):
    """str -> tuple of ids, computed on a miss; cleared when full (the frequent keys refill quickly)."""

    __slots__ = ("compute", "max_size")

    def __init__(self, compute, max_size: int):
        super().__init__()
        self.compute, self.max_size = compute, max_size

    def __missing__(self, key: str) -> tuple[int, ...]:
        ids = self.compute(key)
        if len(self) >= self.max_size:
            self.clear()
        self[key] = ids
        return ids


class WordPieceTokenizer:
    """BERT's uncased WordPiece tokenizer over a fixed vocabulary (a list of tokens; id = position)."""

    def __init__(self, vocab: list[str], max_chars_per_word: int = DEFAULT_MAX_CHARS_PER_WORD,
                 cache_size: int = DEFAULT_CACHE_SIZE):
        self.vocab = list(vocab)
        self.token_to_id: dict[str, int] = {}
        for i, tok in enumerate(self.vocab):
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"vocab entry {i} is {tok!r}; every token must be a non-empty string")
            if tok in self.token_to_id:
                raise ValueError(f"duplicate token {tok!r} in vocab (ids {self.token_to_id[tok]} and {i})")
            self.token_to_id[tok] = i
        missing = [t for t in SPECIAL_TOKENS if t not in self.token_to_id]
        if missing:
            raise ValueError(f"vocab lacks special token(s) {', '.join(missing)}; all of {SPECIAL_TOKENS} are required")
        if max_chars_per_word < 1:
            raise ValueError(f"max_chars_per_word must be >= 1, got {max_chars_per_word}")
        self.vocab_size = len(self.vocab)
        self.max_chars_per_word = max_chars_per_word
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.token_to_id[t] for t in SPECIAL_TOKENS)
        # decode(skip_special_tokens=True) drops only the framing tokens; [UNK] and [MASK] stand for a word.
        self._framing_ids = {self.pad_id, self.cls_id, self.sep_id}
        self.vocab_hash = hashlib.sha256(self._file_bytes()).hexdigest()
        # What an encoding depends on, for cache keys of tokenized data.
        self.fingerprint = hashlib.sha256(
            f"{self.vocab_hash} max_chars_per_word={max_chars_per_word} unicode={unicodedata.unidata_version} "
            f"algorithm={ALGORITHM_VERSION}".encode()).hexdigest()
        # Continuation pieces keyed without their "##", so the inner loop never builds "##" + piece strings.
        self._continuation = {t[2:]: i for t, i in self.token_to_id.items() if t.startswith("##") and len(t) > 2}
        # No candidate longer than the longest token can match; this bounds the greedy search per piece.
        self._max_first = max(map(len, self.token_to_id))
        self._max_cont = max(map(len, self._continuation), default=0)
        self._cache_size = cache_size
        self._make_caches()

    def _make_caches(self):
        self._word_ids = _Cache(self._wordpiece, self._cache_size)  # basic token -> WordPiece ids
        self._chunk_ids = _Cache(self._ids_of_chunk, self._cache_size)  # chunk (see _chunks) -> ids

    # -- vocab I/O --------------------------------------------------------------------------------------------

    @classmethod
    def from_vocab(cls, path, **kwargs) -> "WordPieceTokenizer":
        """Load a vocab.txt: one token per line, id = line number - 1. Errors name the file and line."""
        path = Path(path)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ValueError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte offset {e.start})") from None
        lines = text.removeprefix("\ufeff").split("\n")
        if lines[-1] == "":  # the trailing newline
            lines.pop()
        first_line: dict[str, int] = {}
        vocab = []
        for lineno, tok in enumerate(lines, 1):
            tok = tok.removesuffix("\r")
            if not tok:
                raise ValueError(f"{path}:{lineno}: empty line (every line must hold one token)")
            if tok in first_line:
                raise ValueError(f"{path}:{lineno}: duplicate token {tok!r} (first on line {first_line[tok]})")
            first_line[tok] = lineno
            vocab.append(tok)
        try:
            return cls(vocab, **kwargs)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def _file_bytes(self) -> bytes:
        return ("\n".join(self.vocab) + "\n").encode("utf-8")

    def save(self, path) -> Path:
        """Write vocab.txt (to ``path``, or ``path/vocab.txt`` if it is a directory) atomically; return its path."""
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.txt"
        # fsync: a vocab is the key to every checkpoint and corpus cache made with it; open()'s mode (0644 under
        # the usual umask), as the tests of train.py's outputs expect
        write_bytes_atomic(path, self._file_bytes(), fsync=True)
        return path

    # Workers (DataLoader, multiprocessing) get a copy without the cache; it refills there.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_word_ids"], state["_chunk_ids"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_caches()

    # -- encoding ---------------------------------------------------------------------------------------------

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first; any unmatchable piece, or a word over the cap, is one [UNK]."""
        n = len(word)
        if n > self.max_chars_per_word:
            return (self.unk_id,)
        lookup, max_len = self.token_to_id, self._max_first
        ids, start = [], 0
        while start < n:
            end = min(n, start + max_len)
            while end > start and word[start:end] not in lookup:
                end -= 1
            if end == start:
                return (self.unk_id,)
            ids.append(lookup[word[start:end]])
            lookup, max_len, start = self._continuation, self._max_cont, end
        return tuple(ids)

    def word_to_ids(self, word: str) -> list[int]:
        """WordPiece ids of one basic token (already normalised, as ``basic_tokenize`` returns it); cached."""
        return list(self._word_ids[word])

    def _ids_of_chunk(self, chunk: str) -> tuple[int, ...]:
        # Chunks come cleaned and lowercased (see _chunks); most are one plain ASCII word.
        if chunk.isascii():
            if chunk.isalnum():
                return self._word_ids[chunk]
            words = _ASCII_TOKEN.findall(chunk)
        else:
            words = basic_tokenize(chunk)
        return tuple(itertools.chain.from_iterable(map(self._word_ids.__getitem__, words)))

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece token strings of ``text`` (no [CLS]/[SEP])."""
        vocab = self.vocab
        return [vocab[i] for i in self.encode(text, add_special_tokens=False)]

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids; with specials ``[CLS] ... [SEP]``. ``max_length`` truncates the content so the result fits
        (and still ends with ``[SEP]``); without specials it simply cuts the ids."""
        ids = list(itertools.chain.from_iterable(map(self._chunk_ids.__getitem__, _chunks(text))))
        if not add_special_tokens:
            if max_length is not None:
                if max_length < 0:
                    raise ValueError(f"max_length must be >= 0, got {max_length}")
                del ids[max_length:]
            return ids
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
            del ids[max_length - 2:]
        return [self.cls_id, *ids, self.sep_id]

    def encode_batch(self, texts, add_special_tokens: bool = True, max_length: int | None = None) -> list[list[int]]:
        """``encode`` for each text (the caches are shared, so each text warms them for the next)."""
        return [self.encode(t, add_special_tokens, max_length) for t in texts]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Join pieces with spaces, gluing ``##`` continuations to the piece before.

        ``skip_special_tokens`` drops [PAD], [CLS] and [SEP]; [UNK] and [MASK] are kept because each stands for a
        word of the text.
        """
        if hasattr(ids, "tolist"):  # numpy arrays, torch tensors
            ids = ids.tolist()
        words: list[str] = []
        for i in ids:
            if skip_special_tokens and i in self._framing_ids:
                continue
            tok = self.vocab[i]
            if words and len(tok) > 2 and tok.startswith("##"):
                words[-1] += tok[2:]
            else:
                words.append(tok)
        return " ".join(words)

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, max_chars_per_word={self.max_chars_per_word}, "
                f"vocab_hash={self.vocab_hash[:12]})")
