"""The paper grid's GPU time from a written per-step model, for a machine without a GPU.

    python -m tinybert.experiments estimate --preset paper --device cuda     # here: no GPU -> this model

On a machine with a GPU the runner times real steps (runner.Estimator). Without one, `--device cuda` asks for this
instead: every unit's steps are counted exactly as runner.Estimator counts them (same code, see
`ModelledEstimator`), and each step's time comes from `StepModel.step_seconds` below, a model with four inputs:

    FLOPs per step      tinybert.model.flops_per_token (pre-training, MLM head on the masked 15%) or
                        6 x encoder MACs (fine-tuning), x tokens per step
    kernels per step    BASE[kind] + PER_LAYER x layers + PER_CONV x conv layers (eager), x COMPILED_KERNELS
                        when compiled
    host syncs          per step: SYNCS[mode][kind]
    machine             a bf16 dense peak, the share of it the kernels reach, a host cost per kernel launch and
                        a cost per host sync

    device_s = FLOPs / (peak x efficiency)
    host_s   = kernels x launch_s / K                 (K members of a batched ensemble share one launch)
    step_s   = max(device_s, host_s) + syncs x sync_s (per member)

The host queues kernels while the device runs them, so a step takes the longer of the two; a sync empties the
queue and costs its round trip on top. 'before' is the eager code with one model per process and 4 syncs per
pre-training step (the sparse MLM head finds its rows on the device: model.py, BertForMaskedLM.forward); 'after'
is the GPU path of issue 11: compiled steps, no syncs (rows chosen on the host, masking.mlm_targets), fine-tuning
seeds and pre-training seeds batched K at a time (batched ensembles). The constants below are assumptions, not
measurements: the 'before' ones are chosen so that BERT-6 at batch 32 x 128 gives the ~335 kernels, 4 syncs and
~5.4 ms per step read off the code; `python -m tinybert.gpu_check` measures the real kernels, syncs and ms per step
on a GPU, and docs/gpu-estimate.md writes the numbers down. Units go to GPUs as runner.run_parallel sends them to
workers (a pre-training with its fine-tunings is one group, a batched ensemble too; longest group first, to the
least-loaded GPU).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tinybert.config import ModelConfig
from tinybert.model import encoder_macs_per_token, flops_per_token

from .runner import Estimator, fmt_time, plan
from .units import spec_hash

BASE = {"pretrain": 65, "finetune": 40}  # kernels outside the blocks: embeddings, head, loss, fused AdamW, zero_grad
PER_LAYER = 45                           # one block: ~15 forward (QKV, SDPA, out, 2 norms, FFN, GELU, dropout...)
PER_CONV = 12                            # one conv layer of the front end (conv, BatchNorm, GELU, mask; fwd + bwd)
SYNCS = {"before": {"pretrain": 4, "finetune": 0},  # nonzero + select_rows' max (2 x: forward and its sizes)
         "after": {"pretrain": 0, "finetune": 0}}


@dataclass(frozen=True)
class StepModel:
    """The machine side of the model (see the module docstring). Defaults: one H200."""
    name: str = "H200 (assumed)"
    peak_tflops: float = 989.0       # bf16 dense tensor-core peak of the H100/H200 data sheets
    efficiency: float = 0.5          # share of the peak these narrow matmuls (hidden 512-1536) reach
    launch_us: float = 15.0          # eager: Python + dispatcher + launch per kernel
    compiled_launch_us: float = 5.0  # compiled: the generated wrapper launches its kernels
    compiled_kernels: float = 0.5    # compiled: fusion leaves this share of the kernels
    sync_us: float = 100.0           # one host sync: the round trip and the emptied queue

    def kernels(self, config: ModelConfig, kind: str, compiled: bool) -> float:
        k = BASE[kind] + PER_LAYER * config.layers + PER_CONV * config.conv_layers
        return k * (self.compiled_kernels if compiled else 1.0)

    @staticmethod
    def flops(config: ModelConfig, kind: str, batch: int, length: int) -> float:
        """Model FLOPs of one training step (forward + backward, the standard 6 x MACs count)."""
        if kind == "pretrain":
            return flops_per_token(config, 0.15, length) * batch * length
        return 6.0 * encoder_macs_per_token(config, length) * batch * length

    def step_seconds(self, config: ModelConfig, kind: str, batch: int, length: int, mode: str, k: int = 1) -> float:
        """Seconds per member of one training step. mode 'before' | 'after'; k: members batched together."""
        compiled = mode == "after"
        launch = (self.compiled_launch_us if compiled else self.launch_us) * 1e-6
        device_s = self.flops(config, kind, batch, length) / (self.peak_tflops * 1e12 * self.efficiency)
        host_s = self.kernels(config, kind, compiled) * launch / k
        return max(device_s, host_s) + SYNCS[mode][kind] * self.sync_us * 1e-6

    def describe(self) -> str:
        return (f"{self.name}: bf16 peak {self.peak_tflops:g} TFLOP/s at {self.efficiency:.0%} efficiency; "
                f"eager {self.launch_us:g} us per kernel launch, compiled {self.compiled_launch_us:g} us and "
                f"{self.compiled_kernels:.0%} of the kernels; {self.sync_us:g} us per host sync; kernels per step "
                f"= {BASE['pretrain']} (pre-training) or {BASE['finetune']} (fine-tuning) + {PER_LAYER} x layers "
                f"+ {PER_CONV} x conv layers; syncs per step before {SYNCS['before']['pretrain']} (pre-training) "
                f"/ {SYNCS['before']['finetune']} (fine-tuning), after 0")


class ModelledEstimator(Estimator):
    """runner.Estimator's step counting with StepModel's step times instead of timed steps."""

    def __init__(self, ws, preset, model: StepModel, mode: str):
        super().__init__(ws, preset, log=None)
        self.model, self.mode, self.k = model, mode, 1

    def _step(self, kind: str, config: dict, length: int, num_labels: int = 2) -> float:
        batch = self.preset.pretrain["batch_size"] if kind == "pretrain" else self.preset.finetune["batch_size"]
        return self.model.step_seconds(ModelConfig.from_dict(config), kind, batch, length, self.mode, self.k)

    def flops(self, kind: str, spec: dict) -> float:
        """FLOPs of one unit (training steps, and evaluation at a third of a step, as Estimator counts time):
        Estimator's own formula with each step's 'seconds' replaced by its FLOPs (_FlopCounter)."""
        saved, self.model = self.model, _FlopCounter()
        try:
            return self.pretrain(spec) if kind == "pretrain" else self.finetune(spec)
        finally:
            self.model = saved


class _FlopCounter(StepModel):
    """A step 'time' that is the step's FLOPs, so Estimator's formulas sum FLOPs (their constant 1-2 'seconds' of
    start-up are negligible against ~1e15 FLOPs per unit)."""

    def step_seconds(self, config, kind, batch, length, mode, k=1):
        return self.flops(config, kind, batch, length)


def _without_seed(spec: dict) -> str:
    """The ensemble key: units that differ only by their seeds can train as one batched model."""
    return spec_hash({k: v for k, v in spec.items() if k not in ("seed", "init_seed")})


def unit_seconds(preset, ws, p: dict, model: StepModel, mode: str) -> dict:
    """Seconds per unit still to run, keyed like runner.estimate's (pre-training spec hash, unit hash)."""
    est = ModelledEstimator(ws, preset, model, mode)
    batched = mode == "after"
    pre_k = Counter(_without_seed(s) for s in p["pre_todo"].values())
    ft_k = Counter(_without_seed(r.ft) for r in p["todo"])
    out = {}
    for h, s in p["pre_todo"].items():
        est.k = pre_k[_without_seed(s)] if batched else 1
        out[h] = est.pretrain(s)
    for r in p["todo"]:
        est.k = ft_k[_without_seed(r.ft)] if batched else 1
        out[r.ft_hash] = est.finetune(r.ft)
    return out


