"""Fine-tune K classifiers of one architecture at once, as one batched model (tinybert/ensemble.py), with the
per-member semantics of tinybert/finetune.py's `finetune()`: each member's returned dict is the one a separate
`finetune()` run on its data would return (same format; the same numbers to rounding with dropout 0).

Where it sits in the flow: finetune_unit.run_members_batched builds the members (each seeded as run_member seeds
it), stacks them into an EnsembleClassifier and calls `finetune_batched`; eval.py (--seeds, committees) uses it
unless --no-batch.

Per member, as finetune(): its own train/val/test rows (each seed draws its own sample; every member must have
the same number of rows per split, so the members step together), its own batch order (`cfgs[k].seed`), the same
lr schedule (the settings other than the seed must be equal), per-epoch val/test evaluation, best-validation
selection (finetune.Selection, one per member) and restore_best. Each step stacks the K members' batches and pads
them to the widest (extra padding is masked out). What is shared, by construction:
* one AdamW over the stacked weights (elementwise, so = K AdamWs); one GradScaler under fp16, so an overflow in
  one member skips the step for all of them;
* dropout is drawn once for the whole stack: each member its own masks, but not a separate run's stream, so
  with dropout > 0 a member's numbers differ from its separate run (as two separate runs with other seeds would);
* the conv front end's BatchNorm statistics in training mode count the padded rows (model.ConvFrontEnd): padding
  a member's batch to another member's width changes them slightly, so conv members equal separate runs only
  where they share batch widths (the same rows and order, e.g. a committee's members within one seed);
* a diverged member stops the whole run (TrainingDiverged), and train_seconds / elapsed_s are the shared time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .ensemble import EnsembleClassifier
from .finetune import (DeviceBatches, EncodedExamples, EvalResult, FinetuneConfig, Selection, _check_finite,
                       check_inputs, eval_result, result_dict)
from .optim import Optimisation, finetune_lr_multiplier
from .runtime import Precision

Data = tuple[EncodedExamples, EncodedExamples | None, EncodedExamples]  # (train, val or None, test)


def stack_batches(parts, pad_id: int):
    """K batches (ids (b, w_k), mask (b, w_k) or None, labels (b,)) -> ids (K, b, W), mask (K, b, W) or None,
    labels (K, b): each padded to the widest, W; the mask is None only when no member has any padding."""
    width = max(ids.size(1) for ids, _, _ in parts)
    if all(mask is None and ids.size(1) == width for ids, mask, _ in parts):
        return torch.stack([p[0] for p in parts]), None, torch.stack([p[2] for p in parts])
    ids_out, masks = [], []
    for ids, mask, _ in parts:
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        extra = width - ids.size(1)
        ids_out.append(F.pad(ids, (0, extra), value=pad_id))
        masks.append(F.pad(mask, (0, extra), value=False))
    return torch.stack(ids_out), torch.stack(masks), torch.stack([p[2] for p in parts])


class MemberView:
    """Member k of an ensemble as finetune.Selection sees a model: state_dict() gives its tensors (views of the
    stacked ones), load_state_dict() writes them back. The one BatchNorm batch counter shared by all members
    (num_batches_tracked) is left alone (it does not change any output: the momentum is fixed)."""

    def __init__(self, ensemble: EnsembleClassifier, k: int):
        self.ensemble, self.k = ensemble, k

    def _slices(self) -> dict:
        K = self.ensemble.K
        return {n: t.view(K, t.size(0) // K, *t.shape[1:])[self.k] for n, t in self.ensemble.state_dict().items()
                if t.dim() > 0}

    def state_dict(self) -> dict:
        return self._slices()

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for n, t in self._slices().items():
            t.copy_(state[n])


@torch.no_grad()
def predict_logits_batched(model: EnsembleClassifier, batches: Sequence[DeviceBatches], batch_size: int,
                           device: torch.device, precision: Precision) -> torch.Tensor:
    """Logits (K, N, C) float32, each member's rows in their original order (finetune.predict_logits for K
    members: each member's length-bucketed batches, stacked step by step). Eval mode for the duration."""
    was_training = model.training
    model.eval()
    K, N = len(batches), len(batches[0])
    out = torch.empty(K, N, model.num_labels, device=device)
    for steps in zip(*(b.eval_batches(batch_size) for b in batches)):
        ids, mask, _ = stack_batches([batch for _, batch in steps], model.config.pad_id)
        with precision.autocast(device):
            logits = model(ids, mask).float()
        for k, (rows, _) in enumerate(steps):
            out[k].index_copy_(0, torch.from_numpy(rows).to(device, non_blocking=True), logits[k])
    model.train(was_training)
    return out


def evaluate_batched(model, batches: Sequence[DeviceBatches] | None, batch_size: int, device,
                     precision) -> list[EvalResult | None]:
    """finetune.evaluate for each member; [None] * K when there is no such set."""
    if batches is None:
        return [None] * model.K
    logits = predict_logits_batched(model, batches, batch_size, device, precision)
    return [eval_result(logits[k], b.labels) for k, b in enumerate(batches)]


