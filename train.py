"""Pre-train a tiny BERT with masked-language modelling.

    python train.py --layers 1 --heads 8                 # BERT-1, 8 heads, paper recipe (40k articles, 50 epochs)
    python train.py --preset bert6 --wiki-size 20000     # BERT-6 on 20k articles
    python train.py --preset tiny --wiki-size 2000 --epochs 2 --vocab-size 8000   # a quick CPU run
    python train.py --out runs/x --resume                # continue an interrupted run

Reading order: flags -> configs -> device/precision -> tokenizer + token arrays (data_prep.pretrain_data) ->
model (tinybert.model) -> the loop (tinybert.pretrain) -> checkpoint.pt, metrics.csv, run.json in --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from data_prep.pretrain_data import prepare_pretraining_data
from tinybert.checkpoint import CheckpointError, load_checkpoint
from tinybert.config import MODEL_PRESETS, make_model_config, parse_conv_kernel
from tinybert.model import BertForMaskedLM, count_parameters
from tinybert.pretrain import SCHEDULES, PretrainConfig, TrainingDiverged, estimate_step_seconds, pretrain
from tinybert.runtime import PRECISIONS, choose_device, choose_precision, seed_everything
from tinybert.tokenizer import WordPieceTokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (a --preset, then explicit flags override it)")
    m.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="a named model configuration")
    m.add_argument("--layers", type=int, help="transformer blocks (default 1)")
    m.add_argument("--heads", type=int, help="attention heads (default 8); hidden = heads x head size")
    m.add_argument("--head-size", type=int, help="size of one head (default 64, as in the paper)")
    m.add_argument("--conv-layers", type=int, help="conv front-end layers (default 0 = none)")
    m.add_argument("--conv-kernel", type=parse_conv_kernel, help="conv kernel: K or KSxKH, e.g. 3 or 16x3")
    m.add_argument("--conv-channels", type=int, help="conv front-end channels (default 64)")
    m.add_argument("--dropout", type=float, help="hidden and attention dropout (default 0.1)")

    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="datasets root (default: $TINYBERT_DATA, ../shared/data, ./data)")
    d.add_argument("--source", nargs="+", help="article files instead of <data dir>/wikipedia/*.tar.xz "
                                               "(WikiExtractor files/archives, .jsonl with 'text', .txt one per line)")
    d.add_argument("--wiki-size", type=int, default=40000, help="Wikipedia articles to pre-train on (40000)")
    d.add_argument("--eval-articles", type=int, default=500,
                   help="extra held-out articles for the per-epoch masked-token accuracy (500)")
    d.add_argument("--layout", choices=("paper", "packed"), default="paper",
                   help="paper: one row per article, its first --seq-len tokens, padded; "
                        "packed: full articles cut into full rows (no padding)")
    d.add_argument("--seq-len", type=int, default=128, help="tokens per row (128)")
    d.add_argument("--vocab", help="a vocab.txt to use (e.g. <data>/bert_vocab/vocab.txt); default: train a "
                                   "WordPiece vocab on the pre-training articles (cached)")
    d.add_argument("--vocab-size", type=int, default=30522, help="size of the trained vocab (30522)")
    d.add_argument("--cache-dir", help="where token arrays and trained vocabs are cached "
                                       "(default: $TINYBERT_CACHE or ./cache)")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--batch-size", type=int, default=32, help="global batch (32)")
    t.add_argument("--lr", type=float, default=5e-5, help="peak AdamW learning rate (5e-5)")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--schedule", choices=SCHEDULES, default="linear",
                   help="linear: decay per optimiser step; paper-epoch: the authors' code (stepped per epoch, "
                        "epoch 0 at lr 0)")
    t.add_argument("--mlm-prob", type=float, default=0.15, help="share of tokens selected for prediction")
    t.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0 = off, as the paper)")
    t.add_argument("--seed", type=int, default=42, help="seeds article selection, init, order and masks (42, as the paper's sampling)")
    t.add_argument("--max-steps", type=int, default=0, help="stop after N optimiser steps (0 = all epochs)")

    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/pretrain", help="output folder (runs/pretrain)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    r.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 where the hardware has it, fp16+scaler on older GPUs, else fp32")
    r.add_argument("--log-every", type=int, default=50, help="progress update every N steps (50)")
    r.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p


# Flags that may change when a run is resumed; every other flag is taken from the checkpoint.
RESUME_MAY_CHANGE = {"epochs", "max_steps", "log_every", "checkpoint_every", "device", "precision",
                     "no_progress", "data_dir", "cache_dir", "source", "out", "resume"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.resume:
        return args
    ckpt_path = Path(args.out) / "checkpoint.pt"
    if not ckpt_path.exists():
        raise SystemExit(f"error: --resume: no checkpoint at {ckpt_path}")
    try:
        saved = load_checkpoint(ckpt_path, kind="mlm").get("cli", {})
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}")
    # Which flags did the user type? Re-parse with every default suppressed.
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(parser.parse_args(argv))
    for key, value in explicit.items():
        if key not in RESUME_MAY_CHANGE and key in saved and saved[key] != value:
            raise SystemExit(f"error: --resume: --{key.replace('_', '-')} was {saved[key]!r} in the run in "
                             f"{args.out}, not {value!r}; only {', '.join(sorted(RESUME_MAY_CHANGE))} may change")
    merged = {**vars(args), **{k: v for k, v in saved.items() if k not in RESUME_MAY_CHANGE}}
    merged.update({k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE})
    return argparse.Namespace(**merged)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except (ValueError, FileNotFoundError) as exc:  # bad flag values, missing or malformed data, bad vocab
        raise SystemExit(f"error: {exc}") from None


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    if not args.resume and ckpt_path.exists():
        raise SystemExit(f"error: {out} already holds a run ({ckpt_path}); pass --resume to continue it or "
                         f"choose another --out (nothing was overwritten)")

    cfg = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, schedule=args.schedule,
                         mlm_prob=args.mlm_prob, grad_clip=args.grad_clip, seed=args.seed,
                         log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                         max_steps=args.max_steps)
    device = choose_device(args.device)
    precision = choose_precision(args.precision, device)
    seed_everything(args.seed)

    vocab_path = args.vocab
    if args.resume:  # the vocabulary travels with the checkpoint
        vocab_tokens = load_checkpoint(ckpt_path, kind="mlm")["vocab"]
        tokenizer = WordPieceTokenizer(vocab_tokens)
        vocab_path = None
    else:
        tokenizer = None
    data = prepare_pretraining_data(
        data_dir=args.data_dir, tokenizer=tokenizer, vocab_path=vocab_path, vocab_size=args.vocab_size,
        wiki_size=args.wiki_size, eval_articles=args.eval_articles, seed=args.seed, layout=args.layout,
        seq_len=args.seq_len, cache_dir=args.cache_dir, sources=args.source, show_progress=not args.no_progress)
    tokenizer = data.tokenizer

    config = make_model_config(args.preset, layers=args.layers, heads=args.heads, head_size=args.head_size,
                               conv_layers=args.conv_layers, conv_kernel=args.conv_kernel,
                               conv_channels=args.conv_channels, dropout=args.dropout,
                               attention_dropout=args.dropout, vocab_size=tokenizer.vocab_size,
                               pad_id=tokenizer.pad_id, max_position=args.seq_len)
    model = BertForMaskedLM(config).to(device)

    steps_per_epoch = len(data.train_tokens) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch if not cfg.max_steps else min(cfg.max_steps,
                                                                              cfg.epochs * steps_per_epoch)
    step_s = estimate_step_seconds(model, cfg.batch_size, args.seq_len, device, precision)
    print(f"device {device}, precision {precision.name} ({precision.reason})")
    print(f"model: {config.layers} layers x {config.heads} heads x {config.head_size} (hidden {config.hidden}"
          f"{f', conv {config.conv_layers}x{config.conv_kernel} d{config.conv_channels}' if config.conv_layers else ''}),"
          f" {count_parameters(model):,} parameters | data: {len(data.train_tokens):,} rows, "
          f"{data.tokens_per_epoch:,} tokens/epoch, {steps_per_epoch} steps/epoch x {cfg.epochs} epochs "
          f"| estimated total time {total_steps * step_s / 60:.1f} min")

    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        tokenizer.save(out / "vocab.txt")
        (out / "run.json").write_text(json.dumps({
            "command": " ".join(sys.argv), "git_commit": git_commit(), "started": time.strftime("%F %T"),
            "model_config": config.to_dict(), "train_config": asdict(cfg), "data": data.meta,
            "device": str(device), "precision": precision.name}, indent=2))
    try:
        final = pretrain(model, tokenizer.vocab, tokenizer.mask_id, tokenizer.pad_id, data.train_tokens,
                         data.eval_tokens, cfg, out, device, precision, resume=args.resume,
                         show_progress=not args.no_progress,
                         checkpoint_extra={"data": data.meta, "cli": vars(args)})
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"done: {ckpt_path} (eval masked-token accuracy {final.get('eval_acc', float('nan')):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
