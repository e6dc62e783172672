"""Pre-train a tiny BERT with masked-language modelling.

    python train.py --layers 1 --heads 8                 # BERT-1, 8 heads, paper recipe (40k articles, 50 epochs)
    python train.py --preset bert6 --wiki-size 20000     # BERT-6 on 20k articles
    python train.py --preset tiny --wiki-size 2000 --epochs 2 --vocab-size 8000   # a quick CPU run
    python train.py --out runs/x --resume                # continue an interrupted run

Several GPUs (data parallel; --batch-size stays the global batch, split over the processes):
    torchrun --nproc_per_node 8 train.py --preset bert6 --out runs/b6
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint HOST0:29500 train.py ...
                                                   # on node 0 (HOST0); the same with --node_rank 1 on node 1
A committee of independently pre-trained models, one per process (no gradient sync):
    torchrun --nproc_per_node 5 train.py --committee --seeds 1 2 3 4 5 --out runs/committee
or all in one process, as one batched model (tinybert/pretrain_batched.py; --sequential: one after another):
    python train.py --committee --seeds 1 2 3 4 5 --out runs/committee

Reading order: flags -> configs -> processes/device/precision (tinybert.distributed, tinybert.runtime) ->
tokenizer + token arrays (data_prep.pretrain_data) -> model (tinybert.model) -> DDP wrap -> the loop
(tinybert.pretrain) -> checkpoint.pt, metrics.csv, run.json in --out (written by rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from data_prep.pretrain_data import prepare_pretraining_data
from tinybert import plan, run_record
from tinybert.checkpoint import CheckpointError, load_checkpoint
from tinybert.cli_types import (OneLineParser, dropout_rate, finite_nonnegative_float, finite_positive_float,
                                 int_at_least, nonnegative_int, positive_int, probability, seed_int, sequence_length)
from tinybert.config import MODEL_PRESETS, make_model_config, parse_conv_kernel
from tinybert.distributed import DistContext, env_ranks, init_from_env, main_first, shutdown
from tinybert.model import BertForMaskedLM, count_parameters
from tinybert.optim import SCHEDULES
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, TrainingDiverged, estimate_step_seconds, pretrain
from tinybert.pretrain_batched import (MembersDiverged, check_batchable, estimate_ensemble_step_seconds,
                                       pretrain_batched)
from tinybert.runtime import (PRECISIONS, channels_last_convs, choose_precision, configure_cuda, git_commit,
                              seed_everything, tune_cpu_allocator)
from tinybert.tokenizer import WordPieceTokenizer


def absolute_path(text: str) -> str:
    """--source paths are saved absolute, so a resume from another working directory reads the same files."""
    return str(Path(text).expanduser().resolve())


# --resume takes every flag from the checkpoint's saved `cli`, so a resumed run is the run that was started, whatever
# the defaults are. This table is the one place that lists the exceptions (flag -> rule):
#   "free"        a run-time choice that does not change what is trained: a typed value wins, else the saved one;
#   "longer"      may only grow, to extend the run (check_extension): a typed value wins, else the saved one;
#   "invocation"  names this command, not the run: always as typed now, never read from the checkpoint.
# Any other flag that is typed must equal the saved value; a different value is an error naming both.
RESUME_RULES = {
    "data_dir": "free", "cache_dir": "free",    # where the same data and caches are found on this machine
    "device": "free", "compile": "free",        # hardware and kernels: the same computation
    "tf32": "free",                             # rounding only (fp32 matmuls on TF32 tensor cores)
    "precision": "free",                        # rounding only; `auto` is resolved again on the resuming machine
    "no_progress": "free", "log_every": "free",  # display (the loss is read and NaN-checked every log_every steps)
    "checkpoint_every": "free", "checkpoint_minutes": "free",  # how often progress is saved
    "epochs": "longer",     # extends the run; the lr schedule is re-planned over the new total (README, "Resuming")
    "max_steps": "longer",  # a stop point only (the schedule does not use it); 0 = no cap
    "out": "invocation", "resume": "invocation", "committee": "invocation", "seeds": "invocation",
    "sequential": "invocation",
}


def resume_may_change() -> str:
    """The flags a resume may be given, for --help and the error messages: "--data-dir, ..., --max-steps"."""
    return ", ".join(f"--{k.replace('_', '-')}" for k, rule in RESUME_RULES.items() if rule != "invocation")


# a trained vocab holds the 5 special tokens and at least one more
VOCAB_SIZE = int_at_least(6, "the 5 special tokens and at least one more")


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """The 'training' and 'run' flag groups. Those that fill a PretrainConfig default to its fields
    (tests/test_cli_defaults.py checks)."""
    cfg = PretrainConfig
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=cfg.epochs,
                   help=f"epochs ({cfg.epochs}). With --resume, a larger value extends the run: the lr schedule is "
                        "re-planned over the new total, as if the run had been started with it (the steps already "
                        "taken keep their lr); a smaller one is an error")
    t.add_argument("--batch-size", type=positive_int, default=cfg.batch_size, help=f"global batch ({cfg.batch_size})")
    t.add_argument("--lr", type=finite_positive_float, default=cfg.lr, help=f"peak AdamW learning rate ({cfg.lr:g})")
    t.add_argument("--weight-decay", type=finite_nonnegative_float, default=cfg.weight_decay)
    t.add_argument("--warmup-steps", type=nonnegative_int, default=cfg.warmup_steps)
    t.add_argument("--schedule", choices=SCHEDULES, default=cfg.schedule,
                   help="linear: decay per optimiser step; paper-epoch: the authors' code (stepped per epoch, "
                        "epoch 0 at lr 0)")
    t.add_argument("--mlm-prob", type=probability, default=cfg.mlm_prob,
                   help="share of tokens selected for prediction")
    t.add_argument("--grad-clip", type=finite_nonnegative_float, default=cfg.grad_clip,
                   help="max gradient norm (0 = off, as the paper)")
    t.add_argument("--seed", type=seed_int, default=cfg.seed,
                   help=f"seeds article selection, init, order and masks ({cfg.seed}, as the "
                        "paper's sampling)")
    t.add_argument("--data-seed", type=seed_int, help="seed of the article selection (and trained vocab) only; "
                                                 "default: --seed")
    t.add_argument("--max-steps", type=nonnegative_int, default=cfg.max_steps,
                   help="stop after N optimiser steps (0 = all epochs)")

    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/pretrain", help="output folder (runs/pretrain)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with the run's own settings: every flag "
                        f"comes from the checkpoint except {resume_may_change()} (--epochs and --max-steps only "
                        "longer); any other flag given must repeat the saved value")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    r.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 where the hardware has it, fp16+scaler on older GPUs, else fp32")
    r.add_argument("--log-every", type=positive_int, default=cfg.log_every,
                   help=f"progress update every N steps ({cfg.log_every})")
    r.add_argument("--checkpoint-every", type=nonnegative_int, default=cfg.checkpoint_every,
                   help="also checkpoint every N steps")
    r.add_argument("--checkpoint-minutes", type=finite_nonnegative_float, default=cfg.checkpoint_minutes,
                   help=f"also checkpoint when this many minutes have passed since the last checkpoint "
                        f"({cfg.checkpoint_minutes:g}; 0 = "
                        "off); checkpoints are atomic, and one is always written at the end of every epoch")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile the model (falls back to eager with a warning where compiling fails)")
    r.add_argument("--tf32", action="store_true",
                   help="CUDA: TF32 tensor cores for fp32 matmuls and convolutions (faster, 10-bit mantissa "
                        "inputs; off by default; recorded in run.json)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (a --preset, then explicit flags override it)")
    m.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="a named model configuration")
    m.add_argument("--layers", type=positive_int, help="transformer blocks (default 1)")
    m.add_argument("--heads", type=positive_int, help="attention heads (default 8); hidden = heads x head size")
    m.add_argument("--head-size", type=positive_int, help="size of one head (default 64, as in the paper)")
    m.add_argument("--conv-layers", type=nonnegative_int, help="conv front-end layers (default 0 = none)")
    m.add_argument("--conv-kernel", type=parse_conv_kernel, help="conv kernel: K or KSxKH, e.g. 3 or 16x3")
    m.add_argument("--conv-channels", type=positive_int, help="conv front-end channels (default 64)")
    m.add_argument("--dropout", type=dropout_rate, help="hidden and attention dropout (default 0.1)")

    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="datasets root (default: $TINYBERT_DATA, ../shared/data, ./data)")
    d.add_argument("--source", nargs="+", type=absolute_path,
                   help="article files instead of <data dir>/wikipedia/*.tar.xz (WikiExtractor files/archives, "
                        ".jsonl with 'text', .txt one per line)")
    d.add_argument("--wiki-size", type=positive_int, default=40000, help="Wikipedia articles to pre-train on (40000)")
    d.add_argument("--eval-articles", type=positive_int, default=500,
                   help="extra held-out articles for the per-epoch masked-token accuracy (500)")
    d.add_argument("--layout", choices=("paper", "packed"), default="paper",
                   help="paper: one row per article, its first --seq-len tokens, padded; "
                        "packed: full articles cut into full rows (no padding)")
    d.add_argument("--seq-len", type=sequence_length, default=128, help="tokens per row (128)")
    d.add_argument("--vocab", help="a vocab.txt to use (e.g. <data>/bert_vocab/vocab.txt); default: train a "
                                   "WordPiece vocab on the pre-training articles (cached)")
    d.add_argument("--vocab-size", type=VOCAB_SIZE, default=30522, help="size of the trained vocab (30522)")
    d.add_argument("--cache-dir", help="where token arrays and trained vocabs are cached "
                                       "(default: $TINYBERT_CACHE or ./cache)")

    add_training_flags(p)

    c = p.add_argument_group("committee (independent members, one per process under torchrun)")
    c.add_argument("--committee", action="store_true",
                   help="pre-train one independent model per --seeds entry into --out/member-<seed>/; under "
                        "torchrun rank r trains seeds r, r+W, ... (no gradient sync); the articles and the "
                        "vocab come from --seed (or --data-seed) and are the same for all members")
    c.add_argument("--seeds", type=seed_int, nargs="+", help="member seeds (init, batch order, masks, dropout)")
    c.add_argument("--sequential", action="store_true",
                   help="in one process (no torchrun), train the members one after another, each a plain run, "
                        "instead of as one batched model (the default there: tinybert/pretrain_batched.py; "
                        "a --resume always continues member by member)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.committee:
        if not args.seeds:
            raise SystemExit("error: --committee needs --seeds S1 S2 ... (one member per seed)")
        if len(set(args.seeds)) != len(args.seeds):
            raise SystemExit(f"error: --seeds {args.seeds}: every member needs its own seed")
        return args  # resume settings are merged per member (committee_members)
    if args.seeds:
        raise SystemExit("error: --seeds is for --committee; a single run takes --seed")
    if args.sequential:
        raise SystemExit("error: --sequential is for --committee")
    if not args.resume:
        return args
    return merge_resume(args, explicit_flags(argv), Path(args.out))


def explicit_flags(argv=None) -> dict:
    """The flags the user typed (re-parsed with every default suppressed)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def saved_flags(out: Path) -> dict:
    """The flags of the run in `out`, from its checkpoint."""
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.exists():
        raise SystemExit(f"error: --resume: no checkpoint at {ckpt_path}")
    try:
        saved = dict(load_checkpoint(ckpt_path, kind="mlm").get("cli", {}))
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}")
    saved.setdefault("data_seed", None)  # checkpoints from before --data-seed: the articles came from --seed
    if saved.get("source"):  # checkpoints from before --source was saved absolute
        saved["source"] = [absolute_path(s) for s in saved["source"]]
    return saved