def check_members(model: EnsembleClassifier, data: Sequence[Data], cfgs: Sequence[FinetuneConfig]) -> None:
    """One data triple and one config per member; configs equal but for the seed; equal split sizes (ValueError)."""
    if not len(data) == len(cfgs) == model.K:
        raise ValueError(f"{model.K} members need {model.K} data triples and configs (got {len(data)} and "
                         f"{len(cfgs)})")
    if len({repr(dataclasses.replace(c, seed=0)) for c in cfgs}) > 1:
        raise ValueError("batched fine-tuning needs one FinetuneConfig for all members (only the seed may differ)")
    for train, val, test in data:
        check_inputs(model, train, val, test)
    sizes = {(len(tr), len(va) if va is not None else 0, len(te)) for tr, va, te in data}
    if len(sizes) > 1:
        raise ValueError(f"batched members need the same number of train/val/test rows; got {sorted(sizes)}")


def finetune_batched(model: EnsembleClassifier, data: Sequence[Data], cfgs: Sequence[FinetuneConfig],
                     device: torch.device, precision: Precision, show_progress: bool = True,
                     desc: str = "fine-tune") -> list[dict]:
    """Fine-tune the K members of `model` (already on `device`), member k on data[k] = (train, val or None, test)
    with cfgs[k]; returns K dicts, each as finetune() returns (see its docstring). With restore_best each member
    is left holding its selected weights."""
    check_members(model, data, cfgs)
    cfg, K, pad_id = cfgs[0], model.K, model.config.pad_id
    train_b = [DeviceBatches(tr, pad_id, device) for tr, _, _ in data]
    val_b = [DeviceBatches(va, pad_id, device) for _, va, _ in data] if data[0][1] is not None and len(data[0][1]) \
        else None
    test_b = [DeviceBatches(te, pad_id, device) for _, _, te in data]
    steps_per_epoch = math.ceil(len(data[0][0]) / cfg.batch_size)

    opt = Optimisation.create(model, cfg.lr, cfg.weight_decay,
                              lambda s: finetune_lr_multiplier(s, cfg, steps_per_epoch), device, precision)
    evaluate_on = lambda b: evaluate_batched(model, b, cfg.eval_batch_size, device, precision)  # noqa: E731
    curves: list[list[dict]] = [[] for _ in range(K)]
    selections = [Selection(cfg.restore_best) for _ in range(K)]
    views = [MemberView(model, k) for k in range(K)]
    last_test: list[EvalResult] = []
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, unit="step", desc=desc, dynamic_ncols=True,
               disable=not show_progress, mininterval=1.0, leave=False)
    model.train()
    try:
        for epoch in range(cfg.epochs):
            lr_epoch = opt.lr()
            train_loss, step = train_epoch_batched(model, train_b, opt, cfgs, epoch, step, device, precision, bar)
            val_r, last_test = evaluate_on(val_b), evaluate_on(test_b)
            elapsed = time.perf_counter() - start
            for k in range(K):
                curves[k].append({"epoch": epoch, "lr": lr_epoch, "train_loss": train_loss[k],
                                  "val_loss": val_r[k].loss if val_r[k] else None,
                                  "val_acc": val_r[k].acc if val_r[k] else None,
                                  "test_loss": last_test[k].loss, "test_acc": last_test[k].acc, "elapsed_s": elapsed})
                selections[k].update(views[k], epoch, val_r[k], last_test[k])
            if show_progress:
                tqdm.write(f"{desc} epoch {epoch}: test acc " + " ".join(f"{r.acc:.4f}" for r in last_test))
    finally:
        bar.close()
    train_seconds = time.perf_counter() - start
    again = [sel.conclude(views[k], last_test[k], cfg.epochs) for k, sel in enumerate(selections)]
    if any(again):  # every restored member's test set, evaluated again in one batched pass
        retest = evaluate_on(test_b)
        for k, sel in enumerate(selections):
            if again[k]:
                sel.test = retest[k]
    return [result_dict(sel, sel.test, last_test[k], curves[k], step, train_seconds, test_b[k].labels,
                        model.num_labels) for k, sel in enumerate(selections)]


def train_epoch_batched(model, train_b: Sequence[DeviceBatches], opt: Optimisation, cfgs: Sequence[FinetuneConfig],
                        epoch: int, step: int, device, precision: Precision, bar) -> tuple[list[float], int]:
    """finetune.train_epoch for K members: each member's batches in its own seeded order, stacked per step; the
    summed per-member mean losses are one backward. Returns (each member's mean training loss, the step count)."""
    K, cfg = len(train_b), cfgs[0]
    loss_acc = torch.zeros(K, device=device)
    epoch_loss = torch.zeros(K, device=device)
    n_acc = n_batches = 0
    batches = [b.train_batches(cfg.batch_size, c.seed, epoch) for b, c in zip(train_b, cfgs)]
    for parts in zip(*batches):
        ids, mask, labels = stack_batches(parts, model.config.pad_id)
        with precision.autocast(device):
            logits = model(ids, mask)
        B = labels.size(1)
        losses = F.cross_entropy(logits.float().reshape(K * B, -1), labels.reshape(-1),
                                 reduction="none").view(K, B).mean(1)
        opt.backward(losses.sum())
        opt.step()
        loss_acc += losses.detach()
        epoch_loss += losses.detach()
        n_acc += 1
        n_batches += 1
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            avg = [v / n_acc for v in loss_acc.tolist()]  # the one host sync per log interval
            for v in avg:
                _check_finite(v, epoch, step)
            bar.set_postfix(epoch=epoch, loss=f"{sum(avg) / K:.3f}", lr=f"{opt.lr():.2e}")
            loss_acc.zero_()
            n_acc = 0
    train_loss = [v / n_batches for v in epoch_loss.tolist()]
    for v in train_loss:
        _check_finite(v, epoch, step)
    return train_loss, step
