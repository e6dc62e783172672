"""The yardstick: a bag-of-words classifier (TF-IDF on word uni+bigrams + multinomial logistic regression).

Where it sits in the flow: task examples (data_prep/tasks.py) -> **here** -> accuracy, beside the BERT models'
accuracy on exactly the same train / validation / test rows (eval.py --baseline, the quickstart). A BERT that
this classifier beats has not yet shown that its pre-training or its attention buys anything.

Recipe (what scikit-learn's TfidfVectorizer + LogisticRegression would do, written with numpy and torch):
  * words: lowercase, runs of letters/digits (`WORD`), plus every pair of neighbouring words (bigrams);
  * vocabulary: the features seen in at least `min_df` training texts, the `max_features` most frequent;
  * weights: sublinear tf (1 + log count) x smooth idf (log((1 + n) / (1 + df)) + 1), rows scaled to unit L2;
  * classifier: softmax regression with an L2 penalty, fitted full-batch with L-BFGS. The penalty strength
    C (sklearn's convention: C x summed loss + |W|^2 / 2) is chosen from `C_GRID` on the validation rows
    (first best on ties); without validation rows the middle of the grid is used.

`tfidf_dense` and `loss_dense` are the slow, obviously-correct references the sparse path is tested against.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

WORD = re.compile(r"[^\W_]+")  # letters and digits, any script
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def words_and_bigrams(text: str) -> list[str]:
    words = WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


@dataclass
class TfidfVectorizer:
    min_df: int = 1
    max_features: int = 200_000
    vocab: dict[str, int] = field(default_factory=dict)
    idf: np.ndarray | None = None

    def fit(self, texts: Sequence[str]) -> "TfidfVectorizer":
        df = Counter()
        for text in texts:
            df.update(set(words_and_bigrams(text)))
        kept = sorted((f for f, n in df.items() if n >= self.min_df), key=lambda f: (-df[f], f))
        kept = kept[:self.max_features]
        self.vocab = {f: i for i, f in enumerate(kept)}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[f])) + 1.0 for f in kept], dtype=np.float64)
        return self

    def counts(self, texts: Sequence[str]) -> list[Counter]:
        """Per text: feature index -> count (features outside the vocabulary dropped)."""
        return [Counter(self.vocab[f] for f in words_and_bigrams(t) if f in self.vocab) for t in texts]

    def transform(self, texts: Sequence[str]) -> torch.Tensor:
        """Sparse (len(texts), features) float32 CSR matrix of L2-normalised TF-IDF rows."""
        crow, cols, vals = [0], [], []
        for row in self.counts(texts):
            idx = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            w = (1.0 + np.log(np.fromiter(row.values(), dtype=np.float64, count=len(row)))) * self.idf[idx]
            norm = np.linalg.norm(w)
            cols.append(idx)
            vals.append(w / norm if norm > 0 else w)
            crow.append(crow[-1] + len(idx))
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the few ops used here are tested
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.tensor(crow), torch.from_numpy(np.concatenate(cols or [[]])).long(),
                                           torch.from_numpy(np.concatenate(vals or [[]])).float(),
                                           size=(len(texts), len(self.vocab)))


def tfidf_dense(vectorizer: TfidfVectorizer, texts: Sequence[str]) -> torch.Tensor:
    """Reference for `transform`: the same matrix built densely, one cell at a time."""
    out = torch.zeros(len(texts), len(vectorizer.vocab), dtype=torch.float64)
    for r, text in enumerate(texts):
        for feature in words_and_bigrams(text):
            if feature in vectorizer.vocab:
                out[r, vectorizer.vocab[feature]] += 1
        nz = out[r] > 0
        out[r, nz] = (1 + torch.log(out[r, nz])) * torch.from_numpy(vectorizer.idf)[nz]
        out[r] /= out[r].norm().clamp_min(1e-300)
    return out.float()


def loss_dense(x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               c: float) -> torch.Tensor:
    """Reference for `loss_and_grad`: the same objective on dense rows; autograd gives its gradients."""
    n = len(labels)
    return F.cross_entropy(x.to_dense() @ weight + bias, labels, reduction="sum") / n \
        + weight.pow(2).sum() / (2 * c * n)


def loss_and_grad(x: torch.Tensor, x_t: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C * summed CE + |W|^2 / 2) / (C * n) and its gradients, written out: the softmax-regression gradient
    is X^T (softmax - onehot), and two sparse products beat autograd through a sparse matmul 10x here.
    Dividing by C * n keeps the loss O(1) for L-BFGS's tolerances; the minimiser is the same."""
    n = len(labels)
    rows = torch.arange(n)
    logp = (x @ weight + bias).log_softmax(-1)
    loss = -logp[rows, labels].sum() / n + weight.pow(2).sum() / (2 * c * n)
    delta = logp.exp()
    delta[rows, labels] -= 1
    delta /= n
    return loss, x_t @ delta + weight / (c * n), delta.sum(0)


