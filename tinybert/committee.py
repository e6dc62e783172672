"""The soft committee: several fine-tuned classifiers whose outputs are averaged (E5, E6 of
docs/paper-recipe.md#experiments-and-claims).

Where it sits in the flow: fine-tuned members (finetune.py) -> their test-set probabilities -> committee accuracy
(eval.py writes it to results.json); and, for the latency claim, fast committee inference (bench_latency.py).

* Aggregation: the committee's prediction is the argmax of the **mean of the members' softmax probabilities**
  (`aggregate="probs"`, the default). `aggregate="logits"` averages logits instead (the other reading of "soft
  committee", which the paper leaves open: docs/paper-recipe.md#not-stated-by-the-paper); pass logits then. Ties go
  to the lowest class index (torch.argmax).
* `committee_accuracy_curve` gives the accuracy of the first K members for K = 1..M in the given order, and the
  mean (and std) over R random orders, which is the expected accuracy of a random K-subset.
* Inference: `member_by_member` runs the members one after another (the slow reference). `BatchedCommittee`
  runs M members of one architecture as one forward: their weights are stacked (torch.func.stack_module_state)
  and the model is vmapped over the stacked weights (torch.func.functional_call + torch.vmap), so each matmul
  becomes one batched matmul over the members. `CommitteeRunner` groups members by architecture: groups of
  two or more are batched, a lone member runs by itself; it returns logits in the members' order.
  Inference only: eval mode, no gradients (BatchNorm uses its running statistics).
  Note: on CPU, torch has no vmap batching rule for the CPU flash-attention kernel and loops over the members
  for that one op (the warning is silenced here, on CPU only); on CUDA the flash/efficient SDPA kernels have
  batching rules, and a warning there means the members ran one by one.
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state

AGGREGATES = ("probs", "logits")


# ----------------------------------------------------------------------------------------------------------
# committee accuracy


def _as_stack(member_outputs) -> torch.Tensor:
    """list of (N, C) arrays/tensors, or an (M, N, C) array -> float64 tensor (M, N, C)."""
    if isinstance(member_outputs, (list, tuple)):
        if not member_outputs:
            raise ValueError("a committee needs at least one member")
        stack = torch.stack([torch.as_tensor(np.asarray(p), dtype=torch.float64) for p in member_outputs])
    else:
        stack = torch.as_tensor(np.asarray(member_outputs), dtype=torch.float64)
    if stack.dim() != 3:
        raise ValueError(f"member outputs must be M arrays of shape (N, C); got a stack of shape "
                         f"{tuple(stack.shape)}")
    return stack


def committee_predict(member_outputs, aggregate: str = "probs") -> np.ndarray:
    """Predicted class per example (N,) of the whole committee: argmax of the mean member output."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate {aggregate!r}: expected one of {AGGREGATES}")
    return _as_stack(member_outputs).mean(0).argmax(-1).numpy()


def _prefix_accuracies(stack: torch.Tensor, labels: torch.Tensor, order) -> list[float]:
    """Accuracy of the committees order[:1], order[:2], ... (running sums: the mean has the same argmax)."""
    running = torch.cumsum(stack[list(order)], dim=0)              # (M, N, C)
    return (running.argmax(-1) == labels).double().mean(1).tolist()


