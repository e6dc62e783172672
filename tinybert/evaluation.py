"""eval.py's library side: members, one seed's fine-tuning (through tinybert/finetune_unit.py), the plan line's
projected time, results.json's assembly and summary statistics. eval.py keeps the flags and the orchestration.

Everything here takes eval.py's parsed flags (`args`, an argparse Namespace) where it needs settings, so the CLI
and this module read the same names. A bad flag or input raises UsageError (eval.py: exit 2, "error: ...").
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from . import plan
from .atomic import write_npz_atomic
from .baseline import bag_of_words_baseline
from .checkpoint import CheckpointError, load_checkpoint
from .committee import committee_accuracy_curve
from .config import ModelConfig, make_model_config
from .data_dir import DatasetNotFound, resolve_data_dir
from .finetune import FinetuneConfig, build_classifier, encode_examples, estimate_step_seconds
from .finetune_unit import MEMBER_SEED_RULE, MemberSpec, member_seed, run_member, run_members_batched, stack_arrays
from .model import count_parameters
from .runtime import git_commit
from .tokenizer import WordPieceTokenizer

MODEL_FLAGS = ("preset", "layers", "heads", "head_size", "conv_layers", "conv_kernel", "conv_channels", "dropout")
DATA_FLAGS = ("data_dir", "setting", "train_per_label", "test_per_label", "val_per_label", "train_file", "test_file",
              "text_col", "label_col")


class UsageError(ValueError):
    """A bad flag, combination of flags or input (exit 2 with "error: ...")."""


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


# ----------------------------------------------------------------------------------------------------------
# one seed


def run_baseline(seed: int, task) -> dict:
    """The bag-of-words yardstick on this seed's rows (the same the members see)."""
    res = bag_of_words_baseline(task.train, task.val, task.test, len(task.label_names))
    print(f"seed {seed}: bag-of-words baseline test acc {res.test_acc:.4f} (C {res.c:g} chosen on validation, "
          f"{res.features:,} features)")
    return {"test_acc": res.test_acc, "val_acc": res.val_acc, "c": res.c, "grid": res.grid,
            "features": res.features}


def encode_task(task, members, max_length: int) -> dict:
    """{id(tokenizer): (train, val or None, test) encoded}: members sharing a vocabulary share the encoding."""
    encoded = {}
    for member in members:
        tok = member["tokenizer"]
        if id(tok) not in encoded:
            encoded[id(tok)] = tuple(encode_examples(tok, split, max_length) if split else None
                                     for split in (task.train, task.val, task.test))
    return encoded


def announce_line(desc: str, member: dict, model, report, task, num_labels: int) -> str:
    return (f"{desc}: {member['checkpoint'] or member['name']} "
            f"({'random init' if report is None else 'pre-trained encoder'}), "
            f"{count_parameters(model):,} parameters, {len(task.train)}/{len(task.val)}/{len(task.test)} "
            f"train/val/test, {num_labels} labels")


def member_desc(seed: int, m: int, members) -> str:
    return f"seed {seed} member {m + 1}/{len(members)}" if len(members) > 1 else f"seed {seed}"


def run_seed(args, seed: int, task, members, device, precision, cfg_base, out: Path, done: dict | None = None
             ) -> dict:
    """Fine-tune every member on this seed's sample; write probs_seed<S>.npz; return the seed's record.
    done: {member index: MemberResult} of members already fine-tuned (batched, see train_batched); the rest run
    here one at a time."""
    num_labels = len(task.label_names)
    run_rec = {"seed": seed, "data": {"train": len(task.train), "val": len(task.val), "test": len(task.test),
                                      "num_labels": num_labels},
               "notes": list(task.notes), "members": []}
    if args.baseline:
        run_rec["baseline"] = run_baseline(seed, task)
    done = done or {}
    encoded = encode_task(task, members, args.max_length) if len(done) < len(members) else {}
    results = []
    for m, member in enumerate(members):
        desc = member_desc(seed, m, members)
        if m in done:
            res = done[m]
        else:
            def announce(model, report, member=member, desc=desc):
                print(announce_line(desc, member, model, report, task, num_labels))

            res = run_member(member["ckpt"], member["config"], num_labels, encoded[id(member["tokenizer"])],
                             FinetuneConfig(**cfg_base, seed=seed), device, precision,
                             init_seed=member_seed(seed, m), announce=announce, show_progress=not args.no_progress,
                             desc=desc)
        results.append(res)
        run_rec["members"].append(member_record(member, res, task, args, desc))
    if len(members) > 1:
        labels = results[-1]["test_labels"]
        run_rec["committee"] = {
            agg: committee_accuracy_curve([r[f"test_{agg}"] for r in results], labels, args.orders, seed=seed,
                                          aggregate=agg) for agg in ("probs", "logits")}
        print(f"seed {seed}: committee accuracy K=1..{len(members)}: "
              + " ".join(f"{a:.4f}" for a in run_rec["committee"]["probs"]["given"]))
    write_npz_atomic(out / f"probs_seed{seed}.npz", **stack_arrays(results))
    return run_rec


