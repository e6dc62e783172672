"""Tests for tinybert/wordpiece_trainer.py: word counting, the WordPiece (BPE-with-##) trainer, the SentencePiece
variant, and their error messages. Everything runs on small synthetic corpora in a few seconds."""

import collections
import random

import pytest

from tinybert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize
from tinybert.wordpiece_trainer import (
    _sentencepiece_to_wordpiece, count_words, train_sentencepiece_wordpiece, train_wordpiece)
from tinybert.wordpiece_trainer_reference import naive_wordpiece

# The HF course's WordPiece example: hug x10, pug x5, pun x12, bun x4, hugs x5.
HUGS = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
HUGS_BASE = list(SPECIAL_TOKENS) + list("bghnpsu") + ["##" + c for c in "bghnpsu"]


def make_corpus(n_texts=40, seed=0):
    """Zipf-ish made-up language with punctuation, digits and a few accented words: enough pairs for a few
    hundred merges."""
    rng = random.Random(seed)
    syllables = ["ka", "ri", "to", "mu", "sen", "lo", "pa", "de", "quo", "xi", "bre", "ny", "el", "ost", "vé"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    weights = [1 / (rank + 1) for rank in range(len(lexicon))]
    texts = []
    for _ in range(n_texts):
        words = rng.choices(lexicon, weights, k=120)
        words = [w.capitalize() if rng.random() < 0.1 else w for w in words]
        texts.append(" ".join(words).replace("ka ", "ka, ").replace("to ", "to. ") + " 1984 (2023)!")
    return texts


CORPUS = make_corpus()


def hugs_tokenizer(**kwargs):
    args = dict(word_counts=HUGS, vocab_size=100, show_progress=False)
    return train_wordpiece(**{**args, **kwargs})


# -- counting -------------------------------------------------------------------------------------------------


def test_count_words_equals_basic_tokenize_on_tricky_text(tmp_path):
    texts = CORPUS[:3] + [
        "Hello, World! Ünïcödé ÀÉÎ naïve café",
        "ΟΔΟΣ ΟΔΟΣ. σοφός",  # Greek final sigma depends on the neighbouring letters
        "中文字符 mixed漢字text かな ハングル한국어",
        "tabs\tand\nnewlines\r\nnbsp\u00a0thin\u2009ideographic\u3000space",
        "control\x0bjoins\x0cwords\x1cand\x85vt but\u2028splits\u2029here",
        "zero\u200bwidth soft\xadhyphen nul\x00and\ufffdreplacement",
        "  ",
        "",
        "emoji 🙂🙂 and astral 𝐀𝐁 chars; don't stop—dash…",
    ]
    expected = collections.Counter()
    for t in texts:
        expected.update(basic_tokenize(t))
    assert count_words(texts) == expected
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts), encoding="utf-8")
    assert count_words([path]) == count_words(["\n".join(texts)])


def test_count_words_with_workers_matches_serial():
    assert count_words(CORPUS, workers=2) == count_words(CORPUS)


# -- the WordPiece trainer ------------------------------------------------------------------------------------


def test_hand_worked_merges():
    # Pair counts: ##u ##g 20 > ##u ##n 16 > h ##ug 15 > p ##un 12 > (hug ##s 5 = p ##ug 5, tie -> "hug" < "p")
    # > b ##un 4. Nothing is left after that, so the vocab stops short of 100.
    tok = hugs_tokenizer()
    assert tok.vocab == HUGS_BASE + ["##ug", "##un", "hug", "pun", "hugs", "pug", "bun"]
    assert hugs_tokenizer(min_frequency=5).vocab == HUGS_BASE + ["##ug", "##un", "hug", "pun", "hugs", "pug"]
    assert hugs_tokenizer(min_frequency=0).vocab == tok.vocab  # pairs that no longer occur are never merged
    assert hugs_tokenizer(vocab_size=len(HUGS_BASE) + 3).vocab == HUGS_BASE + ["##ug", "##un", "hug"]
    assert tok.tokenize("hugs bun pugs") == ["hugs", "bun", "pug", "##s"]


def test_specials_first_size_exact_and_save_roundtrip(tmp_path):
    tok = train_wordpiece(CORPUS, vocab_size=300, show_progress=False)
    assert tok.vocab[:5] == list(SPECIAL_TOKENS)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == 300
    # BERT order: characters, then their ## forms, then longer pieces.
    n_chars = sum(len(t) == 1 for t in tok.vocab)
    assert tok.vocab[5 + n_chars:5 + 2 * n_chars] == ["##" + c for c in tok.vocab[5:5 + n_chars]]
    assert all(len(t.removeprefix("##")) > 1 for t in tok.vocab[5 + 2 * n_chars:])
    assert WordPieceTokenizer.from_vocab(tok.save(tmp_path / "vocab.txt")).vocab == tok.vocab


