"""Command line of the experiment runner (see tinybert/experiments/__init__.py and runner.py).

    python -m tinybert.experiments run --study {baseline,pretrain_gap,size,overlap,reset_unseen,committee,all}
                                       --preset {paper,cpu,smoke}
                                       [--out results/<preset>] [--seeds 0 1 2] [--device auto] [--threads N]
    python -m tinybert.experiments estimate --study all --preset cpu      # plan + estimated time, runs nothing
    python -m tinybert.experiments estimate --preset paper --device cuda  # without a GPU: the modelled GPU time
    python -m tinybert.experiments tables --preset cpu                    # rewrite the CSVs and tables.md only
    python -m tinybert.experiments latency --preset cpu                   # time the committee study's models again
    python -m tinybert.experiments run --study pretrain_gap --preset cpu --models bert1-h8   # one block of a run
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from tinybert.data_dir import DatasetNotFound
from tinybert.runtime import PRECISIONS, Precision, choose_device, choose_precision

from .presets import PRESETS, get_preset
from .gpu_estimate import print_estimate
from .runner import run_studies
from .studies.committee import record_latency
from .tables import write_tables
from .studies import study_names
from .units import Workspace


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinybert.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "run the studies (cached units are skipped)"),
                        ("estimate", "print the plan and the estimated time; run nothing"),
                        ("tables", "rewrite results.csv, summary.csv and tables.md from the finished units"),
                        ("latency", "measure the committee study's latency table again (on an idle machine), then "
                                    "rewrite the tables")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--study", choices=study_names() + ("all",), default="all")
        s.add_argument("--preset", choices=sorted(PRESETS), required=True)
        s.add_argument("--out", help="output folder (default results/<preset>)")
        s.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (default: the preset's)")
        s.add_argument("--data-dir", help="datasets root (default: $TINYBERT_DATA, ../shared/data, ./data)")
        s.add_argument("--cache-dir", help="token-array cache (default: $TINYBERT_CACHE or ./cache)")
        s.add_argument("--source", nargs="+", help="article files instead of <data dir>/wikipedia/*.tar.xz")
        s.add_argument("--device", default="auto")
        s.add_argument("--precision", choices=PRECISIONS, default="auto")
        s.add_argument("--jobs", type=int, help="worker processes running units in parallel (default: the "
                                                "preset's; cpu: 2)")
        s.add_argument("--threads", type=int, default=0,
                       help="torch CPU threads per job (default: torch's default with 1 job, 1 with several)")
        s.add_argument("--no-retry", action="store_true", help="do not retry units that failed before")
        s.add_argument("--progress", action="store_true", help="progress bars inside pre-training")
        s.add_argument("--models", nargs="+", metavar="NAME",
                       help="only these models' units (names as in the tables, e.g. bert1-h8): one block of a long run")
        s.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks' units (baseline included)")
        s.add_argument("--pretrain-seeds", type=int, nargs="+", metavar="S",
                       help="only the pre-trained units of these pre-training seeds (and the from-scratch ones)")
        s.add_argument("--no-batch", action="store_true",
                       help="run every fine-tuning unit on its own (default: units that differ only in their seeds "
                            "run together as one batched model; with dropout > 0 its dropout masks differ from "
                            "separate runs')")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    preset = get_preset(args.preset)
    jobs = max(args.jobs or preset.jobs, 1)
    threads = args.threads or (1 if jobs > 1 else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.seeds:
        preset = replace(preset, seeds=tuple(args.seeds))
    # the baseline (seconds per unit) goes with every study: each table and figure is read against it
    studies = (study_names() if args.study == "all" else (args.study,) if args.study == "baseline" else
               ("baseline", args.study))
    out = Path(args.out or f"results/{preset.name}")
    known = {"models": [m.name for m in (preset.deep,) + tuple(preset.shallow)],
             "tasks": [t.name for t in preset.tasks]}
    for what, given in (("models", args.models), ("tasks", args.tasks)):
        unknown = [n for n in given or () if n not in known[what]]
        if unknown:
            print(f"error: --{what} {' '.join(unknown)}: not in preset {preset.name}; expected some of "
                  f"{', '.join(known[what])}", file=sys.stderr)
            return 2
    try:
        if args.command == "estimate" and args.device.startswith("cuda") and not torch.cuda.is_available():
            # no GPU here: the modelled estimate (gpu_estimate.py), before and after issue 11, 1 and 8 GPUs
            ws = Workspace(preset, out, data_dir=args.data_dir, cache_dir=args.cache_dir, sources=args.source,
                           device=torch.device(args.device), precision=Precision("bf16", "modelled GPU"))
            print_estimate(preset, ws, studies)
            return 0
        device = choose_device(args.device)
        precision = choose_precision(args.precision, device)
        ws = Workspace(preset, out, data_dir=args.data_dir, cache_dir=args.cache_dir, sources=args.source,
                       device=device, precision=precision, show_progress=args.progress)
        if args.command == "tables":
            out.mkdir(parents=True, exist_ok=True)
            return 1 if write_tables(preset, ws) else 0
        if args.command == "latency":
            ws.units.mkdir(parents=True, exist_ok=True)
            record_latency(ws, preset)
            write_tables(preset, ws, log=None)
            return 0
        failed = run_studies(preset, ws, studies, retry_failed=not args.no_retry, dry_run=args.command == "estimate",
                             jobs=jobs, threads=threads, batch=not args.no_batch, models=args.models,
                             tasks=args.tasks, pretrain_seeds=args.pretrain_seeds)
    except (DatasetNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