def makespan(p: dict, seconds: dict, gpus: int, batched: bool = False) -> float:
    """Wall time on `gpus` GPUs: groups as runner.run_parallel forms them (a pre-training and the units built on
    it, or one scratch unit), longest first to the least-loaded GPU. batched: the groups that differ only by
    their seeds are one group (a batched ensemble trains on one GPU)."""
    groups: dict = {}
    for r in p["todo"]:
        if r.pretrain is None:
            key = _without_seed(r.ft) if batched else r.ft_hash
        else:
            key = _without_seed(r.pretrain) if batched else spec_hash(r.pretrain)
        g = groups.setdefault(key, ({}, []))
        if r.pretrain is not None:
            g[0][spec_hash(r.pretrain)] = True
        g[1].append(r.ft_hash)
    costs = [sum(seconds.get(h, 0.0) for h in pre) + sum(seconds[h] for h in fts) for pre, fts in groups.values()]
    load = [0.0] * gpus
    for c in sorted(costs, reverse=True):
        load[load.index(min(load))] += c
    return max(load)


def print_estimate(preset, ws, studies, model: StepModel | None = None, log=print) -> dict:
    """Plan the named studies and print the modelled time before and after (see the module docstring), on 1 and
    8 GPUs. Returns the numbers."""
    model = model or StepModel()
    p = plan(preset, ws, studies)
    est = ModelledEstimator(ws, preset, model, "before")
    floor_flops = (sum(est.flops("pretrain", s) for s in p["pre_todo"].values())
                   + sum(est.flops("finetune", r.ft) for r in p["todo"]))
    log(f"preset {preset.name}: {len(p['todo'])} fine-tuning units and {len(p['pre_todo'])} pre-trainings to run")
    log("no GPU on this machine: the time comes from a written per-step model, not a measurement "
        "(tinybert/experiments/gpu_estimate.py, docs/gpu-estimate.md)")
    log(f"model: {model.describe()}")
    seq = preset.seq_len
    for name in sorted({r.model.name for r in p["todo"] if r.ft["kind"] != "baseline"}):  # (no model in a baseline)
        spec = next(r.ft["model"] for r in p["todo"] if r.model.name == name)
        config = ModelConfig.from_dict(spec)
        b = preset.pretrain["batch_size"]
        before = model.step_seconds(config, "pretrain", b, seq, "before")
        after = model.step_seconds(config, "pretrain", b, seq, "after")
        log(f"  {name}: pre-training step {b} x {seq}: {flops_per_token(config, 0.15, seq) * b * seq / 1e9:,.0f} "
            f"GFLOP, {model.kernels(config, 'pretrain', False):.0f} kernels and {SYNCS['before']['pretrain']} "
            f"syncs eager -> {before * 1e3:.2f} ms; compiled, no syncs: {after * 1e3:.2f} ms (one model)")
    result = {"compute_floor_s": floor_flops / (model.peak_tflops * 1e12), "flops": floor_flops}
    log(f"compute floor: {floor_flops:.3g} FLOPs of training steps at the full peak = "
        f"{fmt_time(result['compute_floor_s'])} on one GPU")
    for mode, what in (("before", "before (eager, 4 syncs per pre-training step, one model per process)"),
                       ("after", "after (compiled, no syncs, seeds batched as ensembles)")):
        seconds = unit_seconds(preset, ws, p, model, mode)
        one, eight = (makespan(p, seconds, g, batched=mode == "after") for g in (1, 8))
        result[mode] = {"1_gpu_s": one, "8_gpus_s": eight}
        log(f"{what}: {fmt_time(one)} on 1 GPU, {fmt_time(eight)} on 8 GPUs ({one / max(eight, 1e-9):.1f}x: a "
            f"pre-training and its fine-tunings stay on one GPU, so the longest such group bounds 8 GPUs)")
    return result
