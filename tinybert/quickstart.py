"""The quickstart: the paper's main job, end to end, at a size a laptop CPU finishes in about a quarter hour.

    python -m tinybert.quickstart                 # ~15 min on a 2-core CPU; prints the three accuracies
    python -m tinybert.quickstart --out runs/qs   # elsewhere; rerunning skips the steps already done

It runs the same two commands a user runs, printing each before it starts, so every step can be rerun or
changed by hand:
  1. `train.py`: pre-train BERT-1 with 8 heads (one transformer block; heads of 16, hidden 128, so it fits a
     CPU) with masked-language modelling on 10,000 Wikipedia articles (first 128 tokens each) with an
     8,192-token WordPiece vocabulary trained on them;
  2. `eval.py --baseline`: fine-tune the pre-trained model on AG News with the paper's sample (1,000 training
     and 1,000 test rows per label; 10% of the training rows are the validation slice that picks the epoch),
     and fit the bag-of-words baseline (tinybert/baseline.py) on exactly the same rows;
  3. `eval.py --no-pretrain`: the same architecture and vocabulary from random weights, same rows and seed.
Then it prints the three test accuracies side by side, with chance and the measured gap, whichever way it falls.

Data: the small sample embedded in the repository (data_prep/sample) unless --data-dir says otherwise, so every
machine runs on the same rows. Precision: fp32 everywhere; at hidden 128 bf16 does not pay even on CPUs that have
it, and one precision keeps the numbers comparable across machines (up to the rounding of other CPUs and thread
counts). README.md, "Quickstart results", has the measured numbers and the pilots behind these sizes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .data_dir import REPO_ROOT

SAMPLE_DIR = REPO_ROOT / "data_prep" / "sample"

# (flag values) of each step; --tiny shrinks them so a test runs the whole pipeline in seconds
FULL = {
    "pretrain": ["--layers", "1", "--heads", "8", "--head-size", "16", "--wiki-size", "10000",
                 "--eval-articles", "500", "--vocab-size", "8192", "--epochs", "10", "--batch-size", "32",
                 "--lr", "3e-3", "--warmup-steps", "300"],
    "finetune": ["--task", "agnews", "--train-per-label", "1000", "--test-per-label", "1000",
                 "--epochs", "6", "--lr", "1e-3", "--batch-size", "32", "--seeds", "0"],
}
TINY = {
    "pretrain": ["--layers", "1", "--heads", "8", "--head-size", "4", "--wiki-size", "64",
                 "--eval-articles", "16", "--vocab-size", "600", "--epochs", "1", "--batch-size", "16",
                 "--lr", "2e-3", "--seq-len", "32"],
    "finetune": ["--task", "agnews", "--train-per-label", "12", "--test-per-label", "10",
                 "--epochs", "1", "--lr", "1e-3", "--batch-size", "16", "--max-length", "32", "--seeds", "0"],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="output folder (runs/quickstart)")
    p.add_argument("--data-dir", help=f"datasets root (default: the embedded sample {SAMPLE_DIR})")
    p.add_argument("--cache-dir", help="token/vocab cache (default: <out>/cache)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long miniature (for tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def shown(path) -> str:
    """A path as the user would type it here: relative to the working directory when it lies below it."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def run_step(title: str, script: str, args: list[str]) -> None:
    """Run `python <script> <args>` in the working directory, echoing the command; stop on failure."""
    script_path = shown(REPO_ROOT / script)
    print(f"\n== {title}\n$ python {script_path} {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, script_path, *args])
    if code != 0:
        raise SystemExit(f"error: step '{title}' failed (exit {code}); its output is above. Fix the cause and "
                         f"rerun the quickstart: finished steps are kept and skipped.")
    print(f"   ({title}: {time.perf_counter() - start:.0f} s)", flush=True)


def pretrain_status(run: Path) -> str | None:
    """How train.py's last segment in `run` ended ('done', 'interrupted', ...), from its run.json."""
    path = run / "run.json"
    return json.loads(path.read_text()).get("status") if path.is_file() else None


def read_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def last_metrics(run: Path) -> dict:
    """The last row of a train.py run's metrics.csv."""
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))[-1]


