"""The slow, obviously-correct reference for wordpiece_trainer.py's ``train_wordpiece``.

Read this first, then the fast trainer in ``tinybert/wordpiece_trainer.py``. It is the WordPiece (BPE with ``##``
continuations) trainer written as literally as possible: before every merge it recounts every adjacent pair (and,
for ``score="likelihood"``, every symbol) from scratch, picks the best pair, and rewrites every word with a plain
Python loop. Deliberately slow (quadratic in the number of merges) and never used by training code; the fast
trainer gets the same vocab by updating only the counts next to each merge site.

``tests/test_wordpiece_trainer.py`` (``test_matches_naive_reference``) checks that ``train_wordpiece`` returns
exactly this vocab, piece for piece and in the same order, for both scores.

What it shares with the fast trainer, so that the two can be compared: the vocab starts with the special tokens,
then every character in word-initial form, then in ``##`` form (sorted); a pair is merged only if it occurs at
least ``min_frequency`` times; ties go to the lexicographically smaller (left, right) pair. It has no
``limit_alphabet`` and no word-length cap.
"""

from __future__ import annotations

import collections

from tinybert.tokenizer import SPECIAL_TOKENS


def naive_wordpiece(word_counts, vocab_size, score, min_frequency=2):
    """Reference trainer: recount every pair from scratch before each merge (slow, obviously right)."""
    alphabet = sorted({c for w in word_counts for c in w})
    vocab = list(SPECIAL_TOKENS) + alphabet + ["##" + c for c in alphabet]
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    while len(vocab) < vocab_size:
        pairs, symbols = collections.Counter(), collections.Counter()
        for w, pieces in words.items():
            symbols.update({s: word_counts[w] * k for s, k in collections.Counter(pieces).items()})
            for pair in zip(pieces, pieces[1:]):
                pairs[pair] += word_counts[w]
        candidates = [p for p, n in pairs.items() if n >= min_frequency]
        if not candidates:
            break
        if score == "count":
            a, b = min(candidates, key=lambda p: (-pairs[p], p))
        else:
            a, b = min(candidates, key=lambda p: (-pairs[p] / (symbols[p[0]] * symbols[p[1]]), p))
        if a + b[2:] not in vocab:
            vocab.append(a + b[2:])
        for pieces in words.values():
            i = 0
            while i < len(pieces) - 1:
                if pieces[i] == a and pieces[i + 1] == b:
                    pieces[i:i + 2] = [a + b[2:]]
                i += 1
    return vocab
