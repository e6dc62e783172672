"""Token overlap (tinybert/overlap.py): exact values on hand-made arrays, the controlled selection, the CLI."""

import numpy as np
import pytest

from tinybert import overlap as ov

# ids: 0 [PAD], 1 [UNK], 2 [CLS], 3 [SEP], 4 [MASK]; 5.. words
SPECIAL = [0, 1, 2, 3, 4]
V = 12


def test_token_counts_exclude_specials_and_accept_lists_and_arrays():
    rows = np.array([[2, 5, 6, 6, 3, 0], [2, 7, 1, 3, 0, 0]])
    counts = ov.token_counts(rows, V, SPECIAL)
    assert counts.tolist() == [0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0]
    assert ov.token_counts([[2, 5, 6, 6, 3], [7]], V, SPECIAL).tolist() == counts.tolist()
    with pytest.raises(ValueError, match="token ids must lie"):
        ov.token_counts([[V]], V)


def test_occurrence_and_type_overlap_exact():
    corpus = np.array([[2, 5, 6, 6, 3, 0]])                 # seen types {5, 6}
    task = [[2, 5, 7, 3], [2, 7, 7, 8, 6, 3], [2, 1, 3]]    # occurrences 5,7,7,7,8,6 ([UNK] excluded)
    res = ov.task_corpus_overlap(task, corpus, V, SPECIAL)
    assert res["task_tokens"] == 6 and res["task_types"] == 4
    assert res["covered_tokens"] == 2 and res["covered_types"] == 2
    assert res["overlap_tokens"] == pytest.approx(2 / 6)      # (a) 5 and 6 occur once each
    assert res["overlap_types"] == pytest.approx(2 / 4)       # (b) {5, 6} of {5, 6, 7, 8}
    assert res["corpus_tokens"] == 3 and res["corpus_types"] == 2
    assert res["corpus_share"] == 1.0                          # (c) every corpus token (5, 6, 6) is a task type


def test_corpus_share_counts_pretraining_occurrences():
    task = [[2, 5, 7, 3]]                                    # task types {5, 7}
    corpus = np.array([[2, 5, 5, 9, 3], [2, 7, 10, 11, 0]])  # content 5,5,9,7,10,11: 3 of 6 are task types
    res = ov.task_corpus_overlap(task, corpus, V, SPECIAL)
    assert res["corpus_in_task"] == 3 and res["corpus_share"] == pytest.approx(3 / 6)
    assert res["overlap_tokens"] == 1.0                      # (a) saturates while (c) does not
    assert np.isnan(ov.task_corpus_overlap(task, np.zeros((0, 3), np.int64), V, SPECIAL)["corpus_share"])


def test_overlap_edge_cases():
    task = [[2, 5, 3]]
    empty = np.zeros((0, 4), dtype=np.int64)
    assert ov.task_corpus_overlap(task, empty, V, SPECIAL)["overlap_tokens"] == 0.0
    full = ov.task_corpus_overlap(task, np.array([[5]]), V, SPECIAL)
    assert full["overlap_tokens"] == 1.0 and full["overlap_types"] == 1.0
    nothing = ov.task_corpus_overlap([[2, 3]], np.array([[5]]), V, SPECIAL)
    assert np.isnan(nothing["overlap_tokens"]) and np.isnan(nothing["overlap_types"])


def test_frequent_types_top_k_ties_by_lower_id():
    counts = np.array([0, 0, 0, 0, 0, 3, 1, 3, 2, 0, 1, 0])
    assert np.flatnonzero(ov.frequent_types(counts, 2)).tolist() == [5, 7]       # 3, 3
    assert np.flatnonzero(ov.frequent_types(counts, 4)).tolist() == [5, 6, 7, 8]  # then 2, then 1 (id 6 < 10)
    assert np.flatnonzero(ov.frequent_types(counts, 100)).tolist() == [5, 6, 7, 8, 10]  # never a zero count


