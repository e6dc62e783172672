"""Fine-tune and evaluate on a classification task: one model, a from-scratch control, or a soft committee.

    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt           # pre-trained BERT-6
    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt --no-pretrain   # same model, random init
    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt --baseline  # + bag-of-words on the same rows
    python eval.py --task dbpedia --no-pretrain --preset bert1-h8                # random init, vocab from --vocab
    python eval.py --task fewrel --checkpoint a.pt b.pt c.pt --seeds 0 1 2       # committee of 3, 3 repeats
    python eval.py --task csv --train tr.csv --test te.csv --text-col text --label-col label --checkpoint a.pt

Reading order: flags -> task data (data_prep.tasks.load_task, once per seed) -> members (checkpoint config and
vocab, or --preset/model flags + --vocab) -> per seed and member: tokenize, seed, build_classifier, finetune
(tinybert.finetune) -> committee curve (tinybert.committee) -> <out>/results.json (+ probs_seed<S>.npz).

Seeds: each seed draws its own task sample (load_task(seed=S)) and batch order (the same for every member), and
member m is initialised (fresh head, or the whole model without pre-training) and gets dropout from seed
S + 10007*m, so member 0 of a committee is the same run as a single-model evaluation with that checkpoint.
The reported accuracy is the test accuracy at the epoch of best validation accuracy ("selected"); the last
epoch's is reported beside it. Committee = argmax of the mean of the members' softmax probabilities (the
selected models'); a mean-of-logits committee is recorded too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.registry import task_names
from tinybert import plan
from tinybert.baseline import bag_of_words_baseline
from tinybert.checkpoint import CheckpointError, load_checkpoint
from tinybert.cli_types import (OneLineParser, dropout_rate, finite_nonnegative_float, finite_positive_float,
                                 nonnegative_int, positive_int, seed_int, sequence_length)
from tinybert.committee import committee_accuracy_curve
from tinybert.config import MODEL_PRESETS, ModelConfig, make_model_config, parse_conv_kernel
from tinybert.data_dir import DatasetNotFound, resolve_data_dir
from tinybert.finetune import (FinetuneConfig, build_classifier, encode_examples, estimate_step_seconds,
                               finetune)
from tinybert.model import count_parameters
from tinybert.optim import SCHEDULES
from tinybert.pretrain import TrainingDiverged
from tinybert.runtime import (PRECISIONS, choose_device, choose_precision, git_commit, seed_everything,
                              tune_cpu_allocator)
from tinybert.tokenizer import WordPieceTokenizer

MODEL_FLAGS = ("preset", "layers", "heads", "head_size", "conv_layers", "conv_kernel", "conv_channels", "dropout")
DATA_FLAGS = ("data_dir", "setting", "train_per_label", "test_per_label", "val_per_label", "train_file", "test_file",
              "text_col", "label_col")
MEMBER_SEED_STRIDE = 10007


class UsageError(ValueError):
    """A bad flag, combination of flags or input (exit 2 with "error: ...")."""


def task_reader():
    """(load_task, TaskDataError) from data_prep.tasks; a function so tests can substitute a stub."""
    from data_prep.tasks import TaskDataError, load_task
    return load_task, TaskDataError


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="eval.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    w = p.add_argument_group("what to evaluate")
    w.add_argument("--task", required=True, choices=task_names())  # data_prep/registry.py, read when built
    w.add_argument("--checkpoint", nargs="+", metavar="CKPT",
                   help="MLM checkpoint(s) (train.py's checkpoint.pt); several = a soft committee. One of "
                        "--checkpoint and --no-pretrain is required")
    w.add_argument("--no-pretrain", action="store_true",
                   help="random init: the --checkpoint architecture and vocab without its weights, or (with no "
                        "--checkpoint) --preset / model flags with --vocab")

    m = p.add_argument_group("model for random init without --checkpoint (a --preset, then flags override it)")
    m.add_argument("--preset", choices=sorted(MODEL_PRESETS))
    m.add_argument("--layers", type=positive_int)
    m.add_argument("--heads", type=positive_int)
    m.add_argument("--head-size", type=positive_int)
    m.add_argument("--conv-layers", type=nonnegative_int)
    m.add_argument("--conv-kernel", type=parse_conv_kernel)
    m.add_argument("--conv-channels", type=positive_int)
    m.add_argument("--dropout", type=dropout_rate, help="hidden and attention dropout (default 0.1)")
    m.add_argument("--vocab", help="vocab.txt for random init (default <data dir>/bert_vocab/vocab.txt)")

    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="datasets root (default: $TINYBERT_DATA, ../shared/data, ./data)")
    d.add_argument("--setting", help="fewrel: train64 (default) or val16")
    d.add_argument("--train-per-label", type=positive_int)
    d.add_argument("--test-per-label", type=positive_int)
    d.add_argument("--val-per-label", type=nonnegative_int)
    d.add_argument("--train", dest="train_file", help="--task csv: training CSV")
    d.add_argument("--test", dest="test_file", help="--task csv: test CSV (default: a seeded split of --train)")
    d.add_argument("--text-col", help="--task csv: text column")
    d.add_argument("--label-col", help="--task csv: label column")

    t = p.add_argument_group("fine-tuning (defaults: the paper's code)")
    t.add_argument("--seeds", type=seed_int, nargs="+", default=[0], help="repeats (sample, init, order); default 0")
    t.add_argument("--epochs", type=positive_int, default=50)
    t.add_argument("--lr", type=finite_positive_float, default=5e-5)
    t.add_argument("--batch-size", type=positive_int, default=32)
    t.add_argument("--weight-decay", type=finite_nonnegative_float, default=0.01)
    t.add_argument("--warmup-steps", type=nonnegative_int, default=0)
    t.add_argument("--schedule", choices=SCHEDULES, default="linear",
                   help="linear: decay per step; paper-epoch: the authors' per-epoch decay")
    t.add_argument("--max-length", type=sequence_length, default=128, help="tokens per text incl. [CLS]/[SEP] (128)")
    t.add_argument("--orders", type=positive_int, default=100, help="random member orders for the committee curve")
    t.add_argument("--baseline", action="store_true",
                   help="also fit the bag-of-words baseline (TF-IDF + logistic regression, C chosen on validation; "
                        "tinybert/baseline.py) on each seed's exact train/val/test rows")

    r = p.add_argument_group("run")
    r.add_argument("--out", help="output folder (default runs/eval/<task>-<model>)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing results.json in --out")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    r.add_argument("--precision", choices=PRECISIONS, default="auto")
    r.add_argument("--log-every", type=positive_int, default=50)
    r.add_argument("--no-progress", action="store_true")
    return p


# ----------------------------------------------------------------------------------------------------------
# members


def load_members(args) -> list[dict]:
    """One dict per member: name, checkpoint path, ckpt (weights or None), config, tokenizer."""
    given_model_flags = [f for f in MODEL_FLAGS if getattr(args, f) is not None]
    if args.checkpoint:
        if given_model_flags:
            raise UsageError(f"--{given_model_flags[0].replace('_', '-')} cannot be used with --checkpoint: "
                             f"the architecture comes from the checkpoint")
        if args.vocab:
            raise UsageError("--vocab cannot be used with --checkpoint: the checkpoint carries its vocab")
        members, tokenizers = [], {}
        for path in args.checkpoint:
            ckpt = load_checkpoint(path, kind="mlm")
            try:
                config = ModelConfig.from_dict(ckpt["model_config"])
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"checkpoint {path}: bad model_config: {exc}") from None
            key = tuple(ckpt["vocab"])
            if key not in tokenizers:
                try:
                    tokenizers[key] = WordPieceTokenizer(ckpt["vocab"])
                except ValueError as exc:
                    raise CheckpointError(f"checkpoint {path}: bad vocab: {exc}") from None
            weights = None if args.no_pretrain else {"model_config": ckpt["model_config"],
                                                     "model": ckpt["model"], "path": str(path)}
            members.append({"name": Path(path).parent.name or Path(path).stem, "checkpoint": str(path),
                            "ckpt": weights, "config": config, "tokenizer": tokenizers[key]})
        return members
    vocab_path = Path(args.vocab) if args.vocab else resolve_data_dir(args.data_dir) / "bert_vocab" / "vocab.txt"
    if not vocab_path.is_file():
        raise DatasetNotFound(f"vocab file {vocab_path} does not exist (pass --vocab PATH)")
    tokenizer = WordPieceTokenizer.from_vocab(vocab_path)
    config = make_model_config(
        args.preset, layers=args.layers, heads=args.heads, head_size=args.head_size,
        conv_layers=args.conv_layers, conv_kernel=args.conv_kernel, conv_channels=args.conv_channels,
        dropout=args.dropout, attention_dropout=args.dropout, vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id, max_position=max(128, args.max_length))
    return [{"name": args.preset or "custom", "checkpoint": None, "ckpt": None, "config": config,
             "tokenizer": tokenizer, "vocab": str(vocab_path)}]


def check_args(args) -> None:
    """Checks across flags (each number was already checked by its argparse type, tinybert/cli_types.py)."""
    if not args.checkpoint and not args.no_pretrain:  # no silent default between the two arms of the paper
        raise UsageError("say what to fine-tune: --checkpoint CKPT (a model pre-trained by train.py) or "
                         "--no-pretrain (random init: the from-scratch control)")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds has repeats: {args.seeds}")
    if args.task != "csv" and (args.train_file or args.test_file or args.text_col or args.label_col):
        raise UsageError("--train/--test/--text-col/--label-col are for --task csv")
    if args.task == "csv" and not args.train_file:
        raise UsageError("--task csv needs --train FILE (and optionally --test FILE)")


# ----------------------------------------------------------------------------------------------------------
# statistics and output


def mean_std(values) -> dict:
    """{'mean', 'std' (sample std, ddof 1; 0 for one value), 'n', 'values'}."""
    values = [float(v) for v in values]
    arr = np.array(values)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": len(values), "values": values}


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def default_out(args, members) -> Path:
    if not args.checkpoint:
        tag = f"scratch-{members[0]['name']}"
    elif len(members) > 1:
        tag = f"committee{len(members)}" + ("-scratch" if args.no_pretrain else "")
    else:
        tag = members[0]["name"] + ("-scratch" if args.no_pretrain else "")
    return Path("runs") / "eval" / f"{args.task}-{tag}"


def summarize(runs: list[dict], members: list[dict]) -> dict:
    summary = {"members": []}
    for m, member in enumerate(members):
        summary["members"].append({
            "name": member["name"], "checkpoint": member["checkpoint"],
            "selected_test_acc": mean_std(r["members"][m]["selected_test_acc"] for r in runs),
            "final_test_acc": mean_std(r["members"][m]["final_test_acc"] for r in runs),
            "best_val_acc": (mean_std(r["members"][m]["best_val_acc"] for r in runs)
                             if all(r["members"][m]["best_val_acc"] is not None for r in runs) else None)})
    if len(members) > 1:
        committee = {}
        for agg in ("probs", "logits"):
            curves = [r["committee"][agg] for r in runs]
            committee[agg] = {
                "k": curves[0]["k"],
                "given": [mean_std(c["given"][k] for c in curves) for k in range(len(members))],
                "random_mean": [mean_std(c["random_mean"][k] for c in curves) for k in range(len(members))]}
        summary["committee"] = committee
        full = committee["probs"]["given"][-1]
        summary["selected_test_acc"] = full  # the whole committee (soft, mean of probabilities)
        summary["headline"] = "committee of all members (mean of softmax probabilities)"
    else:
        summary["selected_test_acc"] = summary["members"][0]["selected_test_acc"]
        summary["final_test_acc"] = summary["members"][0]["final_test_acc"]
        summary["headline"] = "single model"
    if all("baseline" in r for r in runs):
        summary["baseline"] = {"test_acc": mean_std(r["baseline"]["test_acc"] for r in runs),
                               "method": "bag-of-words: TF-IDF word uni+bigrams + logistic regression"}
    return summary


def summary_line(task: str, results: dict, out_path: Path) -> str:
    s = results["summary"]
    n = len(results["seeds"])
    arm = "random init" if not results["pretrained"] else "pre-trained"
    if "committee" in s:
        ks = " ".join(f"{x['mean']:.4f}" for x in s["committee"]["probs"]["given"])
        best = max(m["selected_test_acc"]["mean"] for m in s["members"])
        return (f"{task}: committee of {len(s['members'])} ({arm}) test acc K=1..{len(s['members'])}: {ks} "
                f"(best member {best:.4f}) over {n} seed(s) -> {out_path}")
    sel, fin = s["selected_test_acc"], s["final_test_acc"]
    by_val = all(m["selection"] == "val" for r in results["runs"] for m in r["members"])
    where = "at best-val epoch" if by_val else "(no validation set: last epoch)"
    return (f"{task}: {s['members'][0]['name']} ({arm}) test acc {sel['mean']:.4f} ± {sel['std']:.4f} {where} "
            f"(last epoch {fin['mean']:.4f} ± {fin['std']:.4f}) over {n} seed(s) -> {out_path}")


# ----------------------------------------------------------------------------------------------------------
# main


def setup(args):
    """Everything that can fail on bad flags or inputs, before any training. ValueErrors become UsageErrors."""
    try:
        check_args(args)
        members = load_members(args)
        for member in members:
            if args.max_length > member["config"].max_position:
                raise UsageError(f"--max-length {args.max_length} exceeds the model's "
                                 f"{member['config'].max_position} positions "
                                 f"({member['checkpoint'] or member['name']})")
        out = Path(args.out) if args.out else default_out(args, members)
        if (out / "results.json").exists() and not args.overwrite:
            raise UsageError(f"{out / 'results.json'} exists; pass --overwrite to replace it or choose another --out")
        device = choose_device(args.device)
        precision = choose_precision(args.precision, device)
        cfg_base = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, max_length=args.max_length,
                        warmup_steps=args.warmup_steps, schedule=args.schedule, log_every=args.log_every)
        FinetuneConfig(**cfg_base)  # validate before any work
    except (UsageError, CheckpointError):
        raise
    except ValueError as exc:  # model config, device, precision, vocab file, fine-tuning settings
        raise UsageError(str(exc)) from None
    return members, out, device, precision, cfg_base


def one_class_warning(confusion: list[list[int]], label_names: list[str], args) -> str | None:
    """A warning when the selected model predicts one class for every test example although the test set holds
    several: the fine-tune learned a constant guess, and its accuracy is just that class's share."""
    counts = np.asarray(confusion)  # rows: true class, columns: predicted class
    predicted = np.flatnonzero(counts.sum(axis=0))
    if len(predicted) != 1 or np.count_nonzero(counts.sum(axis=1)) < 2:
        return None
    return (f"warning: the model predicts {label_names[predicted[0]]!r} for every test example, a constant guess. "
            f"Likely causes: a learning rate too high or too low (--lr {args.lr:g}), too few epochs (--epochs "
            f"{args.epochs}), or a pre-trained model that did not learn (see eval_acc in its metrics.csv)")


