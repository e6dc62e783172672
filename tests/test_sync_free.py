"""The pre-training step never makes the host wait for the device (tinybert/sync_audit.py counts the aten ops that
would on CUDA): one whole step as pretrain() runs it (forward under autocast, backward, clipping, fused AdamW, the
schedule, the loss accumulated for logging) has none, with its inputs built on the host by step_inputs. And the
count can fail: the old dense-labels path, an `.item()` and each kind of syncing op are counted."""

import numpy as np
import pytest
import torch

from tinybert.bench import forward_full_last_block
from tinybert.config import make_model_config
from tinybert.data import TokenBatches
from tinybert.masking import CompactTargets, MLMMasker
from tinybert.model import IGNORE_INDEX, BertForMaskedLM
from tinybert.pretrain import ForwardBackward, PretrainConfig, TrainingState, step_inputs
from tinybert.runtime import Precision
from tinybert.sync_audit import count_sync_ops

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
CPU = torch.device("cpu")


def rows(n=16, width=16, seed=0):
    """[CLS] words [SEP] [PAD]..: rows of different lengths, so batches have padding."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, width), dtype=np.uint16)
    for r in range(n):
        k = int(rng.integers(3, width - 1))
        out[r, 0], out[r, 1:k + 1], out[r, k + 1] = 2, rng.integers(5, len(VOCAB), k), 3
    return out


def setup(precision="fp32", conv=0, grad_clip=1.0):
    torch.manual_seed(0)
    model = BertForMaskedLM(make_model_config("tiny", vocab_size=len(VOCAB), max_position=16, layers=2,
                                              conv_layers=conv, conv_channels=4)).train()
    cfg = PretrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=1, grad_clip=grad_clip)
    state = TrainingState.create(model, cfg, steps_per_epoch=2, device=CPU, precision=Precision(precision, "test"))
    step_fn = ForwardBackward(model, False, state.opt, CPU, Precision(precision, "test"), announce=False)
    batches = TokenBatches(rows(), cfg.batch_size, pad_id=0, seed=1)
    inputs = list(step_inputs(batches, MLMMasker(VOCAB, 4), seed=1, epoch=0, start_batch=0, pin=False))
    return model, state, step_fn, inputs


@pytest.mark.parametrize("precision,conv", [("fp32", 0), ("bf16", 0), ("fp32", 1)])
def test_a_training_step_has_no_host_sync(precision, conv):
    model, state, step_fn, inputs = setup(precision, conv)
    loss_acc = torch.zeros(())

    def step(masked, attn, targets):  # the body of pretrain()'s loop, minus the host-side bookkeeping
        out = step_fn(masked, attn, targets, None)
        state.opt.step()
        loss_acc.add_(out.loss.detach().float())

    for _, masked, attn, targets, _, _ in inputs:
        assert attn is not None  # the padded path (the mask reaches attention and the conv front end)
        assert isinstance(targets, CompactTargets)  # the compacted last block and head
        assert count_sync_ops(step, masked, attn, targets) == {}
    assert torch.isfinite(loss_acc) and loss_acc > 0
    assert all(p.grad is None for p in model.parameters())  # the step really ran to the end (zero_grad)


def test_a_step_without_padding_mask_and_with_ddp_weight_has_no_host_sync():
    _, state, step_fn, inputs = setup()
    _, masked, _, targets, _, _ = inputs[0]
    assert count_sync_ops(lambda: (step_fn(masked, None, targets, 0.5), state.opt.step())) == {}


def test_the_count_fails_on_the_old_paths():
    model, state, step_fn, inputs = setup()
    _, masked, attn, targets, _, _ = inputs[0]
    dense = torch.full_like(masked, IGNORE_INDEX).scatter(1, targets.positions, targets.labels)
    dense[:, 0] = IGNORE_INDEX  # unused slots point at position 0, never a target here ([CLS])
    # dense labels: the model gathers the targets itself, reading the labels on the host
    assert count_sync_ops(lambda: model(masked, attn, dense).loss.backward())["_local_scalar_dense"] >= 1
    # the pre-static-shape path: the masked positions found with nonzero on the device
    assert count_sync_ops(lambda: forward_full_last_block(model, masked, attn, dense).backward())["nonzero"] >= 1
    # the NaN check done every step instead of at log points
    counted = count_sync_ops(lambda: bool(torch.isfinite(step_fn(masked, attn, targets, None).loss)))
    assert counted == {"_local_scalar_dense": 1}


def test_each_kind_of_syncing_op_is_counted():
    x = torch.randn(5, 3)
    mask = x[:, 0] > 0
    cases = {
        "nonzero": lambda: x.nonzero(),
        "_local_scalar_dense": lambda: x.sum().item(),
        "bincount": lambda: torch.bincount(torch.tensor([0, 2])),
        "masked_select": lambda: x.masked_select(x > 0),
        "_unique2": lambda: torch.unique(torch.tensor([1, 1, 2])),
        "index (boolean mask)": lambda: x[mask],
        "index_put_ (boolean mask)": lambda: x.clone().index_put_((mask,), torch.tensor(0.0)),
        "repeat_interleave (no output_size)": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
        "equal": lambda: torch.equal(x, x),
    }
    for name, fn in cases.items():
        assert name in count_sync_ops(fn), name
    # and their sync-free counterparts are not
    assert count_sync_ops(lambda: (x[torch.tensor([0, 2])], torch.where(mask[:, None], x, 0.0), x.gather(0, torch.zeros(
        2, 3, dtype=torch.long)), torch.repeat_interleave(torch.tensor([1, 2]), output_size=3))) == {}
