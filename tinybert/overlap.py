"""Token overlap between a fine-tuning task and a pre-training corpus (E3, claim C5 of
docs/paper-recipe.md#experiments-and-claims).

    python -m tinybert.overlap --task agnews --wiki-size 4000 [--seq-len 128] [--max-length 128] [--vocab PATH]

Where it sits in the flow: token arrays (data_prep/corpus.py) and tokenized task texts (finetune.encode_examples)
in, numbers out; the experiment runner (tinybert/experiments) records them per unit and selects the controlled
high/low-overlap pre-training sets with `article_scores` + `select_by_overlap`.

Definitions (exactly what the models see: the pre-training rows, i.e. the first `seq_len` tokens of each
article, and the task texts tokenized and truncated to the fine-tuning `max_length`). Special tokens ([PAD],
[UNK], [CLS], [SEP], [MASK]) are excluded on both sides.

* **occurrence overlap** (a) = sum over task token occurrences of [its id occurs at least once in the corpus]
  / number of task token occurrences. "How much of the task's text is made of tokens the model has seen."
* **type overlap** (b) = |task types that occur in the corpus| / |task types|. Types are distinct token ids.
* **corpus share** (c) = pre-training token occurrences whose id is a task type / pre-training token occurrences.
  The same overlap read from the pre-training side: "how much of what the model reads is the task's vocabulary".
  With a subword vocabulary trained on the pool, (a) and (b) saturate near 1 for any sizeable corpus; (c) is
  the measure the controlled high/low selection below moves.
* The task side is the union of the train (incl. validation) and test texts of one sample.

Controlled selection (`select_by_overlap`): the task's *frequent* tokens are its `top_k` most frequent types
(counts from the task's training texts; ties broken by the lower id). An article's score is the share of its
content tokens that are frequent task tokens. Among candidate articles with at least `min_tokens` content
tokens, 'high' takes the N best scores, 'low' the N worst and 'random' N drawn uniformly (seeded); ties in the
ranking go to the lower row index. All three arms come from the same candidates, so they differ in overlap,
not in how much text they hold.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, Sequence

import numpy as np

ARMS = ("high", "random", "low")


def special_ids(tokenizer) -> list[int]:
    """The ids excluded from every count: [PAD], [UNK], [CLS], [SEP], [MASK]."""
    return sorted({tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id})


def _flat_ids(sequences) -> np.ndarray:
    """A 2-D array (rows, seq_len) or a list of id lists -> one flat int64 array."""
    if isinstance(sequences, np.ndarray):
        return sequences.reshape(-1).astype(np.int64, copy=False)
    seqs = list(sequences)
    if not seqs:
        return np.zeros(0, np.int64)
    return np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs])


def token_counts(sequences, vocab_size: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """Occurrences of every id (length vocab_size, int64), with the `exclude` ids set to 0."""
    flat = _flat_ids(sequences)
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); found {flat.min()}..{flat.max()}")
    counts = np.bincount(flat, minlength=vocab_size).astype(np.int64)
    counts[list(exclude)] = 0
    return counts


def overlap_from_counts(task_counts: np.ndarray, corpus_counts: np.ndarray) -> dict:
    """Both measures from two count vectors over the same vocabulary (see the module docstring)."""
    if task_counts.shape != corpus_counts.shape:
        raise ValueError(f"count vectors differ in length: {task_counts.shape} vs {corpus_counts.shape}")
    seen = corpus_counts > 0
    task_types = task_counts > 0
    n_tokens = int(task_counts.sum())
    n_types = int(task_types.sum())
    covered_tokens = int(task_counts[seen].sum())
    covered_types = int((task_types & seen).sum())
    n_corpus = int(corpus_counts.sum())
    corpus_in_task = int(corpus_counts[task_types].sum())
    return {
        "overlap_tokens": covered_tokens / n_tokens if n_tokens else float("nan"),
        "overlap_types": covered_types / n_types if n_types else float("nan"),
        "corpus_share": corpus_in_task / n_corpus if n_corpus else float("nan"),
        "task_tokens": n_tokens, "task_types": n_types,
        "covered_tokens": covered_tokens, "covered_types": covered_types,
        "corpus_tokens": n_corpus, "corpus_in_task": corpus_in_task, "corpus_types": int(seen.sum()),
    }


def task_corpus_overlap(task_sequences, corpus_rows, vocab_size: int, exclude: Iterable[int] = ()) -> dict:
    """Occurrence and type overlap of task texts (id lists or an array) with corpus rows (an array)."""
    exclude = list(exclude)
    return overlap_from_counts(token_counts(task_sequences, vocab_size, exclude),
                               token_counts(corpus_rows, vocab_size, exclude))


# ----------------------------------------------------------------------------------------------------------
# controlled selection


def frequent_types(task_counts: np.ndarray, top_k: int) -> np.ndarray:
    """Bool mask of the `top_k` most frequent types with a non-zero count (ties: lower id first)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    order = np.lexsort((np.arange(len(task_counts)), -task_counts))  # by count descending, then id ascending
    chosen = order[:top_k]
    chosen = chosen[task_counts[chosen] > 0]
    mask = np.zeros(len(task_counts), bool)
    mask[chosen] = True
    return mask