def load_tasks(args) -> list:
    """Every seed's sample first, so a data problem stops the run before any training."""
    load_task, _ = task_reader()
    tasks = []
    for seed in args.seeds:
        try:
            tasks.append(load_task(args.task, args.data_dir, setting=args.setting,
                                   train_per_label=args.train_per_label, test_per_label=args.test_per_label,
                                   val_per_label=args.val_per_label, seed=seed, train_file=args.train_file,
                                   test_file=args.test_file, text_col=args.text_col, label_col=args.label_col))
        except ValueError as exc:  # TaskDataError (bad input) or a bad reader argument
            raise UsageError(f"{args.task}: {exc}") from None
        if not tasks[-1].train or not tasks[-1].test:
            raise UsageError(f"{args.task} (seed {seed}): {len(tasks[-1].train)} training and "
                             f"{len(tasks[-1].test)} test examples; need at least one of each")
    return tasks


def projected_seconds(args, members, tasks, device, precision) -> tuple[float, float]:
    """(total seconds, seconds per training step of the first member): a few timed steps of each distinct
    architecture (tinybert.finetune.estimate_step_seconds) x steps per epoch x epochs x seeds x members, plus the
    per-epoch evaluation of validation and test rows (forward passes: a third of a training step per row)."""
    first = tasks[0]
    timed, total = {}, 0.0
    for member in members:
        key = repr(member["config"].to_dict())
        if key not in timed:
            ids = member["tokenizer"].encode_batch([ex.text for ex in first.train[:256]], add_special_tokens=True,
                                                   max_length=args.max_length)
            length = int(np.percentile([len(x) for x in ids], 95))  # a batch is as wide as its longest row
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model, _ = build_classifier(None, member["config"], len(first.label_names))
            timed[key] = estimate_step_seconds(model, min(args.batch_size, len(first.train)), length, device,
                                               precision)
            del model
        step_s = timed[key]
        for task in tasks:
            steps = math.ceil(len(task.train) / args.batch_size) * args.epochs
            eval_rows = (len(task.val) + len(task.test)) * args.epochs
            total += steps * step_s + eval_rows * step_s / args.batch_size / 3
    return total, timed[repr(members[0]["config"].to_dict())]


