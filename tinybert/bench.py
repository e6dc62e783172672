"""Training-throughput benchmark: tokens/s, model TFLOP/s and MFU of full MLM training steps.

    python -m tinybert.bench                                  # bert1-h8 and bert6, auto precision
    python -m tinybert.bench --models bert1-h8 bert6 --precision bf16 fp32 --steps 10 --json bench.json
    python -m tinybert.bench ensemble --members 5       # K separate models vs one batched model: bench_ensemble.py

What it does, in one run (so the peak and the model numbers see the same machine and the same load):
  1. the machine's matmul peak for each requested precision: the best GFLOP/s (2 n^3 / t) of square matmuls of
     n = 1024, 2048, 4096, each the best of a few repeats (few for 4096 on CPU, where one takes seconds);
  2. for each model: full training steps exactly as pretrain.py does them (forward with the sparse MLM head
     under autocast, backward, AdamW step, zero_grad) on a batch of full rows (no padding, no attention mask)
     with round(0.15 * seq_len) masked positions per row; the warm-up steps are not timed. It prints tokens/s
     (input tokens, batch * seq_len per step), the step time, the model TFLOP/s from
     tinybert.model.flops_per_token and MFU = achieved / measured peak of that precision, and the projected
     time of the paper's pre-training (40,000 articles x 128 tokens x 50 epochs) at that speed.

Step times are per step (with a device synchronise around each on CUDA); tokens/s and MFU use the median
step, and the best step is reported too. On a shared machine compare the best-of numbers and note the load;
with --threads 1 the JSON's process_cpu_s_min (process CPU time of the best step) barely depends on the load.

The model FLOPs are the standard count (flops_per_token: 6 x forward MACs, MLM head on the masked fraction only),
whatever the implementation skips, so MFU compares implementations on the same work: skipping work (the restricted
last block of BertForMaskedLM.forward) shows up as a higher MFU, and can even push it past 100%. The FLOPs actually
executed are reported too ("exec" utilisation), which is the honest measure of kernel efficiency.

Hidden knobs for experiments: --last-block full (the whole last block, then select the masked rows: the
pre-§0.2 path), --masking random (each position predicted with probability 0.15, as in training, instead of
exactly 15% of every row: the per-row counts vary, as they do in pre-training), --optimizer foreach|fused|loop,
--no-mmap (glibc malloc: no mmap for big blocks, no trimming; on CPU this avoids page faults on every large
allocation), --threads N.

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
import torch.nn.functional as F

from tinybert.config import make_model_config
from tinybert.model import (IGNORE_INDEX, BertForMaskedLM, count_parameters, dense_to_targets, encoder_macs_per_token,
                            flops_per_token)
from tinybert.runtime import choose_device, choose_precision, tune_cpu_allocator

PAPER_TOKENS = 40_000 * 128 * 50  # the paper's pre-training: 40k articles x first 128 tokens x 50 epochs
DEFAULT_PEAK_SIZES = (1024, 2048, 4096)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings cover it (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes=DEFAULT_PEAK_SIZES, repeats: int = 5) -> dict:
    """Best GFLOP/s of an n x n @ n x n matmul for each n (after one untimed call). -> {"best": g, "by_size": {n: g}}.

    On CPU, sizes >= 4096 use 2 repeats (one fp32 4096 matmul is ~0.7 s here, an emulated bf16 one ~3 s)."""
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        reps = repeats if (device.type == "cuda" or n < 4096) else min(repeats, 2)
        torch.matmul(a, b)  # warm-up: kernel choice, page faults
        synchronize(device)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            torch.matmul(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        by_size[n] = 2 * n ** 3 / best / 1e9
        del a, b
    return {"best": max(by_size.values()), "by_size": by_size}


def fixed_mlm_batch(batch_size: int, seq_len: int, vocab_size: int, mask_id: int, device, mlm_prob=0.15, seed=0,
                    masking: str = "fixed"):
    """Full rows of random ids with exactly round(mlm_prob * seq_len) predicted positions per row (masking
    'fixed': a constant count, as Cramming does, so the step shape never changes), or each position predicted
    with probability mlm_prob (masking 'random', as MLMMasker draws them: per-row counts vary, so the B x M target
    slots hold more unused ones). -> (input_ids, labels), labels -100 elsewhere."""
    if masking not in ("fixed", "random"):
        raise ValueError(f"masking must be 'fixed' or 'random', got {masking!r}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    if masking == "random":
        pick = torch.rand(batch_size, seq_len, generator=g) < mlm_prob
    else:
        k = max(1, round(mlm_prob * seq_len))
        pos = torch.rand(batch_size, seq_len, generator=g).argsort(dim=1)[:, :k]
        pick = torch.zeros(batch_size, seq_len, dtype=torch.bool).scatter_(1, pos, True)
    labels = ids.masked_fill(~pick, IGNORE_INDEX)
    inputs = ids.masked_fill(pick, mask_id)
    return inputs.to(device), labels.to(device)


def make_optimizer(model, kind: str, lr: float = 5e-5, weight_decay: float = 0.01):
    """AdamW as pretrain.py builds it ('default': fused on CPU and CUDA), or forced to the 'foreach', 'fused' or
    'loop' implementation."""
    device_type = next(model.parameters()).device.type
    default = {"fused": True} if device_type in ("cuda", "cpu") else {}
    extra = {"default": default, "foreach": {"foreach": True}, "fused": {"fused": True},
             "loop": {"foreach": False}}[kind]
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **extra)


disable_malloc_mmap = tune_cpu_allocator  # kept under its old name for the bench's flags


def executed_flops_per_token(config, mlm_fraction: float, seq_len: int, last_block: str = "sparse") -> float:
    """Like flops_per_token, but counting only what BertForMaskedLM.forward executes: with the restricted last
    block, that block computes K and V for every token, but Q, out-projection, attention and the FFN only for
    the masked fraction (see BertForMaskedLM.forward in tinybert/model.py)."""
    total = flops_per_token(config, mlm_fraction=mlm_fraction, seq_len=seq_len)
    if last_block == "full":
        return total
    H, inter = config.hidden, config.intermediate
    skipped_macs = (1.0 - mlm_fraction) * (2 * H * H + 2 * H * inter + 2 * seq_len * H)
    assert skipped_macs <= encoder_macs_per_token(config, seq_len)
    return total - 6.0 * skipped_macs


def forward_full_last_block(model, input_ids, attention_mask, labels):
    """The pre-§0.2 forward, for comparison: the whole encoder on every position, then the head on the masked
    rows only (what BertForMaskedLM.forward did before the last block was restricted)."""
    hidden = model.bert(input_ids, attention_mask)
    flat = labels.reshape(-1)
    idx = flat.ne(IGNORE_INDEX).nonzero().squeeze(1)
    logits = model.mlm_head(hidden.reshape(-1, hidden.size(-1)).index_select(0, idx))
    return F.cross_entropy(logits.float(), flat.index_select(0, idx), reduction="sum") / max(idx.numel(), 1)


def bench_model(preset: str, precision, device, batch_size=32, seq_len=128, steps=10, warmup=2,
                vocab_size=30522, optimizer="default", compile_model=False, mlm_prob=0.15, last_block="sparse",
                overrides=None, masking="fixed") -> dict:
    """Time `steps` full MLM training steps after `warmup` untimed ones. Returns a dict of the measurements."""
    torch.manual_seed(0)
    config = make_model_config(preset, vocab_size=vocab_size, max_position=max(seq_len, 128), **(overrides or {}))
    model = BertForMaskedLM(config).to(device).train()
    opt = make_optimizer(model, optimizer)
    net = torch.compile(model) if compile_model else model
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    ids, labels = fixed_mlm_batch(batch_size, seq_len, vocab_size, mask_id=4, device=device, mlm_prob=mlm_prob,
                                  masking=masking)
    n_pred = int((labels != IGNORE_INDEX).sum())
    targets = dense_to_targets(labels)  # gathered once on the host, as pretrain's step_inputs does per batch

    def step():
        with precision.autocast(device):
            if last_block == "full":
                loss = forward_full_last_block(model, ids, None, labels)
            else:
                loss = net(ids, None, targets).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    synchronize(device)
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    final_loss = float(loss.detach().float())

    tokens = batch_size * seq_len
    step_med, step_min = statistics.median(times), min(times)
    fpt = flops_per_token(config, mlm_fraction=n_pred / tokens, seq_len=seq_len)
    # the sparse path computes the last block's queries and attention on the B x M target slots, and from the
    # out-projection on (FFN, norms, the head) the N_pad used rows only; counted here as N_pad throughout (the
    # queries and attention of the extra slots are a few % of the step)
    slots = targets.used.numel() if last_block == "sparse" else n_pred
    exec_fpt = executed_flops_per_token(config, slots / tokens, seq_len, last_block)
    result = {
        "model": preset, "precision": precision.name, "device": str(device), "batch_size": batch_size,
        "seq_len": seq_len, "steps": steps, "warmup": warmup, "optimizer": optimizer, "compile": compile_model,
        "last_block": last_block, "masking": masking, "threads": torch.get_num_threads(),
        "params": count_parameters(model),
        "predicted_per_step": n_pred, "slots_per_step": slots, "step_s": step_med, "step_s_min": step_min,
        "step_s_all": times,
        "process_cpu_s_min": min(cpu_times),
        "tokens_per_s": tokens / step_med, "tokens_per_s_best": tokens / step_min,
        "flops_per_token": fpt, "executed_flops_per_token": exec_fpt,
        "tflops": fpt * tokens / step_med / 1e12, "tflops_best": fpt * tokens / step_min / 1e12,
        "executed_tflops": exec_fpt * tokens / step_med / 1e12, "loss": final_loss,
        "paper_pretrain_hours": PAPER_TOKENS / (tokens / step_med) / 3600,
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, net, opt
    return result


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinybert.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["bert1-h8", "bert6"], help="model presets (tinybert/config.py)")
    p.add_argument("--precision", nargs="+", default=["auto"], help="auto, bf16, fp16 (CUDA) and/or fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 on GPU, 2 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 for fp32 matmuls (peak and model)")
    p.add_argument("--optimizer", default="default", choices=["default", "foreach", "fused", "loop"],
                   help="AdamW implementation ('default' = as pretrain.py builds it)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--json", type=Path, default=None, help="also write all results here")
    # hidden knobs for tests and quick runs
    p.add_argument("--peak-sizes", type=int, nargs="+", default=list(DEFAULT_PEAK_SIZES), help=argparse.SUPPRESS)
    p.add_argument("--peak-repeats", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--last-block", default="sparse", choices=["sparse", "full"], help=argparse.SUPPRESS)
    p.add_argument("--masking", default="fixed", choices=["fixed", "random"], help=argparse.SUPPRESS)
    p.add_argument("--no-mmap", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ensemble"]:  # the ensemble mode: K separate models vs one batched model (bench_ensemble.py)
        from tinybert import bench_ensemble
        return bench_ensemble.main(argv[1:])
    args = build_parser().parse_args(argv)
    malloc_tuned = disable_malloc_mmap() if args.no_mmap else False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    steps = args.steps if args.steps is not None else (20 if on_gpu else 5)
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2)
    precisions = []
    for name in args.precision:
        p = choose_precision(name, device)
        if p.name not in [q.name for q in precisions]:
            precisions.append(p)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = torch.cuda.get_device_name(device) if on_gpu else f"{torch.get_num_threads()} CPU threads"
    print(f"device {device} ({where}), torch {torch.__version__}, load average {load:.2f}"
          f"{', malloc without mmap' if malloc_tuned else ''}")

    peaks = {}
    for p in precisions:
        dtype = p.dtype or torch.float32
        peak = matmul_peak(device, dtype, args.peak_sizes, args.peak_repeats)
        peaks[p.name] = peak
        sizes = ", ".join(f"{n}: {g:,.0f}" if g >= 10 else f"{n}: {g:.2f}" for n, g in peak["by_size"].items())
        tf32 = " (TF32 allowed)" if on_gpu and p.name == "fp32" and args.tf32 else ""
        print(f"matmul peak {p.name}{tf32}: {peak['best']:,.{0 if peak['best'] >= 10 else 2}f} GFLOP/s   "
              f"(by size {sizes})")

    results = []
    header = (f"{'model':<20} {'prec':<5} {'params':>7} {'step ms':>9} {'best ms':>9} {'tok/s':>10} "
              f"{'TFLOP/s':>8} {'MFU':>6} {'exec':>6}  paper pre-training")
    for model_name in args.models:
        for p in precisions:
            r = bench_model(model_name, p, device, args.batch_size, args.seq_len, steps, warmup, args.vocab_size,
                            args.optimizer, args.compile, last_block=args.last_block, masking=args.masking)
            results.append(r)
            print(f"  measured {model_name} {p.name}: {r['step_s'] * 1e3:,.1f} ms/step (median), "
                  f"{r['tokens_per_s']:,.0f} tokens/s", flush=True)
    # the load on a shared machine changes: measure the peak again and keep the better one
    for p in precisions:
        again = matmul_peak(device, p.dtype or torch.float32, args.peak_sizes, args.peak_repeats)
        if again["best"] > peaks[p.name]["best"]:
            print(f"matmul peak {p.name} measured again after the models: {again['best']:,.1f} GFLOP/s "
                  f"(was {peaks[p.name]['best']:,.1f}); MFU below uses it")
            peaks[p.name] = again
    print(header)
    for r in results:
        r["peak_gflops"] = peak = peaks[r["precision"]]["best"]
        r["mfu"], r["mfu_best"] = r["tflops"] * 1e3 / peak, r["tflops_best"] * 1e3 / peak
        r["executed_utilisation"] = r["executed_tflops"] * 1e3 / peak
        print(f"{r['model']:<20} {r['precision']:<5} {r['params'] / 1e6:>6.1f}M {r['step_s'] * 1e3:>9.1f} "
              f"{r['step_s_min'] * 1e3:>9.1f} {r['tokens_per_s']:>10,.0f} {r['tflops']:>8.3f} "
              f"{r['mfu']:>6.1%} {r['executed_utilisation']:>6.1%}  "
              f"{format_duration(r['paper_pretrain_hours'] * 3600)}")
    print(f"(step ms / tok/s / TFLOP/s / MFU: median of {steps} steps after {warmup} warm-up; 'best ms' the "
          f"fastest step. MFU = model FLOPs (flops_per_token) / peak; exec = FLOPs actually executed / peak. "
          f"paper pre-training = {PAPER_TOKENS / 1e6:.0f}M tokens (40k articles x 128 x 50 epochs) at the "
          f"median speed)")
    for r in results:
        if r["model"] == "bert6":
            print(f"projected full BERT-6 pre-training of the paper ({PAPER_TOKENS / 1e6:.0f}M tokens) on {where}, "
                  f"{r['precision']}: {format_duration(r['paper_pretrain_hours'] * 3600)}")
    out = {"device": str(device), "device_name": where, "torch": torch.__version__, "load_average": load,
           "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
           "malloc_without_mmap": malloc_tuned,
           "peaks": peaks, "results": results, "argv": argv}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
