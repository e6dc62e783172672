"""The studies, one module (one `Study` object) each, registered in the order the runner, tables.md and the
figures list them.

Where it sits: presets.py says what to run, each study module lists its rows (`GridRow`: one fine-tuning unit as
seen by one study, with the study's labels) and says how tables.md and plots/make_figures.py show it; units.py runs
the units; runner.py and tables.py loop over `registered()`.

* ``baseline``      baseline.py       the bag-of-words yardstick on every task sample (in every run)
* ``pretrain_gap``  pretrain_gap.py   pre-trained vs from scratch, deep model and main BERT-1, every task
* ``size``          size.py           the gap vs pre-training articles
* ``overlap``       overlap.py        controlled high/random/low-overlap corpora; overlap.csv
* ``reset_unseen``  reset_unseen.py   interventions on the pre-trained model before fine-tuning
* ``committee``     committee.py      soft committees of BERT-1 models vs the deep model; latency

To add a study: a module here that builds a `Study(name, grid, table, figure)` and calls `register`, and an
import line below (see core.py).
"""

from . import baseline, pretrain_gap, size, overlap, reset_unseen, committee  # noqa: F401  (import order = study order)
from .committee import COMMITTEE_ORDERS, committee_rows, latency_spec, measure_latency
from .core import (AS_PRETRAINED, REGISTRY, GridRow, Intervention, Study, TableInput, build_grid, make_row, make_rows,
                   register, registered, study_names)
from .overlap import overlap_table

STUDIES = study_names()  # the built-in studies; registered() also sees any registered later

__all__ = ["AS_PRETRAINED", "COMMITTEE_ORDERS", "GridRow", "Intervention", "REGISTRY", "STUDIES", "Study",
           "TableInput", "build_grid", "committee_rows", "latency_spec", "make_row", "make_rows", "measure_latency",
           "overlap_table", "register", "registered", "study_names"]