@pytest.mark.parametrize("score", ["count", "likelihood"])
def test_every_training_word_encodes_without_unk(score):
    tok = train_wordpiece(CORPUS, vocab_size=300, score=score, show_progress=False)
    for word in count_words(CORPUS):
        assert tok.unk_id not in tok.word_to_ids(word), word
    assert tok.unk_id not in tok.encode(" ".join(CORPUS))


@pytest.mark.parametrize("score", ["count", "likelihood"])
def test_matches_naive_reference(score):
    # Repeated symbols ("aaaa", "abab") exercise adjacent merge sites in one word.
    counts = {**count_words(CORPUS[:10]), "aaaa": 7, "aaaaa": 3, "ababab": 4, "abab": 2}
    expected = naive_wordpiece(counts, vocab_size=260, score=score)
    assert train_wordpiece(word_counts=counts, vocab_size=260, score=score, show_progress=False).vocab == expected


def test_limit_alphabet_drops_rare_characters():
    counts = {"aab": 50, "abba": 30, "zq": 1}
    tok = train_wordpiece(word_counts=counts, vocab_size=30, limit_alphabet=2, show_progress=False)
    assert "z" not in tok.vocab and "##q" not in tok.vocab
    assert tok.tokenize("abba aab zq") == ["abba", "aab", "[UNK]"]


@pytest.mark.parametrize("score", ["count", "likelihood"])
def test_deterministic_and_independent_of_input_order(score):
    counts = count_words(CORPUS)
    shuffled = list(counts.items())
    random.Random(1).shuffle(shuffled)
    a = train_wordpiece(word_counts=counts, vocab_size=250, score=score, show_progress=False)
    b = train_wordpiece(word_counts=dict(shuffled), vocab_size=250, score=score, show_progress=False)
    assert a.vocab == b.vocab


def test_likelihood_score():
    # Scores count(ab) / (count(a) count(b)): ##g ##s = 5 / (20 * 5) = 0.05 beats every other pair (1/36).
    tok = hugs_tokenizer(score="likelihood", vocab_size=len(HUGS_BASE) + 1)
    assert tok.vocab[-1] == "##gs"
    # Different merges from the count score on real-ish text, same size.
    a = train_wordpiece(CORPUS, vocab_size=300, score="likelihood", show_progress=False)
    b = train_wordpiece(CORPUS, vocab_size=300, show_progress=False)
    assert a.vocab_size == 300 and a.vocab != b.vocab


# -- the SentencePiece variant --------------------------------------------------------------------------------


def test_sentencepiece_conversion():
    base = list(SPECIAL_TOKENS) + ["a", "b", "s", "##a", "##b", "##s"]
    pieces = ["▁", "▁ab", "ba", "▁a", "s", "▁zz", "abs", "bb", "aa"]
    # bare ▁ dropped, ▁ab -> ab, ba -> ##ba, single chars already there, zz outside the alphabet, cut at size.
    assert _sentencepiece_to_wordpiece(pieces, base, vocab_size=len(base) + 3) == base + ["ab", "##ba", "##abs"]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_variant(model_type):
    tok = train_sentencepiece_wordpiece(CORPUS, vocab_size=300, model_type=model_type, show_progress=False)
    assert tok.vocab[:5] == list(SPECIAL_TOKENS)
    assert 200 < tok.vocab_size <= 300
    assert not any(t.startswith("▁") for t in tok.vocab)
    chars = {c for t in CORPUS for w in basic_tokenize(t) for c in w}
    assert all(c in tok.token_to_id and "##" + c in tok.token_to_id for c in chars)
    assert tok.unk_id not in tok.encode(" ".join(CORPUS))


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", [[], [""], ["  \n "], ["?!"]])
def test_empty_corpus(corpus):
    if corpus == ["?!"]:  # only single-character words: trains fine, nothing to merge
        assert train_wordpiece(corpus, vocab_size=20, show_progress=False).vocab_size == 9
        return
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece(corpus, show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_sentencepiece_wordpiece(corpus, show_progress=False)


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match=r"vocab_size=18 is too small.*2 x 7 alphabet.*limit_alphabet"):
        hugs_tokenizer(vocab_size=18)
    # The 3 most frequent characters are u, g, p; only "pug" is made of them alone. Its pairs tie at 5: "##u" < "p".
    tok = hugs_tokenizer(vocab_size=18, limit_alphabet=3)
    assert tok.vocab == list(SPECIAL_TOKENS) + ["g", "p", "u", "##g", "##p", "##u", "##ug", "pug"]


def test_missing_file_and_bad_arguments(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_wordpiece([missing], show_progress=False)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_sentencepiece_wordpiece([missing], show_progress=False)
    with pytest.raises(ValueError, match="score"):
        hugs_tokenizer(score="bleu")
    with pytest.raises(TypeError, match="int"):
        count_words([3])
