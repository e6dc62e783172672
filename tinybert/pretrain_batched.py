"""Pre-training K models of one architecture at once, as one batched model (train.py --committee in one process).

    pretrain_batched(models, data, cfgs, runs)  trains what  [pretrain(m, data, c, r) for m, c, r in ...]  would:

member k is the run `pretrain(models[k], data, cfgs[k], runs[k])`, with its own seed (cfgs[k].seed: batch order
and masks, as pretrain.py derives them from (seed, epoch, batch); the init is the caller's, train.py seeds each
member's model with its seed), its own output folder (runs[k].out_dir: checkpoint.pt, metrics.csv, in the
format pretrain() writes), the same learning-rate schedule. The K models become one tinybert.ensemble.EnsembleMLM
(stacked weights, K folded into the batch): one forward over a (K, B, T) batch -> K losses; one backward of their
sum (the members share no weights, so each gets its own gradient); each member's gradient clipped by its own norm
(clip_grad_norm_per_member); one fused AdamW step over the stacked weights (AdamW is elementwise, so this is K
AdamW steps at once); one scheduler.

One step, for every member k: its batch b of the epoch (TokenBatches with its seed) masked with
mask_generator(seed_k, epoch, b), as pretrain.step_inputs does with one rank; the K batches are padded on the
right to the widest one's width (the attention mask hides the padding; labels there are IGNORE_INDEX) and
stacked, and the masked positions are gathered on the host (masking.mlm_targets), so the model reads no labels
on the device. Each epoch ends with every member's held-out evaluation (pretrain.evaluate_mlm on an unstacked
copy), its metrics.csv row and its checkpoint; time- and step-based checkpoints as in pretrain(). A checkpoint
holds exactly what a separate run's holds (TrainingState.save on the member's copy, with its slice of the AdamW
moments), so a member can be resumed, evaluated or fine-tuned like any run.

Equal to K separate runs up to float rounding (tests/test_pretrain_batched.py: losses and weights), except:
  * dropout: the ensemble draws its dropout masks from one torch stream (not the separate runs' streams), so with
    dropout > 0 the members are statistically, not bitwise, the separate runs;
  * the conv front end's BatchNorm (per member) counts the zeros at padded positions in its batch statistics, so
    when member k's batch is padded to a wider member's width its statistics shift slightly (model.py,
    ConvFrontEnd). Exact when the K batches have the same width: the paper's layout almost always does (some row
    of 32 reaches the 128 tokens), the packed layout always.
Not supported (a clear ValueError): resume (train.py resumes a committee member by member, from these same
checkpoints), several ranks (DDP), --compile, members whose configs differ in anything but the seed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from .data import TokenBatches, prefetch
from .masking import MLMMasker, MLMTargets, mlm_targets
from .model import IGNORE_INDEX, BertForMaskedLM
from .optim import SCHEDULES, Optimisation
from .plan import time_training_step
from .pretrain import (MetricsLog, MLMData, PretrainConfig, RunOptions, TrainingDiverged, TrainingState,
                       evaluate_mlm, mask_generator)


# masking.mlm_targets rounds the slots per row (M) up to a multiple, so that a compiled step sees few shapes. This
# loop runs eagerly (no --compile), where rounding only adds work: up to 7 empty slots per row of the last block
# and of the 30522-way MLM head (bench_ensemble.py's cpu-preset rows, 10 masked per row: M 16 instead of 10, a
# quarter of the batched step's time in a CPU profile). So M is the largest count in any row, exactly.
SLOT_MULTIPLE = 1


class MembersDiverged(TrainingDiverged):
    """The loss of one or more members became NaN or infinite; the batched run stops as a whole.
    `diverged`: {member index: message}."""

    def __init__(self, diverged: dict[int, str]):
        super().__init__("; ".join(diverged.values()))
        self.diverged = diverged


def check_batchable(models: list, cfgs: list[PretrainConfig], runs: list[RunOptions]) -> None:
    """Refuse what pretrain_batched does not do, with the reason (ValueError)."""
    if not (len(models) == len(cfgs) == len(runs)) or not models:
        raise ValueError(f"pretrain_batched: {len(models)} models, {len(cfgs)} configs and {len(runs)} run "
                         f"options: expected one of each per member, at least one member")
    if any(m.config != models[0].config for m in models):
        raise ValueError("pretrain_batched: the members must share one model configuration (one stacked model)")
    if len({c.seed for c in cfgs}) != len(cfgs):
        raise ValueError(f"pretrain_batched: every member needs its own seed, got {[c.seed for c in cfgs]}")
    if any(replace(c, seed=0) != replace(cfgs[0], seed=0) for c in cfgs):
        raise ValueError("pretrain_batched: the members' training configs may differ only in the seed")
    if cfgs[0].schedule not in SCHEDULES:
        raise ValueError(f"schedule {cfgs[0].schedule!r}: expected one of {SCHEDULES}")
    if len({Path(r.out_dir).resolve() for r in runs}) != len(runs):
        raise ValueError("pretrain_batched: every member needs its own out_dir")
    for r in runs:
        if r.resume:
            raise ValueError("pretrain_batched does not resume; resume each member's run with pretrain() (train.py "
                             "--committee --resume does so, member by member)")
        if r.world_size > 1 or r.ddp_model is not None:
            raise ValueError("pretrain_batched runs in one process (no DDP); under torchrun train.py --committee "
                             "trains one member per process")
        if r.compile:
            raise ValueError("pretrain_batched does not compile the ensemble (--compile): train.py --committee "
                             "--sequential trains the members one after another, compiled")
        if (r.device, r.precision.name) != (runs[0].device, runs[0].precision.name):
            raise ValueError("pretrain_batched: the members must share one device and precision")


def pad_right(t: torch.Tensor, width: int, value) -> torch.Tensor:
    """(B, T) -> (B, width), `value` in the new columns."""
    if t.shape[1] == width:
        return t
    return torch.cat([t, t.new_full((t.shape[0], width - t.shape[1]), value)], dim=1)


def ensemble_steps(batches: list[TokenBatches], masker: MLMMasker, seeds: list[int], epoch: int, pad_id: int,
                   pin: bool) -> Iterator[tuple]:
    """The inputs of every step of `epoch`: (b, input_ids (K, B, T), attention_mask (K, B, T) or None, targets
    (MLMTargets (K, B, M)), tokens [K ints: each member's real tokens]), CPU tensors (pinned when `pin`).
    Member k's rows and masks are those of a separate run with seed k (pretrain.step_inputs, one rank)."""
    for b, per_member in enumerate(zip(*(bt.global_epoch(epoch) for bt in batches))):
        masked, attns, labels = [], [], []
        for seed, (ids, attn) in zip(seeds, per_member):
            m, lab = masker(ids, mask_generator(seed, epoch, b))
            masked.append(m), attns.append(attn), labels.append(lab)
        width = max(m.shape[1] for m in masked)
        ids = torch.stack([pad_right(m, width, pad_id) for m in masked])
        attn = torch.stack([pad_right(a, width, False) for a in attns])
        labels = torch.stack([pad_right(lab, width, IGNORE_INDEX) for lab in labels])
        tokens = [int(a.sum()) for a in attns]
        attn = None if bool(attn.all()) else attn  # decided on the host: no device sync
        targets = mlm_targets(labels, multiple=SLOT_MULTIPLE)
        if pin:
            ids, targets = ids.pin_memory(), MLMTargets(*(t.pin_memory() for t in targets))
            attn = None if attn is None else attn.pin_memory()
        yield b, ids, attn, targets, tokens


def member_optimizer_states(ensemble, optimizer: torch.optim.Optimizer) -> list[dict]:
    """Each member's AdamW state_dict, as a separate run's optimiser would hold it: the stacked moments are
    unstacked exactly as the weights are (EnsembleMLM.members on a copy whose weights hold the moments), so this
    does not depend on how the ensemble lays its weights out."""
    params = list(ensemble.parameters())
    if any(not optimizer.state[p] for p in params):
        raise RuntimeError("member_optimizer_states: a stacked parameter has no AdamW state (no step taken?)")
    steps = {float(optimizer.state[p]["step"]) for p in params}
    if len(steps) != 1:  # every stacked parameter gets a gradient every step, so all have taken the same steps
        raise RuntimeError(f"member_optimizer_states: stacked parameters at different step counts {sorted(steps)}")
    step = optimizer.state[params[0]]["step"]
    moments = {}
    shadow = copy.deepcopy(ensemble)
    for key in ("exp_avg", "exp_avg_sq"):
        with torch.no_grad():
            for sp, p in zip(shadow.parameters(), params):
                sp.copy_(optimizer.state[p][key])
        moments[key] = [list(m.parameters()) for m in shadow.members()]
    del shadow
    (group,) = optimizer.state_dict()["param_groups"]  # pretrain's AdamW: one group
    states = []
    for exp_avg, exp_avg_sq in zip(moments["exp_avg"], moments["exp_avg_sq"]):
        n = len(exp_avg)
        states.append({"state": {i: {"step": step.clone(), "exp_avg": exp_avg[i].detach().clone(),
                                     "exp_avg_sq": exp_avg_sq[i].detach().clone()} for i in range(n)},
                       "param_groups": [{**group, "params": list(range(n))}]})
    return states


def save_members(ensemble, state: TrainingState, next_epoch: int, next_batch: int, cfgs: list[PretrainConfig],
                 runs: list[RunOptions], vocab: list[str], device: torch.device) -> None:
    """Every member's checkpoint.pt, written by TrainingState.save of its unstacked copy (the format of a separate
    run's checkpoint, with the AdamW state a separate run would have and the shared schedule)."""
    opt = state.opt
    for member, opt_state, cfg, run in zip(ensemble.members(), member_optimizer_states(ensemble, opt.optimizer),
                                          cfgs, runs):
        member_opt = torch.optim.AdamW(member.parameters())
        member_opt.load_state_dict(opt_state)  # (checks the state matches the member's parameters)
        member_state = TrainingState(member, Optimisation(member_opt, opt.scheduler, opt.scaler, opt.grad_clip),
                                     state.epoch, state.batch, state.step)
        member_state.save(Path(run.out_dir) / "checkpoint.pt", next_epoch, next_batch, cfg, vocab, 0, 1, device,
                          run.checkpoint_extra)
    state.saved_at = time.perf_counter()


def estimate_ensemble_step_seconds(models: list[BertForMaskedLM], batch_size: int, seq_len: int, device,
                                   precision, mlm_prob: float = 0.15, repeats: int = 2) -> float:
    """pretrain.estimate_step_seconds for the batched model of `models`: forward + backward of a copy on random
    full-length batches, one per member (for train.py's plan line)."""
    from .ensemble import EnsembleMLM

    def make_loss(probe):
        ids = torch.randint(5, models[0].config.vocab_size, (len(models), batch_size, seq_len))
        labels = torch.where(torch.rand(ids.shape) < mlm_prob, ids, torch.full_like(ids, IGNORE_INDEX))
        targets = MLMTargets(*(t.to(device) for t in mlm_targets(labels, multiple=SLOT_MULTIPLE)))
        ids = ids.to(device)
        return lambda: probe(ids, None, targets).sum()

    return time_training_step(EnsembleMLM.from_members(models), device, precision, make_loss, repeats=repeats)


def pretrain_batched(models: list[BertForMaskedLM], data: MLMData, cfgs: list[PretrainConfig],
                     runs: list[RunOptions]) -> list[dict]:
    """Pre-train the K `models` as one batched model (see the module docstring); return each member's final
    metrics row. `models` are left as they were (the ensemble holds copies); the trained weights are in each
    member's checkpoint, or ask EnsembleMLM for them: this returns only metrics."""
    from .ensemble import EnsembleMLM, clip_grad_norm_per_member  # (the model lives in its own module)

    check_batchable(models, cfgs, runs)
    cfg, run = cfgs[0], runs[0]  # shared: every field but the seed, and the device, precision, progress
    device, precision, seeds = run.device, run.precision, [c.seed for c in cfgs]
    masker = MLMMasker(data.vocab, data.mask_id, cfg.mlm_prob)
    batches = [TokenBatches(data.train_tokens, cfg.batch_size, data.pad_id, shuffle=True, seed=s, drop_last=True)
               for s in seeds]
    eval_batches = TokenBatches(data.eval_tokens, cfg.batch_size, data.pad_id, shuffle=False)
    steps_per_epoch = len(batches[0])
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.train_tokens)} training rows give no full batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    ensemble = EnsembleMLM.from_members(models).to(device).train()
    state = TrainingState.create(ensemble, cfg, steps_per_epoch, device, precision)
    clip = partial(clip_grad_norm_per_member, ensemble)
    bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=not run.show_progress, mininterval=1.0)
    quiet = tqdm(disable=True)  # the members' logs share `bar`'s line: it shows their mean loss
    logs = [MetricsLog(Path(r.out_dir) / "metrics.csv", Path(r.out_dir) / "checkpoint.pt", c, device, 0, 1, quiet,
                       r.on_log, label=f"member seed {c.seed}: ") for c, r in zip(cfgs, runs)]
    for r in runs:
        Path(r.out_dir).mkdir(parents=True, exist_ok=True)
    save = partial(save_members, ensemble, state, cfgs=cfgs, runs=runs, vocab=data.vocab, device=device)
    prefetch_batches = device.type == "cuda" if run.prefetch_batches is None else run.prefetch_batches
    with bar:
        while state.epoch < cfg.epochs and state.step < total_steps:
            epoch, b = state.epoch, -1
            for log in logs:
                log.start_epoch()
            source = ensemble_steps(batches, masker, seeds, epoch, data.pad_id, pin=device.type == "cuda")
            for b, ids, attn, targets, tokens in (prefetch(source) if prefetch_batches else source):
                with precision.autocast(device):
                    losses = ensemble(ids.to(device, non_blocking=True),
                                      None if attn is None else attn.to(device, non_blocking=True),
                                      MLMTargets(*(t.to(device, non_blocking=True) for t in targets)))
                state.opt.backward(losses.sum())  # members share no weights: each gets its own loss's gradient
                state.opt.step(clip=clip)
                for log, loss, n in zip(logs, losses, tokens):
                    log.add(loss, 1.0, n)
                state.step += 1
                bar.update(1)
                time_due = False
                if state.step % cfg.log_every == 0 or state.step == total_steps:
                    due = (cfg.checkpoint_minutes > 0
                           and time.perf_counter() - state.saved_at >= 60 * cfg.checkpoint_minutes)
                    time_due = log_points(logs, bar, epoch, state.step, state.opt.lr(), due)
                if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or (
                        time_due and b + 1 < steps_per_epoch and state.step < total_steps):  # (epoch ends save)
                    save(epoch, b + 1)
                if state.step >= total_steps:
                    break
            evals = [evaluate_mlm(member, eval_batches, masker, device, precision, c.seed)
                     for member, c in zip(ensemble.members(), cfgs)]
            next_epoch, next_batch = (epoch + 1, 0) if b + 1 >= steps_per_epoch else (epoch, b + 1)
            save(next_epoch, next_batch)
            for log, (eval_loss, eval_acc) in zip(logs, evals):
                log.end_epoch(epoch, state.step, state.opt.lr(), eval_loss, eval_acc)
            state.epoch, state.batch = next_epoch, next_batch
    return [log.last for log in logs]


def log_points(logs: list[MetricsLog], bar: tqdm, epoch: int, step: int, lr: float, due: bool) -> bool:
    """Every member's log point (its NaN check, on_log); the bar shows their mean loss. Raises MembersDiverged
    naming every member whose loss is not finite."""
    diverged, due_votes = {}, False
    for k, log in enumerate(logs):
        try:
            due_votes |= log.log_point(epoch, step, lr, due)
        except TrainingDiverged as exc:
            diverged[k] = f"member seed {log.cfg.seed}: {exc}"
    if diverged:
        raise MembersDiverged(diverged)
    mean = sum(log.last["train_loss"] for log in logs) / len(logs)
    rate = sum(log.last["tokens_per_s"] for log in logs)
    bar.set_postfix(epoch=epoch, loss=f"{mean:.3f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.2e}", members=len(logs))
    return due_votes