def print_plan(args, members, tasks, device, precision) -> None:
    """The projected total time, and a note when a CPU run would take hours."""
    seconds, step_s = projected_seconds(args, members, tasks, device, precision)
    steps = math.ceil(len(tasks[0].train) / args.batch_size)
    print(f"projected total time {plan.format_duration(seconds)} ({len(tasks)} seed(s) x {len(members)} member(s) "
          f"x {args.epochs} epochs x {steps} steps at ~{step_s:.3g} s/step, plus evaluation)")
    note = plan.cpu_note(seconds, device)
    if note:
        print(note)


def new_results(args, members, device, precision, cfg_base) -> dict:
    return {
        "task": args.task, "setting": None,
        "checkpoints": [m["checkpoint"] for m in members if m["checkpoint"]],
        "pretrained": any(m["ckpt"] is not None for m in members), "seeds": list(args.seeds),
        "config": {"finetune": cfg_base, "models": [m["config"].to_dict() for m in members],
                   "vocab": members[0].get("vocab"), "device": str(device), "precision": precision.name,
                   "orders": args.orders, "member_seed": f"seed + {MEMBER_SEED_STRIDE} * member",
                   "selection": "test accuracy at the epoch of best validation accuracy (first on ties)",
                   "committee": "argmax of the mean of softmax probabilities ('probs'); 'logits': mean of logits",
                   "data": {k: getattr(args, k) for k in DATA_FLAGS}},
        "command": "eval.py " + shlex.join(args.argv),
        "git_commit": git_commit(), "started": time.strftime("%F %T"), "torch": torch.__version__,
        "runs": [], "notes": [], "sources": [], "complete": False,
    }


