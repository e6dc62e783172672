"""tinybert/gpu_check.py and tinybert/gpu_probe.py: the CPU dry run executes every section; the checks can fail.

The ensemble and sync-audit modules come from other branches; where they are missing here, small stand-ins with
their interfaces (EnsembleMLM.from_members / forward(ids (K, B, T), mask, targets) -> losses (K,);
count_sync_ops(fn) -> Counter) exercise gpu_check's use of them. Timings are printed, never asserted.
"""

import importlib.util
import sys
import types
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from tinybert import gpu_check, gpu_probe
from tinybert.model import IGNORE_INDEX, BertForMaskedLM
from tinybert.runtime import Precision

CPU = torch.device("cpu")
FP32 = Precision("fp32", "test")


class LoopEnsemble(torch.nn.Module):
    """Stand-in for tinybert.ensemble.EnsembleMLM: the members one after another, the loss on the gathered target
    slots (the format of masking.mlm_targets)."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    @classmethod
    def from_members(cls, models):
        return cls(models)

    def forward(self, input_ids, attention_mask, targets):
        losses = []
        for k, m in enumerate(self.members):
            hidden = m.bert(input_ids[k], None if attention_mask is None else attention_mask[k])
            picked = torch.gather(hidden, 1, targets.positions[k][..., None].expand(-1, -1, hidden.size(-1)))
            logits = m.mlm_head(picked).float()
            losses.append(F.cross_entropy(logits.flatten(0, 1), targets.labels[k].flatten(), ignore_index=IGNORE_INDEX))
        return torch.stack(losses)


@pytest.fixture()
def stand_ins(monkeypatch):
    """Stand-ins for the modules of the other branches, only where this checkout lacks them."""
    if importlib.util.find_spec("tinybert.ensemble") is None:
        monkeypatch.setitem(sys.modules, "tinybert.ensemble", types.SimpleNamespace(EnsembleMLM=LoopEnsemble))
    if importlib.util.find_spec("tinybert.sync_audit") is None:
        def count_sync_ops(fn):
            fn()
            return Counter({"stand-in": 1})
        monkeypatch.setitem(sys.modules, "tinybert.sync_audit", types.SimpleNamespace(count_sync_ops=count_sync_ops))


def test_quick_cpu_dry_run_runs_every_section(stand_ins, capsys, tmp_path):
    rc = gpu_check.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    for key in ("sdpa", "step", "ensemble", "committee", "checkpoint", "mlm"):
        assert f"\n[{key}]" in out
    assert "summary: sdpa ok, step ok, ensemble ok, committee ok, checkpoint ok, mlm ok" in out, out
    assert rc == 0
    assert "padding mask  default: " in out and "works alone: " in out
    assert "K = 2: " in out and "host syncs per step: " in out and "compiled " in out
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


def test_stand_in_ensemble_loss_is_each_members_own_loss():
    """The stand-in is only useful if it computes what EnsembleMLM promises: member k's MLM loss on its rows."""
    from tinybert.bench import fixed_mlm_batch
    from tinybert.config import make_model_config
    from tinybert.masking import mlm_targets
    config = make_model_config("tiny", vocab_size=60, max_position=16)
    members = [BertForMaskedLM(config).eval() for _ in range(2)]
    rows = [fixed_mlm_batch(3, 16, 60, mask_id=4, device="cpu", seed=k) for k in range(2)]
    ids, labels = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    losses = LoopEnsemble.from_members(members)(ids, None, mlm_targets(labels))
    for k in range(2):
        torch.testing.assert_close(losses[k], members[k].forward_dense(ids[k], None, labels[k]).loss)
