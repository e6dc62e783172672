"""Tests for tinybert/tokenizer.py.

The oracle is tinybert/tokenizer_reference.py, a slow reference written straight from the rules
(google-research/bert tokenization.py, uncased; listed in tinybert/tokenizer.py's docstring): one Python loop per
character, no regexes. The fast paths must agree with it on every code point and on random strings. Expected ids
for the real vocab were checked by hand against vocab.txt (id = line number - 1).
"""

import hashlib
import pickle
import random
import sys

import pytest

from tinybert import tokenizer as T
from tinybert.data_dir import resolve_data_dir
from tinybert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize, normalize
from tinybert.tokenizer_reference import (
    ref_basic_tokenize, ref_lower_strip_accents, ref_normalize, ref_split_punctuation, ref_wordpiece)

BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"  # bert_vocab/PROVENANCE.md

# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def vocab_path():
    # the full data or, in a fresh clone, the embedded sample: both hold the same bert-base-uncased vocab.txt
    path = resolve_data_dir() / "bert_vocab" / "vocab.txt"
    assert path.is_file(), f"bert-base-uncased vocab not found at {path} (see bert_vocab/PROVENANCE.md)"
    return path


@pytest.fixture(scope="module")
def bert(vocab_path):
    return WordPieceTokenizer.from_vocab(vocab_path)


