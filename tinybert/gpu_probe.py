"""What one training step costs on this device: the SDPA kernel it gets, its kernels and host syncs, its time and
MFU, and the batched-ensemble speed-up. The measurements behind `python -m tinybert.gpu_check` (which prints them);
docs/gpu-estimate.md turns such numbers into a time for the paper's grid.

  * `sdpa_kernels`: for each mask case BertEncoder produces (no mask for full rows; the additive padding mask,
    model.attention_bias), which SDPA implementation the default dispatch runs (read from the profiler's op names,
    forward and backward) and which of the backends succeed when forced one at a time (torch.nn.attention.sdpa_kernel).
  * `MLMStep`: one pre-training step exactly as pretrain.py takes it (sparse-head forward under autocast, backward,
    fused AdamW, zero_grad) on fixed full rows (tinybert.bench.fixed_mlm_batch), eager or compiled.
    `device_kernels` counts the device events (kernels, copies, memsets) of one step with torch.profiler;
    `host_syncs` counts the ops that make the host wait for the device (tinybert.sync_audit, imported lazily:
    it may not be in this checkout); `time_step` gives the median ms/step, and `mfu` the model-FLOPs utilisation
    against a measured matmul peak (flops_per_token, the standard count).
  * `ensemble_speedup`: K members as one batched model (tinybert.ensemble.EnsembleMLM, imported lazily) against
    K separate steps of one model.

Nothing here asserts a speed: it measures and returns numbers. Not imported by training code.
"""

from __future__ import annotations

import re
import statistics
import time
import warnings
from collections import Counter

import torch
import torch.nn.functional as F

from tinybert.bench import fixed_mlm_batch, synchronize
from tinybert.config import make_model_config
from tinybert.masking import compact_targets, mlm_targets
from tinybert.model import IGNORE_INDEX, BertForMaskedLM, attention_bias, flops_per_token

_SDPA_OP = re.compile(r"^aten::_scaled_dot_product_(\w+?)(_backward)?$")


class NotAvailable(Exception):
    """A measurement whose code is not in this checkout (a module of another branch)."""


# ----------------------------------------------------------------------------------------------------------
# SDPA


