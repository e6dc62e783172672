"""Classification fine-tuning and evaluation (eval.py parses flags and calls `finetune`).

Where it sits in the flow: task examples (data_prep/tasks.py) -> `encode_examples` (tokenizer) -> padded batches
-> BertForSequenceClassification (model.py) -> cross-entropy -> AdamW step; after every epoch, accuracy on the
validation and test sets. The committee (committee.py) combines the test-set probabilities this returns.

The recipe follows the authors' code (docs/paper-recipe.md#fine-tuning): AdamW, lr 5e-5, weight decay 0.01 on every
parameter, batch 32 (the last, partial batch is kept), 50 epochs, cross-entropy, [CLS]-pooler classifier whose
pooler and linear layer start fresh. Deliberate differences, each a documented choice:

* **Selection on a validation set, never on test** (the authors monitored test every epoch:
  docs/paper-recipe.md#test-set-monitoring). Test accuracy is still recorded every epoch (the curve), but the
  reported "selected" number is the test accuracy at the epoch with the best validation accuracy (the first such
  epoch on ties); the last epoch's test accuracy is reported next to it. Without a validation set the selection
  falls back to the last epoch.
* **Per-step linear decay** by default (`schedule="linear"`); `schedule="paper-epoch"` reproduces the authors'
  per-epoch steps lr * (E - e) / E (warmup 0).
* **Padding to the longest row of each batch** instead of to 128. Training batches are *sort-free*: a seeded
  random permutation per epoch, cut into batches, each padded to its own longest row (batches stay i.i.d. as in
  the paper). Evaluation batches are *length-bucketed* (rows sorted by length, results put back in the original
  order), which only saves compute: in eval mode a row's logits do not depend on its batch-mates or on the
  padding (tests/test_finetune.py checks this against full padding to max_length).

Speed: the encoded sets are small (at most tens of thousands of rows x 128), so they are moved to the device once;
each batch is then an index into device tensors, with no host-to-device copy per step. The loss is accumulated
on the device and read (one host sync) every `log_every` steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint
from .config import ModelConfig
from .data import epoch_permutation
from .model import BertForSequenceClassification, LoadReport
from .optim import SCHEDULES, Optimisation, finetune_lr_multiplier
from .plan import time_training_step
from .pretrain import TrainingDiverged
from .runtime import Precision

@dataclass
class FinetuneConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    max_length: int = 128          # tokens per text, [CLS] and [SEP] included (longer texts are truncated)
    warmup_steps: int = 0
    schedule: str = "linear"       # 'linear': decay per optimiser step; 'paper-epoch': the authors' per-epoch steps
    seed: int = 0                  # the batch order (model init and dropout are seeded by the caller)
    log_every: int = 50
    eval_batch_size: int = 256
    restore_best: bool = True      # leave the model holding the selected (best-validation) weights at the end

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {self.max_length}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_steps >= 0 (got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup_steps})")


# ----------------------------------------------------------------------------------------------------------
# encoding and batching


class EncodedExamples(NamedTuple):
    ids: list[list[int]]   # token ids per text, [CLS] ... [SEP], at most max_length long
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def encode_examples(tokenizer, examples: Sequence, max_length: int) -> EncodedExamples:
    """Tokenize `examples` (objects with .text and .label) -> (id lists, labels)."""
    ids = tokenizer.encode_batch([ex.text for ex in examples], add_special_tokens=True, max_length=max_length)
    return EncodedExamples(ids, [int(ex.label) for ex in examples])


class DeviceBatches:
    """An encoded set held on the device as one right-padded (N, L) tensor, plus lengths and labels.

    `batch(rows)` cuts rows to the longest of them; the mask is None when all of them are that long (then SDPA
    may pick its fastest kernel). Row lengths stay on the host too, so choosing a width never syncs.
    """

    def __init__(self, data: EncodedExamples, pad_id: int, device: torch.device, pad_to: int | None = None):
        lengths = np.array([len(x) for x in data.ids], dtype=np.int64)
        if len(lengths) and lengths.min() < 1:
            raise ValueError("an encoded example has no tokens")
        width = int(lengths.max(initial=1)) if pad_to is None else pad_to
        if pad_to is not None and lengths.max(initial=0) > pad_to:
            raise ValueError(f"an example has {lengths.max()} tokens, more than pad_to={pad_to}")
        ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
        for r, row in enumerate(data.ids):
            ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        self.lengths = lengths
        self.pad_to = pad_to
        self.ids = ids.to(device)
        self.lengths_dev = torch.from_numpy(lengths).to(device)
        self.labels = torch.tensor(data.labels, dtype=torch.long).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray):
        """rows: host int array -> (ids (b, w), mask (b, w) bool or None, labels (b,)), all on the device."""
        width = self.pad_to or int(self.lengths[rows].max())
        index = torch.from_numpy(np.ascontiguousarray(rows)).to(self.device, non_blocking=True)
        ids = self.ids.index_select(0, index)[:, :width]
        if (self.lengths[rows] == width).all():
            mask = None
        else:
            mask = torch.arange(width, device=self.device)[None, :] < self.lengths_dev.index_select(0, index)[:, None]
        return ids, mask, self.labels.index_select(0, index)

    def train_batches(self, batch_size: int, seed: int, epoch: int):
        """Sort-free: a seeded permutation of the rows per epoch, cut into batches (the last may be short)."""
        order = epoch_permutation(len(self), seed, epoch).numpy()
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def eval_batches(self, batch_size: int):
        """Length-bucketed: rows sorted by length; yields (rows, batch) so results can be put back in order."""
        order = np.argsort(self.lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self.batch(rows)


# ----------------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict_logits(model, batches: DeviceBatches, batch_size: int, device: torch.device,
                   precision: Precision) -> torch.Tensor:
    """Logits (N, C) in float32, in the rows' original order, on the device. Eval mode for the duration."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(batches), model.num_labels, device=device)
    for rows, (ids, mask, _) in batches.eval_batches(batch_size):
        with precision.autocast(device):
            logits = model(ids, mask)
        out.index_copy_(0, torch.from_numpy(rows).to(device, non_blocking=True), logits.float())
    model.train(was_training)
    return out


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(C, C) counts; rows = true label, columns = predicted label."""
    return torch.bincount(labels * num_labels + preds, minlength=num_labels * num_labels).view(num_labels,
                                                                                               num_labels)


class EvalResult(NamedTuple):
    loss: float
    acc: float
    logits: torch.Tensor  # (N, C) float32 on the device


def evaluate(model, batches: DeviceBatches | None, batch_size: int, device, precision) -> EvalResult | None:
    if batches is None or len(batches) == 0:
        return None
    return eval_result(predict_logits(model, batches, batch_size, device, precision), batches.labels)


def eval_result(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Loss and accuracy of logits (N, C) float32 against labels (N,) (two host syncs)."""
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(-1) == labels).float().mean().item()
    return EvalResult(loss, acc, logits)


