"""The learning-rate schedules and the optimiser step shared by pre-training (pretrain.py) and fine-tuning
(finetune.py): AdamW + a LambdaLR schedule + an optional fp16 GradScaler + optional gradient clipping.

The two loops' 'paper-epoch' schedules differ on purpose: each follows what the authors' code did in that phase
(docs/paper-recipe.md), see `pretrain_lr_multiplier` and `finetune_lr_multiplier`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

SCHEDULES = ("linear", "paper-epoch")


def linear_lr_multiplier(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps` optimiser steps, then linear decay to 0 at `total` (both loops)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(total - warmup_steps, 1))


def pretrain_lr_multiplier(step: int, cfg, steps_per_epoch: int) -> float:
    """Pre-training's learning-rate factor for optimiser step `step` (0-based); cfg: epochs, warmup_steps,
    schedule."""
    if cfg.schedule == "paper-epoch":
        # The authors' code: get_linear_schedule_with_warmup(warmup=1, total=epochs) stepped once per epoch,
        # so epoch 0 runs at lr 0 and epoch e >= 1 at lr * (E - e) / (E - 1).
        epoch = step // steps_per_epoch
        return 0.0 if epoch == 0 else (cfg.epochs - epoch) / max(cfg.epochs - 1, 1)
    return linear_lr_multiplier(step, cfg.epochs * steps_per_epoch, cfg.warmup_steps)


def finetune_lr_multiplier(step: int, cfg, steps_per_epoch: int) -> float:
    """Fine-tuning's learning-rate factor for optimiser step `step` (0-based); cfg: epochs, warmup_steps,
    schedule."""
    if cfg.schedule == "paper-epoch":
        # the authors' get_linear_schedule_with_warmup(warmup=0, total=epochs) stepped once per epoch, so
        # epoch e runs at lr * (E - e) / E (docs/paper-recipe.md#fine-tuning)
        return (cfg.epochs - step // steps_per_epoch) / cfg.epochs
    return linear_lr_multiplier(step, cfg.epochs * steps_per_epoch, cfg.warmup_steps)


@dataclass
class Optimisation:
    """AdamW, its per-step LambdaLR schedule, the GradScaler (fp16 only, else None) and the clipping norm."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    grad_clip: float = 0.0  # 0 = off

    @classmethod
    def create(cls, model, lr: float, weight_decay: float, multiplier, device: torch.device, precision,
               fused: bool = False, grad_clip: float = 0.0) -> "Optimisation":
        """multiplier(step) -> lr factor. fused: fused AdamW where torch has it (CUDA, CPU) -- one kernel for
        all parameters, and with fp16 the GradScaler hands it the inf check on the device instead of reading
        it on the host every step (on CPU: measured 339 -> 97 ms per BERT-1 h8 optimiser step against the
        per-parameter loop). Fine-tuning asks for it on CUDA only: on CPU it keeps the default implementation (its
        pinned numbers were made so)."""
        extra = {"fused": True} if fused and device.type in ("cuda", "cpu") else {}
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **extra)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
        return cls(optimizer, scheduler, scaler, grad_clip)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, clip: Callable[[float], object] | None = None) -> None:
        """Optimiser step (clipping the true, unscaled gradients), schedule step, gradients cleared.

        clip(max_norm), when given, clips instead of one norm over all parameters (the batched ensemble of
        pretrain_batched.py clips each member by its own norm)."""
        # An explicit unscale_ is what GradScaler.step does itself for the non-fused AdamW; for the fused one
        # it makes the clipping norm and the inf check use the unscaled gradients.
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip and clip is not None:
            clip(self.grad_clip)
        elif self.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for group in self.optimizer.param_groups for p in group["params"]], self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]