def batch_groups(tasks, members) -> list[list[tuple[int, int]]]:
    """The (seed index, member index) units that can be fine-tuned as one batched model, in groups of two or more:
    one architecture, the same split sizes. Members with the conv front end are grouped only within a seed and a
    vocabulary (the same rows and batch order, so the same batch widths: BatchNorm's training statistics count
    padding, finetune_batched.py), the others across seeds too."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for i, task in enumerate(tasks):
        for m, member in enumerate(members):
            config = member["config"]
            key = (repr(config.to_dict()), len(task.train), len(task.val), len(task.test))
            if config.conv_layers > 0:
                key += (i, id(member["tokenizer"]))
            groups.setdefault(key, []).append((i, m))
    return [g for g in groups.values() if len(g) > 1]


def train_batched(args, tasks, members, device, precision, cfg_base) -> dict:
    """Fine-tune every unit of batch_groups as one batched model per group (finetune_unit.run_members_batched)
    -> {(seed index, member index): MemberResult}; run_seed runs whatever is left one at a time."""
    done = {}
    num_labels = len(tasks[0].label_names)
    for group in batch_groups(tasks, members):
        encoded = {i: encode_task(tasks[i], members, args.max_length) for i in {i for i, _ in group}}
        specs = [MemberSpec(members[m]["ckpt"], members[m]["config"], encoded[i][id(members[m]["tokenizer"])],
                            FinetuneConfig(**cfg_base, seed=args.seeds[i]), member_seed(args.seeds[i], m))
                 for i, m in group]

        def announce(k, model, report, group=group):
            i, m = group[k]
            print(announce_line(member_desc(args.seeds[i], m, members), members[m], model, report, tasks[i],
                                num_labels))

        print(f"fine-tuning {len(group)} members as one batched model (--no-batch: one at a time)")
        results = run_members_batched(specs, num_labels, device, precision, announce=announce,
                                      show_progress=not args.no_progress, desc=f"{len(group)} members batched")
        done.update(zip(group, results))
    return done


def member_record(member: dict, res, task, args, desc: str) -> dict:
    """One member's entry in results.json (and its lines on stdout): names, seeds, load report, RECORD_FIELDS,
    and a warning when it learned a constant guess."""
    rec = {"name": member["name"], "checkpoint": member["checkpoint"], "init_seed": res.init_seed,
           "load_report": res.load_report_dict(), **res.fields()}
    print(f"{desc}: test acc {res['selected_test_acc']:.4f} at epoch {res['selected_epoch']} "
          f"(selected by {res['selection']}), last epoch {res['final_test_acc']:.4f}")
    warning = one_class_warning(res["confusion"], task.label_names, args)
    if warning:
        print(f"{desc}: {warning}")
        rec["warning"] = warning
    return rec


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


# ----------------------------------------------------------------------------------------------------------
# the plan line


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


# ----------------------------------------------------------------------------------------------------------
# results.json


def new_results(args, members, device, precision, cfg_base) -> dict:
    return {
        "task": args.task, "setting": None,
        "checkpoints": [m["checkpoint"] for m in members if m["checkpoint"]],
        "pretrained": any(m["ckpt"] is not None for m in members), "seeds": list(args.seeds),
        "config": {"finetune": cfg_base, "models": [m["config"].to_dict() for m in members],
                   "vocab": members[0].get("vocab"), "device": str(device), "precision": precision.name,
                   "tf32": bool(getattr(args, "tf32", False)),
                   "orders": args.orders, "member_seed": MEMBER_SEED_RULE,
                   "selection": "test accuracy at the epoch of best validation accuracy (first on ties)",
                   "committee": "argmax of the mean of softmax probabilities ('probs'); 'logits': mean of logits",
                   "data": {k: getattr(args, k) for k in DATA_FLAGS}},
        "command": "eval.py " + shlex.join(args.argv),
        "git_commit": git_commit(), "started": time.strftime("%F %T"), "torch": torch.__version__,
        "runs": [], "notes": [], "sources": [], "complete": False,
    }


def mean_std(values) -> dict:
    """{'mean', 'std' (sample std, ddof 1; 0 for one value), 'n', 'values'}."""
    values = [float(v) for v in values]
    arr = np.array(values)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": len(values), "values": values}


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