# ----------------------------------------------------------------------------------------------------------
# model construction


def build_classifier(checkpoint, config: ModelConfig | None, num_labels: int
                     ) -> tuple[BertForSequenceClassification, LoadReport | None]:
    """A classifier whose encoder comes from an MLM checkpoint (a path, or a dict from load_checkpoint), or random
    init when `checkpoint` is None. The pooler and the linear layer are always fresh
    (docs/paper-recipe.md#architecture).

    Strict where the authors were not (docs/paper-recipe.md#checkpoint-loading): the checkpoint's model_config must
    equal `config` (when given), every encoder weight must be present, and no encoder-looking key ('bert.*') may go
    unused; only the MLM head's keys may be left over. Any violation is a CheckpointError. Returns (model on CPU,
    LoadReport or None for random init). Seed the global RNG before calling: the fresh layers draw from it.
    """
    if checkpoint is None:
        if config is None:
            raise ValueError("build_classifier: random init needs a ModelConfig")
        return BertForSequenceClassification(config, num_labels), None
    if isinstance(checkpoint, (str, Path)):
        where = str(checkpoint)
        ckpt = load_checkpoint(checkpoint, kind="mlm")
    else:
        ckpt = checkpoint
        where = ckpt.get("path", "<checkpoint dict>")
    try:
        saved = ModelConfig.from_dict(ckpt["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {where}: bad model_config: {exc}") from None
    if config is not None and config.to_dict() != saved.to_dict():
        diff = [k for k in saved.to_dict() if saved.to_dict()[k] != config.to_dict()[k]]
        raise CheckpointError(f"checkpoint {where} was pre-trained with a different model config "
                              f"(fields {', '.join(diff)} differ)")
    model = BertForSequenceClassification(saved, num_labels)
    try:
        report = model.load_encoder_state(ckpt["model"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {where}: {exc}") from None
    stray = [k for k in report.unused_keys if k.startswith("bert.")]
    if report.missing_keys or stray:
        raise CheckpointError(
            f"checkpoint {where} does not match its model config: "
            + (f"{len(report.missing_keys)} encoder weight(s) missing (e.g. {', '.join(report.missing_keys[:3])})"
               if report.missing_keys else "")
            + ("; " if report.missing_keys and stray else "")
            + (f"{len(stray)} encoder weight(s) the model lacks (e.g. {', '.join(stray[:3])})" if stray else ""))
    return model, report


def estimate_step_seconds(model, batch_size: int, length: int, device: torch.device, precision: Precision,
                          repeats: int = 2) -> float:
    """Time one training step (forward, backward, AdamW) of a copy of `model` on a random batch of `batch_size` x
    `length` tokens, for eval.py's plan line (plan.time_training_step: the real model and RNG streams untouched)."""
    def make_loss(probe):
        ids = torch.randint(5, probe.config.vocab_size, (batch_size, length), device=device)
        labels = torch.randint(0, probe.num_labels, (batch_size,), device=device)
        return lambda: F.cross_entropy(probe(ids, None).float(), labels)

    return time_training_step(model, device, precision, make_loss, optimizer_step=True, repeats=repeats)


# ----------------------------------------------------------------------------------------------------------
# the loop


def finetune(model: BertForSequenceClassification, train: EncodedExamples, val: EncodedExamples | None,
             test: EncodedExamples, cfg: FinetuneConfig, device: torch.device, precision: Precision,
             show_progress: bool = True, desc: str = "fine-tune") -> dict:
    """Fine-tune `model` (already on `device`) on `train`; evaluate `val` and `test` after every epoch.

    Returns a dict:
      curve               [{epoch, lr, train_loss, val_loss, val_acc, test_loss, test_acc, elapsed_s}] per epoch
      selection           'val' or 'final' (no validation set)
      selected_epoch      0-based epoch of the best validation accuracy (first on ties)
      best_val_acc, selected_test_acc, final_val_acc, final_test_acc, steps, train_seconds
      confusion           (C, C) list of lists for the selected model on test (rows true, columns predicted)
      test_logits, test_probs   numpy (N, C) float32 of the selected model, rows in test order
      final_test_probs    numpy (N, C) of the last epoch's model
      test_labels         numpy (N,)
    With cfg.restore_best the model is left holding the selected weights; the selected test outputs are
    recomputed from those weights (a check that the kept state is the one that was selected).
    """
    check_inputs(model, train, val, test)
    pad_id = model.config.pad_id
    train_b = DeviceBatches(train, pad_id, device)
    val_b = DeviceBatches(val, pad_id, device) if val is not None and len(val) else None
    test_b = DeviceBatches(test, pad_id, device)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)

    # No clipping, and on CPU the default (not fused) AdamW: the pinned CPU fine-tuning numbers were made so
    # (tests/test_golden.py). On CUDA the fused AdamW, as in pre-training: one kernel for all parameters, and
    # under fp16 no host read of the GradScaler's inf check per step.
    opt = Optimisation.create(model, cfg.lr, cfg.weight_decay,
                              lambda s: finetune_lr_multiplier(s, cfg, steps_per_epoch), device, precision,
                              fused=device.type == "cuda")
    evaluate_on = lambda b: evaluate(model, b, cfg.eval_batch_size, device, precision)  # noqa: E731
    curve: list[dict] = []
    selection = Selection(cfg.restore_best)
    last_test: EvalResult | None = None
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, unit="step", desc=desc, dynamic_ncols=True,
               disable=not show_progress, mininterval=1.0, leave=False)
    model.train()
    try:
        for epoch in range(cfg.epochs):
            lr_epoch = opt.lr()
            train_loss, step = train_epoch(model, train_b, opt, cfg, epoch, step, device, precision, bar)
            val_r, last_test = evaluate_on(val_b), evaluate_on(test_b)
            curve.append({"epoch": epoch, "lr": lr_epoch, "train_loss": train_loss,
                          "val_loss": val_r.loss if val_r else None, "val_acc": val_r.acc if val_r else None,
                          "test_loss": last_test.loss, "test_acc": last_test.acc,
                          "elapsed_s": time.perf_counter() - start})
            selection.update(model, epoch, val_r, last_test)
            if show_progress:
                tqdm.write(f"{desc} epoch {epoch}: train loss {train_loss:.4f}"
                           + (f"  val acc {val_r.acc:.4f}" if val_r else "") + f"  test acc {last_test.acc:.4f}")
    finally:
        bar.close()
    train_seconds = time.perf_counter() - start
    best_test = selection.finish(model, last_test, cfg.epochs, lambda: evaluate_on(test_b))
    return result_dict(selection, best_test, last_test, curve, step, train_seconds, test_b.labels,
                       model.num_labels)


def check_inputs(model, train: EncodedExamples, val: EncodedExamples | None, test: EncodedExamples) -> None:
    """Labels within the model's classes, rows within its positions, non-empty train and test (ValueError)."""
    num_labels = model.num_labels
    for name, data in (("train", train), ("val", val), ("test", test)):
        if data is None:
            continue
        bad = [y for y in data.labels if not 0 <= y < num_labels]
        if bad:
            raise ValueError(f"{name} set has label {bad[0]} outside 0..{num_labels - 1}")
        too_long = [len(x) for x in data.ids if len(x) > model.config.max_position]
        if too_long:
            raise ValueError(f"{name} set has a {too_long[0]}-token example; the model has only "
                             f"{model.config.max_position} positions (lower max_length)")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"need a non-empty train and test set (got {len(train)} and {len(test)} examples)")