def check_extension(flag: str, saved, typed, out: Path) -> None:
    """A "longer" flag on resume: --epochs may grow, --max-steps may grow or become 0 (no cap)."""
    grows = typed >= saved if flag == "epochs" else typed == 0 or 0 < saved <= typed
    if not grows:
        name = flag.replace("_", "-")
        raise SystemExit(f"error: --resume: --{name} {typed} would shorten the run in {out} (it has --{name} "
                         f"{saved}); a run can be extended, not shortened: start a new --out instead")


def merge_resume(args: argparse.Namespace, explicit: dict, out: Path) -> argparse.Namespace:
    """Settings of a resumed run: those saved in the checkpoint in `out`, except as RESUME_RULES allows."""
    saved = saved_flags(out)
    for key, value in explicit.items():
        rule = RESUME_RULES.get(key)
        if key not in saved or rule in ("free", "invocation"):
            continue
        if rule == "longer":
            check_extension(key, saved[key], value, out)
        elif saved[key] != value:
            raise SystemExit(f"error: --resume: --{key.replace('_', '-')} was {saved[key]!r} in the run in "
                             f"{out}, not {value!r}; a resumed run keeps its settings (only {resume_may_change()} "
                             f"may change)")
    merged = vars(args).copy()  # flags newer than the checkpoint keep their values
    merged.update({k: v for k, v in saved.items() if k in merged and RESUME_RULES.get(k) != "invocation"})
    merged.update({k: v for k, v in explicit.items() if k in RESUME_RULES})
    return argparse.Namespace(**merged)


