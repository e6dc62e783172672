"""tinybert/bench.py: the benchmark's main runs end to end on a tiny model and reports every field (not a timing
test: two steps, 64x64 matmuls, seconds on CPU)."""

import json

import pytest

from tinybert import bench
from tinybert.config import make_model_config
from tinybert.model import flops_per_token

TINY = ["--models", "tiny", "--steps", "2", "--warmup", "1", "--peak-sizes", "64", "--peak-repeats", "2",
        "--batch-size", "4", "--seq-len", "16", "--vocab-size", "97", "--device", "cpu"]



def test_main_reports_peaks_and_model_fields(tmp_path, capsys):
    out = bench.main(TINY + ["--precision", "fp32", "bf16", "--json", str(tmp_path / "b.json")])
    printed = capsys.readouterr().out
    assert "matmul peak fp32" in printed and "matmul peak bf16" in printed and "tiny" in printed
    assert "paper pre-training" in printed and "MFU" in printed

    assert set(out["peaks"]) == {"fp32", "bf16"}
    for peak in out["peaks"].values():
        assert peak["best"] > 0 and set(peak["by_size"]) == {64}
    assert [(r["model"], r["precision"]) for r in out["results"]] == [("tiny", "fp32"), ("tiny", "bf16")]
    for r in out["results"]:
        assert r["steps"] == 2 and len(r["step_s_all"]) == 2 and r["step_s_min"] <= r["step_s"]
        assert r["tokens_per_s"] == pytest.approx(4 * 16 / r["step_s"])
        assert r["predicted_per_step"] == 4 * round(0.15 * 16)  # a fixed count per row
        assert r["tflops"] == pytest.approx(r["flops_per_token"] * 64 / r["step_s"] / 1e12)
        assert r["mfu"] == pytest.approx(r["tflops"] * 1e3 / out["peaks"][r["precision"]]["best"])
        assert 0 < r["executed_flops_per_token"] < r["flops_per_token"]  # the restricted last block skips work
        assert r["paper_pretrain_hours"] == pytest.approx(40_000 * 128 * 50 / r["tokens_per_s"] / 3600)
        assert r["loss"] > 0
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["results"][0]["model"] == "tiny" and "load_average" in saved


def test_variants_run(capsys):
    out = bench.main(TINY + ["--precision", "fp32", "--last-block", "full", "--optimizer", "foreach"])
    r = out["results"][0]
    assert r["last_block"] == "full" and r["optimizer"] == "foreach"
    assert r["executed_flops_per_token"] == r["flops_per_token"]


def test_executed_flops_of_bert1():
    # BERT-1 h8 at 15%: the restricted last block leaves K/V on all tokens and the rest on 15% (ANCHORS §0.2)
    c = make_model_config("bert1-h8")
    full, sparse = flops_per_token(c), bench.executed_flops_per_token(c, 0.15, 128)
    H = c.hidden
    expected_macs = 2 * H * H + 0.15 * (2 * H * H + 8 * H * H + 2 * 128 * H) + 0.15 * (H * H + H * c.vocab_size)
    assert sparse == pytest.approx(6 * expected_macs)
    assert full / sparse == pytest.approx(1.71, abs=0.01)


def test_fixed_mlm_batch():
    ids, labels = bench.fixed_mlm_batch(3, 20, 50, mask_id=4, device="cpu")
    picked = labels != -100
    assert picked.sum(1).tolist() == [3, 3, 3]
    assert (ids[picked] == 4).all() and (ids[~picked] >= 5).all()