def train_epoch(model, train_b: DeviceBatches, opt: Optimisation, cfg: FinetuneConfig, epoch: int, step: int,
                device, precision: Precision, bar) -> tuple[float, int]:
    """One pass over the training batches; returns (mean training loss, global step count after the epoch).
    The loss stays on the device and is read once per `log_every` steps and once at the end (host syncs)."""
    loss_acc = torch.zeros((), device=device)  # since the last log
    epoch_loss = torch.zeros((), device=device)
    n_acc = n_batches = 0
    for ids, mask, labels in train_b.train_batches(cfg.batch_size, cfg.seed, epoch):
        with precision.autocast(device):
            logits = model(ids, mask)
        loss = F.cross_entropy(logits.float(), labels)
        opt.backward(loss)
        opt.step()
        loss_acc += loss.detach()
        epoch_loss += loss.detach()
        n_acc += 1
        n_batches += 1
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            avg = loss_acc.item() / n_acc  # the one host sync per log interval
            _check_finite(avg, epoch, step)
            bar.set_postfix(epoch=epoch, loss=f"{avg:.3f}", lr=f"{opt.lr():.2e}")
            loss_acc.zero_()
            n_acc = 0
    train_loss = epoch_loss.item() / n_batches
    _check_finite(train_loss, epoch, step)
    return train_loss, step


