"""A stand-in for tinybert.ensemble (owned by the `ens` branch), used only where that module is missing.

It implements the agreed API by looping over K plain models, so the batched pre-training loop and the ensemble
benchmark can be tested before the real stacked model lands. It is NOT the batched model: a test that passes with
it shows the loop's bookkeeping (data, masks, schedules, per-member records) is right, not the batched maths.
`use_real_or_standin()` installs it as `tinybert.ensemble` only when the real module cannot be imported.
"""

from __future__ import annotations

import copy
import importlib
import sys

import torch

from tinybert.masking import MLMTargets
from tinybert.model import IGNORE_INDEX, BertForMaskedLM


class EnsembleMLM(torch.nn.Module):
    def __init__(self, models: list[BertForMaskedLM]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.config = models[0].config

    @classmethod
    def from_members(cls, models: list[BertForMaskedLM]) -> "EnsembleMLM":
        return cls([copy.deepcopy(m) for m in models])

    def members(self) -> list[BertForMaskedLM]:
        return [copy.deepcopy(m) for m in self.models]

    def forward(self, input_ids, attention_mask, targets: MLMTargets) -> torch.Tensor:
        losses = []
        for k, model in enumerate(self.models):
            ids = input_ids[k]
            labels = torch.full_like(ids, IGNORE_INDEX)
            used = targets.labels[k] != IGNORE_INDEX
            rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(used)
            labels[rows[used], targets.positions[k][used]] = targets.labels[k][used]
            mask = None if attention_mask is None else attention_mask[k]
            losses.append(model(ids, mask, labels).loss.float())
        return torch.stack(losses)


def clip_grad_norm_per_member(ensemble: EnsembleMLM, max_norm: float) -> torch.Tensor:
    return torch.stack([torch.nn.utils.clip_grad_norm_(list(m.parameters()), max_norm) for m in ensemble.models])


def use_real_or_standin() -> bool:
    """Install this module as tinybert.ensemble when the real one is missing; True when the real one is used."""
    try:
        importlib.import_module("tinybert.ensemble")
        return True
    except ModuleNotFoundError:
        sys.modules["tinybert.ensemble"] = sys.modules[__name__]
        return False