def article_scores(rows: np.ndarray, frequent: np.ndarray,
                   exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (share of its content tokens that are frequent task tokens, number of content tokens).

    A row with no content token scores 0. `rows` is (n, seq_len); `frequent` a bool mask over the vocabulary.
    """
    rows = np.asarray(rows)
    content = np.ones(rows.shape, bool)
    for i in exclude:
        content &= rows != i
    n_content = content.sum(1)
    hits = (frequent[rows.astype(np.int64)] & content).sum(1)
    scores = np.divide(hits, n_content, out=np.zeros(len(rows), float), where=n_content > 0)
    return scores, n_content


def select_by_overlap(scores: np.ndarray, n_content: np.ndarray, n: int, arm: str, min_tokens: int = 0,
                      seed: int = 0) -> np.ndarray:
    """Row indices (sorted) of the `arm` ('high', 'random', 'low') selection of n candidates; see the docstring."""
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r}: expected one of {ARMS}")
    candidates = np.flatnonzero(np.asarray(n_content) >= min_tokens)
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} candidate articles have >= {min_tokens} content tokens; "
                         f"cannot select {n} (use a larger pool or a smaller min_tokens)")
    s = np.asarray(scores)[candidates]
    if arm == "random":
        chosen = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    elif arm == "high":
        chosen = candidates[np.lexsort((candidates, -s))[:n]]
    else:
        chosen = candidates[np.lexsort((candidates, s))[:n]]
    return np.sort(chosen)


# ----------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    from data_prep.registry import task_names  # here, not at the top: the library functions above need no readers

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Tasks read from the data dir alone: this command has no --train/--test files for the csv task.
    p.add_argument("--task", required=True, choices=task_names(data_dir_only=True))
    p.add_argument("--wiki-size", type=int, required=True, help="pre-training articles (the nested seeded selection)")
    p.add_argument("--seed", type=int, default=42, help="article selection seed (42)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per pre-training row (128)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per task text, [CLS]/[SEP] incl. (128)")
    p.add_argument("--vocab", help="vocab.txt (default <data dir>/bert_vocab/vocab.txt)")
    p.add_argument("--train-per-label", type=int, help="task sample sizes (default: the paper's)")
    p.add_argument("--test-per-label", type=int)
    p.add_argument("--task-seed", type=int, default=0, help="task sample seed (0)")
    p.add_argument("--setting", help="fewrel: train64 or val16")
    p.add_argument("--top-k", type=int, default=2000, help="also report the share of frequent-task tokens (2000)")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--source", nargs="+", help="article files instead of <data dir>/wikipedia/*.tar.xz")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from data_prep.corpus import load_or_build_corpus
    from data_prep.tasks import load_task
    from tinybert.data_dir import resolve_data_dir
    from tinybert.tokenizer import WordPieceTokenizer

    try:
        vocab = Path(args.vocab) if args.vocab else resolve_data_dir(args.data_dir) / "bert_vocab" / "vocab.txt"
        tok = WordPieceTokenizer.from_vocab(vocab)
        rows, meta = load_or_build_corpus(tok, args.wiki_size, args.seed, "paper", args.seq_len, sources=args.source,
                                          cache_dir=args.cache_dir, data_dir=args.data_dir, show_progress=False)
        task = load_task(args.task, args.data_dir, setting=args.setting, train_per_label=args.train_per_label,
                         test_per_label=args.test_per_label, seed=args.task_seed)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exclude = special_ids(tok)
    texts = [ex.text for ex in task.train + task.val + task.test]
    ids = tok.encode_batch(texts, add_special_tokens=True, max_length=args.max_length)
    task_counts = token_counts(ids, tok.vocab_size, exclude)
    corpus_counts = token_counts(np.asarray(rows), tok.vocab_size, exclude)
    res = overlap_from_counts(task_counts, corpus_counts)
    train_ids = ids[:len(task.train) + len(task.val)]
    freq = frequent_types(token_counts(train_ids, tok.vocab_size, exclude), args.top_k)
    scores, n_content = article_scores(np.asarray(rows), freq, exclude)
    print(f"task {task.setting} (seed {args.task_seed}): {len(texts):,} texts, {res['task_tokens']:,} tokens, "
          f"{res['task_types']:,} types (max length {args.max_length})")
    print(f"corpus: {args.wiki_size:,} articles (seed {args.seed}), first {args.seq_len} tokens each: "
          f"{res['corpus_tokens']:,} tokens, {res['corpus_types']:,} types")
    print(f"occurrence overlap (a): {res['overlap_tokens']:.4f}  ({res['covered_tokens']:,} of "
          f"{res['task_tokens']:,} task tokens have an id seen in pre-training)")
    print(f"type overlap (b):       {res['overlap_types']:.4f}  ({res['covered_types']:,} of "
          f"{res['task_types']:,} task types seen)")
    print(f"corpus share (c):       {res['corpus_share']:.4f}  ({res['corpus_in_task']:,} of "
          f"{res['corpus_tokens']:,} pre-training tokens are task types)")
    ok = n_content > 0
    print(f"mean share of the task's top-{args.top_k} tokens per article: {scores[ok].mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