class Selection:
    """The model selection: the epoch of best validation accuracy (the first on ties), its test result and,
    with `restore`, a copy of its weights; without a validation set, the last epoch."""

    def __init__(self, restore: bool):
        self.restore = restore
        self.best_val, self.epoch, self.state, self.test = -1.0, -1, None, None
        self.by = "val"

    def update(self, model, epoch: int, val_r: EvalResult | None, test_r: EvalResult) -> None:
        if val_r is not None and val_r.acc > self.best_val:
            self.best_val, self.epoch, self.test = val_r.acc, epoch, test_r
            if self.restore:
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def finish(self, model, last_test: EvalResult, epochs: int, evaluate_test) -> EvalResult:
        """The selected model's test result; with `restore`, the model gets the selected weights back and the test
        set is evaluated again from them."""
        if self.conclude(model, last_test, epochs):
            self.test = evaluate_test()
        return self.test

    def conclude(self, model, last_test: EvalResult, epochs: int) -> bool:
        """finish() without the evaluation: settles the selected epoch and, with `restore`, loads its weights back
        into `model`; True when the test set must then be evaluated again (the caller sets `.test`)."""
        if self.epoch < 0:  # no validation set: the last epoch is the selected one
            self.by, self.epoch, self.test = "final", epochs - 1, last_test
            return False
        if self.restore:
            model.load_state_dict(self.state)
            return True
        return False


def result_dict(selection: Selection, best_test: EvalResult, last_test: EvalResult, curve: list[dict], steps: int,
                train_seconds: float, test_labels: torch.Tensor, num_labels: int) -> dict:
    """finetune()'s return value (see its docstring); the arrays move to the host here."""
    preds = best_test.logits.argmax(-1)
    return {
        "curve": curve,
        "selection": selection.by,
        "selected_epoch": selection.epoch,
        "best_val_acc": selection.best_val if selection.by == "val" else None,
        "selected_test_acc": best_test.acc,
        "final_val_acc": curve[-1]["val_acc"],
        "final_test_acc": last_test.acc,
        "steps": steps,
        "train_seconds": train_seconds,
        "confusion": confusion_matrix(test_labels, preds, num_labels).tolist(),
        "test_logits": best_test.logits.cpu().numpy(),
        "test_probs": best_test.logits.softmax(-1).cpu().numpy(),
        "final_test_probs": last_test.logits.softmax(-1).cpu().numpy(),
        "test_labels": test_labels.cpu().numpy(),
    }


def _check_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(f"fine-tuning loss became {value} at epoch {epoch}, step {step}; "
                               f"try a lower --lr or --precision fp32")
