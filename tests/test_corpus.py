"""Tests for data_prep/corpus.py (selection, layouts, cache) and the two CLIs, on tiny hand-made corpora."""

import itertools
import json
import os

import numpy as np
import pytest

import data_prep.corpus as corpus
from data_prep import prepare_wiki, train_vocab
from data_prep.corpus import (build_token_array, cache_paths, default_cache_dir, encode_first_tokens,
                              load_or_build_corpus, select_articles, token_dtype)
from data_prep.wikipedia import CorpusReadError, ReadStats, default_wiki_sources, iter_articles
from tinybert.data_dir import resolve_data_dir
from tinybert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3  # positions in SPECIAL_TOKENS


def tiny_tokenizer(extra=()):
    """One token per word of WORDS, so token counts equal word counts."""
    return WordPieceTokenizer(list(SPECIAL_TOKENS) + WORDS + list(extra))


def article(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n_words))


@pytest.fixture
def source(tmp_path):
    """40 articles of 1..40 words, plus two empty records, as JSON lines."""
    path = tmp_path / "corpus.jsonl"
    lines = [{"id": i, "text": article(i, i + 1)} for i in range(40)] + [{"text": ""}, {"text": "  "}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# selection


def test_selection_is_seeded_nested_and_in_corpus_order(source):
    stats = ReadStats()
    a = select_articles([source], 10, seed=1, stats=stats)
    assert (stats.read, stats.skipped_empty, stats.kept) == (42, 2, 40)
    assert a == select_articles([source], 10, seed=1)
    assert a != select_articles([source], 10, seed=2)
    assert len(set(a)) == 10
    order = [article(i, i + 1) for i in range(40)]
    assert [order.index(t) for t in a] == sorted(order.index(t) for t in a)  # corpus order kept
    assert set(a) < set(select_articles([source], 20, seed=1))  # N=10 is inside N=20, like shuffle+select


def test_selection_needs_enough_articles(source):
    with pytest.raises(CorpusReadError, match="asked for 41 articles but the sources hold only 40"):
        select_articles([source], 41, seed=0)
    assert len(select_articles([source], 41, seed=0, allow_fewer=True)) == 40


# ---------------------------------------------------------------------------------------------------------------
# layouts


def test_paper_layout_pads_and_truncates():
    tok = tiny_tokenizer()
    rows = build_token_array([article(0, 3), article(1, 20)], tok, "paper", seq_len=8)
    assert rows.shape == (2, 8) and rows.dtype == np.uint16
    short = [tok.token_to_id[w] for w in article(0, 3).split()]
    assert rows[0].tolist() == [CLS, *short, SEP, PAD, PAD, PAD]
    long = [tok.token_to_id[w] for w in article(1, 20).split()]
    assert rows[1].tolist() == [CLS, *long[:6], SEP]


def test_encode_first_tokens_equals_full_encoding():
    tok = tiny_tokenizer()
    texts = [article(3, 200), "x" * 500 + " the cat", "the\ncat " * 50 + "y" * 300, "", "dog", "a " * 7]
    for text, seq_len in itertools.product(texts, (2, 3, 8, 64)):
        assert encode_first_tokens(tok, text, seq_len) == tok.encode(text, max_length=seq_len), (text[:20], seq_len)


def test_packed_layout_is_cls_then_stream_of_articles_with_sep():
    tok = tiny_tokenizer()
    texts = [article(i, n) for i, n in enumerate([5, 1, 12, 3, 9])]
    rows = build_token_array(texts, tok, "packed", seq_len=8)
    stream = [t for text in texts for t in [*(tok.token_to_id[w] for w in text.split()), SEP]]
    assert len(stream) == 35 and rows.shape == (35 // 7, 8)
    assert (rows[:, 0] == CLS).all() and not (rows == PAD).any()
    assert rows[:, 1:].ravel().tolist() == stream[: 5 * 7]  # the remainder (none here) would be dropped
    short = build_token_array(texts[:2], tok, "packed", seq_len=8)  # 8 stream tokens: one row, one dropped
    assert short.shape == (1, 8)


def test_dtype_follows_vocab_size():
    assert token_dtype(30522) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.int32
    big = tiny_tokenizer(extra=[f"w{i}" for i in range(65536)])
    rows = build_token_array(["the w65530 cat"], big, "paper", seq_len=6)
    assert rows.dtype == np.int32 and rows[0, 2] == big.token_to_id["w65530"] > 65535


def test_workers_give_the_same_array(monkeypatch):
    monkeypatch.setattr(corpus, "_MIN_PARALLEL", 0)
    monkeypatch.setattr(corpus, "_CHUNK", 3)
    tok = tiny_tokenizer()
    texts = [article(i, i % 17 + 1) for i in range(20)]
    for layout in ("paper", "packed"):
        one = build_token_array(texts, tok, layout, seq_len=8, workers=1)
        two = build_token_array(texts, tok, layout, seq_len=8, workers=2)
        assert np.array_equal(one, two)


def test_bad_layout_and_seq_len():
    with pytest.raises(ValueError, match="unknown layout"):
        build_token_array(["a"], tiny_tokenizer(), "rows", seq_len=8)
    with pytest.raises(ValueError, match="seq_len"):
        build_token_array(["a"], tiny_tokenizer(), "paper", seq_len=1)


# ---------------------------------------------------------------------------------------------------------------
# cache


def build(source, cache, tok=None, **kw):
    args = dict(wiki_size=10, seed=0, layout="paper", seq_len=8, sources=[source], cache_dir=cache,
                show_progress=False)
    args.update(kw)
    return load_or_build_corpus(tok or tiny_tokenizer(), **args)


def test_cache_is_reused_and_keyed(source, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    rows, meta = build(source, cache)
    assert not meta["reused"] and isinstance(rows, np.memmap) and rows.shape == (10, 8)
    npy = cache / os.path.basename(meta["path"])
    assert npy.name.startswith("wiki-paper-10-s0-") and npy.with_suffix(".json").is_file()
    side = json.loads(npy.with_suffix(".json").read_text())
    assert side["vocab_hash"] == tiny_tokenizer().vocab_hash and side["dtype"] == "uint16"
    assert side["counts"]["kept"] == 40 and side["counts"]["selected"] == side["counts"]["rows"] == 10
    assert 0 < side["counts"]["pad_fraction"] < 1 and side["counts"]["unk_fraction"] == 0
    assert side["sources"][0]["path"] == str(source.resolve())
    mtime = npy.stat().st_mtime_ns

    def no_build(*a, **k):
        raise AssertionError("rebuilt although the cache matches")
    monkeypatch.setattr(corpus, "build_token_array", no_build)
    again, meta2 = build(source, cache)
    assert meta2["reused"] and np.array_equal(again, rows) and npy.stat().st_mtime_ns == mtime
    monkeypatch.undo()

    paths = {meta["path"]}
    for kw in (dict(seed=1), dict(tok=tiny_tokenizer(extra=["mouse"])), dict(seq_len=16), dict(layout="packed"),
               dict(wiki_size=11)):
        _, m = build(source, cache, **kw)
        assert not m["reused"] and m["path"] not in paths, kw
        paths.add(m["path"])
    os.utime(source, ns=(1, 1))  # a copied or re-mounted source (new mtime, same bytes) still hits the cache
    assert build(source, cache)[1]["reused"]
    source.write_bytes(source.read_bytes() + b"\n")  # changed bytes invalidate, even at the old mtime
    os.utime(source, ns=(1, 1))
    assert build(source, cache)[1]["path"] not in paths


def test_failed_rebuild_leaves_old_cache_intact(source, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _, meta = build(source, cache)
    files = sorted(cache.iterdir())
    before = [p.read_bytes() for p in files]

    def boom(*a, **k):
        raise RuntimeError("killed mid-build")
    monkeypatch.setattr(corpus, "build_token_array", boom)
    with pytest.raises(RuntimeError):
        build(source, cache, rebuild=True)
    monkeypatch.undo()
    monkeypatch.setattr(corpus, "_write_sidecar", boom)  # fails after the new .npy was written to its temp name
    with pytest.raises(RuntimeError):
        build(source, cache, rebuild=True)
    assert sorted(cache.iterdir()) == files  # no temp files left behind
    assert [p.read_bytes() for p in files] == before
    monkeypatch.undo()
    assert build(source, cache)[1]["reused"]


def test_unreadable_sidecar_means_rebuild(source, tmp_path):
    cache = tmp_path / "cache"
    _, meta = build(source, cache)
    side = cache / (os.path.basename(meta["path"])[:-4] + ".json")
    side.write_text("{ half-written")
    _, meta2 = build(source, cache)
    assert not meta2["reused"] and json.loads(side.read_text())["key"] == meta["key"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYBERT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("TINYBERT_CACHE")
    assert default_cache_dir().name == "cache"
    assert cache_paths(tmp_path, "packed", 90000, 42, "ab" * 32)[0].name == "wiki-packed-90000-s42-abababababab.npy"


# ---------------------------------------------------------------------------------------------------------------
# CLIs


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    tiny_tokenizer().save(path)
    return path


def test_prepare_wiki_cli(source, vocab, tmp_path, capsys):
    argv = ["--wiki-size", "10", "--seed", "3", "--seq-len", "8", "--vocab", str(vocab), "--source", str(source),
            "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert prepare_wiki.main(argv) == 0
    out = capsys.readouterr().out
    assert "kept 40" in out and "10 rows" in out and "dtype uint16" in out and "cache: " in out
    assert prepare_wiki.main(argv + ["--layout", "packed"]) == 0
    assert "layout packed" in capsys.readouterr().out
    assert prepare_wiki.main(argv) == 0
    assert "reused from cache" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["missing", "corrupt", "too_few", "no_vocab"])
def test_prepare_wiki_cli_errors_exit_2(source, vocab, tmp_path, capsys, problem):
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(b"garbage" * 50)
    src = {"missing": tmp_path / "missing.jsonl", "corrupt": bad}.get(problem, source)
    argv = ["--wiki-size", "100" if problem == "too_few" else "5", "--source", str(src), "--quiet",
            "--vocab", str(tmp_path / "nope.txt" if problem == "no_vocab" else vocab), "--cache-dir", str(tmp_path)]
    assert prepare_wiki.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert {"missing": "missing.jsonl", "corrupt": "bad.tar.xz", "too_few": "asked for 100",
            "no_vocab": "nope.txt"}[problem] in err


def test_train_vocab_cli(source, tmp_path, capsys):
    out = tmp_path / "v" / "vocab.txt"
    argv = ["--wiki-size", "30", "--vocab-size", "40", "--source", str(source), "--out", str(out), "--quiet"]
    assert train_vocab.main(argv) == 0
    tok = WordPieceTokenizer.from_vocab(out)
    assert 5 < tok.vocab_size <= 40 and tok.encode("the cat", add_special_tokens=False)
    meta = json.loads((out.parent / "vocab.txt.meta.json").read_text())
    assert meta["articles"] == 30 and meta["vocab_hash"] == tok.vocab_hash
    capsys.readouterr()
    assert train_vocab.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert train_vocab.main(argv + ["--force"]) == 0
    assert train_vocab.main(argv[:-3] + ["--out", str(tmp_path / "w.txt"), "--wiki-size", "99"]) == 2
    assert "asked for 99" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# a light touch of the real data


def test_real_articles_first_tokens_match_full_encoding():
    data_dir = resolve_data_dir()  # the full data or the embedded sample
    tok = WordPieceTokenizer.from_vocab(data_dir / "bert_vocab" / "vocab.txt")
    sources = default_wiki_sources(data_dir)
    texts = [a.text for a in itertools.islice(iter_articles(sources[0]), 300)]
    rows = build_token_array(texts, tok, "paper", seq_len=128, workers=1)
    for text, row in zip(texts, rows):
        ids = tok.encode(text, max_length=128)
        assert row.tolist() == ids + [tok.pad_id] * (128 - len(ids))


def test_skip_draws_a_disjoint_held_out_set(tmp_path):
    """train.py's held-out slice: the next articles of the same permutation, disjoint from the training set."""
    src = tmp_path / "many.jsonl"
    src.write_text("".join(f'{{"text": "article number {i}"}}\n' for i in range(50)))
    train_texts = select_articles([src], 30, seed=7)
    held_out = select_articles([src], 10, seed=7, skip=30)
    both = select_articles([src], 40, seed=7)
    assert not set(train_texts) & set(held_out)
    assert set(train_texts) | set(held_out) == set(both)


def test_sources_are_read_once_until_forgotten(tmp_path, monkeypatch):
    src = tmp_path / "few.jsonl"
    src.write_text("".join(f'{{"text": "article {i}"}}\n' for i in range(20)))
    calls = []
    real = corpus.iter_articles
    monkeypatch.setattr(corpus, "iter_articles", lambda *a, **k: calls.append(1) or real(*a, **k))
    corpus.forget_texts()
    stats_a, stats_b = ReadStats(), ReadStats()
    a = select_articles([src], 5, seed=1, stats=stats_a)
    b = select_articles([src], 5, seed=1, stats=stats_b)
    assert a == b and len(calls) == 1
    assert stats_a.kept == stats_b.kept == 20  # each caller still gets the read counts
    src.write_text("".join(f'{{"text": "changed article {i}"}}\n' for i in range(20)))  # new size: re-read
    assert select_articles([src], 5, seed=1)[0].startswith("changed") and len(calls) == 2
    corpus.forget_texts()
    select_articles([src], 5, seed=1)
    assert len(calls) == 3


def test_the_vocab_cache_follows_the_sources_bytes_not_their_mtime(source, tmp_path):
    """A copied data folder (new mtimes) reuses the trained vocab; changed bytes train a new one."""
    from data_prep.pretrain_data import load_or_train_vocab
    cache = tmp_path / "cache"
    args = dict(wiki_size=30, seed=0, vocab_size=len(SPECIAL_TOKENS) + 40, cache_dir=cache, show_progress=False)
    first, meta = load_or_train_vocab([source], **args)
    assert not meta["reused"]
    os.utime(source, ns=(1, 1))
    again, meta2 = load_or_train_vocab([source], **args)
    assert meta2["reused"] and meta2["vocab"] == meta["vocab"] and again.vocab_hash == first.vocab_hash
    source.write_text(source.read_text().replace("cat", "cow"))  # same size, other bytes
    os.utime(source, ns=(1, 1))
    _, meta3 = load_or_train_vocab([source], **args)
    assert not meta3["reused"] and meta3["vocab"] != meta["vocab"]
