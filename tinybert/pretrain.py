"""The masked-language-model pre-training loop (train.py parses flags and calls `pretrain`).

One step: a batch of token rows -> dynamic 80/10/10 masking (masking.py) -> BertForMaskedLM forward under
autocast, with the MLM head on the masked positions only (model.py) -> backward -> AdamW step -> scheduler
step. Every epoch ends with masked-token loss/accuracy on a held-out slice, a row in metrics.csv and an atomic
checkpoint (written also every `checkpoint_minutes`, decided at log points); `--resume` restarts from the last
checkpoint and reaches the same weights as an uninterrupted run (the batch order and the masks are pure functions
of (seed, epoch, batch), and the dropout RNG state is saved).

The loop keeps the GPU busy: the loss is accumulated on the device and read (one host sync) only every
`log_every` steps, for the progress display and the NaN check. Every checkpoint write first checks the
parameters for NaN/inf (TrainingState.check_finite), so a diverged state never replaces the last good
checkpoint. On CUDA a background thread builds, masks and pins the next batches (data.prefetch) and they go to
the device with non_blocking copies. The masked positions the sparse MLM head predicts are gathered on the
host too (masking.mlm_targets, M slots per row rounded up to a multiple of 8, and masking.compact_targets, the
used slots among them padded to a multiple of 64, on which the last block after attention and the head run), so a
step has static shapes and no host sync of its own (tests/test_sync_free.py).

Data parallel (train.py under torchrun; tinybert/distributed.py). The global batch is --batch-size rows for
any number of ranks W; each rank computes a contiguous shard of B/W rows (data.py). What makes W ranks compute
the same step as one process:
  * masks: every rank masks the *whole global batch* with the batch's generator (seed, epoch, batch) and then
    takes its rows, so masks do not depend on W (masking a shard with that generator would give other masks);
  * loss: one process minimises the mean over the N masked tokens of the global batch. Rank r's model loss is
    the mean over its own n_r masked tokens, and DDP *averages* gradients over ranks, so a plain DDP step
    would weight every rank equally however many tokens it masked. Each rank therefore back-propagates
    loss_r * W * n_r / N: DDP's average is then sum_r (n_r / N) * grad(mean_r) = grad(sum of token losses / N),
    the one-process gradient. n_r and N are counted on the CPU from the labels (every rank has the global
    labels), so this costs no collective and no host sync. A shard with nothing to predict (n_r = 0, e.g. rows
    of empty articles) still runs its M target slots (all unused) with weight 0, so DDP still gets a (zero)
    gradient for every parameter;
  * the displayed train loss is sum_r loss_r * n_r / N, all-reduced once per log interval (the one sync);
    evaluation is sharded the same way and its sums all-reduced: every rank gets the one-process numbers;
  * BatchNorm (conv front end): train.py converts it to SyncBatchNorm on GPUs, so batch statistics span the
    global batch; shards keep the global batch's width, so the padding in those statistics is the same too.
    On CPUs (gloo) SyncBatchNorm does not exist: statistics are per shard there (not exact).
Exact up to float rounding (different summation order in the all-reduce and in batched matmuls, ~1e-7
relative): batches, masks, loss, gradients, learning rate, clipping (the norm of the all-reduced gradient).
Not the same across different W: dropout. Each rank draws its dropout masks from its own torch RNG stream
(seeded from (seed, rank)); with W ranks the row -> stream assignment depends on W, so runs with dropout > 0
are statistically but not bitwise equivalent. Resuming with the same W restores every rank's RNG state
(checkpoint 'rng_ranks'): bit-exact. Resuming with another W re-seeds the streams (exact with dropout 0).
Only rank 0 prints and writes (checkpoint with the unwrapped model's state dict, metrics.csv).

The units `pretrain` is made of: TrainingState (model + optimisation + progress; create, save, resume with the
RNG restore), step_inputs (masks, this rank's shard, the DDP loss share), ForwardBackward (autocast forward,
scaled backward, the compile fallback), MetricsLog (the log interval's all-reduce with the NaN check and the
time-based checkpoint vote; metrics.csv). AdamW, the scaler, clipping and the lr schedules: optim.py, shared
with fine-tuning. `pretrain(model, data, cfg, run)` takes three small objects: MLMData (vocabulary, special ids,
token rows), PretrainConfig (what is learned) and RunOptions (where and how it runs: output folder, device,
precision, resume, ranks, progress, compile, callbacks).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import check_same_config, load_checkpoint, save_checkpoint
from .data import TokenBatches, prefetch
from .distributed import (all_gather_objects, all_reduce_sum, dropout_seed, rank_rng_state,
                          set_rank_rng_state)
from .masking import CompactTargets, MLMMasker, compact_targets, mlm_targets
from .model import IGNORE_INDEX
from .optim import SCHEDULES, Optimisation, pretrain_lr_multiplier
from .plan import time_training_step
from .runtime import Precision, rng_state, set_rng_state

METRICS_FIELDS = ["epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc", "tokens_per_s", "elapsed_s"]


@dataclass
class PretrainConfig:
    """Pre-training settings; train.py's flags take their defaults from these fields."""
    # The first six fields repeat FinetuneConfig's on purpose: each config is read whole in one place and saved
    # whole in its checkpoint or cache key, so a shared base class would only reorder fields and hide them.
    epochs: int = 50
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "linear"       # 'linear': decay per optimiser step; 'paper-epoch': the authors' per-epoch steps
    mlm_prob: float = 0.15
    grad_clip: float = 0.0         # 0 = off, as in the paper's code
    seed: int = 42                 # article selection, init, order, masks (42: the paper's sampling seed)
    log_every: int = 50
    checkpoint_every: int = 0      # also checkpoint every N steps (0 = only at epoch ends)
    checkpoint_minutes: float = 10.0  # also checkpoint when this long has passed since the last one (0 = off)
    max_steps: int = 0             # stop after N steps in total (0 = run all epochs); for smoke tests and benchmarks


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def mask_generator(seed: int, epoch: int, batch: int, salt: int = 0) -> torch.Generator:
    """The masks of one batch depend only on (seed, epoch, batch): resumable and rank-independent."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 7 + salt)


def estimate_step_seconds(model, batch_size: int, seq_len: int, device, precision: Precision,
                          mlm_prob: float = 0.15, repeats: int = 2) -> float:
    """Time forward + backward of a copy of the model on a random full-length batch (for the plan line).

    The timing is plan.time_training_step's: a deep copy inside fork_rng, so the real model, its gradients and
    the RNG streams that make runs reproducible are untouched.
    """
    def make_loss(probe):
        ids = torch.randint(5, probe.config.vocab_size, (batch_size, seq_len))
        labels = torch.where(torch.rand(ids.shape) < mlm_prob, ids, IGNORE_INDEX)
        targets = compact_targets(mlm_targets(labels)).to(device)
        ids = ids.to(device)
        return lambda: probe(ids, None, targets).loss

    return time_training_step(model, device, precision, make_loss, repeats=repeats)


@torch.no_grad()
def evaluate_mlm(model, batches: TokenBatches, masker: MLMMasker, device, precision: Precision,
                 seed: int) -> tuple[float, float]:
    """Masked-token loss and accuracy on held-out rows, with masks fixed by `seed` (comparable across epochs).

    With several ranks (`batches` built with rank/world_size) every rank masks the global batch, evaluates its
    shard, and the sums are all-reduced: every rank returns the numbers one process would get. Call it on
    the unwrapped model (no DDP hooks needed without gradients)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for b, (ids, attn) in enumerate(batches.global_epoch(0)):
        masked, labels = masker(ids, mask_generator(seed, 0, b, salt=1))
        masked, attn, labels = batches.shard(masked, attn, labels)
        if batches.world_size > 1 and not bool((labels != IGNORE_INDEX).any()):
            continue  # an empty shard of a short last batch, or nothing to predict in it
        n = int((labels != IGNORE_INDEX).sum())  # counted on the host
        targets = CompactTargets(*(to_device(t, device) for t in compact_targets(mlm_targets(labels))))
        with precision.autocast(device):
            out = model(to_device(masked, device), to_device(attn, device), targets)
        loss_sum += out.loss.float() * n
        correct += (out.logits.argmax(-1) == out.labels).sum()  # an argmax is never IGNORE_INDEX: unused slots
        count += n
    model.train(was_training)
    if batches.world_size > 1:
        count_t = torch.tensor(float(count), device=device, dtype=torch.float64)
        packed = torch.stack([loss_sum.double(), correct.double(), count_t])
        all_reduce_sum(packed, batches.world_size)
        loss_total, correct_total, count = packed.tolist()
        if count == 0:
            return float("nan"), float("nan")
        return loss_total / count, correct_total / count
    if count == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / count, correct.item() / count


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy of a batch tensor. On CUDA through pinned memory with non_blocking=True, so the copy
    is asynchronous and the host can prepare the next batch while the GPU computes (no host sync)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS, lineterminator="\n")  # (csv's default is \r\n)
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
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------------------
# the units of the loop: training state, step inputs, forward/backward with the compile fallback, metrics log


