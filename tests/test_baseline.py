"""The bag-of-words baseline: sparse TF-IDF and gradients against dense references, and that it learns."""

import math
import random

import pytest
import torch

from data_prep.tasks import Example
from tinybert.baseline import (TfidfVectorizer, bag_of_words_baseline, fit_logistic, loss_and_grad, loss_dense,
                               tfidf_dense, words_and_bigrams)

TEXTS = ["The cat sat on the mat.", "A dog, a cat and the dog again!", "Stocks fell 3% on Monday",
         "Ünïcode wörds_and numbers 42", ""]


def test_words_and_bigrams():
    assert words_and_bigrams("The cat, the HAT.") == ["the", "cat", "the", "hat", "the cat", "cat the", "the hat"]
    assert words_and_bigrams("snake_case") == ["snake", "case", "snake case"]  # '_' separates words


def test_idf_and_sublinear_tf_by_hand():
    vec = TfidfVectorizer().fit(["a a b", "b c"])
    n = 2
    idf = {f: math.log((1 + n) / (1 + df)) + 1 for f, df in {"a": 1, "b": 2, "c": 1, "a a": 1, "a b": 1,
                                                             "b c": 1}.items()}
    row = tfidf_dense(vec, ["a a b"])[0]
    raw = {"a": (1 + math.log(2)) * idf["a"], "b": idf["b"], "a a": idf["a a"], "a b": idf["a b"]}
    norm = math.sqrt(sum(v * v for v in raw.values()))
    for feature, value in raw.items():
        assert row[vec.vocab[feature]].item() == pytest.approx(value / norm, rel=1e-6)
    assert row[vec.vocab["c"]] == 0


def test_sparse_tfidf_equals_dense_reference():
    vec = TfidfVectorizer().fit(TEXTS[:4])
    queries = TEXTS + ["the cat and a mat", "nothing known here"]
    torch.testing.assert_close(vec.transform(queries).to_dense(), tfidf_dense(vec, queries), rtol=1e-6, atol=1e-7)


def test_written_out_gradient_equals_autograd():
    vec = TfidfVectorizer().fit(TEXTS)
    x = vec.transform(TEXTS)
    labels = torch.tensor([0, 1, 2, 1, 0])
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(x.shape[1], 3, generator=g, dtype=torch.float32)
    bias = torch.randn(3, generator=g)
    x_t = x.to_sparse_coo().t().coalesce().to_sparse_csr()
    loss, grad_w, grad_b = loss_and_grad(x, x_t, labels, weight, bias, c=2.0)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    ref = loss_dense(x, labels, w, b, c=2.0)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad_w, w.grad)
    torch.testing.assert_close(grad_b, b.grad)


def test_fit_reaches_the_minimum():
    vec = TfidfVectorizer().fit(TEXTS)
    x = vec.transform(TEXTS)
    labels = torch.tensor([0, 1, 2, 1, 0])
    x_t = x.to_sparse_coo().t().coalesce().to_sparse_csr()
    w, b = fit_logistic(x, labels, 3, c=1.0)
    _, grad_w, grad_b = loss_and_grad(x, x_t, labels, w, b, c=1.0)
    assert grad_w.abs().max() < 1e-4 and grad_b.abs().max() < 1e-4


def topic_examples(n_per_label, seed):
    """Two topics with disjoint cue words hidden among shared filler: bag-of-words separates them."""
    rng = random.Random(seed)
    cues = [["goal", "match", "league", "striker"], ["market", "shares", "profit", "bank"]]
    filler = "the a of in on today report said new year".split()
    out = []
    for label, words in enumerate(cues):
        for _ in range(n_per_label):
            out.append(Example(" ".join(rng.sample(filler, 5) + rng.sample(words, 2)), label))
    rng.shuffle(out)
    return out


def test_learns_a_topic_task_and_chooses_c_on_validation():
    train, val, test = topic_examples(40, 0), topic_examples(10, 1), topic_examples(25, 2)
    res = bag_of_words_baseline(train, val, test, num_labels=2)
    assert res.test_acc == 1.0 and res.val_acc == 1.0
    assert [g["c"] for g in res.grid] == sorted(g["c"] for g in res.grid) and len(res.grid) > 1
    assert res.c == next(g["c"] for g in res.grid if g["val_acc"] == max(h["val_acc"] for h in res.grid))
    assert res.test_probs.shape == (50, 2)
    again = bag_of_words_baseline(train, val, test, num_labels=2)
    assert (again.test_probs == res.test_probs).all()  # deterministic


def test_without_validation_uses_one_c_and_needs_rows():
    res = bag_of_words_baseline(topic_examples(10, 0), [], topic_examples(5, 1), num_labels=2)
    assert len(res.grid) == 1 and res.val_acc is None
    with pytest.raises(ValueError, match="training and test rows"):
        bag_of_words_baseline([], [], topic_examples(5, 1), num_labels=2)