def committee_members(args: argparse.Namespace, rank: int, world_size: int, argv=None) -> list:
    """The members this process trains: seeds rank, rank + W, ... of --seeds, each a run of its own in
    --out/member-<seed> (its --seed the member seed, its --data-seed the committee's --data-seed or --seed)."""
    explicit = explicit_flags(argv) if args.resume else {}
    data_seed = args.data_seed if args.data_seed is not None else args.seed
    members = []
    for seed in args.seeds[rank::world_size]:
        member = argparse.Namespace(**{**vars(args), "seed": seed, "data_seed": data_seed,
                                       "out": str(Path(args.out) / f"member-{seed}")})
        if args.resume:  # what was typed, as it applies to this member; the rest comes from its checkpoint
            typed = {**explicit, "seed": seed, "out": member.out}
            if "seed" in explicit or "data_seed" in explicit:
                typed["data_seed"] = data_seed
            member = merge_resume(member, typed, Path(member.out))
        members.append(member)
    return members


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        if args.committee:
            return run_committee(args, argv)
        ctx = init_from_env(args.device)  # one process without torchrun; NCCL/gloo group under torchrun
        try:
            return run(args, ctx)
        finally:
            shutdown()
    except (ValueError, FileNotFoundError) as exc:  # bad flag values, missing or malformed data, bad vocab
        raise SystemExit(f"error: {exc}") from None


