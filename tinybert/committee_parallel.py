"""A soft committee whose members run at the same time, each in its own worker process: the premise of claim 4.

The paper argues that a committee of K shallow models answers faster than one deep model because its members
can run *in parallel*: the latency is then one member's (plus the averaging), not K members'. In one process,
PyTorch runs the members one after another (committee.member_by_member) or as one batched forward
(committee.BatchedCommittee); neither is "K members side by side". `ProcessCommittee` is: one spawned process
per member, each holding its model with `threads` torch threads, all fed the same input at once.

Where it sits: beside committee.py's runners, for inference only (eval mode, no gradients); the committee
study's latency table (tinybert/experiments/studies/committee.py) times it next to member-by-member.

How a call works (kept cheap, since it is what is timed): the input ids (and mask) go into shared-memory
buffers made once at start-up, each worker gets a two-number message (batch, length) on its pipe, runs its
forward on those buffers, writes its logits into its slot of a shared output buffer and answers on the pipe;
the caller waits for every answer and returns the logits (K, B, C), as member_by_member does. CPU only: on a GPU
the members would share one device, and the batched committee is the fast path there. With fewer free cores
than K x threads the members compete for cores, and the measured latency says so: read it with the core count.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.multiprocessing as mp
from torch import nn

from tinybert.config import ModelConfig
from tinybert.model import BertForSequenceClassification


def _serve(conn, config: dict, num_labels: int, state: dict, threads: int, ids_buf, mask_buf, out_buf, slot: int):
    """One member's process: build the model once, then answer (batch, length, has_mask) messages until None."""
    torch.set_num_threads(threads)
    model = BertForSequenceClassification(ModelConfig.from_dict(config), num_labels)
    model.load_state_dict(state)
    model.eval()
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        batch, length, has_mask = msg
        try:
            with torch.inference_mode():
                mask = mask_buf[:batch, :length] if has_mask else None
                out_buf[slot, :batch] = model(ids_buf[:batch, :length], mask).float()
            conn.send("ok")
        except Exception as exc:  # noqa: BLE001 -- the caller raises it with the member's index
            conn.send(f"error: {type(exc).__name__}: {exc}")
    conn.close()


class ProcessCommittee:
    """K classifiers (BertForSequenceClassification, on the CPU), each served by its own process.

    Call: logits (K, B, C) for input ids (B, T) with B <= max_batch and T <= max_length. Use as a context
    manager, or call close(), to stop the workers (they are daemons, so they also stop with the caller).
    """

    def __init__(self, models: Sequence[nn.Module], threads: int = 1, max_batch: int = 32, max_length: int = 128):
        models = list(models)
        if not models:
            raise ValueError("a committee needs at least one member")
        labels = {m.num_labels for m in models}
        if len(labels) > 1:
            raise ValueError(f"committee members must have the same number of labels, got {sorted(labels)}")
        if any(p.device.type != "cpu" for m in models for p in m.parameters()):
            raise ValueError("ProcessCommittee runs its members on the CPU; move them there first")
        self.max_batch, self.max_length = max_batch, max_length
        self.ids = torch.zeros(max_batch, max_length, dtype=torch.long).share_memory_()
        self.mask = torch.zeros(max_batch, max_length, dtype=torch.bool).share_memory_()
        self.out = torch.zeros(len(models), max_batch, labels.pop()).share_memory_()
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for slot, m in enumerate(models):
            parent, child = ctx.Pipe()
            state = {k: v.detach().clone() for k, v in m.state_dict().items()}
            proc = ctx.Process(target=_serve, daemon=True,
                               args=(child, m.config.to_dict(), m.num_labels, state, threads, self.ids, self.mask,
                                     self.out, slot))
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for i, conn in enumerate(self.conns):  # wait until every member is built: start-up is not latency
            if not conn.poll(300) or conn.recv() != "ready":
                self.close()
                raise RuntimeError(f"committee member {i} did not start")

    def __len__(self) -> int:
        return len(self.procs)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = input_ids.shape
        if batch > self.max_batch or length > self.max_length:
            raise ValueError(f"input {tuple(input_ids.shape)} exceeds the committee's buffers "
                             f"({self.max_batch}, {self.max_length}); build it with larger max_batch/max_length")
        self.ids[:batch, :length] = input_ids
        if attention_mask is not None:
            self.mask[:batch, :length] = attention_mask
        msg = (batch, length, attention_mask is not None)
        for conn in self.conns:
            conn.send(msg)
        errors = [(i, answer) for i, answer in enumerate(conn.recv() for conn in self.conns) if answer != "ok"]
        if errors:
            raise RuntimeError("; ".join(f"committee member {i}: {answer}" for i, answer in errors))
        return self.out[:, :batch].clone()

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if proc.is_alive():
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
