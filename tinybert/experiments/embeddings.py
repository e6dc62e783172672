"""Embedding health of the pre-trained models: do the rows of tokens never seen in pre-training collapse?

    python -m tinybert.experiments.embeddings --preset cpu [--out results/cpu]

Why: with the bert-base-uncased vocabulary (30,522 types) and a few thousand short articles, most vocabulary rows
never occur in the pre-training rows. Through the tied MLM decoder every such row still receives a gradient at
each masked position (its share of the softmax normaliser, the same direction for all of them), and AdamW turns
those tiny gradients into full-size steps; so the unseen rows drift together onto one shared vector, and a task
token the corpus lacked reaches fine-tuning with the same embedding as every other unseen token. This module
measures that, from the finished pre-training units of an experiment folder, without training anything.
(Whether it matters for fine-tuning is what the `reset_unseen` study tests: in the cpu run it did not explain
the negative pre-training gaps; see RESULTS.md.)

For each unit under `<out>/units/pretrain-*/` (spec.json + model.pt) the word-embedding rows are split into tokens
seen in that unit's pre-training rows and tokens never seen (special tokens excluded), and per group it reports:
the number of rows, their mean L2 norm, and the mean pairwise cosine similarity over a seeded sample of rows.
For reference, the initialisation (normal, std 0.02) gives a mean cosine of about 0 in both groups.
Writes `<out>/embeddings.csv` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tinybert.checkpoint import load_checkpoint

from .presets import PRESETS, get_preset
from .tables import md_table
from .units import Workspace

SAMPLE_ROWS = 2000  # rows per group for the pairwise cosine: 2M pairs, exact enough, fast on a CPU


def mean_pairwise_cosine(rows: torch.Tensor, sample: int = SAMPLE_ROWS, seed: int = 0) -> float:
    """Mean cosine similarity over all distinct pairs of (a seeded sample of) `rows`."""
    if len(rows) < 2:
        return float("nan")
    if len(rows) > sample:
        g = torch.Generator().manual_seed(seed)
        rows = rows[torch.randperm(len(rows), generator=g)[:sample]]
    unit = torch.nn.functional.normalize(rows.double(), dim=1)
    n = len(unit)
    # sum over i != j of cos(i, j) = |sum of unit vectors|^2 - n
    total = unit.sum(0).pow(2).sum().item() - n
    return total / (n * (n - 1))


def embedding_stats(embedding: torch.Tensor, seen: np.ndarray, exclude) -> dict:
    """Per group ('seen', 'unseen'): rows, mean norm, mean pairwise cosine. `seen` is a boolean per token id."""
    keep = np.ones(len(seen), dtype=bool)
    keep[list(exclude)] = False
    out = {}
    for group, mask in (("seen", seen & keep), ("unseen", ~seen & keep)):
        rows = embedding[torch.from_numpy(np.flatnonzero(mask))].float()
        out[f"{group}_rows"] = int(len(rows))
        out[f"{group}_norm"] = float(rows.norm(dim=1).mean()) if len(rows) else float("nan")
        out[f"{group}_cosine"] = mean_pairwise_cosine(rows)
    return out


def collect(ws: Workspace) -> pd.DataFrame:
    rows = []
    for unit in sorted(ws.units.glob("pretrain-*")):
        spec_path, model_path = unit / "spec.json", unit / "model.pt"
        if not (spec_path.is_file() and model_path.is_file()):
            continue  # unfinished or failed unit
        spec = json.loads(spec_path.read_text())
        state = load_checkpoint(model_path, kind="mlm")["model"]
        emb = state["bert.embeddings.word_embeddings.weight"]
        seen = ws.corpus_counts(spec["corpus"]) > 0
        layers, heads, conv, kernel = (spec["model"][k] for k in ("layers", "heads", "conv_layers", "conv_kernel"))
        rows.append({"unit": unit.name, "layers": layers, "heads": heads, "conv_layers": conv,
                     "conv_kernel": "x".join(map(str, kernel)) if conv else "",
                     "corpus": spec["corpus"]["kind"], "articles": spec["corpus"]["articles"], "seed": spec["seed"],
                     **embedding_stats(emb, seen, ws.exclude)})
    df = pd.DataFrame(rows)
    if len(df):  # deep model first, then by corpus and size, so the table reads like the studies
        df = df.sort_values(["layers", "corpus", "articles", "heads", "conv_layers", "conv_kernel", "seed"],
                            ascending=[False, True, True, True, True, True, True], ignore_index=True)
    return df


def markdown(df: pd.DataFrame) -> str:
    headers = ["layers x heads (conv)", "corpus", "articles", "seed", "seen rows", "unseen rows",
               "norm seen / unseen", "cosine seen / unseen"]
    body = [[f"{r.layers} x {r.heads}" + (f" (conv {r.conv_layers} x {r.conv_kernel})" if r.conv_layers else ""), r.corpus,
             r.articles, r.seed, r.seen_rows, r.unseen_rows, f"{r.seen_norm:.2f} / {r.unseen_norm:.2f}",
             f"{r.seen_cosine:.2f} / {r.unseen_cosine:.2f}"] for r in df.itertuples()]
    return md_table(headers, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinybert.experiments.embeddings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), required=True)
    p.add_argument("--out", help="experiment folder (default results/<preset>)")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--source", nargs="+", help="the article files the run used, if not the default")
    args = p.parse_args(argv)
    preset = get_preset(args.preset)
    out = Path(args.out or f"results/{preset.name}")
    ws = Workspace(preset, out, data_dir=args.data_dir, cache_dir=args.cache_dir, sources=args.source)
    df = collect(ws)
    if df.empty:
        print(f"error: no finished pre-training unit under {ws.units}", file=sys.stderr)
        return 1
    df.to_csv(out / "embeddings.csv", index=False)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