@dataclass
class TrainingState:
    """What a checkpoint holds and resume restores: the model, its optimisation (AdamW, schedule, scaler) and
    the progress (epoch and batch of the next step, optimiser steps taken)."""
    model: torch.nn.Module
    opt: Optimisation
    epoch: int = 0
    batch: int = 0
    step: int = 0
    saved_at: float = field(default_factory=time.perf_counter)  # when the last save (or the resume) began

    @classmethod
    def create(cls, model, cfg: PretrainConfig, steps_per_epoch: int, device: torch.device,
               precision: Precision) -> "TrainingState":
        opt = Optimisation.create(model, cfg.lr, cfg.weight_decay,
                                  lambda s: pretrain_lr_multiplier(s, cfg, steps_per_epoch), device, precision,
                                  fused=True, grad_clip=cfg.grad_clip)
        return cls(model, opt)

    def check_finite(self, path: Path) -> None:
        """Raise TrainingDiverged if any parameter is NaN or infinite. Every checkpoint write calls it first, so a
        diverged state never replaces the last good checkpoint: the loss's NaN check runs only at log points,
        and step-based and end-of-epoch writes need not fall on one. One reduction and one host read per
        write. Under DDP the parameters are the same on every rank, so every rank decides alike."""
        finite = torch.stack([torch.isfinite(p.detach()).all() for p in self.model.parameters()]).all()
        if not bool(finite):
            kept = (f"The last good checkpoint ({path}) is kept." if Path(path).is_file()
                    else "No checkpoint had been written yet.")
            raise TrainingDiverged(f"a parameter became NaN or infinite by step {self.step}; stopping before "
                                   f"writing a checkpoint. {kept} Try a lower --lr or --precision fp32.")

    def save(self, path: Path, next_epoch: int, next_batch: int, cfg: PretrainConfig, vocab: list[str],
             rank: int, world_size: int, device: torch.device, extra: dict | None = None) -> None:
        """A collective (every rank calls it: the ranks' RNG states are gathered); rank 0 writes `path`.
        Refuses (TrainingDiverged) a state with a non-finite parameter, before anything is written."""
        self.check_finite(path)
        self.saved_at = time.perf_counter()
        rng_ranks = all_gather_objects(rank_rng_state(device), world_size)
        if rank != 0:
            return
        opt = self.opt
        save_checkpoint(path, {
            "kind": "mlm", "model_config": self.model.config.to_dict(), "train_config": asdict(cfg),
            "vocab": vocab, "model": self.model.state_dict(), "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict() if opt.scaler else None,
            "progress": {"epoch": next_epoch, "batch": next_batch, "step": self.step},
            # 'rng': the format of one-process checkpoints before 'rng_ranks' (CPU + all GPUs); with several
            # ranks only rank 0's CPU state (reading the other GPUs' generators is not this process's business)
            "rng": rng_state() if world_size == 1 else {"torch": torch.get_rng_state()},
            "world_size": world_size, "rng_ranks": rng_ranks, **(extra or {})})

    def resume(self, path: Path, cfg: PretrainConfig, steps_per_epoch: int, rank: int, world_size: int,
               device: torch.device) -> None:
        """Load the checkpoint at `path` (refusing another model or training config) and restore this rank's
        dropout RNG stream."""
        ckpt = load_checkpoint(path, kind="mlm")
        check_same_config(path, ckpt["train_config"], asdict(cfg), "training",
                          ignore=("epochs", "log_every", "checkpoint_every", "checkpoint_minutes", "max_steps"))
        check_same_config(path, ckpt["model_config"], self.model.config.to_dict(), "model")
        optimizer, scheduler, scaler = self.opt.optimizer, self.opt.scheduler, self.opt.scaler
        self.model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["train_config"].get("epochs") != cfg.epochs:
            # A longer run (train.py refuses a shorter one): the schedule is re-planned over the new total, as if
            # the run had been started with cfg.epochs. The optimiser still holds the old plan's lr for the next
            # step; give it the new plan's (the steps already taken keep the lr they had).
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * pretrain_lr_multiplier(ckpt["progress"]["step"], cfg, steps_per_epoch)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.batch, self.step = (ckpt["progress"][k] for k in ("epoch", "batch", "step"))
        rng_ranks = ckpt.get("rng_ranks")
        if rng_ranks is not None and len(rng_ranks) == world_size:
            set_rank_rng_state(rng_ranks[rank], device)   # same number of ranks: each its own stream, exact
        elif rng_ranks is None and world_size == 1:
            set_rng_state(ckpt["rng"])                      # a checkpoint from before rng_ranks existed
        else:
            torch.manual_seed(dropout_seed(cfg.seed, rank, self.step))
        self.saved_at = time.perf_counter()
        saved_world = ckpt.get("world_size", 1)
        if rank == 0:
            print(f"resumed from {path} at epoch {self.epoch}, batch {self.batch}, step {self.step}")
            if saved_world != world_size:
                print(f"note: the checkpoint was written by {saved_world} rank(s), this run has {world_size}: "
                      f"batches, masks and the global loss are the same; the dropout streams are re-seeded "
                      f"(not bit-exact with an uninterrupted run when dropout > 0)")