def run(args) -> int:
    members, out, device, precision, cfg_base = setup(args)
    print(plan.output_line(out))
    print(f"device {device}, precision {precision.name} ({precision.reason})")
    print(f"{len(members)} member(s): " + ", ".join(
        f"{m['checkpoint'] or m['name']} ({'random init' if m['ckpt'] is None else 'pre-trained'}, "
        f"{m['config'].layers} layers x {m['config'].heads} heads x {m['config'].head_size})" for m in members))
    tasks = load_tasks(args)
    for note in dict.fromkeys(note for task in tasks for note in task.notes):  # each distinct note once, in order
        print(note if note.startswith("warning:") else f"note: {note}")
    print_plan(args, members, tasks, device, precision)
    out.mkdir(parents=True, exist_ok=True)
    results = new_results(args, members, device, precision, cfg_base)
    partial = out / "results.partial.json"
    start = time.perf_counter()
    try:
        for seed, task in zip(args.seeds, tasks):
            for key in ("notes", "sources"):
                results[key] += [x for x in getattr(task, key) if x not in results[key]]
            results["label_names"], results["setting"] = list(task.label_names), task.setting
            results["runs"].append(run_seed(args, seed, task, members, device, precision, cfg_base, out))
            write_json_atomic(partial, results)
            print(f"seed {seed} done: the results of {len(results['runs'])} of {len(args.seeds)} seed(s) are in "
                  f"{partial}")
    except KeyboardInterrupt:
        if results["runs"] and partial.is_file():  # (a file from an earlier interrupted run is not ours)
            print(f"\ninterrupted; the results of the {len(results['runs'])} finished seed(s) are in {partial}",
                  file=sys.stderr)
        else:
            print("\ninterrupted during the first seed; no results were written", file=sys.stderr)
        return 130

    results["summary"] = summarize(results["runs"], members)
    results["complete"] = True
    results["elapsed_s"] = time.perf_counter() - start
    results["files"] = {"probs": [f"probs_seed{s}.npz" for s in args.seeds],
                        "probs_layout": "probs/logits/final_probs: (members, test examples, labels) in member "
                                        "and test order; labels: (test examples,)"}
    results_path = out / "results.json"
    write_json_atomic(results_path, results)
    partial.unlink(missing_ok=True)
    print(summary_line(args.task, results, results_path))
    if "baseline" in results["summary"]:
        b = results["summary"]["baseline"]["test_acc"]
        print(f"{args.task}: bag-of-words baseline on the same rows: test acc {b['mean']:.4f} ± {b['std']:.4f}")
    return 0