def run_committee(args: argparse.Namespace, argv=None) -> int:
    """--committee: every member is a complete run of its own (own seed, own --out/member-<seed>/, own checkpoint
    and metrics). In one process (no torchrun) they train together as one batched model (train_batched_committee);
    under torchrun, or with --sequential or --resume, each process trains its members one after another.
    Processes never sync gradients; they only wait once for the node's first process to build the shared token
    cache."""
    rank, world, _ = env_ranks()
    if world > len(args.seeds):
        raise SystemExit(f"error: --committee: {world} processes but {len(args.seeds)} seeds; start at most "
                         f"--nproc_per_node {len(args.seeds)} (x nodes) processes")
    members = committee_members(args, rank, world, argv)
    batched = world == 1 and len(members) > 1 and not (args.sequential or args.resume)
    if batched and args.compile:
        raise SystemExit("error: --compile: the one-process committee trains its members as one batched model, "
                         "which is not compiled; add --sequential (one member after another, compiled) or drop "
                         "--compile")
    ctx = init_from_env(args.device, backend="gloo")  # gloo: the processes only meet at the barrier
    try:
        if ctx.is_main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "committee.json").write_text(json.dumps({
                "command": " ".join(sys.argv), "git_commit": git_commit(), "seeds": args.seeds,
                "members": [f"member-{s}" for s in args.seeds], "processes": world, "batched": batched,
                "data_seed": members[0].data_seed}, indent=2))
            how = "as one batched model" if batched else f"on {world} process(es)"
            print(f"committee: {len(args.seeds)} members (seeds {' '.join(map(str, args.seeds))}) {how} -> "
                  f"{out}/member-<seed>/")
        with main_first(ctx):  # the node's first process fills the token/vocab cache, the others then read it
            data = load_data(members[0], show_progress=not args.no_progress and ctx.is_main)
        if batched:
            return train_batched_committee(members, data, ctx)
        codes = []
        for member in members:
            member.no_progress = args.no_progress or not ctx.is_main  # one progress bar on the terminal
            print(f"[rank {ctx.rank}] committee member seed {member.seed} -> {member.out}", flush=True)
            codes.append(run(member, ctx.solo()))
            if codes[-1] == 130:  # Ctrl-C ends the committee, not just this member
                break
        return max(codes)
    finally:
        shutdown()


