"""The five studies as grids of units, and the numbers derived from finished units (committees, overlap table,
latency).

Where it sits: presets.py says what to run, this file lists the rows (`GridRow`: one fine-tuning unit as seen by
one study, with the study's labels), units.py runs them, runner.py writes the tables.

* ``pretrain_gap`` (E1, E4, C1-C3, C11): the deep model and the main BERT-1, each from scratch and pre-trained on
  `main_size` articles, on every task and seed.
* ``size`` (E2, C4): the deep model from scratch (0 articles) and pre-trained on each of `sizes`.
* ``overlap`` (E3, C5): the deep model on `overlap.task`, pre-trained on `overlap.size` articles chosen for
  high, random and low overlap with that task, plus the scratch control; and (`overlap_table`) the overlap of
  every task sample with every corpus of the preset, without training.
* ``reset_unseen`` (an intervention behind E2/E3): the deep model pre-trained on the smallest size and on
  `main_size` articles, fine-tuned as in ``size`` and again after the word-embedding rows of every token its
  pre-training rows never contained are drawn afresh from the initial distribution (corpus label
  'nested-reset'), and again with the transformer blocks re-initialised and the embeddings kept
  ('nested-blocks'). If those collapsed rows are what makes small corpora hurt, the reset closes the gap; if
  the blocks are, the second arm does.
* ``committee`` (E5, E6, C7-C10): members = the BERT-1 variants (pre-training seed 0) and K pre-training seeds
  of the main BERT-1, each fine-tuned with init seed seed + 10007 * member (as eval.py); the reference is the
  deep model pre-trained on the same `main_size` articles. `committee_rows` turns the members' test
  probabilities into accuracy vs K; `measure_latency` times every model and both committees.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from tinybert.committee import BatchedCommittee, committee_accuracy_curve, member_by_member
from tinybert.model import BertForSequenceClassification, count_parameters, encoder_macs_per_token

from .presets import ModelSpec, Preset, TaskSpec
from .units import Workspace, finetune_spec, load_probs, pretrain_spec, spec_hash

STUDIES = ("pretrain_gap", "size", "overlap", "reset_unseen", "committee")
COMMITTEE_ORDERS = 100


@dataclass
class GridRow:
    study: str
    model: ModelSpec
    task: TaskSpec
    seed: int
    pretrain: dict | None          # pre-training spec; None = from scratch
    ft: dict                       # fine-tuning spec
    articles: int = 0
    corpus: str = "none"           # 'none' | 'nested' | 'high' | 'random' | 'low'
    pretrain_seed: int | None = None
    committee: str = ""            # '' | 'variants' | 'seeds' | 'reference'
    member: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ft_hash(self) -> str:
        return spec_hash(self.ft)


def _row(ws: Workspace, study: str, model: ModelSpec, task: TaskSpec, seed: int, *, articles: int = 0,
         corpus: str = "nested", pretrain_seed: int = 0, member: int = 0, committee: str = "",
         reset_unseen: bool = False, reinit_blocks: bool = False) -> GridRow:
    pre = None
    if articles:
        pre = pretrain_spec(ws, model, ws.corpus_spec(corpus, articles), pretrain_seed)
    ft = finetune_spec(ws, model, pre, task, seed, member, reset_unseen=reset_unseen, reinit_blocks=reinit_blocks)
    label = corpus + ("-reset" if reset_unseen else "") + ("-blocks" if reinit_blocks else "") if articles else "none"
    return GridRow(study, model, task, seed, pre, ft, articles, label,
                   pretrain_seed if articles else None, committee, member if committee else None)


def build_grid(preset: Preset, ws: Workspace, studies) -> list[GridRow]:
    rows: list[GridRow] = []
    p = preset
    main_bert1 = p.shallow[0]
    for study in studies:
        if study == "pretrain_gap":
            for model in (p.deep, main_bert1):
                for task in p.tasks:
                    for seed in p.seeds:
                        rows.append(_row(ws, study, model, task, seed))
                        rows.append(_row(ws, study, model, task, seed, articles=p.main_size))
        elif study == "size":
            for name in p.size_tasks:
                task = p.task(name)
                for seed in p.seeds:
                    rows.append(_row(ws, study, p.deep, task, seed))
                    for n in p.sizes:
                        rows.append(_row(ws, study, p.deep, task, seed, articles=n))
        elif study == "overlap":
            task = p.task(p.overlap.task)
            for seed in p.seeds:
                rows.append(_row(ws, study, p.deep, task, seed))
                for arm in p.overlap.arms:
                    rows.append(_row(ws, study, p.deep, task, seed, articles=p.overlap.size, corpus=arm))
        elif study == "reset_unseen":
            for name in p.size_tasks:
                task = p.task(name)
                for seed in p.seeds:
                    rows.append(_row(ws, study, p.deep, task, seed))
                    for n in p.reset_sizes or sorted({min(p.sizes), p.main_size}):
                        for reset, blocks in ((False, False), (True, False), (False, True)):
                            rows.append(_row(ws, study, p.deep, task, seed, articles=n, reset_unseen=reset,
                                             reinit_blocks=blocks))
        elif study == "committee":
            for name in p.committee_tasks:
                task = p.task(name)
                for seed in p.seeds:
                    rows.append(_row(ws, study, p.deep, task, seed, articles=p.main_size, committee="reference"))
                    for m, variant in enumerate(p.shallow):
                        rows.append(_row(ws, study, variant, task, seed, articles=p.main_size, member=m,
                                         committee="variants"))
                    for m in range(p.committee_seeds):
                        rows.append(_row(ws, study, main_bert1, task, seed, articles=p.main_size, pretrain_seed=m,
                                         member=m, committee="seeds"))
        else:
            raise ValueError(f"unknown study {study!r}; expected one of {STUDIES} or 'all'")
    return rows


# ----------------------------------------------------------------------------------------------------------
# derived numbers


def committee_rows(ws: Workspace, grid: list[GridRow], records: dict) -> list[dict]:
    """Accuracy vs K for every (committee, task, seed) whose members all finished: one dict per K.

    accuracy = the mean over COMMITTEE_ORDERS random member orders (the expected accuracy of a random K-subset);
    accuracy_given_order = the first K members in the preset's order. Committee = argmax of the mean of the
    members' softmax probabilities (committee.py); final_accuracy uses the members' last-epoch models.
    """
    groups: dict = {}
    for r in grid:
        if r.study == "committee" and r.committee in ("variants", "seeds"):
            groups.setdefault((r.committee, r.task, r.seed), []).append(r)
    out = []
    for (kind, task, seed), members in groups.items():
        members = sorted(members, key=lambda r: r.member)
        base = {"study": "committee", "model": f"committee-{kind}", "family": "committee", "pretrained": True,
                "pretrain_articles": members[0].articles, "corpus": "nested", "task": task.name, "seed": seed,
                "committee": kind, "members": len(members)}
        recs = [records.get(r.ft_hash) for r in members]
        bad = [(r, rec) for r, rec in zip(members, recs) if rec is None or rec.get("status") != "ok"]
        if bad:
            if any(rec is not None for _, rec in bad):  # only report committees whose members were attempted
                why = "; ".join(f"member {r.member} ({r.model.name}): "
                                f"{'not run' if rec is None else rec.get('error', '')}" for r, rec in bad)
                out.append({**base, "committee_k": len(members), "status": "failed",
                            "error": f"{len(bad)} member(s) failed: {why}"[:500]})
            continue
        probs = [load_probs(ws, r.ft) for r in members]
        if any(p is None for p in probs):
            continue
        labels = probs[0]["labels"]
        if any(not np.array_equal(p["labels"], labels) for p in probs):
            out.append({**base, "committee_k": len(members), "status": "failed",
                        "error": "members were tested on different test sets"})
            continue
        sel = committee_accuracy_curve([p["probs"] for p in probs], labels, COMMITTEE_ORDERS, seed=seed)
        fin = committee_accuracy_curve([p["final_probs"] for p in probs], labels, COMMITTEE_ORDERS, seed=seed)
        for k in range(len(members)):
            out.append({**base, "committee_k": k + 1, "accuracy": sel["random_mean"][k],
                        "accuracy_given_order": sel["given"][k], "final_accuracy": fin["random_mean"][k],
                        "setting": recs[0].get("setting"), "num_labels": recs[0].get("num_labels"),
                        "pretrain_seconds": sum((rec.get("pretrain") or {}).get("seconds", 0) for rec in recs[:k + 1]),
                        "finetune_seconds": sum(rec.get("finetune_seconds", 0) for rec in recs[:k + 1]),
                        "params": sum(rec.get("params", 0) for rec in recs[:k + 1]),
                        "status": "ok", "error": "", "device": recs[0].get("device"), "date": recs[-1].get("date")})
    return out


def overlap_table(ws: Workspace, preset: Preset) -> list[dict]:
    """Overlap of every task sample (every seed) with every corpus of the preset: the nested sizes (0 and the
    size study's) and the overlap arms. No training; one row per (task, seed, corpus)."""
    corpora = [("none", 0, None)] + [("nested", n, ws.corpus_spec("nested", n))
                                     for n in sorted(set(preset.sizes) | {preset.main_size})]
    corpora += [(arm, preset.overlap.size, ws.corpus_spec(arm, preset.overlap.size)) for arm in preset.overlap.arms]
    rows = []
    for task in preset.tasks:
        for seed in preset.seeds:
            for kind, n, spec in corpora:
                res = ws.task_overlap(task, seed, spec)
                rows.append({"task": task.name, "setting": ws.task(task, seed).setting, "seed": seed, "corpus": kind,
                             "pretrain_articles": n, **res, "preset": preset.name, "vocab": ws.vocab_label})
    return rows


def latency_spec(ws: Workspace, preset: Preset) -> dict:
    return {"kind": "latency", "deep": ws.model_config(preset.deep).to_dict(),
            "shallow": [ws.model_config(m).to_dict() for m in preset.shallow], "k": preset.committee_seeds,
            "seq_len": preset.finetune["max_length"], "latency": preset.latency, "machine": ws.machine,
            "precision": ws.precision.name}


def measure_latency(ws: Workspace, preset: Preset, log=print) -> list[dict]:
    """Median forward time of the deep model, each BERT-1 variant, the committee of the variants (member by
    member) and the K-seeds committee (member by member, and as one batched vmapped forward), with
    tinybert.bench_latency.time_call. Random weights (latency does not depend on them), 4 labels, eval mode."""
    from tinybert.bench_latency import time_call

    lat = preset.latency
    seq = preset.finetune["max_length"]
    device, precision = ws.device, ws.precision

    def build(spec: ModelSpec, seed: int = 0):
        torch.manual_seed(seed)
        return BertForSequenceClassification(ws.model_config(spec), 4).to(device).eval()

    deep = build(preset.deep)
    variants = [build(m) for m in preset.shallow]
    seeds = [build(preset.shallow[0], s) for s in range(preset.committee_seeds)]
    batched = BatchedCommittee(seeds) if len(seeds) > 1 else None
    rows = []
    for batch in lat["batch_sizes"]:
        ids = torch.randint(1000, ws.tokenizer.vocab_size, (batch, seq), device=device)

        def measure(name, family, mode, fn, models):
            with torch.inference_mode(), precision.autocast(device):
                times = time_call(fn, device, lat["repeats"], lat["warmup"])
            rows.append({"model": name, "family": family, "mode": mode, "members": len(models), "batch": batch,
                         "seq_len": seq, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
                         "params_m": sum(count_parameters(m) for m in models) / 1e6,
                         "gmacs_per_seq": sum(encoder_macs_per_token(m.config, seq) * seq for m in models) / 1e9,
                         "depth": max(m.config.layers for m in models)})
            log(f"  latency {name:<28} {mode:<16} batch {batch:>3}: {rows[-1]['median_ms']:8.2f} ms")

        measure(preset.deep.name, "bert6", "single", lambda: deep(ids), [deep])
        for spec, m in zip(preset.shallow, variants):
            measure(spec.name, "bert1", "single", lambda m=m: m(ids), [m])
        measure("committee-variants", "committee", "member-by-member", lambda: member_by_member(variants, ids),
                variants)
        measure("committee-seeds", "committee", "member-by-member", lambda: member_by_member(seeds, ids), seeds)
        if batched is not None:
            measure("committee-seeds", "committee", "batched-vmap", lambda: batched(ids), seeds)
    return rows