def run_baseline(seed: int, task) -> dict:
    """The bag-of-words yardstick on this seed's rows (the same the members see)."""
    res = bag_of_words_baseline(task.train, task.val, task.test, len(task.label_names))
    print(f"seed {seed}: bag-of-words baseline test acc {res.test_acc:.4f} (C {res.c:g} chosen on validation, "
          f"{res.features:,} features)")
    return {"test_acc": res.test_acc, "val_acc": res.val_acc, "c": res.c, "grid": res.grid,
            "features": res.features}


def run_seed(args, seed: int, task, members, device, precision, cfg_base, out: Path) -> dict:
    """Fine-tune every member on this seed's sample; write probs_seed<S>.npz; return the seed's record."""
    num_labels = len(task.label_names)
    run_rec = {"seed": seed, "data": {"train": len(task.train), "val": len(task.val), "test": len(task.test),
                                      "num_labels": num_labels},
               "notes": list(task.notes), "members": []}
    if args.baseline:
        run_rec["baseline"] = run_baseline(seed, task)
    encoded = {}
    probs, logits, final_probs, labels = [], [], [], None
    for m, member in enumerate(members):
        tok = member["tokenizer"]
        if id(tok) not in encoded:
            encoded[id(tok)] = [encode_examples(tok, split, args.max_length) if split else None
                                for split in (task.train, task.val, task.test)]
        train, val, test = encoded[id(tok)]
        init_seed = seed + MEMBER_SEED_STRIDE * m
        seed_everything(init_seed)
        model, report = build_classifier(member["ckpt"], member["config"], num_labels)
        model = model.to(device)
        desc = f"seed {seed} member {m + 1}/{len(members)}" if len(members) > 1 else f"seed {seed}"
        print(f"{desc}: {member['checkpoint'] or member['name']} "
              f"({'random init' if report is None else 'pre-trained encoder'}), "
              f"{count_parameters(model):,} parameters, {len(task.train)}/{len(task.val)}/{len(task.test)} "
              f"train/val/test, {num_labels} labels")
        cfg = FinetuneConfig(**cfg_base, seed=seed)
        res = finetune(model, train, val, test, cfg, device, precision, show_progress=not args.no_progress,
                       desc=desc)
        probs.append(res["test_probs"])
        logits.append(res["test_logits"])
        final_probs.append(res["final_test_probs"])
        labels = res["test_labels"]
        run_rec["members"].append({
            "name": member["name"], "checkpoint": member["checkpoint"], "init_seed": init_seed,
            "load_report": None if report is None else {"missing_keys": report.missing_keys,
                                                        "unused_keys": report.unused_keys},
            **{k: res[k] for k in ("selection", "selected_epoch", "best_val_acc", "selected_test_acc",
                                   "final_val_acc", "final_test_acc", "steps", "train_seconds",
                                   "confusion", "curve")}})
        print(f"{desc}: test acc {res['selected_test_acc']:.4f} at epoch {res['selected_epoch']} "
              f"(selected by {res['selection']}), last epoch {res['final_test_acc']:.4f}")
        warning = one_class_warning(res["confusion"], task.label_names, args)
        if warning:
            print(f"{desc}: {warning}")
            run_rec["members"][-1]["warning"] = warning
        del model
    if len(members) > 1:
        run_rec["committee"] = {
            "probs": committee_accuracy_curve(probs, labels, args.orders, seed=seed, aggregate="probs"),
            "logits": committee_accuracy_curve(logits, labels, args.orders, seed=seed, aggregate="logits")}
        print(f"seed {seed}: committee accuracy K=1..{len(members)}: "
              + " ".join(f"{a:.4f}" for a in run_rec["committee"]["probs"]["given"]))
    np.savez_compressed(out / f"probs_seed{seed}.npz", probs=np.stack(probs), logits=np.stack(logits),
                        final_probs=np.stack(final_probs), labels=labels)
    return run_rec


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse already printed "error: ..." (code 2) or the help (code 0)
        return int(exc.code or 0)
    try:
        _, task_error = task_reader()
    except ImportError as exc:
        print(f"error: cannot import the task readers (data_prep.tasks): {exc}", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (UsageError, CheckpointError, DatasetNotFound, task_error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the first seed started (run() reports what a later one leaves)
        print("\ninterrupted before any fine-tuning; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    tune_cpu_allocator()  # faster CPU steps (see tinybert/runtime.py); a no-op off glibc
    sys.exit(main())
