"""Device and precision choice: what `--precision auto` resolves to, and the override for testing other hosts."""

from pathlib import Path

import pytest
import torch

from tinybert.runtime import choose_precision, cpu_has_native_bf16


@pytest.mark.parametrize("forced, expected", [("1", "bf16"), ("0", "fp32")])
def test_auto_on_cpu_follows_native_bf16_and_the_override(monkeypatch, forced, expected):
    monkeypatch.setenv("TINYBERT_CPU_BF16", forced)
    assert cpu_has_native_bf16() is (forced == "1")
    assert choose_precision("auto", torch.device("cpu")).name == expected


def test_without_override_reads_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("TINYBERT_CPU_BF16", raising=False)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text(errors="ignore") if cpuinfo.exists() else ""
    assert cpu_has_native_bf16() is ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_explicit_precision_wins(monkeypatch):
    monkeypatch.setenv("TINYBERT_CPU_BF16", "1")
    assert choose_precision("fp32", torch.device("cpu")).name == "fp32"
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        choose_precision("fp16", torch.device("cpu"))


def test_cuda_switches_leave_a_cpu_run_alone():
    """configure_cuda touches nothing off CUDA; on CUDA it turns on cudnn.benchmark and TF32 only when asked."""
    from tinybert.model import BertForMaskedLM
    from tinybert.config import make_model_config
    from tinybert.runtime import channels_last_convs, configure_cuda
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    assert configure_cuda(torch.device("cpu"), tf32=True) == {"tf32": False, "cudnn_benchmark": False}
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32) == before
    model = BertForMaskedLM(make_model_config("bert1-h8-c2k3d64", vocab_size=50, max_position=8))
    conv = model.bert.conv.convs[1].weight
    assert channels_last_convs(model, torch.device("cpu")) is model and conv.is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_switches_on_a_gpu():
    from tinybert.model import BertForMaskedLM
    from tinybert.config import make_model_config
    from tinybert.runtime import channels_last_convs, configure_cuda
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        assert configure_cuda(torch.device("cuda"), tf32=False) == {"tf32": False, "cudnn_benchmark": True}
        assert torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        model = BertForMaskedLM(make_model_config("bert1-h8-c2k3d64", vocab_size=50, max_position=8)).cuda()
        channels_last_convs(model, torch.device("cuda"))
        assert model.bert.conv.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