def toy_tokenizer(extra=("want", "##want", "##ed", "wa", "un", "runn", "##ing", ","), **kwargs):
    return WordPieceTokenizer(list(SPECIAL_TOKENS) + list(extra), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Basic tokenizer: the cases from the brief, expected outputs from the rules


@pytest.mark.parametrize("text, expected", [
    ("Café", ["cafe"]),
    ("Héllo, WÖRLD!", ["hello", ",", "world", "!"]),
    ("北京大学", ["北", "京", "大", "学"]),
    ("ab北c", ["ab", "北", "c"]),
    ("こんにちは", ["こんにちは"]),  # Hiragana is not in the CJK ranges
    ("hi 😀!", ["hi", "😀", "!"]),
    ("foo\x00bar\ufffd baz\x07", ["foobar", "baz"]),
    ("a\x0bb\x0cc\x1fd\x7fe\x85f", ["abcdef"]),  # control, not whitespace: deleted, neighbours join
    ("coop\u200berate \ufeffx co\u00adop", ["cooperate", "x", "coop"]),  # zero-width / soft hyphen are Cf
    ("a\tb\nc\rd\u00a0e\u3000f", ["a", "b", "c", "d", "e", "f"]),
    ("x\u2028y\u2029z", ["x", "y", "z"]),  # str.split() separators, as in Google's code
    ("http://www.example.com/a_b", ["http", ":", "/", "/", "www", ".", "example", ".", "com", "/", "a", "_", "b"]),
    ("3.14 1,000", ["3", ".", "14", "1", ",", "000"]),
    ("$5^2`+<=>|~", ["$", "5", "^", "2", "`", "+", "<", "=", ">", "|", "~"]),
    ("[MASK] [CLS]", ["[", "mask", "]", "[", "cls", "]"]),  # special-token strings get no special treatment
    ("«Ça» — dit-il…", ["«", "ca", "»", "—", "dit", "-", "il", "…"]),
    ("ΟΔΟΣ", ["οδος"]),  # final sigma: str.lower() gives ς at the end of the word
    ("", []),
    (" \t\n\r\u3000 ", []),
])
def test_basic_tokenize_cases(text, expected):
    assert basic_tokenize(text) == expected
    assert ref_basic_tokenize(text) == expected


def test_normalize():
    assert normalize("Héllo\tWörld 北京\x00!") == "hello world  北  京 !"
    assert normalize("A\r\nB") == "a  b"
    for text in ["Café", "a\x0bb", "ΟΔΟΣ x", "\u3000é\u0301"]:
        assert normalize(text) == ref_normalize(text)


# ---------------------------------------------------------------------------------------------------------------
# Fast paths against the reference


@pytest.mark.parametrize("plane", ["bmp", "astral"])
def test_every_code_point_matches_reference(plane):
    # Each code point once, every other one between letters ("aXa", so combining marks, casing and punctuation
    # have neighbours), the rest alone (" X "). BMP-only text and text with astral characters take different
    # regexes. Planes 2-3 are CJK ideographs and unassigned, 4-13 unassigned, 15-16 private use: sampled there.
    if plane == "bmp":
        cps = range(0x10000)  # lone surrogates included
    else:
        cps = [*range(0x10000, 0x20000), *range(0xE0000, 0xE1000), *range(0x20000, sys.maxunicode + 1, 101)]
    text = "".join(f"a{chr(cp)}a" if cp % 2 else f" {chr(cp)} " for cp in cps)
    expected = ref_basic_tokenize(text)
    assert basic_tokenize(text) == expected
    assert normalize(text) == ref_normalize(text)
    # encode() caches per whitespace chunk; that is only right if chunks tokenize independently.
    assert [w for chunk in T._chunks(text) for w in basic_tokenize(chunk)] == expected


def _random_text(rng, alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_random_unicode_matches_reference():
    rng = random.Random(0)
    special = list(" \t\n\r\x00\x0b\x0c\x1c\x85\xa0\u2028\u3000\ufffd\u200b\u200d\ufeff\u00ad.,-_'\"!?()[]#")
    interesting = special + list("AaZzİıΣσςΟΔéǅßﬁ😀") + [
        "e\u0301", "\u0301", "\u0345", "\u4e00", "\uf900", "\ufa6c", "\u037e", "\u1fef", "\u2000", "\u212a",
        "\u212b", "\ud800", "\U00020000", "\U000e0001"]
    for i in range(400):
        pool = interesting + [chr(rng.randrange(0x30000)) for _ in range(10)] + list("abc xyz")
        if i % 2:  # BMP-only text takes other regexes than text with astral characters
            pool = [c for c in pool if max(map(ord, c)) < 0x10000]
        text = _random_text(rng, pool, rng.randrange(40))
        assert basic_tokenize(text) == ref_basic_tokenize(text), repr(text)
        assert normalize(text) == ref_normalize(text), repr(text)


def test_ascii_fast_path_matches_unicode_path_and_reference():
    rng = random.Random(1)
    alphabet = [chr(i) for i in range(128)] + list("abcdefghij   ") * 4
    for _ in range(300):
        text = _random_text(rng, alphabet, rng.randrange(60))
        expected = ref_basic_tokenize(text)
        assert basic_tokenize(text) == expected, repr(text)
        # The same text with one non-ASCII char appended (a lone "é" word) takes the unicode path.
        assert basic_tokenize(text + " é") == expected + ["e"], repr(text)
        assert normalize(text) == ref_normalize(text), repr(text)


def test_encode_matches_reference(bert):
    rng = random.Random(4)
    vocab = set(bert.vocab)
    pool = list("Ab,é 北\u00ad\u0301.İΣ\t😀\x0b\u2028-") + ["café", "running", "unaffable", "Zürich", "l'été"]
    for _ in range(300):
        text = _random_text(rng, pool, rng.randrange(30))
        expected = [p for w in ref_basic_tokenize(text) for p in ref_wordpiece(w, vocab, 100)]
        assert bert.tokenize(text) == expected, repr(text)


def test_normalize_then_split_is_basic_tokenize():
    rng = random.Random(2)
    for _ in range(100):
        text = _random_text(rng, list("Ab,é 北\u00ad\u0301.İΣ\t😀"), rng.randrange(30))
        assert [p for w in normalize(text).split() for p in ref_split_punctuation(w)] == basic_tokenize(text)


# ---------------------------------------------------------------------------------------------------------------
# WordPiece


def test_google_docstring_examples():
    tok = toy_tokenizer()
    assert tok.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tok.tokenize("UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]  # matched pieces are discarded
    tok = toy_tokenizer(["un", "##aff", "##able"])
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]


def test_real_vocab_words(bert):
    # Checked by hand in vocab.txt: no prefix of "unaffable" longer than "una" is a token (una = line 14478); then
    # "##ffa" (line 20962) and "##ble" (line 3469).
    assert bert.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert bert.encode("unaffable", add_special_tokens=False) == [14477, 20961, 3468]
    assert bert.tokenize("Café") == ["cafe"] and bert.token_to_id["cafe"] == 7668
    assert bert.encode("北京大学", add_special_tokens=False) == [1781, 1755, 1810, 1817]
    assert bert.tokenize("こんにちは") == ["こ", "##ん", "##に", "##ち", "##は"]
    assert bert.tokenize("hi 😀") == ["hi", "[UNK]"]
    assert bert.tokenize("3.14 1,000") == ["3", ".", "14", "1", ",", "000"]
    assert bert.tokenize("coop\u200berate") == ["cooperate"]
    assert bert.tokenize("[MASK]") == ["[", "mask", "]"]
    assert bert.tokenize("http://www.example.com/a_b") == [
        "http", ":", "/", "/", "www", ".", "example", ".", "com", "/", "a", "_", "b"]


def test_char_cap(bert, vocab_path):
    # "aaaa" and "##aaa" are not in the vocab, "aaa" and "##aa" are: 100 = 3 + 48 * 2 + 1.
    assert bert.tokenize("a" * 100) == ["aaa"] + ["##aa"] * 48 + ["##a"]
    assert bert.tokenize("x " + "a" * 101 + " y") == ["x", "[UNK]", "y"]
    google = WordPieceTokenizer.from_vocab(vocab_path, max_chars_per_word=200)
    assert google.tokenize("a" * 101) == ["aaa"] + ["##aa"] * 49
    assert google.tokenize("a" * 201) == ["[UNK]"]
    assert google.vocab_hash == bert.vocab_hash and google.fingerprint != bert.fingerprint


def test_wordpiece_matches_reference(bert):
    rng = random.Random(3)
    vocab = set(bert.vocab)
    pieces = [t for t in bert.vocab if not t.startswith("[")]
    words = ["".join(rng.choice(pieces).removeprefix("##") for _ in range(rng.randrange(1, 5))) for _ in range(500)]
    words += [_random_text(rng, "abcdefghijklmnopqrstuvwxyz0123456789éß", rng.randrange(1, 30)) for _ in range(500)]
    words += ["a" * 99, "a" * 100, "a" * 101]
    for word in words:
        word = ref_lower_strip_accents(word)
        assert [bert.vocab[i] for i in bert.word_to_ids(word)] == ref_wordpiece(word, vocab, 100), word


def test_word_cache_returns_copies_and_clears_when_full():
    tok = toy_tokenizer(cache_size=2)
    ids = tok.word_to_ids("unwanted")
    ids.append(-1)
    assert tok.word_to_ids("unwanted") == [tok.token_to_id[t] for t in ("un", "##want", "##ed")]
    assert tok.tokenize("want wa unwanted running want") == ["want", "wa", "un", "##want", "##ed", "runn", "##ing",
                                                              "want"]
    assert len(tok._word_ids) <= 2 and len(tok._chunk_ids) <= 2


# ---------------------------------------------------------------------------------------------------------------
# encode / decode


def test_special_ids(bert):
    assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (0, 100, 101, 102, 103)
    assert bert.vocab_size == len(bert.vocab) == 30522
    assert bert.vocab_hash == BERT_VOCAB_SHA256
    # Looked up by name: reorder the vocab and the ids follow.
    tok = WordPieceTokenizer(["hello", "[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]"])
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (5, 4, 3, 2, 1)
    assert tok.encode("hello there") == [3, 0, 4, 2]


def test_empty_and_whitespace(bert):
    for text in ["", "   ", "\t\n", "\x00\u200b"]:
        assert bert.tokenize(text) == []
        assert bert.encode(text) == [bert.cls_id, bert.sep_id]
        assert bert.encode(text, add_special_tokens=False) == []


def test_truncation_keeps_sep(bert):
    text = "the quick brown fox jumps over the lazy dog " * 3
    full = bert.encode(text)
    assert full[0] == bert.cls_id and full[-1] == bert.sep_id and len(full) == 29
    cut = bert.encode(text, max_length=8)
    assert cut == full[:7] + [bert.sep_id]
    assert bert.encode(text, max_length=2) == [bert.cls_id, bert.sep_id]
    assert bert.encode(text, max_length=100) == full
    assert bert.encode(text, add_special_tokens=False, max_length=5) == full[1:6]
    with pytest.raises(ValueError, match="max_length"):
        bert.encode(text, max_length=1)
    assert bert.encode_batch([text, ""], max_length=8) == [cut, [bert.cls_id, bert.sep_id]]


def test_decode_round_trip(bert):
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Solita Solano, real name \"Sarah Wilkinson\" (born 1888 in Troy, New York) was an American writer.",
        "unaffable café owners paid $3.14 for 1,000 apples; e-mail: a_b@example.com!",
        "北京大学 (Peking University) — こんにちは",
    ]
    for text in texts:
        ids = bert.encode(text)
        assert bert.unk_id not in ids
        assert bert.decode(ids) == " ".join(basic_tokenize(text))
    assert bert.decode(bert.encode("hi 😀")) == "hi [UNK]"  # [UNK] stands for a word, so it is kept
    assert bert.decode(bert.encode("hi"), skip_special_tokens=False) == "[CLS] hi [SEP]"
    assert bert.decode([bert.pad_id, bert.mask_id, bert.token_to_id["##s"]]) == "[MASK]s"


# ---------------------------------------------------------------------------------------------------------------
# Vocab I/O


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(ValueError, match="duplicate token 'a'"):
        toy_tokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        toy_tokenizer(["a", ""])


def test_from_vocab_errors(tmp_path):
    cases = {
        "dup.txt": ("\n".join(SPECIAL_TOKENS + ("a", "b", "a")) + "\n").encode(),
        "empty.txt": ("\n".join(SPECIAL_TOKENS + ("a", "", "b")) + "\n").encode(),
        "nomask.txt": ("\n".join(SPECIAL_TOKENS[:4] + ("a",)) + "\n").encode(),
        "latin1.txt": ("\n".join(SPECIAL_TOKENS + ("a",)) + "\n").encode() + "café\n".encode("latin-1"),
    }
    expected = {"dup.txt": r"dup.txt:8: duplicate token 'a' \(first on line 6\)",
                "empty.txt": r"empty.txt:7: empty line", "nomask.txt": r"nomask.txt: .*\[MASK\]",
                "latin1.txt": r"latin1.txt:7: not valid UTF-8"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=expected[name]):
            WordPieceTokenizer.from_vocab(tmp_path / name)


def test_save_load_round_trip(bert, tmp_path):
    path = bert.save(tmp_path / "vocab.txt")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bert.vocab_hash == BERT_VOCAB_SHA256
    assert bert.save(tmp_path) == path  # a directory gets vocab.txt
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temp files left behind
    again = WordPieceTokenizer.from_vocab(path)
    assert again.vocab == bert.vocab and again.fingerprint == bert.fingerprint
    (tmp_path / "crlf.txt").write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert WordPieceTokenizer.from_vocab(tmp_path / "crlf.txt").vocab == bert.vocab


def test_pickle_round_trip():
    tok = toy_tokenizer()
    tok.encode("unwanted running")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("unwanted running ,") == tok.encode("unwanted running ,")
