"""Ensemble benchmark: K members pre-trained one after another vs as one batched model (tinybert/ensemble.py).

    python -m tinybert.bench ensemble                     # cpu:bert6, cpu:bert1, paper:bert6; K = 5; auto precision
    python -m tinybert.bench ensemble --models cpu:bert1 --members 8 --precision fp32 bf16 --json ens.json

The same work two ways, for each model and precision:
  separate  K plain BertForMaskedLM models, each with its own fused AdamW, stepped one after another (a step of
            member 1, then of member 2, ...: what K separate runs in one process do). One round = K steps.
  batched   one EnsembleMLM of the same K members: one forward over a (K, B, T) batch, one backward, one fused
            AdamW step over the stacked weights (what pretrain_batched.py does). One round = one step.
A step is pre-training's (bench.py's): forward under autocast with the sparse MLM head, backward, AdamW,
zero_grad, on full rows (no padding) with round(0.15 * T) masked positions per row, member k's batch drawn with
seed k; the batched arm gets its targets from masking.mlm_targets, as pretrain_batched.py does. Reported:
member-tokens/s (K x B x T input tokens per round / the median round), ms per round, and the speed-up
(separate / batched round time). Both arms start from the same weights, and before timing the benchmark checks
that they compute the same losses (eval mode, so no dropout): `check` is the largest relative difference.

Models: `cpu:bert6` and `cpu:bert1` are the `cpu` experiment preset's BERT-6 and its BERT-1 (the first shallow
variant, with its conv front end; tinybert/experiments/presets.py) at that preset's row length (64 tokens) and
batch (32); `paper:bert6` is the paper's BERT-6 (6 x 12 x 64) at 128 tokens; any tinybert.config preset name
(e.g. `tiny`, `bert1-h8`) runs at --seq-len (128). The arms run one after the other, never both in memory.

This module only measures; training code never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from tinybert.bench import fixed_mlm_batch, synchronize
from tinybert.config import MODEL_PRESETS, ModelConfig, make_model_config
from tinybert.masking import MLMTargets, mlm_targets
from tinybert.model import BertForMaskedLM, count_parameters
from tinybert.pretrain_batched import SLOT_MULTIPLE
from tinybert.runtime import choose_device, choose_precision, tune_cpu_allocator

DEFAULT_MODELS = ("cpu:bert6", "cpu:bert1", "paper:bert6")


def model_setup(name: str, vocab_size: int, seq_len: int | None, batch_size: int | None) -> tuple:
    """A model name -> (ModelConfig, seq_len, batch_size). 'cpu:bert6' / 'cpu:bert1' / 'paper:bert6' (an
    experiment preset's deep model or first shallow variant, at its row length and batch), or a config preset."""
    if ":" in name:
        from tinybert.experiments.presets import get_preset
        preset_name, which = name.split(":", 1)
        preset = get_preset(preset_name)
        specs = {"bert6": preset.deep, "bert1": preset.shallow[0]}
        if which not in specs:
            raise ValueError(f"model {name!r}: expected {preset_name}:bert6 or {preset_name}:bert1")
        spec = specs[which]
        config = make_model_config(spec.preset, vocab_size=vocab_size, max_position=max(preset.seq_len, 128),
                                   **spec.config_fields())
        return config, seq_len or preset.seq_len, batch_size or preset.pretrain["batch_size"]
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(DEFAULT_MODELS)} or a config preset "
                         f"({', '.join(MODEL_PRESETS)})")
    seq_len = seq_len or 128
    return make_model_config(name, vocab_size=vocab_size, max_position=max(seq_len, 128)), seq_len, batch_size or 32


def member_batches(K: int, batch_size: int, seq_len: int, vocab_size: int, device) -> list[tuple]:
    """Member k's batch: (input_ids, labels) of bench.fixed_mlm_batch with seed k."""
    return [fixed_mlm_batch(batch_size, seq_len, vocab_size, mask_id=4, device=device, seed=k) for k in range(K)]


def fresh_members(config: ModelConfig, K: int, device) -> list[BertForMaskedLM]:
    out = []
    for k in range(K):  # member k initialised with seed k, as train.py does for a member with that seed
        torch.manual_seed(k)
        out.append(BertForMaskedLM(config).to(device))
    return out


