"""tinybert/bench.py: the benchmark's main runs end to end on a tiny model and reports every field (not a timing
test: two steps, 64x64 matmuls, seconds on CPU)."""

import json

import pytest

from tinybert import bench
from tinybert.config import make_model_config
from tinybert.model import BertForMaskedLM, count_parameters, flops_per_token

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


# ------------------------------------------------------------------------- ensemble mode (bench_ensemble.py)

ENSEMBLE_TINY = ["ensemble", "--members", "2", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--seq-len",
                 "16", "--vocab-size", "97", "--device", "cpu"]


def test_ensemble_mode_reports_both_arms(tmp_path, capsys):
    out = bench.main(ENSEMBLE_TINY + ["--models", "tiny", "cpu:bert1", "--precision", "fp32", "bf16",
                                      "--json", str(tmp_path / "e.json")])
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "separate tok/s" in printed and "batched tok/s" in printed
    assert [(r["model"], r["precision"]) for r in out["results"]] == [
        ("tiny", "fp32"), ("tiny", "bf16"), ("cpu:bert1", "fp32"), ("cpu:bert1", "bf16")]
    for r in out["results"]:
        assert r["members"] == 2 and (r["batch_size"], r["seq_len"]) == (2, 16)
        assert len(r["separate_round_s_all"]) == len(r["batched_round_s_all"]) == 2
        assert r["separate_member_tokens_per_s"] == pytest.approx(2 * 2 * 16 / r["separate_round_s"])
        assert r["batched_member_tokens_per_s"] == pytest.approx(2 * 2 * 16 / r["batched_round_s"])
        assert r["speedup"] == pytest.approx(r["separate_round_s"] / r["batched_round_s"])
        # both arms computed the same losses on the same weights and batches (bf16: its rounding)
        assert r["check"] < (1e-5 if r["precision"] == "fp32" else 2e-2), r
        assert r["separate_losses"][0] != r["separate_losses"][1]  # the members' batches and weights differ
    assert out["results"][0]["params_per_member"] == count_parameters(
        BertForMaskedLM(make_model_config("tiny", vocab_size=97)))
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["model"] == "tiny"


def test_ensemble_models_resolve_to_the_presets():
    from tinybert.bench_ensemble import model_setup
    deep, seq_len, batch = model_setup("cpu-v1:bert6", 30522, None, None)
    assert (deep.layers, deep.heads, deep.head_size, deep.attention_dropout, seq_len, batch) == (6, 4, 16, 0.0, 64, 32)
    shallow, _, _ = model_setup("cpu-v1:bert1", 30522, None, None)
    assert (shallow.layers, shallow.heads, shallow.conv_layers, shallow.conv_channels) == (1, 4, 2, 8)
    deep, seq_len, _ = model_setup("cpu:bert6", 8192, None, None)
    assert (deep.layers, deep.heads, deep.head_size, deep.vocab_size, seq_len) == (6, 4, 32, 8192, 128)
    shallow, _, _ = model_setup("cpu:bert1", 8192, None, None)
    assert (shallow.layers, shallow.heads, shallow.head_size, shallow.conv_layers) == (1, 8, 16, 0)
    paper, seq_len, _ = model_setup("paper:bert6", 30522, None, None)
    assert (paper.layers, paper.heads, paper.head_size, seq_len) == (6, 12, 64, 128)
    assert model_setup("bert1-h8", 100, 32, 4)[1:] == (32, 4)
    for bad in ("cpu:bert3", "no-such-model"):
        with pytest.raises(ValueError, match="expected"):
            model_setup(bad, 100, None, None)