def sdpa_kernels(device, dtype, batch: int, heads: int, seq_len: int, head_size: int) -> dict:
    """{case: {'chosen': [implementations the default dispatch ran, forward and backward], 'works': [backends
    that succeed when forced alone]}} for case 'no mask' and 'padding mask' (3/4 of the rows padded by a quarter,
    in BertEncoder's additive form)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq_len, head_size, generator=g).to(device, dtype) for _ in range(3))
    lengths = torch.tensor([seq_len if b % 4 == 0 else 3 * seq_len // 4 for b in range(batch)])
    pad = (torch.arange(seq_len)[None, :] < lengths[:, None]).to(device)
    cases = {"no mask": None, "padding mask": attention_bias(pad, dtype)}
    backends = [b for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
                if hasattr(SDPBackend, b)]

    def fwd_bwd(mask):
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
        F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask).float().sum().backward()
        synchronize(device)

    out = {}
    for case, mask in cases.items():
        with torch.profiler.profile() as prof:
            fwd_bwd(mask)
        chosen = sorted({m.group(1) + (m.group(2) or "") for e in prof.events() if (m := _SDPA_OP.match(e.name))})
        works = []
        for name in backends:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # each refusal warns why; the list below is the answer
                    with sdpa_kernel(getattr(SDPBackend, name)):
                        fwd_bwd(mask)
                works.append(name.lower())
            except Exception:  # noqa: BLE001 - "no available kernel" (RuntimeError) or a backend's own refusal
                pass
        out[case] = {"chosen": chosen, "works": works}
    return out


# ----------------------------------------------------------------------------------------------------------
# one pre-training step


class MLMStep:
    """One pre-training step of a fresh BertForMaskedLM (preset + overrides) on fixed full rows; call it to run one.

    compile: None (eager) or a torch.compile backend name ('inductor')."""

    def __init__(self, preset: str, device, precision, batch: int, seq_len: int, vocab_size: int = 30522,
                 overrides: dict | None = None, compile: str | None = None, seed: int = 0):
        torch.manual_seed(seed)
        self.config = make_model_config(preset, vocab_size=vocab_size, max_position=max(seq_len, 128),
                                        **(overrides or {}))
        self.device, self.precision, self.batch, self.seq_len = device, precision, batch, seq_len
        self.model = BertForMaskedLM(self.config).to(device).train()
        fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01, **fused)
        self.net = torch.compile(self.model, backend=compile) if compile else self.model
        self.ids, labels = fixed_mlm_batch(batch, seq_len, vocab_size, mask_id=4, device=device, seed=seed)
        self.predicted = int((labels != IGNORE_INDEX).sum())
        # the masked slots gathered on the host, as pretrain.step_inputs does: the step itself has no host sync
        self.labels = compact_targets(mlm_targets(labels.cpu())).to(device)

    def __call__(self) -> torch.Tensor:
        with self.precision.autocast(self.device):
            loss = self.net(self.ids, None, self.labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def flops(self) -> float:
        """Model FLOPs of one step (the standard count: flops_per_token x tokens)."""
        tokens = self.batch * self.seq_len
        return flops_per_token(self.config, self.predicted / tokens, self.seq_len) * tokens


def time_step(step, device, steps: int, warmup: int) -> float:
    """Median seconds of `steps` calls after `warmup` untimed ones, the device synchronised around each."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_kernels(step, device) -> dict:
    """One (already warmed-up) step under torch.profiler. On CUDA: {'kernels': device events (kernels, memcpy,
    memset) of the step}; elsewhere there are no device kernels: {'aten_ops': the aten ops the step dispatched}
    (every op, nested ones too), the nearest CPU analogue."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        from torch.autograd import DeviceType
        return {"kernels": sum(1 for e in events if e.device_type == DeviceType.CUDA)}
    return {"aten_ops": sum(1 for e in events if e.name.startswith("aten::"))}


def host_syncs(step) -> Counter:
    """The ops of one step that make the host wait for the device (tinybert.sync_audit.count_sync_ops, which
    counts them with a dispatch mode, on any device). Raises NotAvailable where that module is missing."""
    try:
        from tinybert.sync_audit import count_sync_ops
    except ImportError as exc:
        raise NotAvailable(f"tinybert.sync_audit is not in this checkout ({exc})") from None
    return Counter(count_sync_ops(step))


def mfu(flops: float, seconds: float, peak_gflops: float) -> float:
    """Model-FLOPs utilisation: achieved FLOP/s over the measured matmul peak."""
    return flops / seconds / (peak_gflops * 1e9)


# ----------------------------------------------------------------------------------------------------------
# batched ensembles


def ensemble_speedup(preset: str, device, precision, batch: int, seq_len: int, ks=(1, 4, 8),
                     vocab_size: int = 30522, overrides: dict | None = None, steps: int = 5,
                     warmup: int = 2) -> dict:
    """{'separate_ms': one model's step; K: {'ms': one batched step of K members, 'speedup': K x separate / that}}.
    Raises NotAvailable where tinybert.ensemble is missing."""
    try:
        from tinybert.ensemble import EnsembleMLM
        from tinybert.masking import mlm_targets
    except ImportError as exc:
        raise NotAvailable(f"tinybert.ensemble is not in this checkout ({exc})") from None
    single = MLMStep(preset, device, precision, batch, seq_len, vocab_size, overrides)
    separate = time_step(single, device, steps, warmup)
    config = single.config
    del single
    out = {"separate_ms": separate * 1e3}
    for K in ks:
        members = []
        for k in range(K):
            torch.manual_seed(k)
            members.append(BertForMaskedLM(config))
        ens = EnsembleMLM.from_members(members).to(device).train()
        fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
        opt = torch.optim.AdamW(ens.parameters(), lr=1e-4, weight_decay=0.01, **fused)
        rows = [fixed_mlm_batch(batch, seq_len, vocab_size, mask_id=4, device="cpu", seed=k) for k in range(K)]
        ids = torch.stack([r[0] for r in rows]).to(device)
        targets = mlm_targets(torch.stack([r[1] for r in rows]))  # host-side, as the training loop builds them
        targets = type(targets)(*(t.to(device) for t in targets))

        def step():
            with precision.autocast(device):
                losses = ens(ids, None, targets)
            losses.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        t = time_step(step, device, steps, warmup)
        out[K] = {"ms": t * 1e3, "speedup": K * separate / t}
        del ens, opt, members
    return out
