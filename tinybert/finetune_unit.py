"""One fine-tuning unit: seed -> build the classifier -> fine-tune -> a MemberResult. Used by eval.py (every member
of every seed) and by the experiments (tinybert/experiments/units.py, one unit per spec).

The one member-seed rule lives here: member m of a committee fine-tuned for seed S is initialised (fresh head, or
the whole model without pre-training) and gets its dropout from `member_seed(S, m)` = S + 10007 * m, so member 0
is the same run as a single-model evaluation with seed S. The batch order is seeded by S alone (the same for every
member). Both callers write what the result holds in their own record formats (eval.py's results.json, the
units' ft-<hash>.json); the arrays for the committees come from `MemberResult.arrays`.

`run_members_batched` is run_member for several members of one architecture at once: each is built exactly as
run_member builds it (same seed, same init), then they are fine-tuned as one batched model
(tinybert/finetune_batched.py), and each gets the MemberResult a separate run would (dropout aside: see there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .ensemble import EnsembleClassifier
from .finetune import EncodedExamples, FinetuneConfig, build_classifier, finetune
from .finetune_batched import finetune_batched
from .model import LoadReport, count_parameters
from .runtime import channels_last_convs, seed_everything

MEMBER_SEED_STRIDE = 10007  # a prime, far above any seed list, so no two (seed, member) pairs share an init seed
MEMBER_SEED_RULE = f"seed + {MEMBER_SEED_STRIDE} * member"  # as results.json describes it

# finetune()'s scalar outputs a per-member record carries (eval.py's results.json; tests pin the list)
RECORD_FIELDS = ("selection", "selected_epoch", "best_val_acc", "selected_test_acc", "final_val_acc",
                 "final_test_acc", "steps", "train_seconds", "confusion", "curve")


def member_seed(seed: int, member: int) -> int:
    """The init and dropout seed of committee member `member` (0-based) for the run with seed `seed`."""
    return seed + MEMBER_SEED_STRIDE * member


@dataclass
class MemberResult:
    """One fine-tuned member: its seeds, how its checkpoint loaded, its size and time, and finetune()'s dict."""
    seed: int
    init_seed: int
    load_report: LoadReport | None  # None: random init
    params: int
    seconds: float                  # wall time of finetune(), evaluation included
    result: dict                    # finetune()'s return value (curve, accuracies, test outputs)

    def __getitem__(self, key):
        return self.result[key]

    def fields(self) -> dict:
        """The RECORD_FIELDS of the result, in that order."""
        return {k: self.result[k] for k in RECORD_FIELDS}

    def load_report_dict(self) -> dict | None:
        r = self.load_report
        return None if r is None else {"missing_keys": r.missing_keys, "unused_keys": r.unused_keys}

    def arrays(self) -> dict:
        """Test outputs for the committees: probs, logits (selected model), final_probs (last epoch), labels."""
        r = self.result
        return {"probs": r["test_probs"], "logits": r["test_logits"], "final_probs": r["final_test_probs"],
                "labels": r["test_labels"]}


def run_member(checkpoint, config, num_labels: int, data: tuple[EncodedExamples, EncodedExamples | None,
               EncodedExamples], cfg: FinetuneConfig, device, precision, *, init_seed: int | None = None,
               prepare: Callable | None = None, announce: Callable | None = None, show_progress: bool = False,
               desc: str = "fine-tune") -> MemberResult:
    """Fine-tune one member on `data` = (train, val or None/empty, test); batch order from `cfg.seed`.

    `init_seed`: the member's init/dropout seed, `member_seed(cfg.seed, m)` (default: member 0, i.e. cfg.seed).

    `checkpoint`: an MLM checkpoint (path or loaded dict) or None for random init (then `config` is required).
    `prepare(model)` changes the built model on the CPU before it moves to the device (the experiments'
    interventions); `announce(model, load_report)` runs just before training (eval.py's progress line).
    """
    init_seed = member_seed(cfg.seed, 0) if init_seed is None else init_seed
    seed_everything(init_seed)  # the fresh layers (and with no checkpoint, the whole model) draw from it
    model, report = build_classifier(checkpoint, config, num_labels)
    if prepare is not None:
        prepare(model)
    model = channels_last_convs(model.to(device), device)  # (the conv front end's layout on CUDA)
    if announce is not None:
        announce(model, report)
    train, val, test = data
    start = time.perf_counter()
    res = finetune(model, train, val if val is not None and len(val) else None, test, cfg, device, precision,
                   show_progress=show_progress, desc=desc)
    seconds = time.perf_counter() - start
    result = MemberResult(cfg.seed, init_seed, report, count_parameters(model), seconds, res)
    del model
    return result


class MemberSpec(NamedTuple):
    """One member of a batched run: what run_member takes for it."""
    checkpoint: object  # an MLM checkpoint (path or loaded dict) or None (random init)
    config: object      # ModelConfig
    data: tuple         # (train, val or None/empty, test)
    cfg: FinetuneConfig
    init_seed: int
    prepare: Callable | None = None  # this member's prepare(model), before the shared one


def run_members_batched(specs: Sequence[MemberSpec], num_labels: int, device, precision, *,
                        prepare: Callable | None = None, announce: Callable | None = None,
                        show_progress: bool = False, desc: str = "fine-tune") -> list[MemberResult]:
    """run_member for each of `specs` (one architecture, configs equal but for the seed, equal split sizes),
    fine-tuned together as one batched model. announce(k, model, load_report) runs for each member once it is
    built (on the CPU). `seconds` of each result is the shared wall time."""
    models, reports = [], []
    for k, spec in enumerate(specs):
        seed_everything(spec.init_seed)  # as run_member: the fresh layers (or the whole model) draw from it
        model, report = build_classifier(spec.checkpoint, spec.config, num_labels)
        if spec.prepare is not None:
            spec.prepare(model)
        if prepare is not None:
            prepare(model)
        if announce is not None:
            announce(k, model, report)
        models.append(model)
        reports.append(report)
    params = count_parameters(models[0])
    ensemble = EnsembleClassifier.from_members(models).to(device)
    del models
    data = [(tr, va if va is not None and len(va) else None, te) for tr, va, te in (s.data for s in specs)]
    start = time.perf_counter()
    res = finetune_batched(ensemble, data, [s.cfg for s in specs], device, precision, show_progress=show_progress,
                           desc=desc)
    seconds = time.perf_counter() - start
    return [MemberResult(s.cfg.seed, s.init_seed, r, params, seconds, d) for s, r, d in zip(specs, reports, res)]


def stack_arrays(members: list[MemberResult]) -> dict:
    """probs, logits, final_probs stacked as (members, test examples, labels); labels (test examples,)."""
    arrays = [m.arrays() for m in members]
    out = {k: np.stack([a[k] for a in arrays]) for k in ("probs", "logits", "final_probs")}
    out["labels"] = arrays[-1]["labels"]
    return out