def report(out: Path, pretrain_run: Path, elapsed: float) -> str:
    pre, scratch = read_results(out / "agnews-pretrained"), read_results(out / "agnews-scratch")
    mlm_acc = float(last_metrics(pretrain_run)["eval_acc"])
    acc_pre = pre["summary"]["selected_test_acc"]["mean"]
    acc_scratch = scratch["summary"]["selected_test_acc"]["mean"]
    acc_bow = pre["summary"]["baseline"]["test_acc"]["mean"]
    data = pre["runs"][0]["data"]
    n_test, chance = data["test"], 1.0 / data["num_labels"]
    se = math.sqrt(acc_pre * (1 - acc_pre) / n_test)  # binomial standard error of one accuracy on this test set
    rows = [("bag-of-words baseline (TF-IDF + logistic regression)", acc_bow),
            (f"BERT-1 h8, pre-trained (held-out masked-token acc {mlm_acc:.3f})", acc_pre),
            ("BERT-1 h8, same architecture from scratch", acc_scratch),
            ("chance (always one class)", chance)]
    lines = [f"\nAG News, {data['train']} training / {data['val']} validation / {n_test} test rows, seed "
             f"{pre['seeds'][0]}; test accuracy at the best-validation epoch:"]
    lines += [f"  {name:<66} {acc:.4f}" for name, acc in rows]
    gain, to_bow = acc_pre - acc_scratch, acc_pre - acc_bow
    noise = 2.8 * se  # 1.96 x the standard error of a difference of two such accuracies (sqrt(2) x se)
    verdict = ("helped" if gain > noise else "hurt" if gain < -noise else "made no difference beyond noise")
    lines.append(f"pre-training {verdict}: {gain:+.4f} against scratch (one seed: each accuracy has a binomial "
                 f"standard error of about {se:.3f}, so differences under ~{noise:.3f} are noise; RESULTS.md has "
                 f"the studies with seeds). The pre-trained model is {abs(to_bow):.4f} "
                 f"{'above' if to_bow > 0 else 'below'} the bag-of-words baseline.")
    lines.append(f"total time {elapsed / 60:.1f} min; outputs in {shown(out)}/")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    sizes = TINY if args.tiny else FULL
    data_dir = args.data_dir or shown(SAMPLE_DIR)
    common = ["--data-dir", data_dir, "--precision", "fp32"] + (["--no-progress"] if args.no_progress else [])
    cache = ["--cache-dir", args.cache_dir or shown(out / "cache")]
    start = time.perf_counter()
    print(f"quickstart: pre-train BERT-1 h8, then AG News pre-trained vs from scratch vs bag-of-words -> "
          f"{shown(out)}/")

    pretrain_run = out / "pretrain"
    if pretrain_status(pretrain_run) != "done":
        # an interrupted pre-training continues from its checkpoint; resume takes every other flag from it
        args_ = (["--out", shown(pretrain_run), "--resume", *common, *cache]
                 if (pretrain_run / "checkpoint.pt").exists()
                 else [*sizes["pretrain"], *common, *cache, "--out", shown(pretrain_run)])
        run_step("1/3 pre-train BERT-1 h8 (masked-language modelling)", "train.py", args_)
    ckpt = shown(pretrain_run / "checkpoint.pt")
    for title, folder, extra in (("2/3 fine-tune the pre-trained model; bag-of-words baseline on the same rows",
                                  "agnews-pretrained", ["--baseline"]),
                                 ("3/3 fine-tune the same architecture from scratch", "agnews-scratch",
                                  ["--no-pretrain"])):
        if not (out / folder / "results.json").exists():
            run_step(title, "eval.py", [*sizes["finetune"], *common, "--checkpoint", ckpt, *extra,
                                        "--out", shown(out / folder)])
    print(report(out, pretrain_run, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