def test_article_scores_share_of_frequent_content_tokens():
    frequent = np.zeros(V, bool)
    frequent[[5, 6]] = True
    rows = np.array([[2, 5, 6, 7, 3, 0],    # 2 of 3 content tokens frequent
                     [2, 8, 9, 3, 0, 0],    # 0 of 2
                     [2, 5, 5, 5, 5, 3],    # 4 of 4
                     [2, 3, 0, 0, 0, 0]])   # no content: score 0
    scores, n = ov.article_scores(rows, frequent, SPECIAL)
    assert n.tolist() == [3, 2, 4, 0]
    assert scores.tolist() == pytest.approx([2 / 3, 0.0, 1.0, 0.0])


def test_select_high_low_random():
    scores = np.array([0.5, 0.9, 0.1, 0.9, 0.3, 0.0, 0.7])
    n_content = np.array([10, 10, 10, 10, 10, 2, 10])  # row 5 is too short to be a candidate
    assert ov.select_by_overlap(scores, n_content, 2, "high", min_tokens=5).tolist() == [1, 3]
    assert ov.select_by_overlap(scores, n_content, 2, "low", min_tokens=5).tolist() == [2, 4]
    assert ov.select_by_overlap(scores, n_content, 3, "high", min_tokens=5).tolist() == [1, 3, 6]
    assert ov.select_by_overlap(scores, n_content, 2, "low", min_tokens=0).tolist() == [2, 5]
    r1 = ov.select_by_overlap(scores, n_content, 3, "random", min_tokens=5, seed=1)
    r2 = ov.select_by_overlap(scores, n_content, 3, "random", min_tokens=5, seed=1)
    assert r1.tolist() == r2.tolist() and len(set(r1)) == 3 and 5 not in r1 and list(r1) == sorted(r1)
    # ties: the lower row index first, in both directions
    assert ov.select_by_overlap(np.array([0.5, 0.5, 0.5]), np.array([9, 9, 9]), 1, "high").tolist() == [0]
    assert ov.select_by_overlap(np.array([0.5, 0.5, 0.5]), np.array([9, 9, 9]), 1, "low").tolist() == [0]
    with pytest.raises(ValueError, match="only 6 candidate"):
        ov.select_by_overlap(scores, n_content, 7, "high", min_tokens=5)
    with pytest.raises(ValueError, match="arm"):
        ov.select_by_overlap(scores, n_content, 1, "middle")


def test_selection_separates_overlap_on_a_toy_pool():
    """Articles made of the task's words score high; the 'high' arm then overlaps the task more than 'low'."""
    rng = np.random.default_rng(0)
    task_words = np.arange(5, 15)
    other = np.arange(15, 60)
    task_rows = rng.choice(task_words, size=(20, 8))
    pool = np.array([rng.choice(task_words if i % 3 == 0 else other, size=8) for i in range(60)])
    vocab = 60
    freq = ov.frequent_types(ov.token_counts(task_rows, vocab, SPECIAL), 5)
    scores, n = ov.article_scores(pool, freq, SPECIAL)
    hi = pool[ov.select_by_overlap(scores, n, 10, "high")]
    lo = pool[ov.select_by_overlap(scores, n, 10, "low")]
    o_hi = ov.task_corpus_overlap(task_rows, hi, vocab, SPECIAL)["overlap_tokens"]
    o_lo = ov.task_corpus_overlap(task_rows, lo, vocab, SPECIAL)["overlap_tokens"]
    assert o_hi > 0.5 and o_lo == 0.0


def test_cli_prints_both_measures(tmp_path, capsys):
    words = ["the", "game", "market", "president", "won", "team", "shares", "oil", "season", "company"]
    rng = np.random.default_rng(0)
    src = tmp_path / "wiki.txt"
    src.write_text("\n".join(" ".join(rng.choice(words, size=12)) for _ in range(40)) + "\n")
    rc = ov.main(["--task", "agnews", "--wiki-size", "30", "--source", str(src), "--cache-dir", str(tmp_path / "c"),
                  "--seq-len", "16", "--max-length", "32", "--train-per-label", "3", "--test-per-label", "2",
                  "--top-k", "50"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "occurrence overlap (a):" in out and "type overlap (b):" in out
    value = float(out.split("occurrence overlap (a):")[1].split()[0])
    assert 0.0 < value < 1.0
