"""Fine-tune and evaluate on a classification task: one model, a from-scratch control, or a soft committee.

    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt           # pre-trained BERT-6
    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt --no-pretrain   # same model, random init
    python eval.py --task agnews --checkpoint runs/bert6/checkpoint.pt --baseline  # + bag-of-words on the same rows
    python eval.py --task dbpedia --no-pretrain --preset bert1-h8                # random init, vocab from --vocab
    python eval.py --task fewrel --checkpoint a.pt b.pt c.pt --seeds 0 1 2       # committee of 3, 3 repeats
    python eval.py --task csv --train tr.csv --test te.csv --text-col text --label-col label --checkpoint a.pt

Reading order: flags -> task data (data_prep.tasks.load_task, once per seed) -> members (checkpoint config and
vocab, or --preset/model flags + --vocab) -> per seed and member: tokenize, then the fine-tuning unit (seed,
build_classifier, finetune: tinybert/finetune_unit.py) -> committee curve (tinybert.committee) ->
<out>/results.json (+ probs_seed<S>.npz). This file holds the flags and the orchestration; members, the per-seed
loop, the plan line and the results' assembly live in tinybert/evaluation.py.

Seeds: each seed draws its own task sample (load_task(seed=S)) and batch order (the same for every member), and
member m is initialised (fresh head, or the whole model without pre-training) and gets dropout from seed
S + 10007*m (finetune_unit.member_seed), so member 0 of a committee is the same run as a single-model evaluation
with that checkpoint. Batching: the seeds and members that share an architecture are fine-tuned first, together,
as one batched model (evaluation.train_batched, tinybert/finetune_batched.py), then each seed's record is written
as before; the same records, and the same numbers to rounding with dropout 0. With dropout > 0 the batched
members draw their dropout masks from one stream (not each from its own seed), so `--no-batch` (one at a time)
is what reproduces the member-0-equals-single-run property exactly.
The reported accuracy is the test accuracy at the epoch of best validation accuracy ("selected"); the last
epoch's is reported beside it. Committee = argmax of the mean of the members' softmax probabilities (the
selected models'); a mean-of-logits committee is recorded too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_prep.registry import task_names
from tinybert import plan
from tinybert.atomic import write_json_atomic
from tinybert.checkpoint import CheckpointError
from tinybert.cli_types import (OneLineParser, dropout_rate, finite_nonnegative_float, finite_positive_float,
                                 nonnegative_int, positive_int, seed_int, sequence_length)
from tinybert.config import MODEL_PRESETS, parse_conv_kernel
from tinybert.data_dir import DatasetNotFound
# the library side of this command; some names are re-exported for the tests and for callers of eval.py
from tinybert.evaluation import (DATA_FLAGS, MODEL_FLAGS, UsageError, default_out, load_members,  # noqa: F401
                                 mean_std, new_results, one_class_warning, print_plan, run_seed, summarize,
                                 summary_line, train_batched)
from tinybert.finetune import FinetuneConfig
from tinybert.finetune_unit import MEMBER_SEED_STRIDE, member_seed  # noqa: F401 (re-exported)
from tinybert.optim import SCHEDULES
from tinybert.pretrain import TrainingDiverged
from tinybert.runtime import PRECISIONS, choose_device, choose_precision, configure_cuda, tune_cpu_allocator


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
    r.add_argument("--tf32", action="store_true",
                   help="CUDA: TF32 tensor cores for fp32 matmuls and convolutions (off by default; recorded in "
                        "results.json)")
    r.add_argument("--log-every", type=positive_int, default=50)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--no-batch", action="store_true",
                   help="fine-tune every seed and member on its own, one after another. Default: those sharing an "
                        "architecture (and split sizes) are fine-tuned together as one batched model "
                        "(tinybert/finetune_batched.py): the same results to rounding with dropout 0, but dropout "
                        "masks are drawn from one stream, so with dropout > 0 the numbers differ from --no-batch's")
    return p


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
        args.tf32 = configure_cuda(device, tf32=args.tf32)["tf32"]  # cudnn.benchmark; TF32 only when asked
        cfg_base = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, max_length=args.max_length,
                        warmup_steps=args.warmup_steps, schedule=args.schedule, log_every=args.log_every)
        FinetuneConfig(**cfg_base)  # validate before any work
    except (UsageError, CheckpointError):
        raise
    except ValueError as exc:  # model config, device, precision, vocab file, fine-tuning settings
        raise UsageError(str(exc)) from None
    return members, out, device, precision, cfg_base


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
        done = {} if args.no_batch else train_batched(args, tasks, members, device, precision, cfg_base)
        for i, (seed, task) in enumerate(zip(args.seeds, tasks)):
            for key in ("notes", "sources"):
                results[key] += [x for x in getattr(task, key) if x not in results[key]]
            results["label_names"], results["setting"] = list(task.label_names), task.setting
            results["runs"].append(run_seed(args, seed, task, members, device, precision, cfg_base, out,
                                            done={m: r for (j, m), r in done.items() if j == i}))
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
