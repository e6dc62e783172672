"""The masked-language-model pre-training loop (train.py parses flags and calls `pretrain`).

One step: a batch of token rows -> dynamic 80/10/10 masking (masking.py) -> BertForMaskedLM forward under
autocast, with the MLM head on the masked positions only (model.py) -> backward -> AdamW step -> scheduler
step. Every epoch ends with masked-token loss/accuracy on a held-out slice, a row in metrics.csv and an atomic
checkpoint; `--resume` restarts from the last checkpoint and reaches the same weights as an uninterrupted run
(the batch order and the masks are pure functions of (seed, epoch, batch), and the dropout RNG state is saved).

The loop keeps the GPU busy: the loss is accumulated on the device and read (one host sync) only every
`log_every` steps, for the progress display and the NaN check.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import check_same_config, load_checkpoint, save_checkpoint
from .data import TokenBatches
from .masking import MLMMasker
from .runtime import Precision, rng_state, set_rng_state

SCHEDULES = ("linear", "paper-epoch")
METRICS_FIELDS = ["epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "tokens_per_s", "elapsed_s"]


@dataclass
class PretrainConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "linear"       # 'linear': decay per optimiser step; 'paper-epoch': the authors' per-epoch steps
    mlm_prob: float = 0.15
    grad_clip: float = 0.0         # 0 = off, as in the paper's code
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0      # also checkpoint every N steps (0 = only at epoch ends)
    max_steps: int = 0             # stop after N steps in total (0 = run all epochs); for smoke tests and benchmarks


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def lr_multiplier(step: int, cfg: PretrainConfig, steps_per_epoch: int) -> float:
    """The learning-rate factor for optimiser step `step` (0-based)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "paper-epoch":
        # The authors' code: get_linear_schedule_with_warmup(warmup=1, total=epochs) stepped once per epoch,
        # so epoch 0 runs at lr 0 and epoch e >= 1 at lr * (E - e) / (E - 1).
        epoch = step // steps_per_epoch
        return 0.0 if epoch == 0 else (cfg.epochs - epoch) / max(cfg.epochs - 1, 1)
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return max(0.0, (total - step) / max(total - cfg.warmup_steps, 1))


def mask_generator(seed: int, epoch: int, batch: int, salt: int = 0) -> torch.Generator:
    """The masks of one batch depend only on (seed, epoch, batch): resumable and rank-independent."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 7 + salt)


def estimate_step_seconds(model, batch_size: int, seq_len: int, device, precision: Precision,
                          mlm_prob: float = 0.15, repeats: int = 2) -> float:
    """Time forward + backward of a copy of the model on a random full-length batch (for the plan line).

    Runs on a deep copy inside fork_rng, so the real model, its gradients and the RNG streams that make runs
    reproducible are untouched.
    """
    probe = copy.deepcopy(model).train()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        ids = torch.randint(5, probe.config.vocab_size, (batch_size, seq_len), device=device)
        labels = torch.where(torch.rand(ids.shape, device=device) < mlm_prob, ids, torch.full_like(ids, -100))
        times = []
        for _ in range(repeats + 1):  # the first call warms up kernels and allocators
            start = time.perf_counter()
            with precision.autocast(device):
                loss = probe(ids, None, labels).loss
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    del probe
    return min(times[1:])


@torch.no_grad()
def evaluate_mlm(model, batches: TokenBatches, masker: MLMMasker, device, precision: Precision,
                 seed: int) -> tuple[float, float]:
    """Masked-token loss and accuracy on held-out rows, with masks fixed by `seed` (comparable across epochs)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for b, (ids, attn) in enumerate(batches.epoch(0)):
        masked, labels = masker(ids, mask_generator(seed, 0, b, salt=1))
        with precision.autocast(device):
            out = model(masked.to(device), attn.to(device), labels.to(device))
        n = out.labels.numel()
        loss_sum += out.loss.float() * n
        correct += (out.logits.argmax(-1) == out.labels).sum()
        count += n
    model.train(was_training)
    if count == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / count, correct.item() / count


def append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def drop_metrics_from(path: Path, epoch: int) -> None:
    """On resume, forget rows of epochs that will be re-run (a crash may have come after the row was written)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < epoch]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def pretrain(model, vocab: list[str], mask_id: int, pad_id: int, train_tokens, eval_tokens,
             cfg: PretrainConfig, out_dir: Path, device: torch.device, precision: Precision,
             checkpoint_extra: dict | None = None, resume: bool = False, rank: int = 0, world_size: int = 1,
             ddp_model=None, show_progress: bool = True) -> dict:
    """Run (or resume) MLM pre-training; return the final metrics. Only rank 0 writes files."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule {cfg.schedule!r}: expected one of {SCHEDULES}")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    metrics_path = out_dir / "metrics.csv"
    is_main = rank == 0
    net = ddp_model if ddp_model is not None else model  # the module that runs forward/backward

    masker = MLMMasker(vocab, mask_id, cfg.mlm_prob)
    batches = TokenBatches(train_tokens, cfg.batch_size, pad_id, shuffle=True, seed=cfg.seed,
                           drop_last=True, rank=rank, world_size=world_size)
    eval_batches = TokenBatches(eval_tokens, cfg.batch_size, pad_id, shuffle=False)
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_tokens)} training rows give no full batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None

    epoch, start_batch, step = 0, 0, 0
    if resume:
        ckpt = load_checkpoint(ckpt_path, kind="mlm")
        check_same_config(ckpt_path, ckpt["train_config"], asdict(cfg), "training",
                          ignore=("epochs", "log_every", "checkpoint_every", "max_steps"))
        check_same_config(ckpt_path, ckpt["model_config"], model.config.to_dict(), "model")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, start_batch, step = (ckpt["progress"][k] for k in ("epoch", "batch", "step"))
        if is_main:
            drop_metrics_from(metrics_path, epoch)
            print(f"resumed from {ckpt_path} at epoch {epoch}, batch {start_batch}, step {step}")

    def save(next_epoch: int, next_batch: int) -> None:
        if not is_main:
            return
        save_checkpoint(ckpt_path, {
            "kind": "mlm", "model_config": model.config.to_dict(), "train_config": asdict(cfg),
            "vocab": vocab, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "progress": {"epoch": next_epoch, "batch": next_batch, "step": step},
            "rng": rng_state(), **(checkpoint_extra or {})})

    model.train()
    run_start = time.perf_counter()
    last = {}
    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (show_progress and is_main), mininterval=1.0)
    try:
        while epoch < cfg.epochs and step < total_steps:
            loss_acc = torch.zeros((), device=device)
            n_acc, tokens_acc, epoch_tokens = 0, 0, 0
            tick, epoch_start = time.perf_counter(), time.perf_counter()
            b = start_batch - 1  # stays so if a resumed epoch has no batch left
            for b, (ids, attn) in enumerate(batches.epoch(epoch, start_batch), start=start_batch):
                masked, labels = masker(ids, mask_generator(cfg.seed, epoch, b))
                tokens_acc += int(attn.sum())
                # No mask at all (packed rows) lets SDPA pick its fastest (flash) kernel.
                attn_dev = None if bool(attn.all()) else attn.to(device, non_blocking=True)
                with precision.autocast(device):
                    out = net(masked.to(device, non_blocking=True), attn_dev,
                              labels.to(device, non_blocking=True))
                if scaler is not None:
                    scaler.scale(out.loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    out.loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_acc += out.loss.detach().float()
                n_acc += 1
                step += 1
                bar.update(1)

                if step % cfg.log_every == 0 or step == total_steps:
                    avg = loss_acc.item() / n_acc           # the one host sync per log interval
                    if not math.isfinite(avg):
                        raise TrainingDiverged(
                            f"loss became {avg} at epoch {epoch}, step {step}; stopping. The last good "
                            f"checkpoint ({ckpt_path}) is kept. Try a lower --lr or --precision fp32.")
                    now = time.perf_counter()
                    rate = tokens_acc / max(now - tick, 1e-9)
                    bar.set_postfix(epoch=epoch, loss=f"{avg:.3f}", tok_s=f"{rate:,.0f}",
                                    lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    last = {"train_loss": avg, "tokens_per_s": rate}
                    epoch_tokens += tokens_acc
                    loss_acc.zero_()
                    n_acc, tokens_acc, tick = 0, 0, now
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save(epoch, b + 1)
                if step >= total_steps:
                    break
            finished_epoch = b + 1 >= steps_per_epoch
            eval_loss, eval_acc = evaluate_mlm(model, eval_batches, masker, device, precision, cfg.seed)
            next_epoch, next_batch = (epoch + 1, 0) if finished_epoch else (epoch, b + 1)
            save(next_epoch, next_batch)
            epoch_time = time.perf_counter() - epoch_start
            row = {"epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0],
                   "train_loss": last.get("train_loss", float("nan")), "eval_loss": eval_loss,
                   "eval_acc": eval_acc, "tokens_per_s": (epoch_tokens + tokens_acc) / max(epoch_time, 1e-9),
                   "elapsed_s": time.perf_counter() - run_start}
            if is_main:
                append_metrics(metrics_path, row)
                tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.4f}  eval loss {eval_loss:.4f}  "
                           f"eval masked-token acc {eval_acc:.4f}  ({row['tokens_per_s']:,.0f} tok/s)")
            last = row
            epoch, start_batch = next_epoch, next_batch
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; the last checkpoint is {ckpt_path}; continue with --resume")
        raise
    bar.close()
    return last
