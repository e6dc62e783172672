"""The quickstart end to end, scaled down (--tiny): pre-train, fine-tune both arms, baseline, the report."""

import json

from tinybert import quickstart


def test_tiny_quickstart_runs_every_step_and_reports_three_accuracies(tmp_path, capsys):
    out = tmp_path / "qs"
    assert quickstart.main(["--tiny", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for step in ("$ python train.py", "$ python eval.py", "--baseline", "--no-pretrain"):
        assert step in text
    pre = json.loads((out / "agnews-pretrained" / "results.json").read_text())
    scratch = json.loads((out / "agnews-scratch" / "results.json").read_text())
    assert pre["pretrained"] and not scratch["pretrained"]
    # both arms and the baseline saw exactly the same rows
    assert pre["runs"][0]["data"] == scratch["runs"][0]["data"]
    assert pre["runs"][0]["data"]["train"] > 0
    bow = pre["summary"]["baseline"]["test_acc"]["mean"]
    assert 0 <= bow <= 1 and f"{bow:.4f}" in text  # the printed baseline is the recorded one
    for name in ("bag-of-words baseline", "pre-trained", "from scratch", "chance"):
        assert name in text
    acc = pre["summary"]["selected_test_acc"]["mean"]
    assert f"{acc:.4f}" in text

    # a rerun finds every step done and only prints the report again
    assert quickstart.main(["--tiny", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "$ python" not in again and f"{acc:.4f}" in again