def step_inputs(batches: TokenBatches, masker: MLMMasker, seed: int, epoch: int, start_batch: int, pin: bool,
                keep_mask: bool = False):
    """This rank's inputs of each step of `epoch` from `start_batch` on: (b, masked, attn, targets, tokens,
    share), CPU tensors (pinned when `pin`), pure functions of (seed, epoch, b). targets: the CompactTargets of
    the rows' labels (the (B, M) positions the sparse head predicts and the used slots among them, gathered here
    on the host); attn: None when no
    row has padding (SDPA may then pick its fastest kernel) unless `keep_mask` (a compiled step: one graph, not
    one with a mask and one without). tokens: the global batch's non-padding tokens (for tokens/s); share:
    n_rank / n_global, this rank's share of the global batch's masked tokens (1 with one rank; see "Data
    parallel" in the module docstring)."""
    for b, (ids, attn) in enumerate(batches.global_epoch(epoch, start_batch), start=start_batch):
        # masks of the global batch, then this rank's rows: the same masks for any number of ranks
        masked, labels = masker(ids, mask_generator(seed, epoch, b))
        tokens = int(attn.sum())
        share = 1.0
        if batches.world_size > 1:
            n_global = int((labels != IGNORE_INDEX).sum())
            masked, attn, labels = batches.shard(masked, attn, labels)
            # n_rank = 0 (e.g. rows of empty articles) needs no special case: the M >= 1 target slots still run
            # the last block and the head, so every parameter gets a (zero) gradient, as DDP requires
            share = int((labels != IGNORE_INDEX).sum()) / max(n_global, 1)
        targets = compact_targets(mlm_targets(labels))
        if not keep_mask and bool(attn.all()):  # decided on the host: no device sync
            attn = None
        if pin:
            masked, targets = masked.pin_memory(), targets.pin_memory()
            attn = None if attn is None else attn.pin_memory()
        yield b, masked, attn, targets, tokens, share


