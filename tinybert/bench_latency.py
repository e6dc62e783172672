"""Inference latency: BERT-6 against BERT-1 and a committee of BERT-1s (experiment E6, claim C10 of
docs/paper-recipe.md#experiments-and-claims).

    python -m tinybert.bench_latency [--device auto] [--precision auto] [--members 5] [--batch-sizes 1 32]
                                     [--seq-len 128] [--repeats 30] [--variants] [--json out.json]

Where it sits: a check on the model (tinybert/model.py) and the committee runners (tinybert/committee.py); it
reads no data and writes nothing unless --json is given.

What is timed: one forward of BertForSequenceClassification (encoder + pooler + classifier, 4 labels by default)
on random token ids of shape (batch, seq-len) with no padding (mask None, as for sequences filled to 128), under
torch.inference_mode and the precision's autocast, in eval mode, with random weights (latency does not depend on
the values). Each row: `--warmup` untimed calls, then the median (and min) over `--repeats` timed calls; on CUDA
the device is synchronized before and after every call, so a time is the full wall time of that forward.

Rows: the deep model (--deep-preset, BERT-6), one shallow model (--shallow-preset, bert1-h8), with --variants each
of the paper's five BERT-1 variants, then a committee of --members shallow models run member by member and as one
batched (vmapped) forward (committee.BatchedCommittee); with --variants also the heterogeneous committee of the
five variants, member by member. GMACs are the encoder's forward multiply-adds per sequence (model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from tinybert.committee import BatchedCommittee, member_by_member
from tinybert.config import MODEL_PRESETS, make_model_config
from tinybert.model import BertForSequenceClassification, count_parameters, encoder_macs_per_token
from tinybert.runtime import PRECISIONS, choose_device, choose_precision

PAPER_BERT1_VARIANTS = ("bert1-h24", "bert1-h12-c2k3d64", "bert1-h8-c2k3d64", "bert1-h12-c3k3d32",
                        "bert1-h12-c2k16x3d64")


def time_call(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of fn(), after `warmup` untimed calls; synchronizes around each call on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def busy_cores(seconds: float = 1.0, stat_path: str = "/proc/stat") -> float | None:
    """How many cores' worth of CPU the machine spent over the next `seconds` while this process sleeps: the work
    of *other* processes, which would inflate a latency measured now. From the first line of /proc/stat (jiffies:
    user nice system idle iowait irq softirq steal ...); None where that file does not exist (not Linux)."""
    def sample():
        with open(stat_path) as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    spent = total1 - total0
    if spent <= 0:
        return None
    # the jiffies of all cores together: the busy share of them, in cores
    return (spent - (idle1 - idle0)) / spent * (os.cpu_count() or 1)


def build(preset: str, args, device, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = make_model_config(preset, vocab_size=args.vocab_size, max_position=max(128, args.seq_len))
    return BertForSequenceClassification(config, args.num_labels).to(device).eval()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--members", type=int, default=5, help="committee size (5)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30, help="timed calls per row (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--deep-preset", default="bert6", choices=sorted(MODEL_PRESETS))
    p.add_argument("--shallow-preset", default="bert1-h8", choices=sorted(MODEL_PRESETS))
    p.add_argument("--variants", action="store_true", help="also the paper's five BERT-1 variants")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--num-labels", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.members < 1 or args.repeats < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        p.error("--members, --repeats and --batch-sizes must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = choose_device(args.device)
        precision = choose_precision(args.precision, device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type} ({torch.get_num_threads()} threads)"
    print(f"device {name}, precision {precision.name} ({precision.reason}), seq {args.seq_len}, "
          f"{args.repeats} repeats after {args.warmup} warm-up calls, median ms per forward")

    deep = build(args.deep_preset, args, device)
    shallow = build(args.shallow_preset, args, device)
    singles = [(f"{args.deep_preset}", deep), (f"{args.shallow_preset}", shallow)]
    if args.variants:
        variants = [build(v, args, device) for v in PAPER_BERT1_VARIANTS]
        singles += [(v, m) for v, m in zip(PAPER_BERT1_VARIANTS, variants) if v != args.shallow_preset]
    members = [shallow] + [build(args.shallow_preset, args, device, seed=s) for s in range(1, args.members)]
    batched = BatchedCommittee(members)

    rows = []
    for batch_size in args.batch_sizes:
        ids = torch.randint(5, args.vocab_size, (batch_size, args.seq_len), device=device)

        def measure(label, fn, models, k=1):
            with torch.inference_mode(), precision.autocast(device):
                times = time_call(fn, device, args.repeats, args.warmup)
            macs = sum(encoder_macs_per_token(m.config, args.seq_len) * args.seq_len for m in models)
            row = {"model": label, "batch": batch_size, "members": k, "median_ms": 1e3 * statistics.median(times),
                   "min_ms": 1e3 * min(times), "params_m": sum(count_parameters(m) for m in models) / 1e6,
                   "gmacs_per_seq": macs / 1e9}
            rows.append(row)
            print(f"{row['model']:<42} {batch_size:>5} {row['median_ms']:>10.3f} {row['min_ms']:>10.3f} "
                  f"{row['params_m']:>9.1f} {row['gmacs_per_seq']:>8.3f}", flush=True)

        print(f"\n{'model':<42} {'batch':>5} {'median ms':>10} {'min ms':>10} {'params M':>9} {'GMACs':>8}")
        for label, model in singles:
            measure(label, lambda m=model: m(ids), [model])
        k = len(members)
        measure(f"committee {k} x {args.shallow_preset}, member by member",
                lambda: member_by_member(members, ids), members, k)
        measure(f"committee {k} x {args.shallow_preset}, batched (vmap)", lambda: batched(ids), members, k)
        if args.variants:
            measure(f"committee of the {len(variants)} paper variants, member by member",
                    lambda: member_by_member(variants, ids), variants, len(variants))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "precision": precision.name, "seq_len": args.seq_len,
                       "repeats": args.repeats, "warmup": args.warmup, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
