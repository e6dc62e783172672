"""Study ``committee`` (E5, E6, C7-C10): members = the BERT-1 variants (pre-training seed 0) and K pre-training
seeds of the main BERT-1, each fine-tuned with init seed seed + 10007 * member (as eval.py); the reference is the
deep model pre-trained on the same `main_size` articles. `committee_rows` turns the members' test probabilities
into accuracy vs K (rows of results.csv); `measure_latency` times every model and both committees (after a run,
cached as units/latency-<hash>.json, written to latency.csv by tables.py; a measurement taken while other processes
kept the cores busy is marked so and taken again).
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import torch

from tinybert.committee import BatchedCommittee, committee_accuracy_curve, member_by_member
from tinybert.committee_parallel import ProcessCommittee
from tinybert.model import BertForSequenceClassification, count_parameters, encoder_macs_per_token

from ..md import ci_of, md_table, pm
from ..stats import verdict
from ..presets import ModelSpec, Preset
from ..units import Workspace, format_exception, load_probs, now, read_json, spec_hash, write_json_atomic
from .baseline import baseline_row
from .core import GridRow, Study, TableInput, make_rows, register

COMMITTEE_ORDERS = 100


def grid(study: Study, p, ws) -> list:
    rows = []
    for name in p.committee_tasks:
        task = p.task(name)
        for seed in p.seeds:
            rows += make_rows(ws, study.name, p.deep, task, seed, articles=p.main_size, pretrain_seeds=(0,),
                              committee="reference")
            for m, variant in enumerate(p.shallow):
                rows += make_rows(ws, study.name, variant, task, seed, articles=p.main_size, pretrain_seeds=(0,),
                                  member=m, committee="variants")
            for m in range(p.committee_seeds):
                rows += make_rows(ws, study.name, p.shallow[0], task, seed, articles=p.main_size,
                                  pretrain_seeds=(m,), member=m, committee="seeds")
    return rows


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


def latency_spec(ws: Workspace, preset: Preset) -> dict:
    return {"kind": "latency", "deep": ws.model_config(preset.deep).to_dict(),
            "shallow": [ws.model_config(m).to_dict() for m in preset.shallow], "k": preset.committee_seeds,
            "seq_len": preset.finetune["max_length"], "latency": preset.latency, "machine": ws.machine,
            "precision": ws.precision.name, "threads": list(latency_threads(ws.device))}


def measure_latency(ws: Workspace, preset: Preset, log=print) -> list[dict]:
    """Median forward time of the deep model, each BERT-1 variant, the committee of the variants (member by
    member) and the K-seeds committee (member by member, and as one batched vmapped forward), and on the CPU in
    fp32 both committees with each member in its own process (committee_parallel.ProcessCommittee), with
    tinybert.bench_latency.time_call. Random weights (latency does not depend on them), 4 labels, eval mode.

    Threads: the in-process modes are timed with 1 torch thread and, on the CPU, again with one per core, so a
    single deep model gets the whole machine as the committee of processes does (each member process has 1
    thread; K of them share the cores). With fewer cores than K, the seeds committee is also timed as its first
    `cores` members in parallel: the largest committee this machine runs side by side."""
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
    # the claim's premise: members side by side, one process each (CPU only; with fewer cores than members they
    # compete for cores, hence the `cores` column)
    cores = os.cpu_count() or 1
    parallel = []  # (name, members, committee)
    if device.type == "cpu" and precision.name == "fp32":
        sizes = dict(max_batch=max(lat["batch_sizes"]), max_length=seq)
        parallel = [("committee-variants", variants, ProcessCommittee(variants, **sizes)),
                    ("committee-seeds", seeds, ProcessCommittee(seeds, **sizes))]
        if 1 < cores < len(seeds):
            parallel.append(("committee-seeds", seeds[:cores], ProcessCommittee(seeds[:cores], **sizes)))
    thread_counts = latency_threads(device)
    rows = []
    for batch in lat["batch_sizes"]:
        ids = torch.randint(1000, ws.tokenizer.vocab_size, (batch, seq), device=device)

        def measure(name, family, mode, fn, models, threads):
            with torch.inference_mode(), precision.autocast(device):
                times = time_call(fn, device, lat["repeats"], lat["warmup"])
            rows.append({"model": name, "family": family, "mode": mode, "members": len(models), "batch": batch,
                         "seq_len": seq, "threads": threads, "median_ms": 1e3 * statistics.median(times),
                         "min_ms": 1e3 * min(times), "params_m": sum(count_parameters(m) for m in models) / 1e6,
                         "gmacs_per_seq": sum(encoder_macs_per_token(m.config, seq) * seq for m in models) / 1e9,
                         "depth": max(m.config.layers for m in models), "cores": cores})
            log(f"  latency {name:<20} {mode:<18} K {len(models)} threads {threads} batch {batch:>3}: "
                f"{rows[-1]['median_ms']:8.2f} ms")

        before = torch.get_num_threads()
        try:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                measure(preset.deep.name, "bert6", "single", lambda: deep(ids), [deep], threads)
                for spec, m in zip(preset.shallow, variants):
                    measure(spec.name, "bert1", "single", lambda m=m: m(ids), [m], threads)
                measure("committee-variants", "committee", "member-by-member",
                        lambda: member_by_member(variants, ids), variants, threads)
                measure("committee-seeds", "committee", "member-by-member", lambda: member_by_member(seeds, ids),
                        seeds, threads)
                if batched is not None:
                    measure("committee-seeds", "committee", "batched-vmap", lambda: batched(ids), seeds, threads)
        finally:
            torch.set_num_threads(before)
        for name, members, committee in parallel:  # 1 thread per member process
            measure(name, "committee", "parallel-processes", lambda c=committee: c(ids), members, 1)
    for _, _, committee in parallel:
        committee.close()
    return rows


def latency_threads(device: torch.device) -> tuple:
    """Torch thread counts the in-process modes are timed at: 1, and on the CPU also one per core."""
    cores = os.cpu_count() or 1
    return (1, cores) if device.type == "cpu" and cores > 1 else (1,)


# Other processes using more than this many cores (e.g. a second block running beside this one) make a latency
# measurement unfair: the record is kept but marked busy, and the next run measures again.
BUSY_CORES = 0.3


def record_latency(ws: Workspace, preset: Preset, log=print) -> dict:
    """Measure the latency table now and write it as units/latency-<spec hash>.json (replacing an older one of
    the same spec). The CPU time other processes spend just before and just after the measurement (bench_latency
    .busy_cores) goes in the record; above BUSY_CORES it is marked `busy`."""
    from tinybert.bench_latency import busy_cores

    spec = latency_spec(ws, preset)
    before = busy_cores()
    rows = measure_latency(ws, preset, log)
    loads = [x for x in (before, busy_cores()) if x is not None]
    other = round(max(loads), 2) if loads else None
    rec = {"spec": spec, "rows": rows, "date": now(), "other_busy_cores": other,
           "busy": other is not None and other > BUSY_CORES}
    if rec["busy"]:
        log(f"latency: other processes kept {other:.1f} cores busy while it was measured, so these times are "
            f"too slow; the record is marked busy and measured again by the next committee run, or now with "
            f"`python -m tinybert.experiments latency --preset {preset.name}` on an idle machine")
    write_json_atomic(ws.units / f"latency-{spec_hash(spec)}.json", rec)
    return rec


def after_run(preset: Preset, ws: Workspace, log) -> None:
    """Time the models once per machine and preset (cached: a rerun does not measure again, unless the cached
    record was measured on a busy machine)."""
    cached = read_json(ws.units / f"latency-{spec_hash(latency_spec(ws, preset))}.json")
    if cached is not None and not cached.get("busy"):
        return
    log("measuring latency ...")
    try:
        record_latency(ws, preset, log)
    except Exception as exc:  # noqa: BLE001 -- latency is an extra; the run's units are kept
        log(f"latency FAILED: {format_exception(exc)[0]}")


def table(inp: TableInput) -> list[str]:
    parts, t, latency = [], inp.rows, inp.latency
    if len(t):
        rows = []
        headers = ["task", "committee", "K", "accuracy", "minus deep", "verdict", "deep", "best single member", "n"]
        for task, g in t.groupby("task", sort=False):
            ref = g[g["committee"] == "reference"]
            refs = ci_of(ref.iloc[0], "accuracy") if len(ref) else ""
            for kind in ("variants", "seeds"):
                c = g[(g["committee"] == kind) & (g["committee_k"] != "")].sort_values("committee_k")
                singles = g[(g["committee"] == kind) & (g["committee_k"] == "")]
                best = singles["accuracy_mean"].max() if len(singles) else float("nan")
                for r in c.itertuples():
                    rows.append([task, kind, r.committee_k, ci_of(r, "accuracy"), ci_of(r, "vs_deep", signed=True),
                                 verdict(r.vs_deep_mean, r.vs_deep_ci), refs, pm(best, None), int(r.n)])
            base = baseline_row(inp, task, accuracy_at=3, width=len(headers), n_at=8, label_at=1, task_at=0)
            if base:
                rows.append(base)
        parts += [f"## committee: soft committee of K BERT-1 models vs {inp.preset.deep.name} (both pre-trained on "
                  f"{inp.preset.main_size} articles)", md_table(headers, rows)]
    if latency:
        rows = [[r["model"], r["mode"], r["members"], r.get("threads", ""), r["batch"], f"{r['median_ms']:.2f}",
                 f"{r['params_m']:.2f}", f"{r['gmacs_per_seq']:.4f}", r["depth"]] for r in latency]
        busy = latency[0].get("other_busy_cores")
        note = (f"; **measured while other processes kept {busy:.1f} cores busy: too slow, measure again on an "
                f"idle machine**" if latency[0].get("busy") else "")
        parts += [f"## latency ({latency[0]['device']}, {latency[0]['precision']}, seq {latency[0]['seq_len']}; "
                  f"threads: torch threads per process, parallel-processes = one process per member{note})",
                  md_table(["model", "mode", "members", "threads", "batch", "median ms", "params M", "GMACs/seq",
                            "layers"], rows)]
    return parts


STUDY = register(Study("committee", grid, table, "plots.make_figures:fig_committee", derived_rows=committee_rows,
                       after_run=after_run, doc="soft-committee accuracy vs K against the deep model; latency"))