class ForwardBackward:
    """Forward under autocast and (scaled) backward of one step, on the compiled module when `compile` asks
    for one, with an eager fallback that guards every step: compilation proper happens at the first call, but a
    new shape, a recompile or the lazily compiled backward can fail later too. Whenever the compiled module
    raises, the step's gradients, this rank's RNG state and the module's buffers (BatchNorm statistics) are
    restored, the step reruns eagerly, and the run stays eager (one warning).

    A compiled step sees one graph: the varying widths (the batch's token width T, trimmed to its longest row,
    and the M target slots, bucketed by mlm_targets) are marked dynamic, so a new width does not recompile."""

    def __init__(self, eager_net, compile, opt: Optimisation, device: torch.device, precision: Precision,
                 announce: bool):
        self.eager_net, self.opt, self.device, self.precision, self.announce = (
            eager_net, opt, device, precision, announce)
        compiled = compile_or_none(eager_net, compile, announce=announce) if compile else None
        self.net = compiled if compiled is not None else eager_net
        self.compiled = compiled is not None

    def __call__(self, masked, attn, targets: CompactTargets, weight: float | None):
        """weight: the DDP loss weight W * n_r / N (None with one rank); returns the model output."""
        if not self.compiled:
            return self._run(masked, attn, targets, weight)
        masked, attn, targets = dynamic_widths(masked, attn, targets)
        rng = rank_rng_state(self.device)
        buffers = [t.clone() for t in self.eager_net.buffers()]  # BatchNorm statistics: a few tiny copies
        try:
            return self._run(masked, attn, targets, weight)
        except Exception as exc:  # compiling failed (no C++ compiler, unsupported op, ...), at any step
            warn_compile_failed(exc, announce=self.announce)
            self.opt.optimizer.zero_grad(set_to_none=True)
            set_rank_rng_state(rng, self.device)
            with torch.no_grad():
                for t, saved in zip(self.eager_net.buffers(), buffers):
                    t.copy_(saved)
            self.net, self.compiled = self.eager_net, False
            return self._run(masked, attn, targets, weight)

    def _run(self, masked, attn, targets, weight):
        with self.precision.autocast(self.device):
            out = self.net(masked, attn, targets)
        self.opt.backward(out.loss if weight is None else out.loss * weight)
        return out