def committee_accuracy_curve(member_outputs, labels, orders: int | Sequence[Sequence[int]] = 100,
                             seed: int = 0, aggregate: str = "probs") -> dict:
    """Committee accuracy as a function of its size K = 1..M.

    member_outputs: M arrays (N, C) (probabilities for aggregate='probs', logits for 'logits'), rows aligned.
    labels: (N,) ints. orders: the number R of random member orders (seeded by `seed`), or explicit orders.
    Returns {'k': [1..M], 'given': acc of the first K members in the given order, 'random_mean' / 'random_std':
    mean / std (ddof 0) over the R orders, 'orders': R, 'members': each member's own accuracy,
    'aggregate': aggregate}.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate {aggregate!r}: expected one of {AGGREGATES}")
    stack = _as_stack(member_outputs)
    M, N, _ = stack.shape
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.shape != (N,):
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({N},)")
    if isinstance(orders, int):
        if orders < 1:
            raise ValueError(f"orders must be >= 1, got {orders}")
        g = torch.Generator().manual_seed(seed)
        order_list = [torch.randperm(M, generator=g).tolist() for _ in range(orders)]
    else:
        order_list = [list(o) for o in orders]
        for o in order_list:
            if sorted(o) != list(range(M)):
                raise ValueError(f"order {o} is not a permutation of the {M} members")
    random_curves = np.array([_prefix_accuracies(stack, labels, o) for o in order_list])  # (R, M)
    return {
        "k": list(range(1, M + 1)),
        "given": _prefix_accuracies(stack, labels, range(M)),
        "random_mean": random_curves.mean(0).tolist(),
        "random_std": random_curves.std(0).tolist(),
        "orders": len(order_list),
        "members": (stack.argmax(-1) == labels).double().mean(1).tolist(),
        "aggregate": aggregate,
    }


# ----------------------------------------------------------------------------------------------------------
# inference


@torch.no_grad()
def member_by_member(models: Sequence[nn.Module], input_ids, attention_mask=None) -> torch.Tensor:
    """The slow reference: each member in turn -> logits (M, B, C)."""
    return torch.stack([m(input_ids, attention_mask) for m in models])


def architecture_key(model: nn.Module) -> tuple:
    """Members with equal keys can be stacked: same class, config, labels, and parameter/buffer shapes."""
    config = getattr(model, "config", None)
    shapes = tuple((k, tuple(v.shape), v.dtype, str(v.device)) for k, v in model.state_dict().items())
    return (type(model).__name__, repr(config.to_dict() if config is not None else None),
            getattr(model, "num_labels", None), shapes)


class BatchedCommittee:
    """M members of one architecture run as one vmapped forward over their stacked weights.

    The weights are copied (stacked) when the committee is built: later changes to the members are not seen.
    Build it from members already on the target device. Call: logits (M, B, C).
    """

    def __init__(self, models: Sequence[nn.Module]):
        models = list(models)
        if not models:
            raise ValueError("a committee needs at least one member")
        keys = {architecture_key(m) for m in models}
        if len(keys) > 1:
            raise ValueError("BatchedCommittee needs members of one architecture (same config, labels and "
                             "weight shapes); use CommitteeRunner to mix architectures")
        for m in models:
            m.eval()
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().requires_grad_(False) for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta").eval()  # structure only, no storage
        self.size = len(models)

        def one(params, buffers, input_ids, attention_mask):
            return functional_call(self.base, (params, buffers), (input_ids, attention_mask))

        self._forward = torch.vmap(one, in_dims=(0, 0, None, None))

    def __len__(self) -> int:
        return self.size

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None) -> torch.Tensor:
        with warnings.catch_warnings():
            if input_ids.device.type == "cpu":
                # no batching rule for the CPU flash-attention kernel, so vmap loops over members for it: known,
                # and said in the module docstring. Elsewhere the warning stays visible: on CUDA such a silent
                # per-member fallback would be a performance bug to see.
                warnings.filterwarnings("ignore", message=".*batching rule.*scaled_dot_product.*")
            return self._forward(self.params, self.buffers, input_ids, attention_mask)


class CommitteeRunner:
    """Any members: those sharing an architecture are batched (BatchedCommittee), a lone one runs by itself.

    Call: logits (M, B, C) in the members' order (all members need the same number of labels).
    """

    def __init__(self, models: Sequence[nn.Module], batched: bool = True):
        self.models = list(models)
        if not self.models:
            raise ValueError("a committee needs at least one member")
        if len({getattr(m, "num_labels", None) for m in self.models}) > 1:
            raise ValueError("committee members must have the same number of labels")
        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.models):
            m.eval()
            groups.setdefault(architecture_key(m) if batched else (i,), []).append(i)
        self.groups = []  # (member indices, runner)
        for idx in groups.values():
            members = [self.models[i] for i in idx]
            if len(idx) > 1:
                self.groups.append((idx, BatchedCommittee(members)))
            else:
                self.groups.append((idx, lambda ids, mask, m=members[0]: m(ids, mask)[None]))

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None) -> torch.Tensor:
        outs = [None] * len(self.models)
        for idx, run in self.groups:
            logits = run(input_ids, attention_mask)
            for j, i in enumerate(idx):
                outs[i] = logits[j]
        return torch.stack(outs)