def resume_info(out: Path) -> dict:
    """From the checkpoint of the run in `out`: its vocabulary, data provenance and step count. The rest (weights,
    optimiser state) is dropped at once; pretrain() loads it when training starts."""
    ckpt = load_checkpoint(out / "checkpoint.pt", kind="mlm")
    return {"vocab": ckpt["vocab"], "data": ckpt.get("data"), "step": ckpt["progress"]["step"]}


def load_data(args: argparse.Namespace, show_progress: bool, resumed: dict | None = None):
    """Tokenizer + token arrays; on resume the vocabulary comes from the checkpoint and the arrays must be the
    run's (check_same_data)."""
    vocab_path, tokenizer, saved_meta = args.vocab, None, None
    if args.resume:  # the vocabulary travels with the checkpoint
        resumed = resumed or resume_info(Path(args.out))
        tokenizer, saved_meta, vocab_path = WordPieceTokenizer(resumed["vocab"]), resumed["data"], None
    data_seed = args.data_seed if getattr(args, "data_seed", None) is not None else args.seed
    data = prepare_pretraining_data(
        data_dir=args.data_dir, tokenizer=tokenizer, vocab_path=vocab_path, vocab_size=args.vocab_size,
        wiki_size=args.wiki_size, eval_articles=args.eval_articles, seed=data_seed, layout=args.layout,
        seq_len=args.seq_len, cache_dir=args.cache_dir, sources=args.source, show_progress=show_progress)
    if saved_meta:
        check_same_data(Path(args.out), saved_meta, data.meta)
    return data


def check_same_data(out: Path, saved: dict, now: dict) -> None:
    """A resumed run must train on the run's token arrays. --data-dir may point elsewhere (so the paths and the
    cache key may differ); the arrays' shapes and token counts may not."""
    for split in ("train", "eval"):
        was, got = saved.get(split, {}), now[split]
        was_sig = (was.get("shape"), was.get("counts", {}).get("tokens"))
        got_sig = (got["shape"], got["counts"]["tokens"])
        if None not in was_sig and list(was_sig) != list(got_sig):
            raise ValueError(f"--resume: the {split} token array is {got_sig[0]} with {got_sig[1]:,} tokens, but the "
                             f"run in {out} used {was_sig[0]} with {was_sig[1]:,}: the articles differ (changed "
                             f"files under --data-dir or --source); resume with the original data")


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def run(args: argparse.Namespace, ctx: DistContext | None = None) -> int:
    """One pre-training run; under torchrun (ctx.world_size > 1) this process's part of it. Ctrl-C ends it with
    exit code 130 and a message that names the last checkpoint, if one was written."""
    ctx = ctx if ctx is not None else init_from_env(args.device)
    try:
        return train_run(args, ctx)
    except KeyboardInterrupt:
        if ctx.is_main:
            print("\n" + interrupted_message(Path(args.out)), file=sys.stderr, flush=True)
            run_record.end_segment(Path(args.out), "interrupted")
        return 130