def fit_logistic(x: torch.Tensor, labels: torch.Tensor, num_labels: int, c: float, max_iter: int = 200,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-penalised softmax regression on sparse CSR rows `x` (bias unpenalised), full-batch L-BFGS from zeros
    or from `init` (a neighbouring C's solution): deterministic."""
    x_t = x.to_sparse_coo().t().coalesce().to_sparse_csr()
    weight = torch.zeros(x.shape[1], num_labels) if init is None else init[0].clone()
    bias = torch.zeros(num_labels) if init is None else init[1].clone()
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        loss, weight.grad, bias.grad = loss_and_grad(x, x_t, labels, weight, bias, c)
        return loss

    opt.step(closure)
    return weight, bias


@dataclass
class BaselineResult:
    c: float                    # the penalty chosen on validation
    val_acc: float | None       # at that C (None without validation rows)
    test_acc: float
    test_probs: np.ndarray      # (N, C) float32 in test order
    grid: list[dict]            # [{'c', 'val_acc'}] for every C tried
    features: int


def bag_of_words_baseline(train: Sequence, val: Sequence, test: Sequence, num_labels: int,
                          c_grid: Sequence[float] = C_GRID) -> BaselineResult:
    """Fit on `train`, choose C on `val`, report on `test` (objects with .text and .label, as in TaskData)."""
    if not train or not test:
        raise ValueError(f"the baseline needs training and test rows (got {len(train)} and {len(test)})")
    vec = TfidfVectorizer().fit([ex.text for ex in train])
    x_train = vec.transform([ex.text for ex in train])
    y_train = torch.tensor([ex.label for ex in train])
    x_val = vec.transform([ex.text for ex in val]) if val else None
    y_val = torch.tensor([ex.label for ex in val]) if val else None
    grid, best = [], None
    cs = list(c_grid) if val else [sorted(c_grid)[len(c_grid) // 2]]
    init = None
    with torch.no_grad():
        for c in sorted(cs):  # weak to strong fits, each warm-started from the last
            w, b = init = fit_logistic(x_train, y_train, num_labels, c, init=init)
            val_acc = None
            if x_val is not None:
                val_acc = float(((torch.sparse.mm(x_val, w) + b).argmax(-1) == y_val).float().mean())
            grid.append({"c": c, "val_acc": val_acc})
            if best is None or (val_acc is not None and val_acc > best[0]):
                best = (val_acc, c, w, b)
    val_acc, c, w, b = best
    x_test = vec.transform([ex.text for ex in test])
    logits = torch.sparse.mm(x_test, w) + b
    y_test = torch.tensor([ex.label for ex in test])
    test_acc = float((logits.argmax(-1) == y_test).float().mean())
    return BaselineResult(c=c, val_acc=val_acc, test_acc=test_acc, test_probs=logits.softmax(-1).numpy(),
                          grid=grid, features=len(vec.vocab))
