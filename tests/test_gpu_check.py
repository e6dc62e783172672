"""tinybert/gpu_check.py and tinybert/gpu_probe.py: the CPU dry run executes every section; the checks can fail.
Timings are printed, never asserted."""

import sys

import pytest
import torch

from tinybert import gpu_check, gpu_probe
from tinybert.runtime import Precision

CPU = torch.device("cpu")
FP32 = Precision("fp32", "test")


def test_quick_cpu_dry_run_runs_every_section(capsys, tmp_path):
    rc = gpu_check.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    for key in ("sdpa", "step", "ensemble", "committee", "checkpoint", "mlm"):
        assert f"\n[{key}]" in out
    assert "summary: sdpa ok, step ok, ensemble ok, committee ok, checkpoint ok, mlm ok" in out, out
    assert rc == 0
    assert "padding mask  default: " in out and "works alone: " in out
    assert "K = 2: " in out and "compiled " in out
    assert out.count("host syncs per step: 0\n") == 2, out  # the MLM step of both models is sync-free
    assert "(equal)" in out and "identical" in out and "(falls)" in out
    assert (tmp_path / "out.json").is_file()


def test_missing_modules_are_reported_not_failed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tinybert.ensemble", None)  # -> ImportError on import
    monkeypatch.setitem(sys.modules, "tinybert.sync_audit", None)
    s = gpu_check.sizes(quick=True)
    ok, res = gpu_check.section_ensemble(CPU, FP32, s)
    assert ok and res["available"] is False and "not available" in capsys.readouterr().out
    with pytest.raises(gpu_probe.NotAvailable):
        gpu_probe.host_syncs(lambda: None)


def test_a_checkpoint_that_changes_the_model_fails_the_check(monkeypatch, tmp_path, capsys):
    real = gpu_check.load_checkpoint

    def perturbed(path, kind=None):
        ckpt = real(path, kind)
        ckpt["model"]["mlm_head.bias"] = ckpt["model"]["mlm_head.bias"] + 1.0
        return ckpt

    monkeypatch.setattr(gpu_check, "load_checkpoint", perturbed)
    ok, res = gpu_check.section_checkpoint(CPU, FP32, gpu_check.sizes(quick=True), tmp_path)
    assert not ok and res["equal"] is False and "DIFFERENT" in capsys.readouterr().out