def interrupted_message(out: Path) -> str:
    """What Ctrl-C leaves behind, checked now: a checkpoint to resume from, or nothing to resume."""
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        minutes = (time.time() - ckpt_path.stat().st_mtime) / 60
        return (f"interrupted; the last checkpoint is {ckpt_path} (written {minutes:.0f} min ago); continue with: "
                f"python train.py --out {out} --resume")
    return ("interrupted before the first checkpoint was written (one is written at the end of every epoch and "
            "every --checkpoint-minutes); nothing to resume: run the same command again to start over")


def train_run(args: argparse.Namespace, ctx: DistContext) -> int:
    say = print if ctx.is_main else (lambda *a, **k: None)
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    if not args.resume and ckpt_path.exists():
        raise SystemExit(f"error: {out} already holds a run ({ckpt_path}); pass --resume to continue it or "
                         f"choose another --out (nothing was overwritten)")
    say(plan.output_line(out, resuming=args.resume))
    resumed = resume_info(out) if args.resume else None

    cfg = pretrain_config(args)
    world = ctx.world_size
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) is not divisible by the {world} "
                         f"processes")
    device = ctx.device
    precision = choose_precision(args.precision, device)
    cuda_settings = configure_cuda(device, tf32=args.tf32)  # cudnn.benchmark; TF32 only when asked
    seed_everything(args.seed)

    show_progress = not args.no_progress and ctx.is_main
    with main_first(ctx):  # the node's first process builds the caches, the others then read them
        data = load_data(args, show_progress, resumed)
    check_one_batch(args, data)  # before the run folder is made
    tokenizer = data.tokenizer
    model = build_model(args, tokenizer, device)
    print_plan(say, args, cfg, ctx, model, data, precision, done_steps=resumed["step"] if resumed else 0)
    ddp_model = wrap_ddp(model, ctx, say) if world > 1 else None
    model = ddp_model.module if ddp_model is not None else model  # (SyncBatchNorm conversion makes a new module)

    if ctx.is_main:
        record_start(args, cfg, model, data, device, precision, world, tf32=cuda_settings["tf32"])
    try:
        mlm_data = MLMData(tokenizer.vocab, tokenizer.mask_id, tokenizer.pad_id, data.train_tokens, data.eval_tokens)
        final = pretrain(model, mlm_data, cfg, RunOptions(
            out, device, precision, resume=args.resume, show_progress=show_progress, rank=ctx.rank, world_size=world,
            ddp_model=ddp_model, compile=args.compile, checkpoint_extra={"data": data.meta, "cli": vars(args)}))
    except TrainingDiverged as exc:
        if ctx.is_main:
            print(f"error: {exc}", file=sys.stderr)
            run_record.end_segment(out, "diverged", error=str(exc))
        return 1
    if ctx.is_main:
        run_record.end_segment(out, "done", final)
    if not final:  # a resumed run that had already finished: the loop had nothing to do
        say(f"nothing to train: the run in {out} has finished its {cfg.epochs} epochs (checkpoint {ckpt_path}); "
            f"pass a larger --epochs to extend it")
    elif ckpt_path.is_file():
        say(f"done: {ckpt_path} (eval masked-token accuracy {final.get('eval_acc', float('nan')):.4f})")
    return 0


def pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, schedule=args.schedule,
                          mlm_prob=args.mlm_prob, grad_clip=args.grad_clip, seed=args.seed,
                          log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                          checkpoint_minutes=args.checkpoint_minutes, max_steps=args.max_steps)


def check_one_batch(args: argparse.Namespace, data) -> None:
    if len(data.train_tokens) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} is more than the {len(data.train_tokens)} training rows "
                         f"(--wiki-size {args.wiki_size}): not one full batch; lower --batch-size or raise --wiki-size")


