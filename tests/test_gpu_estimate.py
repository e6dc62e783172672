"""tinybert/experiments/gpu_estimate.py: the written per-step GPU model and the modelled paper-grid estimate."""

from types import SimpleNamespace

import pytest
import torch

from tinybert.config import make_model_config
from tinybert.experiments import gpu_estimate as ge
from tinybert.experiments.__main__ import main


def test_the_step_model_reproduces_its_calibration_and_its_terms():
    m = ge.StepModel()
    bert6 = make_model_config("bert6", vocab_size=30522)
    # the 'before' calibration point: BERT-6, 32 x 128, 335 kernels and 4 syncs eager -> ~5.4 ms, host-bound
    assert m.kernels(bert6, "pretrain", compiled=False) == 335
    before = m.step_seconds(bert6, "pretrain", 32, 128, "before")
    assert before == pytest.approx(335 * 15e-6 + 4 * 100e-6)
    # the MFU that implies at the assumed peak: ~22%
    assert m.flops(bert6, "pretrain", 32, 128) / before / 989e12 == pytest.approx(0.217, abs=0.005)
    # after: no syncs; a device-bound step is FLOPs / (peak x efficiency) whatever K
    after = m.step_seconds(bert6, "pretrain", 32, 128, "after")
    assert after == pytest.approx(m.flops(bert6, "pretrain", 32, 128) / (989e12 * 0.5))
    # a host-bound step (tiny model): K members share the launches
    tiny = make_model_config("tiny", vocab_size=1000)
    one, four = (m.step_seconds(tiny, "finetune", 32, 32, "after", k) for k in (1, 4))
    assert four == pytest.approx(one / 4)


def test_makespan_assigns_the_longest_groups_first():
    rows = [SimpleNamespace(pretrain=None, ft_hash=h) for h in "abcd"]
    seconds = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0}
    p = {"todo": rows}
    assert ge.makespan(p, seconds, 1) == 15.0
    assert ge.makespan(p, seconds, 2) == 8.0  # {5, 3} and {4, 3}
    assert ge.makespan(p, seconds, 8) == 5.0  # one group per GPU: the longest bounds it
    # batched: units that differ only by their seeds are one group (one ensemble, one GPU)
    rows = [SimpleNamespace(pretrain=None, ft_hash=h, ft={"task": t, "seed": s})
            for h, t, s in (("a", "x", 0), ("b", "x", 1), ("c", "y", 0), ("d", "y", 1))]
    assert ge.makespan({"todo": rows}, seconds, 8, batched=True) == 9.0  # {a, b} and {c, d}


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, --device cuda times real steps instead")
def test_estimate_with_device_cuda_works_without_a_gpu(capsys, tmp_path):
    assert main(["estimate", "--preset", "paper", "--device", "cuda", "--out", str(tmp_path / "paper"),
                 "--study", "pretrain_gap"]) == 0
    out = capsys.readouterr().out
    assert "not a measurement" in out and "model: H200 (assumed)" in out
    assert "bert6: pre-training step 32 x 128: 1,161 GFLOP, 335 kernels and 4 syncs eager -> 5.42 ms" in out
    assert "before (eager" in out and "after (compiled" in out and "on 8 GPUs" in out
    assert not (tmp_path / "paper").exists()  # an estimate writes nothing