def dynamic_widths(masked, attn, targets: CompactTargets):
    """The inputs of a compiled step, contiguous (a batch's mask is a slice of a wider array: its strides would be
    guarded on too), with their widths marked dynamic: the token width (dim 1 of ids and mask), the target
    slots (dim 1 of the (B, M) targets) and the used rows (dim 0 of CompactTargets' (N_pad,) ones) vary from batch
    to batch, and one graph serves them all instead of a recompile per new width. Plain MLMTargets work too."""
    masked, attn = masked.contiguous(), None if attn is None else attn.contiguous()
    targets = type(targets)(*(t.contiguous() for t in targets))
    for t in (masked, attn, *targets):
        if t is not None and t.size(-1) > 1:  # sizes 0 and 1 are always specialised by dynamo
            torch._dynamo.mark_dynamic(t, t.dim() - 1)
    return masked, attn, targets


class MetricsLog:
    """The train loss, accumulated on the device and read once per log interval (all-reduced with the time-based
    checkpoint vote, checked for NaN, shown, passed to on_log), and the per-epoch rows of metrics.csv."""

    def __init__(self, path: Path, ckpt_path: Path, cfg: PretrainConfig, device: torch.device, rank: int,
                 world_size: int, bar: tqdm, on_log: Callable[[dict], None] | None, label: str = ""):
        self.path, self.ckpt_path, self.cfg, self.device = path, ckpt_path, cfg, device
        self.rank, self.world_size, self.bar, self.on_log = rank, world_size, bar, on_log
        self.label = label  # printed before the epoch line (the batched committee: which member)
        self.run_start = time.perf_counter()
        self.last: dict = {}  # the latest log point's numbers, then the latest epoch row: the final metrics

    def start_epoch(self) -> None:
        self.loss_acc = torch.zeros((), device=self.device)
        self.n_acc, self.tokens_acc, self.epoch_tokens = 0, 0, 0
        self.tick = self.epoch_start = time.perf_counter()

    def add(self, loss: torch.Tensor, share: float, tokens: int) -> None:
        """One step's loss (this rank's share of the global-batch loss: no host sync) and global tokens."""
        self.loss_acc += loss.detach().float() * share if self.world_size > 1 else loss.detach().float()
        self.n_acc += 1
        self.tokens_acc += tokens

    def log_point(self, epoch: int, step: int, lr: float, checkpoint_due: bool) -> bool:
        """The log interval's one all-reduce and host sync; returns whether any rank voted `checkpoint_due`.

        save() is a collective, so every rank must decide alike whether a time-based checkpoint is due: any
        rank's clock says so -> all save. The vote rides in this all-reduce."""
        packed = torch.stack([self.loss_acc, torch.tensor(float(checkpoint_due), device=self.device)])
        all_reduce_sum(packed, self.world_size)      # this rank's share -> the global-batch loss
        loss_sum, due_votes = packed.tolist()        # the one host sync per log interval
        avg = loss_sum / self.n_acc
        if not math.isfinite(avg):
            kept = (f"The last good checkpoint ({self.ckpt_path}) is kept." if self.ckpt_path.is_file()
                    else "No checkpoint had been written yet.")
            raise TrainingDiverged(f"loss became {avg} at epoch {epoch}, step {step}; stopping. {kept} "
                                   f"Try a lower --lr or --precision fp32.")
        now = time.perf_counter()
        rate = self.tokens_acc / max(now - self.tick, 1e-9)
        self.bar.set_postfix(epoch=epoch, loss=f"{avg:.3f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.2e}")
        self.last = {"train_loss": avg, "tokens_per_s": rate}
        if self.on_log is not None:
            self.on_log({"epoch": epoch, "step": step, "train_loss": avg, "lr": lr})
        self.epoch_tokens += self.tokens_acc
        self.loss_acc.zero_()
        self.n_acc, self.tokens_acc, self.tick = 0, 0, now
        return due_votes > 0

    def end_epoch(self, epoch: int, step: int, lr: float, eval_loss: float, eval_acc: float) -> dict:
        """The epoch's metrics.csv row (rank 0 writes and prints it); it becomes the final metrics so far."""
        epoch_time = time.perf_counter() - self.epoch_start
        row = {"epoch": epoch, "step": step, "lr": lr,
               "train_loss": self.last.get("train_loss", float("nan")), "eval_loss": eval_loss,
               "eval_acc": eval_acc, "tokens_per_s": (self.epoch_tokens + self.tokens_acc) / max(epoch_time, 1e-9),
               "elapsed_s": time.perf_counter() - self.run_start}
        if self.rank == 0:
            append_metrics(self.path, row)
            tqdm.write(f"{self.label}epoch {epoch}: train loss {row['train_loss']:.4f}  eval loss {eval_loss:.4f}  "
                       f"eval masked-token acc {eval_acc:.4f}  ({row['tokens_per_s']:,.0f} tok/s)")
        self.last = row
        return row