def record_start(args: argparse.Namespace, cfg: PretrainConfig, model, data, device, precision, world: int,
                 tf32: bool = False) -> None:
    """The run folder, its vocab.txt (a new run) and the start (or resume) segment of its run.json. tf32: whether
    TF32 matmuls are in effect (configure_cuda)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    segment = {"command": " ".join(sys.argv), "git_commit": git_commit(), "device": str(device),
               "precision": precision.name, "processes": world, "epochs": cfg.epochs, "tf32": tf32}
    first = None
    if not args.resume:
        data.tokenizer.save(out / "vocab.txt")
        first = {"command": segment["command"], "git_commit": segment["git_commit"],
                 "started": time.strftime("%F %T"), "model_config": model.config.to_dict(),
                 "train_config": asdict(cfg), "data": data.meta, "device": str(device),
                 "precision": precision.name, "processes": world, "per_process_batch": cfg.batch_size // world,
                 "compile": args.compile, "tf32": tf32}
    run_record.start_segment(out, segment, first)


def train_batched_committee(members: list[argparse.Namespace], data, ctx: DistContext) -> int:
    """--committee in one process: the members pre-trained together as one batched model (tinybert/pretrain_batched.py).
    Each member's folder gets what its own run writes (vocab.txt, checkpoint.pt, metrics.csv, run.json; the
    checkpoints resume, member by member, with --resume). Ctrl-C or a diverging member stops all members."""
    outs = [Path(m.out) for m in members]
    for out in outs:
        if (out / "checkpoint.pt").exists():
            raise SystemExit(f"error: {out} already holds a run ({out / 'checkpoint.pt'}); pass --resume to continue "
                             f"the committee (member by member) or choose another --out (nothing was overwritten)")
    first, device = members[0], ctx.device
    cfgs = [pretrain_config(m) for m in members]
    precision = choose_precision(first.precision, device)
    cuda_settings = configure_cuda(device, tf32=first.tf32)  # cudnn.benchmark; TF32 only when asked
    check_one_batch(first, data)
    models = []
    for member in members:  # each member's init is its own run's: seeded with its seed, then built
        seed_everything(member.seed)
        models.append(build_model(member, data.tokenizer, device))
    step_s = estimate_ensemble_step_seconds(models, first.batch_size, first.seq_len, device, precision)
    print_plan(print, first, cfgs[0], ctx, models[0], data, precision, step_seconds=step_s)
    print(f"committee: {len(models)} members x {count_parameters(models[0]):,} parameters, one batched model "
          f"(one forward, backward and fused AdamW step for all; --sequential trains them one after another)")
    mlm_data = MLMData(data.tokenizer.vocab, data.tokenizer.mask_id, data.tokenizer.pad_id, data.train_tokens,
                       data.eval_tokens)
    runs = [RunOptions(out, device, precision, show_progress=not first.no_progress,
                       checkpoint_extra={"data": data.meta, "cli": vars(member)}) for out, member in zip(outs, members)]
    check_batchable(models, cfgs, runs)  # (before anything is written)
    for member, cfg, model in zip(members, cfgs, models):
        record_start(member, cfg, model, data, device, precision, 1, tf32=cuda_settings["tf32"])
    try:
        finals = pretrain_batched(models, mlm_data, cfgs, runs)
    except MembersDiverged as exc:
        for k, out in enumerate(outs):
            why = exc.diverged.get(k, f"stopped: the batched committee stops as a whole ({exc})")
            run_record.end_segment(out, "diverged" if k in exc.diverged else "interrupted", error=why)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        for out in outs:
            run_record.end_segment(out, "interrupted")
        if all((out / "checkpoint.pt").is_file() for out in outs):  # (every save writes all the members')
            said = (f"interrupted; each member's last checkpoint is in its folder ({outs[0].parent}/member-<seed>/); "
                    f"continue member by member with the same command and --resume")
        else:
            said = ("interrupted before the members' first checkpoints were written (one is written at the end of "
                    "every epoch and every --checkpoint-minutes); nothing to resume: start again with another --out")
        print("\n" + said, file=sys.stderr, flush=True)
        return 130
    for out, final in zip(outs, finals):
        run_record.end_segment(out, "done", final)
        print(f"done: {out / 'checkpoint.pt'} (eval masked-token accuracy {final.get('eval_acc', float('nan')):.4f})")
    return 0


def build_model(args: argparse.Namespace, tokenizer: WordPieceTokenizer, device: torch.device) -> BertForMaskedLM:
    config = make_model_config(args.preset, layers=args.layers, heads=args.heads, head_size=args.head_size,
                               conv_layers=args.conv_layers, conv_kernel=args.conv_kernel,
                               conv_channels=args.conv_channels, dropout=args.dropout,
                               attention_dropout=args.dropout, vocab_size=tokenizer.vocab_size,
                               pad_id=tokenizer.pad_id, max_position=args.seq_len)
    return channels_last_convs(BertForMaskedLM(config).to(device), device)


def wrap_ddp(model: BertForMaskedLM, ctx: DistContext, say) -> DistributedDataParallel:
    device = ctx.device
    if device.type == "cuda" and has_batchnorm(model):
        # batch statistics over the global batch, as in one process (SyncBatchNorm is GPU-only)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif has_batchnorm(model):
        say("note: BatchNorm statistics are per process on CPUs (SyncBatchNorm needs GPUs): the conv front "
            "end does not train exactly as in one process")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)


def print_plan(say, args, cfg: PretrainConfig, ctx: DistContext, model, data, precision, done_steps: int = 0,
               step_seconds: float | None = None):
    """The start-up lines: device and precision, model and data, batch and lr, the projected time (and a note
    when a CPU run would take hours). step_seconds: a training step's time, when not `model`'s alone (the
    batched committee's)."""
    config, device, world = model.config, ctx.device, ctx.world_size
    per_rank = cfg.batch_size // world
    steps_per_epoch = len(data.train_tokens) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    total_steps = min(cfg.max_steps, total_steps) if cfg.max_steps else total_steps
    steps_left = max(total_steps - done_steps, 0)
    step_s = step_seconds or estimate_step_seconds(model, per_rank, args.seq_len, device, precision)
    # held-out evaluation: every epoch, forward passes only (a third of a training step each)
    epochs_left = math.ceil(steps_left / steps_per_epoch) if steps_per_epoch else 0
    eval_s = epochs_left * math.ceil(len(data.eval_tokens) / cfg.batch_size) * step_s / 3
    seconds = steps_left * step_s + eval_s
    procs = f" x {world} processes ({ctx.backend}, one {device.type} device each)" if world > 1 else ""
    say(f"device {device}{procs}, precision {precision.name} ({precision.reason})")
    say(f"model: {config.layers} layers x {config.heads} heads x {config.head_size} (hidden {config.hidden}"
        f"{f', conv {config.conv_layers}x{config.conv_kernel} d{config.conv_channels}' if config.conv_layers else ''}),"
        f" {count_parameters(model):,} parameters | data: {len(data.train_tokens):,} rows, "
        f"{data.tokens_per_epoch:,} tokens/epoch, {steps_per_epoch} steps/epoch x {cfg.epochs} epochs")
    say(f"batch: effective (global) {cfg.batch_size} = {world} process(es) x {per_rank} per process | "
        f"lr {cfg.lr:g} peak ({cfg.schedule} schedule, {cfg.warmup_steps} warm-up steps)"
        f"{' | torch.compile on' if args.compile else ''}")
    done = f", {done_steps} done before" if done_steps else ""
    say(f"projected total time {plan.format_duration(seconds)} ({steps_left:,} steps{done} at ~{step_s:.3g} s/step, "
        f"plus held-out evaluation)")
    note = plan.cpu_note(seconds, device)
    if note:
        say(note)


if __name__ == "__main__":
    tune_cpu_allocator()  # faster CPU steps (see tinybert/runtime.py); a no-op off glibc
    try:
        sys.exit(main())
    except SystemExit as exc:
        if isinstance(exc.code, str):  # "error: ...": a bad flag, input or data; exit 2 as argparse does
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise
