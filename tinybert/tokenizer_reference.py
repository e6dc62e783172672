"""The slow, obviously-correct reference for tokenizer.py: BERT's uncased BasicTokenizer + WordPiece.

Read this first, then the fast path in ``tinybert/tokenizer.py``. It is a literal transcription of the rules of
google-research/bert ``tokenization.py`` (``do_lower_case=True``): one Python loop per character, no regexes, no
caches, every rule in the order Google applies it. It is deliberately slow and is never used
by training code: it exists to be read, and to test the fast paths against.

``tests/test_tokenizer.py`` checks the fast paths against it: ``basic_tokenize`` and ``normalize`` on every code
point (BMP and astral) and on random strings, the ASCII short path against the unicode path, and
``WordPieceTokenizer.tokenize`` / ``word_to_ids`` against ``ref_wordpiece`` on the real bert-base-uncased vocab.

The stages, as in Google's code:

1. ``ref_clean_and_space_cjk``: delete U+0000, U+FFFD and control characters, turn whitespace into a space, put
   spaces around CJK ideographs (Google's ``_clean_text`` then ``_tokenize_chinese_chars``).
2. ``str.strip().split()`` into words (Google's ``whitespace_tokenize``).
3. Per word: ``ref_lower_strip_accents`` (lowercase, NFD, drop Mn), then ``ref_split_punctuation``.
4. ``ref_wordpiece``: greedy longest-match-first over each word, ``##`` on non-initial pieces.

The one thing shared with the fast path is ``CJK_RANGES``, the table of CJK ideograph blocks: data, not logic.
"""

from __future__ import annotations

import unicodedata

from tinybert.tokenizer import CJK_RANGES


def ref_is_whitespace(ch):
    """Google's ``_is_whitespace``: space, \\t, \\n, \\r, or category Zs."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def ref_is_control(ch):
    """Google's ``_is_control``: category Cc or Cf, except \\t \\n \\r (which are whitespace)."""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def ref_is_punctuation(ch):
    """Google's ``_is_punctuation``: ASCII 33-47, 58-64, 91-96, 123-126 (every printable
    non-alphanumeric character, e.g. $ ^ ` +, which Unicode does not call punctuation), or category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def ref_is_cjk(ch):
    """Google's ``_is_chinese_char``: a code point in one of the CJK ideograph blocks (not kana, not hangul)."""
    cp = ord(ch)
    return cp >= 0x3400 and any(lo <= cp <= hi for lo, hi in CJK_RANGES)  # the test is fast for most text


def ref_clean_and_space_cjk(text):
    """Google's ``_clean_text`` then ``_tokenize_chinese_chars``, fused into one pass over the characters."""
    out = []
    for ch in text:
        if ord(ch) == 0 or ord(ch) == 0xFFFD or ref_is_control(ch):
            continue
        if ref_is_whitespace(ch):
            out.append(" ")
        elif ref_is_cjk(ch):
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    return "".join(out)


def ref_lower_strip_accents(text):
    """Lowercase, then Google's ``_run_strip_accents``: NFD and drop the combining marks (Mn)."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def ref_split_punctuation(word):
    """Google's ``_run_split_on_punc``: every punctuation character becomes a token of its own."""
    out, current = [], ""
    for ch in word:
        if ref_is_punctuation(ch):
            if current:
                out.append(current)
            out.append(ch)
            current = ""
        else:
            current += ch
    if current:
        out.append(current)
    return out


def ref_normalize(text):
    """The text after cleaning, CJK spacing, lowercasing and accent stripping (before any split)."""
    return ref_lower_strip_accents(ref_clean_and_space_cjk(text))


def ref_basic_tokenize(text):
    """Google's ``BasicTokenizer.tokenize`` with ``do_lower_case=True``: text -> words."""
    pieces = []
    # Google: whitespace_tokenize is str.strip().split(); lowercase and accents per word; then split again.
    for word in ref_clean_and_space_cjk(text).strip().split():
        pieces.extend(ref_split_punctuation(ref_lower_strip_accents(word)))
    return " ".join(pieces).split()


def ref_wordpiece(word, vocab, max_chars):
    """Google's ``WordpieceTokenizer.tokenize`` for one word: greedy longest match first; a word longer than
    ``max_chars`` or with an unmatched rest is one [UNK]."""
    if len(word) > max_chars:
        return ["[UNK]"]
    out, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            candidate = ("##" if start > 0 else "") + word[start:end]
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return ["[UNK]"]
        out.append(piece)
        start = end
    return out