# ----------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class MLMData:
    """What pre-training reads: the vocabulary (masking draws its random replacements from it), the [MASK] and
    [PAD] ids, and the training and held-out token rows ((rows, seq_len) integer arrays)."""
    vocab: list[str]
    mask_id: int
    pad_id: int
    train_tokens: Any
    eval_tokens: Any


@dataclass
class RunOptions:
    """Where and how one pre-training run executes. None of it changes what is learned (resume continues the run
    in out_dir exactly). Several ranks: world_size > 1, a process group started and `ddp_model` =
    DistributedDataParallel(model), see "Data parallel" in the module docstring. compile: False, True (inductor)
    or a torch.compile backend (name or callable), with an eager fallback at any step. on_log(dict): called on every rank at each log point
    with {'epoch', 'step', 'train_loss', 'lr'} (the global-batch loss over the log interval). prefetch_batches:
    build, mask and pin the next batches in a background thread (default: on CUDA only). checkpoint_extra: more
    entries for every checkpoint (train.py: the data provenance and the command line). checkpoint_epochs: write the
    end-of-epoch checkpoint (model + optimiser state: ~0.8 GB for BERT-6) only after every N-th epoch and after
    the last one; the time- and step-based checkpoints are unchanged (a time-based one due at an epoch's last
    batch then makes that epoch's end save)."""
    out_dir: Path
    device: torch.device
    precision: Precision
    resume: bool = False
    rank: int = 0
    world_size: int = 1
    ddp_model: Any = None
    show_progress: bool = True
    compile: bool | str = False
    on_log: Callable[[dict], None] | None = None
    prefetch_batches: bool | None = None
    checkpoint_extra: dict | None = None
    checkpoint_epochs: int = 1  # the end-of-epoch checkpoint every N-th epoch and after the last (the runner: 5)


