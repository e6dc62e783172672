"""The runner: plan the units of the chosen studies, estimate the time, run what is not cached, write the tables.

Where it sits: the registered studies (studies/, one Study object each) list the rows; the runner loops over
them and names none of them. units.py runs one unit, this file orders the units, prints progress and ETA,
calls each study's `after_run` hook, and tables.py writes, in `<out>/`:

    results.csv   one row per (study, unit): every finished or failed fine-tuning unit of every study at every lr
                  of the grid (`lr`; `lr_chosen` marks its arm's lr chosen on validation, lr_select.py), the
                  bag-of-words baseline units (model `bag-of-words`, study and corpus `baseline`), plus the
                  derived committee rows (committee_k = K); the `status` and `error` columns say what failed;
                  `gap` = accuracy minus the from-scratch accuracy (chosen lr) of the same model, task and
                  fine-tuning seed; `selected_last_epoch`: the best-validation epoch was the last one
    summary.csv   per configuration, the chosen-lr units: mean, std (ddof 1) and 95% t half-width (`_ci`) over
                  fine-tuning seeds (n) of the accuracy, the paired pre-training gap and, for committees, the
                  paired difference to the deep reference; `pseed_diff`: second minus first pre-training seed
    lr_selection.csv   per arm and lr: mean best-validation accuracy, units, chosen, at the grid's edge
    overlap.csv   overlap of every task sample with every corpus (overlap study)
    latency.csv   inference latency of every model and committee (committee study)
    tables.md     one table per study, from summary.csv / overlap.csv / latency.csv, each with the baseline's row
                  and intervals; then the lr choice, the share of units whose selected epoch was the last one
                  and the binomial standard errors of the validation and test slices
    preset.json   the preset the folder was made with (a second preset into the same folder is refused)
    runs.jsonl    one line per `run`: command, git commit (and whether the tree had uncommitted changes),
                  machine, torch version, start and end time, units run and failed; RESULTS.md cites it

Caching: a fine-tuning unit whose ft-<hash>.json says 'ok' is never run again; a 'failed' one is retried
(unless --no-retry); a pre-training unit is reused when its model.pt exists and resumed from checkpoint.pt when
it was interrupted. So an interrupted run continues where it stopped, and a grown grid runs only what is new.
Any exception inside a unit is caught, recorded as failed (with the error) and the run goes on; Ctrl-C stops.

Estimate: each model configuration's training step is timed once on this machine (a pre-training step at
seq_len and a fine-tuning step at the mean padded width of the task sample's batches, optimiser step included;
cached per machine in <cache dir>/calibration.json, keyed by width), times the steps each unit will take, divided
by the number of parallel jobs.
The ETA after each unit rescales the remaining estimate by the measured/estimated ratio so far.

Parallel jobs (`--jobs N`, the cpu preset's default is 2): units run in N spawned worker processes with
`--threads` torch threads each (default 1); with `--device cuda` and several GPUs, worker i uses GPU i % n
(`worker_device`). For these small models two 1-thread processes get more done on two cores than one
2-thread process. A group (one pre-training still to train plus every unit that starts from it, or the units
that can be batched together) always runs in one worker, so a pre-training is never run twice
(`parallel_groups`).

Batching (unless --no-batch): consecutive units that differ only in their seeds (units.batch_key: fine-tuning
seeds, committee members) run as one batched model (units.run_finetune_batched, tinybert/finetune_batched.py),
each still cached under its own hash with its own records; if the batched run fails, its units run one at a time.
Baseline units never batch.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_prep.corpus import default_cache_dir
from data_prep.registry import get_task
from tinybert.config import ModelConfig
from tinybert.data import epoch_permutation
from tinybert.finetune import FinetuneConfig
from tinybert.model import IGNORE_INDEX, BertForMaskedLM, BertForSequenceClassification, dense_to_targets
from tinybert.runtime import git_commit, git_uncommitted_changes

from .presets import Preset, TaskSpec
from .process_guard import exit_when_orphaned, sigterm_as_interrupt
from .studies import GridRow, build_grid, registered
from .lr_select import extension_key, extensions_needed
from .tables import collect, write_tables
from .units import (Workspace, batch_key, format_exception, ft_record, now, pretrain_dir, pretrain_done, read_json,
                    record_failure, run_baseline, run_finetune, run_finetune_batched, run_pretrain, spec_hash,
                    write_json_atomic)

TABLES_EVERY_S = 120  # rewrite results.csv & co. at most this often during a run (and always at the end)


# ----------------------------------------------------------------------------------------------------------
# estimate


class Estimator:
    """Seconds per unit from timed training steps (cached per machine in <cache dir>/calibration.json)."""

    def __init__(self, ws: Workspace, preset: Preset, log=print):
        self.ws, self.preset, self.log = ws, preset, log
        # machine-specific, not run-specific: shared by every output folder that uses this cache
        self.path = Path(ws.cache_dir or default_cache_dir()) / "calibration.json"
        self.cache = read_json(self.path) or {}
        self._widths: dict = {}

    def _step(self, kind: str, config: dict, length: int, num_labels: int = 2) -> float:
        batch = self.preset.pretrain["batch_size"] if kind == "pretrain" else self.preset.finetune["batch_size"]
        key = f"{kind}|{spec_hash(config)}|{length}|{batch}|{num_labels}|{self.ws.machine}|{self.ws.precision.name}"
        if key not in self.cache:
            self.cache[key] = probe_step(ModelConfig.from_dict(config), kind, batch, length, num_labels,
                                         self.ws.device, self.ws.precision)
            write_json_atomic(self.path, self.cache)
        return self.cache[key]

    def pretrain(self, spec: dict) -> float:
        p = self.preset
        cfg = p.pretrain
        t = self._step("pretrain", spec["model"], p.seq_len)
        steps = cfg["epochs"] * (spec["corpus"]["articles"] // cfg["batch_size"])
        evals = cfg["epochs"] * math.ceil(p.eval_articles / cfg["batch_size"]) * t / 3
        return steps * t + evals + 2.0

    def finetune(self, spec: dict) -> float:
        if spec["kind"] == "baseline":  # a TF-IDF + logistic-regression fit: seconds, not worth timing
            return 2.0
        task, f = spec["task"], spec["finetune"]
        row = get_task(task["name"])  # the label count: the task table, data_prep/registry.py
        labels = task["labels"] or row.label_count(task["setting"])
        if labels is None:  # e.g. the csv task: only its data knows; a guess would skew the time estimate silently
            raise ValueError(f"task {row.name!r}: no label count in data_prep/registry.py; set labels in the "
                             f"preset's TaskSpec")
        n_val = task["val_per_label"]
        if n_val is None:
            n_val = max(1, int(task["train_per_label"] * 0.1))
        n_train = labels * (task["train_per_label"] - n_val)
        n_eval = labels * (n_val + task["test_per_label"])
        train_width, eval_width = self.widths(spec)
        t = self._step("finetune", spec["model"], train_width, labels)
        t_eval = self._step("finetune", spec["model"], eval_width, labels) / 3  # forward only: a third of a step
        return f["epochs"] * (math.ceil(n_train / f["batch_size"]) * t + n_eval / f["batch_size"] * t_eval) + 1.0

    def widths(self, spec: dict) -> tuple[int, int]:
        """The padded widths the unit's steps will have: the mean over training batches (a random order, each
        padded to its longest row) and over evaluation batches (sorted by length), from the task sample itself,
        rounded up to a multiple of 8 (fewer probes). A task's typical text length would not do: random
        batches pad to near their longest row (AG News, our 8k vocabulary: mean row 65 tokens, mean training
        batch 116 wide), and an estimate at the mean length was 2.4x short. One sample (the first seed asked
        for) stands for every seed of a task: their widths differ by a token or so."""
        task, f = spec["task"], spec["finetune"]
        key = (spec_hash(task), f["max_length"], f["batch_size"])
        if key not in self._widths:
            train, val, test = self.ws.encoded(TaskSpec(**task), spec["seed"], f["max_length"])
            eval_batch = f.get("eval_batch_size", FinetuneConfig.eval_batch_size)
            widths = (mean_padded_width([len(x) for x in train.ids], f["batch_size"], shuffle_seed=spec["seed"]),
                      mean_padded_width([len(x) for x in val.ids + test.ids], eval_batch))
            self._widths[key] = tuple(min(f["max_length"], 8 * math.ceil(w / 8)) for w in widths)
        return self._widths[key]


def mean_padded_width(lengths, batch_size: int, shuffle_seed: int | None = None) -> float:
    """Mean width of the batches that finetune.DeviceBatches cuts from rows of these lengths: each batch is
    as wide as its longest row; rows in a random epoch order (shuffle_seed, as train_batches) or sorted by
    length (None, as eval_batches)."""
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        return 0.0
    order = (epoch_permutation(len(lengths), shuffle_seed, 0).numpy() if shuffle_seed is not None
             else np.argsort(lengths, kind="stable"))
    return float(np.mean([lengths[order[i:i + batch_size]].max() for i in range(0, len(order), batch_size)]))


def probe_step(config: ModelConfig, kind: str, batch: int, length: int, num_labels: int, device,
               precision, repeats: int = 1) -> float:
    """Seconds of one training step (forward, backward, AdamW) on random ids; the global RNG is untouched."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        model = (BertForMaskedLM(config) if kind == "pretrain" else
                 BertForSequenceClassification(config, num_labels)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ids = torch.randint(1000, config.vocab_size, (batch, length), device=device)
        labels = (torch.where(torch.rand(ids.shape, device=device) < 0.15, ids, torch.full_like(ids, IGNORE_INDEX))
                  if kind == "pretrain" else torch.randint(0, num_labels, (batch,), device=device))
        if kind == "pretrain":
            labels = dense_to_targets(labels)  # the (B, M) target slots, gathered once as the training loop does

        def step():
            with precision.autocast(device):
                if kind == "pretrain":
                    loss = model(ids, None, labels).loss
                else:
                    loss = torch.nn.functional.cross_entropy(model(ids, None).float(), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return min(times[1:])


def fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------------------------
# run


def plan(preset: Preset, ws: Workspace, studies, retry_failed: bool = True, models=None, tasks=None,
         pretrain_seeds=None) -> dict:
    """The units of the named registered studies: unique fine-tuning units, those to run (in run order), how
    many are cached or retried, and the pre-trainings they need (all, and those not done yet). `models` /
    `tasks` (names) / `pretrain_seeds` keep only those models' / tasks' / pre-training seeds' units (a block of
    a long run); the baseline's units follow `tasks` only, and from-scratch units pass `pretrain_seeds`."""
    units: dict[str, GridRow] = {}
    for r in build_grid(preset, ws, studies):
        if models and r.study != "baseline" and r.model.name not in models:
            continue
        if tasks and r.task.name not in tasks:
            continue
        if pretrain_seeds is not None and r.pretrain is not None and r.pretrain_seed not in pretrain_seeds:
            continue
        units.setdefault(r.ft_hash, r)
    todo, cached, retry = [], 0, 0
    for r in units.values():
        rec = ft_record(ws, r.ft)
        if rec is not None and (rec.get("status") == "ok" or not retry_failed):
            cached += 1
        else:
            retry += rec is not None
            todo.append(r)
    # Studies in the order given; within a study, scratch units first, then grouped by pre-training (size,
    # corpus, model, pre-training seed), so each pre-trained model is loaded once for all its units; within that,
    # the fine-tuning seeds of one lr next to each other, so that they can run as one batched model (batches_of).
    order = {s: i for i, s in enumerate(studies)}
    todo.sort(key=lambda r: (order[r.study], r.pretrain is not None, r.articles, r.corpus, r.model.name,
                             r.pretrain_seed or 0, r.task.name, r.lr or 0.0, r.seed))
    pretrains = {}
    for r in todo:
        if r.pretrain is not None:
            pretrains.setdefault(spec_hash(r.pretrain), r.pretrain)
    pre_todo = {h: s for h, s in pretrains.items() if pretrain_done(ws, s) is None}
    return {"units": units, "todo": todo, "cached": cached, "retry": retry, "pretrains": pretrains,
            "pre_todo": pre_todo}


def estimate(preset: Preset, ws: Workspace, p: dict, jobs: int, log=print) -> dict:
    """Seconds per unit still to run (pre-trainings by spec hash, fine-tunings by unit hash); logs the total."""
    est = Estimator(ws, preset, log)
    t0 = time.perf_counter()
    estimates = {h: est.pretrain(s) for h, s in p["pre_todo"].items()}
    estimates.update({r.ft_hash: est.finetune(r.ft) for r in p["todo"]})
    probe_s = time.perf_counter() - t0
    total = sum(estimates.values())
    pre_total = sum(estimates[h] for h in p["pre_todo"])
    log(f"estimated time: {fmt_time(total / max(jobs, 1))} on {jobs} job(s) (units in sequence: pre-training "
        f"{fmt_time(pre_total)}, fine-tuning {fmt_time(total - pre_total)}; from training steps timed on this "
        f"machine now, {probe_s:.0f} s to measure; a busy machine makes it longer)")
    return estimates


def extend_lr_grid(preset: Preset, ws: Workspace, log=print, running=()) -> bool:
    """Record one more lr for every arm whose finished units chose an end of its grid (lr_select.py); True when
    any was added. An arm with a unit among `running` (grid rows still to run) waits: its choice is partial."""
    if preset.lr_extensions <= 0:
        return False
    busy = {extension_key(r.arm) for r in running}
    added = [(key, lr) for key, lr in extensions_needed(collect(preset, ws).attrs["lr_selection"], preset.lrs,
                                                        preset.lr_extensions, ws.lr_extensions)
             if key not in busy]
    if added:
        ws.add_lr_extensions(added, log)
    return bool(added)


def claim_output(preset: Preset, out: Path) -> None:
    """Refuse a folder that holds another preset's results, else record this preset there."""
    out.mkdir(parents=True, exist_ok=True)
    saved = read_json(out / "preset.json")
    if saved is not None and saved.get("name") != preset.name:
        raise ValueError(f"{out} holds results of preset {saved.get('name')!r}, not {preset.name!r}; "
                         f"choose another --out")
    write_json_atomic(out / "preset.json", preset.to_dict())


def run_studies(preset: Preset, ws: Workspace, studies, *, retry_failed: bool = True, dry_run: bool = False,
                jobs: int = 1, threads: int = 0, batch: bool = True, models=None, tasks=None, pretrain_seeds=None,
                log=print) -> int:
    """Plan, estimate, run and tabulate the named registered studies (only the `models` / `tasks` /
    `pretrain_seeds` units when given: see `plan`), then extend the lr grid where the preset allows
    (lr_select.py). Returns the number of failed units."""
    out = ws.out
    dirty = git_uncommitted_changes()  # before this run writes preset.json, which may be tracked (results/cpu)
    selected = registered(studies)  # unknown names fail here, before anything runs
    claim_output(preset, out)
    p = plan(preset, ws, studies, retry_failed, models, tasks, pretrain_seeds)
    # an arm whose units all finished in an earlier run extends now, beside the rest of the work, not after it
    if not dry_run and extend_lr_grid(preset, ws, log, running=p["todo"]):
        p = plan(preset, ws, studies, retry_failed, models, tasks, pretrain_seeds)
    todo, pre_todo, retry = p["todo"], p["pre_todo"], p["retry"]
    only = "".join(f"; only {what} {', '.join(map(str, names))}" for what, names in
                   (("models", models), ("tasks", tasks), ("pre-training seeds", pretrain_seeds)) if names is not None)
    log(f"preset {preset.name}: studies {', '.join(studies)}{only}; {ws.machine}, precision {ws.precision.name}")
    log(f"plan: {len(p['units'])} fine-tuning units ({p['cached']} cached, {len(todo)} to run"
        f"{f', {retry} of them failed before' if retry else ''}), {len(pre_todo)} pre-training runs to do "
        f"({len(p['pretrains']) - len(pre_todo)} reused)")
    estimates = estimate(preset, ws, p, jobs, log)
    if dry_run:
        return 0

    start = time.perf_counter()
    record = run_record(ws, studies, jobs, threads, len(todo), len(pre_todo), dirty)
    run_todo(preset, ws, p, estimates, jobs, threads, batch, log)
    for _ in range(2 * preset.lr_extensions):  # where a choice sits at an end of its arm's grid, go one lr further
        if not extend_lr_grid(preset, ws, log):
            break
        p = plan(preset, ws, studies, retry_failed, models, tasks, pretrain_seeds)
        log(f"lr extension: {len(p['todo'])} more fine-tuning units")
        if not p["todo"]:  # the new lrs belong to arms outside this block: its own rerun will run them
            break
        record["units_to_run"] += len(p["todo"])
        run_todo(preset, ws, p, estimate(preset, ws, p, jobs, log), jobs, threads, batch, log)
    for study in selected:  # what a study needs besides units (latency, overlap.csv); each catches its failures
        if study.after_run is not None:
            study.after_run(preset, ws, log)
    n_failed = write_tables(preset, ws, log=log, studies=studies)
    record.update(end=now(), seconds=round(time.perf_counter() - start), failed_rows=n_failed)
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    log(f"done in {fmt_time(time.perf_counter() - start)}: {out / 'results.csv'}, {out / 'summary.csv'}, "
        f"{out / 'tables.md'}" + (f"; {n_failed} failed row(s), see the error column" if n_failed else ""))
    return n_failed


def run_todo(preset: Preset, ws: Workspace, p: dict, estimates: dict, jobs: int, threads: int, batch: bool,
             log) -> None:
    """Run the units a plan (`plan`) left to do, in `jobs` workers or here, printing progress and ETA."""
    todo, pre_todo = p["todo"], p["pre_todo"]
    start = time.perf_counter()
    progress = Progress(todo, estimates, pre_todo, jobs, start, log)
    if jobs > 1 and len(todo) > 1:
        ws.pool()  # build the corpus cache once, here, before the workers read it
        run_parallel(preset, ws, todo, estimates, pre_todo, jobs, threads, progress, log, batch)
        return
    failed_pre: dict[str, str] = {}
    last_tables = start
    for rows in batches_of(todo, batch):
        outcomes = execute_units(ws, rows, estimates, pre_todo, failed_pre, log,
                                 prefix=f"[{progress.done + 1}/{len(todo)}]")
        for r, (msg, real, est) in zip(rows, outcomes):
            progress.update(r, msg, real, est)
        if time.perf_counter() - last_tables > TABLES_EVERY_S:  # partial results stay visible during long runs
            write_tables(preset, ws, log=None)
            last_tables = time.perf_counter()


def run_record(ws: Workspace, studies, jobs: int, threads: int, n_units: int, n_pretrain: int,
               dirty: bool | None) -> dict:
    """Who made these results: the command line, the commit and whether the working tree differed from it."""
    return {"command": " ".join(["python -m tinybert.experiments"] + sys.argv[1:]), "commit": git_commit(),
            "uncommitted_changes": dirty, "machine": ws.machine, "torch": torch.__version__,
            "precision": ws.precision.name, "studies": list(studies), "jobs": jobs, "threads": threads,
            "units_to_run": n_units, "pretrainings_to_run": n_pretrain, "start": now()}


class Progress:
    """Prints one line per finished unit with the ETA: the remaining estimate, rescaled by the measured/estimated
    ratio so far, divided by the number of parallel jobs."""

    def __init__(self, todo, estimates, pre_todo, jobs, start, log):
        self.todo, self.estimates, self.pre_todo = todo, estimates, pre_todo
        self.jobs, self.start, self.log = jobs, start, log
        self.done, self.done_est, self.done_real = 0, 0.0, 0.0
        self.remaining = sum(estimates.values())

    def update(self, r: GridRow, msg: str, real: float, est: float, quiet: bool = False) -> None:
        self.done += 1
        self.done_est += est
        self.done_real += real
        self.remaining = max(self.remaining - est, 0.0)
        if not quiet:
            self.log(f"[{self.done}/{len(self.todo)}] {describe(r)}: {msg} in {fmt_time(real)} | {self.status()}")

    def status(self) -> str:
        ratio = min(max(self.done_real / max(self.done_est, 1e-9), 0.25), 4.0)
        return (f"elapsed {fmt_time(time.perf_counter() - self.start)}, "
                f"ETA {fmt_time(self.remaining * ratio / self.jobs)}")


def batches_of(rows, batch: bool = True) -> list[list[GridRow]]:
    """`rows` cut into runs of consecutive units with the same units.batch_key (each run is one batched model;
    a run of one is a plain unit). Without `batch`, every unit on its own."""
    out: list[list[GridRow]] = []
    for r in rows:
        if batch and out and batch_key(out[-1][0].ft) == batch_key(r.ft):
            out[-1].append(r)
        else:
            out.append([r])
    return out


def execute_units(ws: Workspace, rows: list[GridRow], estimates: dict, pre_todo: dict, failed_pre: dict, log,
                  prefix: str = "") -> list[tuple[str, float, float]]:
    """execute_unit for each of `rows` (one batch of batches_of), as one batched fine-tuning when there are
    several; if that fails, they run one at a time (each failure then recorded on its own unit)."""
    if len(rows) == 1:
        return [execute_unit(ws, rows[0], estimates, pre_todo, failed_pre, log, prefix)]
    start = time.perf_counter()
    try:
        pre_info, pre_est = ensure_pretrain(ws, rows[0], estimates, pre_todo, failed_pre, log, prefix)
        log(f"{prefix} fine-tuning {len(rows)} units as one batched model: {describe(rows[0])} and its other seeds")
        recs = run_finetune_batched(ws, [r.ft for r in rows], rows[0].pretrain, pre_info)
    except KeyboardInterrupt:
        log("\ninterrupted; run the same command again to continue (finished units are kept)")
        raise
    except Exception as exc:  # noqa: BLE001 - the units are run (and their failures recorded) one at a time
        log(f"{prefix} batched fine-tuning failed ({format_exception(exc)[0]}); running its units one at a time")
        return [execute_unit(ws, r, estimates, pre_todo, failed_pre, log, prefix) for r in rows]
    real = (time.perf_counter() - start) / len(rows)
    return [(f"acc {rec['accuracy']:.4f} (last epoch {rec['final_accuracy']:.4f})", real,
             estimates.get(r.ft_hash, 0.0) + (pre_est if i == 0 else 0.0))
            for i, (r, rec) in enumerate(zip(rows, recs))]


def ensure_pretrain(ws: Workspace, r: GridRow, estimates: dict, pre_todo: dict, failed_pre: dict, log,
                    prefix: str = "") -> tuple[dict | None, float]:
    """The unit's pre-training record (None for a scratch unit), pre-training first when it is not done yet;
    and the estimated seconds of that pre-training when it ran here (else 0). A failed pre-training is remembered
    in `failed_pre` and raises RuntimeError."""
    if r.pretrain is None:
        return None, 0.0
    h = spec_hash(r.pretrain)
    if h in failed_pre:
        raise RuntimeError(f"pre-training {h} failed: {failed_pre[h]}")
    pre_info = pretrain_done(ws, r.pretrain)
    if pre_info is not None:
        return pre_info, 0.0
    log(f"{prefix} pre-training {r.model.name} on {r.articles} articles ({r.corpus}, seed "
        f"{r.pretrain_seed}) -> {pretrain_dir(ws, r.pretrain).name} (est. {fmt_time(estimates.get(h, 0))})")
    try:
        pre_info = run_pretrain(ws, r.pretrain, log)
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        err, tb = format_exception(exc)
        failed_pre[h] = err
        write_json_atomic(pretrain_dir(ws, r.pretrain) / "failed.json", {"error": err, "traceback": tb})
        log(f"{prefix} pre-training FAILED: {err}")
        raise RuntimeError(f"pre-training {h} failed: {err}") from None
    log(f"{prefix} pre-trained {r.model.name} on {r.articles} {r.corpus} articles in "
        f"{fmt_time(pre_info['seconds'])}, held-out masked-token accuracy {pre_info['eval_acc']:.4f}")
    return pre_info, estimates.get(h, 0.0)


def execute_unit(ws: Workspace, r: GridRow, estimates: dict, pre_todo: dict, failed_pre: dict, log,
                 prefix: str = "") -> tuple[str, float, float]:
    """Run one fine-tuning unit (and its pre-training first, when that is not done yet). Any exception is
    recorded in the unit's JSON as a failure; returns (message, seconds, estimated seconds)."""
    unit_start = time.perf_counter()
    est = estimates.get(r.ft_hash, 0.0)
    try:
        if r.ft["kind"] == "baseline":
            rec = run_baseline(ws, r.ft)
        else:
            pre_info, pre_est = ensure_pretrain(ws, r, estimates, pre_todo, failed_pre, log, prefix)
            est += pre_est
            rec = run_finetune(ws, r.ft, r.pretrain, pre_info)
        msg = f"acc {rec['accuracy']:.4f} (last epoch {rec['final_accuracy']:.4f})"
    except KeyboardInterrupt:
        log("\ninterrupted; run the same command again to continue (finished units are kept)")
        raise
    except Exception as exc:  # noqa: BLE001 - a failed unit is recorded and the study goes on
        err, tb = format_exception(exc)
        record_failure(ws, r.ft, err, tb)
        msg = f"FAILED: {err}"
    return msg, time.perf_counter() - unit_start, est


# -- parallel: independent groups of units (one pre-training and all units built on it) in worker processes --

_WORKER: dict = {}


def worker_device(device: str, index: int, device_count: int) -> str:
    """The device of parallel worker `index`: with a bare 'cuda' and several GPUs, worker i takes cuda:(i % n),
    so N jobs spread over the GPUs instead of all landing on cuda:0. An explicit index ('cuda:1'), one GPU, or
    any other device is used as given."""
    if device == "cuda" and device_count > 1:
        return f"cuda:{index % device_count}"
    return device


def _worker_init(ws_args: dict, threads: int, slots, parent_pid: int) -> None:
    """slots: a queue holding 0..jobs-1; each worker takes one number, its index (for worker_device)."""
    exit_when_orphaned(parent_pid)  # a killed run takes its workers with it (process_guard.py)
    torch.set_num_threads(max(threads, 1))
    ws_args = dict(ws_args)
    from tinybert.runtime import Precision
    count = torch.cuda.device_count() if ws_args["device"] == "cuda" else 0
    try:
        index = slots.get(timeout=10)
    except queue.Empty:  # a worker the pool started again after one died: the slots are all taken
        index = os.getpid()
    ws_args["device"] = torch.device(worker_device(ws_args["device"], index, count))
    if ws_args["device"].type == "cuda":
        torch.cuda.set_device(ws_args["device"])  # so code that says plain 'cuda' means this worker's GPU too
    ws_args["precision"] = Precision(*ws_args["precision"])
    _WORKER["ws"] = Workspace(**ws_args)


def _worker_group(job) -> list:
    group, estimates, pre_todo, batch = job
    ws = _WORKER["ws"]
    failed_pre: dict = {}
    out = []
    log = lambda m: print(m, flush=True)  # noqa: E731 - the workers share the parent's stdout
    for rows in batches_of(group, batch):
        for r, (msg, real, est) in zip(rows, execute_units(ws, rows, estimates, pre_todo, failed_pre, log,
                                                           prefix="  [worker]")):
            log(f"  [worker] {describe(r)}: {msg} in {fmt_time(real)}")
            out.append((r.ft_hash, msg, real, est))
    return out


def parallel_groups(todo, estimates, pre_todo, batch: bool = True) -> list[list[GridRow]]:
    """The work of one worker each, longest first: the units sharing a pre-training still to train (so it is
    trained once, by one worker, before them); else the units of one batch_key (one batched model; one unit
    without `batch`), whether they start from scratch or from a pre-training already on disk, so that a
    finished pre-training's units spread over all the workers instead of queueing in one."""
    by_key: dict = {}
    for r in todo:
        if r.pretrain is not None and spec_hash(r.pretrain) in pre_todo:
            key = ("pre", spec_hash(r.pretrain))
        else:
            key = ("unit", batch_key(r.ft) if batch else r.ft_hash)
        by_key.setdefault(key, []).append(r)

    def cost(g):
        pre = estimates.get(spec_hash(g[0].pretrain), 0.0) if g[0].pretrain is not None else 0.0
        return pre + sum(estimates[r.ft_hash] for r in g)

    return sorted(by_key.values(), key=cost, reverse=True)


def run_parallel(preset: Preset, ws: Workspace, todo, estimates, pre_todo, jobs: int, threads: int,
                 progress: Progress, log, batch: bool = True) -> None:
    """Units in `jobs` worker processes (spawned; `threads` torch threads each), in the groups of
    `parallel_groups`."""
    import multiprocessing

    groups = parallel_groups(todo, estimates, pre_todo, batch)
    rows = {r.ft_hash: r for r in todo}
    ws_args = {"preset": preset, "out": ws.out, "data_dir": ws.data_dir, "cache_dir": ws.cache_dir,
               "sources": ws.sources, "device": str(ws.device), "precision": (ws.precision.name, ws.precision.reason),
               "show_progress": False}
    log(f"running {len(todo)} units in {len(groups)} groups on {jobs} worker processes x {max(threads, 1)} thread(s)")
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()  # worker indices, one taken by each worker as it starts
    for i in range(jobs):
        slots.put(i)
    last_tables = time.perf_counter()
    try:
        with sigterm_as_interrupt(), ctx.Pool(jobs, initializer=_worker_init,
                                              initargs=(ws_args, threads, slots, os.getpid())) as pool:
            for results in pool.imap_unordered(_worker_group, [(g, estimates, pre_todo, batch) for g in groups]):
                for h, msg, real, est in results:
                    progress.update(rows[h], msg, real, est, quiet=True)
                log(f"[{progress.done}/{len(todo)} units done] {progress.status()}")
                if time.perf_counter() - last_tables > TABLES_EVERY_S:
                    write_tables(preset, ws, log=None)
                    last_tables = time.perf_counter()
    except KeyboardInterrupt:
        log("\ninterrupted; run the same command again to continue (finished units are kept, an interrupted "
            "pre-training resumes from its last epoch)")
        raise


def describe(r: GridRow) -> str:
    pre = "scratch" if r.pretrain is None else f"{r.articles} {r.corpus} articles, pre-seed {r.pretrain_seed}"
    member = f", member {r.member}" if r.member is not None else ""
    lr = f", lr {r.lr:g}" if r.lr is not None else ""
    return f"{r.study}: {r.model.name} ({pre}) on {r.task.name} seed {r.seed}{member}{lr}"