def time_rounds(round_fn, device, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        round_fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        round_fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def optimizer_step(loss, opt, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


def fused_adamw(module, device):
    extra = {"fused": True} if device.type in ("cuda", "cpu") else {}  # as pretrain.py builds it
    return torch.optim.AdamW(module.parameters(), lr=5e-5, weight_decay=0.01, **extra)


@torch.no_grad()
def eval_losses(fn) -> list[float]:
    return [float(x) for x in fn()]


def bench_separate(config, K, batches, precision, device, steps, warmup) -> tuple[list[float], list[float]]:
    """Round times of K plain models stepped one after another, and their eval-mode losses on their batches."""
    models = fresh_members(config, K, device)
    for m in models:
        m.eval()
    with precision.autocast(device):
        losses = eval_losses(lambda: [m(ids, None, labels).loss for m, (ids, labels) in zip(models, batches)])
    for m in models:
        m.train()
    opts = [fused_adamw(m, device) for m in models]
    scalers = [torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None for _ in models]

    def round_fn():
        for m, opt, scaler, (ids, labels) in zip(models, opts, scalers, batches):
            with precision.autocast(device):
                loss = m(ids, None, labels).loss
            optimizer_step(loss, opt, scaler)

    times = time_rounds(round_fn, device, steps, warmup)
    return times, losses


def bench_batched(config, K, batches, precision, device, steps, warmup) -> tuple[list[float], list[float]]:
    """Step times of one EnsembleMLM of the same K members, and its eval-mode losses on the same batches."""
    from tinybert.ensemble import EnsembleMLM

    ens = EnsembleMLM.from_members(fresh_members(config, K, device))
    ids = torch.stack([b[0] for b in batches])
    labels = torch.stack([b[1] for b in batches]).cpu()
    targets = MLMTargets(*(t.to(device) for t in mlm_targets(labels, multiple=SLOT_MULTIPLE)))
    ens.eval()
    with precision.autocast(device):
        losses = eval_losses(lambda: ens(ids, None, targets))
    ens.train()
    opt = fused_adamw(ens, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None

    def round_fn():
        with precision.autocast(device):
            loss = ens(ids, None, targets).sum()
        optimizer_step(loss, opt, scaler)

    times = time_rounds(round_fn, device, steps, warmup)
    return times, losses


def bench_ensemble(name: str, K: int, precision, device, steps: int, warmup: int, vocab_size: int = 30522,
                   seq_len: int | None = None, batch_size: int | None = None) -> dict:
    config, seq_len, batch_size = model_setup(name, vocab_size, seq_len, batch_size)
    with torch.device("meta"):  # (counted without allocating the weights)
        params = count_parameters(BertForMaskedLM(config))
    batches = member_batches(K, batch_size, seq_len, vocab_size, device)
    sep_times, sep_losses = bench_separate(config, K, batches, precision, device, steps, warmup)
    bat_times, bat_losses = bench_batched(config, K, batches, precision, device, steps, warmup)
    tokens = K * batch_size * seq_len  # per round, over all members
    sep, bat = statistics.median(sep_times), statistics.median(bat_times)
    check = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(bat_losses, sep_losses))
    return {"model": name, "precision": precision.name, "device": str(device), "members": K,
            "batch_size": batch_size, "seq_len": seq_len, "params_per_member": params,
            "steps": steps, "warmup": warmup, "threads": torch.get_num_threads(),
            "separate_round_s": sep, "separate_round_s_all": sep_times,
            "batched_round_s": bat, "batched_round_s_all": bat_times,
            "separate_member_tokens_per_s": tokens / sep, "batched_member_tokens_per_s": tokens / bat,
            "speedup": sep / bat, "separate_losses": sep_losses, "batched_losses": bat_losses, "check": check}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinybert.bench ensemble", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help=f"{', '.join(DEFAULT_MODELS)} (the default) and/or config presets (tiny, bert1-h8, ...)")
    p.add_argument("--members", type=int, default=5, help="K, members per ensemble (5)")
    p.add_argument("--precision", nargs="+", default=["auto"], help="auto, bf16, fp16 (CUDA) and/or fp32")
    p.add_argument("--batch-size", type=int, default=None, help="rows per member (default: the model's, 32)")
    p.add_argument("--seq-len", type=int, default=None, help="row length (default: the model's; 128 for presets)")
    p.add_argument("--steps", type=int, default=None, help="timed rounds (default: 20 on GPU, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default: 5 on GPU, 1 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--json", type=Path, default=None, help="also write all results here")
    p.add_argument("--no-mmap", action="store_true", help="glibc malloc without mmap, as train.py runs (bench.py)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.members < 1:
        raise SystemExit("error: --members must be >= 1")
    malloc_tuned = tune_cpu_allocator() if args.no_mmap else False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    on_gpu = device.type == "cuda"
    steps = args.steps if args.steps is not None else (20 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    precisions = {}
    for name in args.precision:
        p = choose_precision(name, device)
        precisions.setdefault(p.name, p)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = torch.cuda.get_device_name(device) if on_gpu else f"{torch.get_num_threads()} CPU threads"
    print(f"device {device} ({where}), torch {torch.__version__}, load average {load:.2f}"
          f"{', malloc without mmap' if malloc_tuned else ''}; K = {args.members} members, {steps} timed rounds "
          f"after {warmup}")
    results = []
    for model_name in args.models:
        for p in precisions.values():
            r = bench_ensemble(model_name, args.members, p, device, steps, warmup, args.vocab_size, args.seq_len,
                               args.batch_size)
            results.append(r)
            print(f"  measured {model_name} {p.name}: separate {r['separate_round_s'] * 1e3:,.1f} ms/round, batched "
                  f"{r['batched_round_s'] * 1e3:,.1f} ms/round", flush=True)
    print(f"{'model':<13} {'prec':<5} {'K':>2} {'B x T':>9} {'params':>7} {'separate ms':>12} {'batched ms':>11} "
          f"{'separate tok/s':>15} {'batched tok/s':>14} {'speed-up':>9} {'check':>8}")
    for r in results:
        print(f"{r['model']:<13} {r['precision']:<5} {r['members']:>2} {r['batch_size']:>4} x{r['seq_len']:>3} "
              f"{r['params_per_member'] / 1e6:>6.2f}M {r['separate_round_s'] * 1e3:>12,.1f} "
              f"{r['batched_round_s'] * 1e3:>11,.1f} {r['separate_member_tokens_per_s']:>15,.0f} "
              f"{r['batched_member_tokens_per_s']:>14,.0f} {r['speedup']:>8.2f}x {r['check']:>8.1e}")
    print("(ms: median round = K member steps (separate) or one batched step; tok/s: K x B x T input tokens per "
          "round / that median, summed over the members; speed-up = separate / batched; check = largest relative "
          "difference of the two arms' losses on the same batches and weights, eval mode)")
    out = {"device": str(device), "device_name": where, "torch": torch.__version__, "load_average": load,
           "malloc_without_mmap": malloc_tuned, "results": results,
           "argv": list(sys.argv[1:] if argv is None else argv)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