def pretrain(model, data: MLMData, cfg: PretrainConfig, run: RunOptions) -> dict:
    """Run (or resume) MLM pre-training of `model`; return the final metrics row. Only rank 0 writes files."""
    device, precision, rank, world_size, ddp_model = run.device, run.precision, run.rank, run.world_size, run.ddp_model
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule {cfg.schedule!r}: expected one of {SCHEDULES}")
    if world_size > 1 and ddp_model is None:
        raise ValueError("world_size > 1 needs ddp_model (the DistributedDataParallel wrapper of model)")
    if run.checkpoint_epochs < 1:
        raise ValueError(f"checkpoint_epochs must be >= 1, got {run.checkpoint_epochs}")
    ckpt_path, metrics_path = Path(run.out_dir) / "checkpoint.pt", Path(run.out_dir) / "metrics.csv"
    masker = MLMMasker(data.vocab, data.mask_id, cfg.mlm_prob)
    batches = TokenBatches(data.train_tokens, cfg.batch_size, data.pad_id, shuffle=True, seed=cfg.seed,
                           drop_last=True, rank=rank, world_size=world_size)
    eval_batches = TokenBatches(data.eval_tokens, cfg.batch_size, data.pad_id, shuffle=False, rank=rank,
                                world_size=world_size)
    steps_per_epoch = len(batches)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.train_tokens)} training rows give no full batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    state = TrainingState.create(model, cfg, steps_per_epoch, device, precision)
    step_fn = ForwardBackward(ddp_model if ddp_model is not None else model, run.compile, state.opt, device,
                              precision, announce=rank == 0)
    if run.resume:
        state.resume(ckpt_path, cfg, steps_per_epoch, rank, world_size, device)
        if rank == 0:
            drop_metrics_from(metrics_path, state.epoch)
    elif world_size > 1:
        # one independent dropout stream per rank (all ranks start from the same seeded state, which would
        # give rank r's row i the same dropout pattern as rank 0's row i)
        torch.manual_seed(dropout_seed(cfg.seed, rank, 0))
    save_args = (cfg, data.vocab, rank, world_size, device, run.checkpoint_extra)
    model.train()
    bar = tqdm(total=total_steps, initial=state.step, unit="step", dynamic_ncols=True,
               disable=not (run.show_progress and rank == 0), mininterval=1.0)
    log = MetricsLog(metrics_path, ckpt_path, cfg, device, rank, world_size, bar, run.on_log)
    prefetch_batches = device.type == "cuda" if run.prefetch_batches is None else run.prefetch_batches
    # A compiled step keeps the padding mask on every batch of a padded corpus (one graph, see step_inputs).
    # Rows are right-padded, so a corpus has padding iff some row ends in [PAD].
    keep_mask = bool(run.compile) and bool((np.asarray(data.train_tokens[:, -1]) == data.pad_id).any())
    with bar:  # (closed on Ctrl-C too; the caller says what to do next, train.py names the last checkpoint)
        while state.epoch < cfg.epochs and state.step < total_steps:
            epoch, b = state.epoch, state.batch - 1  # b stays so if a resumed epoch has no batch left
            log.start_epoch()
            save_at_end = (epoch + 1) % run.checkpoint_epochs == 0 or epoch + 1 >= cfg.epochs
            source = step_inputs(batches, masker, cfg.seed, epoch, state.batch, pin=device.type == "cuda",
                                 keep_mask=keep_mask)
            for b, masked, attn, targets, tokens, share in (prefetch(source) if prefetch_batches else source):
                # attn is None for rows without padding (packed): SDPA may then pick its fastest (flash) kernel
                out = step_fn(masked.to(device, non_blocking=True),
                              None if attn is None else attn.to(device, non_blocking=True),
                              targets.to(device, non_blocking=True),
                              share * world_size if world_size > 1 else None)  # see "Data parallel" above
                state.opt.step()
                log.add(out.loss, share, tokens)
                state.step += 1
                bar.update(1)
                time_due = False
                if state.step % cfg.log_every == 0 or state.step == total_steps:
                    due = (cfg.checkpoint_minutes > 0
                           and time.perf_counter() - state.saved_at >= 60 * cfg.checkpoint_minutes)
                    time_due = log.log_point(epoch, state.step, state.opt.lr(), due)
                end_of_epoch = b + 1 >= steps_per_epoch or state.step >= total_steps
                if time_due and end_of_epoch:
                    save_at_end = True  # the epoch's end save below is the time-based one
                elif (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or time_due:
                    state.save(ckpt_path, epoch, b + 1, *save_args)
                if state.step >= total_steps:
                    break
            eval_loss, eval_acc = evaluate_mlm(model, eval_batches, masker, device, precision, cfg.seed)
            next_epoch, next_batch = (epoch + 1, 0) if b + 1 >= steps_per_epoch else (epoch, b + 1)
            if save_at_end or state.step >= total_steps:  # always after the last step
                state.save(ckpt_path, next_epoch, next_batch, *save_args)
            log.end_epoch(epoch, state.step, state.opt.lr(), eval_loss, eval_acc)
            state.epoch, state.batch = next_epoch, next_batch
    return log.last


# ----------------------------------------------------------------------------------------------------------
# torch.compile with a fallback


def compile_or_none(module, compile, announce: bool = True):
    """torch.compile(module) (backend inductor for True, else the named backend, or a backend callable), or None
    with a one-line warning when torch.compile itself refuses. Compilation proper happens at the first call;
    ForwardBackward runs every compiled step in a try and falls back to eager there too (warn_compile_failed)."""
    backend = "inductor" if compile is True else compile if callable(compile) else str(compile)
    try:
        return torch.compile(module, backend=backend)
    except Exception as exc:
        warn_compile_failed(exc, announce)
        return None


def warn_compile_failed(exc: BaseException, announce: bool = True) -> None:
    if announce:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"warning: --compile: torch.compile failed ({type(exc).__name__}: {first}); running eagerly",
              file=sys.stderr, flush=True)
