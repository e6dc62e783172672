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
