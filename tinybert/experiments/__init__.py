"""Reproduce the paper: presets, units cached by hash, the five studies, results tables.

    python -m tinybert.experiments run --study all --preset cpu --out results/cpu
    python -m tinybert.experiments estimate --study all --preset cpu     # plan and time estimate only
    python -m plots.make_figures --results results/cpu                  # figures from the CSVs

Where it sits in the flow: the top of the pipeline. It calls the library directly (data_prep for corpora and
tasks, tinybert.pretrain / tinybert.finetune / tinybert.committee / tinybert.bench_latency / tinybert.overlap)
and writes CSVs; plots/ draws from those CSVs only. Modules:

  presets.py   the paper, cpu and smoke presets (what to run: models, sizes, lr grid, pre-training seeds)
  units.py     one pre-training or fine-tuning unit: spec, hash, cache folder, run
  studies/     one module per study, each a registered Study object: its grid of units, its tables.md
               section, its intervention (reset_unseen) and its figure; core.py defines Study
  runner.py    planning, time estimate, progress/ETA, parallel jobs, failure handling
  lr_select.py the fine-tuning lr chosen per arm on validation (lr_selection.csv)
  stats.py     mean and 95% Student-t interval, the t quantile without scipy, verdicts, binomial SE
  tables.py    results.csv / summary.csv / lr_selection.csv / latency.csv / tables.md from the finished units
  embeddings.py  after a run: norms and similarity of the vocabulary rows pre-training saw vs never saw
  __main__.py  the command line
"""

from .presets import PRESETS, Preset, get_preset
from .runner import run_studies
from .studies import STUDIES, Study, register, registered

__all__ = ["PRESETS", "Preset", "STUDIES", "Study", "get_preset", "main", "register", "registered",
           "run_studies"]


def main(argv=None) -> int:
    from .__main__ import main as _main
    return _main(argv)
