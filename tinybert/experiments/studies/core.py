"""What a study is: one `Study` object holding its grid, its table section, its intervention and its figure.

The runner (runner.py), the tables (tables.py) and the figures (plots/make_figures.py) loop over the registered
studies (`registered()`), in registration order; none of them names a study. A new study is one module in this
package that builds a `Study` and calls `register` (plus an import line in studies/__init__.py), or one
`register(Study(...))` call anywhere before the runner runs (the tests do that).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ..presets import ModelSpec, Preset, TaskSpec
from ..stats import mean_ci
from ..units import Workspace, finetune_spec, pretrain_spec, spec_hash


@dataclass
class GridRow:
    """One fine-tuning unit as seen by one study, with the study's labels."""
    study: str
    model: ModelSpec
    task: TaskSpec
    seed: int
    pretrain: dict | None          # pre-training spec; None = from scratch
    ft: dict                       # fine-tuning spec
    articles: int = 0
    corpus: str = "none"           # 'none' | 'nested' | 'high' | 'random' | 'low', plus an intervention suffix
    pretrain_seed: int | None = None
    committee: str = ""            # '' | 'variants' | 'seeds' | 'reference'
    member: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ft_hash(self) -> str:
        return spec_hash(self.ft)

    @property
    def lr(self) -> float | None:
        """The unit's fine-tuning lr (None for the baseline, which has none)."""
        return self.ft.get("finetune", {}).get("lr")

    @property
    def arm(self) -> tuple:
        """The arm whose units share one lr, chosen on validation (lr_select.py): study, model, pre-training
        condition, task, committee role; pooled over fine-tuning and pre-training seeds."""
        return arm_key(self.study, self.model.name, self.pretrain is not None, self.articles, self.corpus,
                       self.task.name, self.committee)


def arm_key(study, model, pretrained, articles, corpus, task, committee) -> tuple:
    """The one definition of an lr-selection arm, for grid rows (GridRow.arm) and results.csv rows alike."""
    articles = 0 if articles is None or articles != articles else int(articles)  # None or NaN: no pre-training
    return (str(study), str(model), bool(pretrained), articles, str(corpus), str(task),
            committee if isinstance(committee, str) else "")


@dataclass(frozen=True)
class Intervention:
    """A change to the pre-trained model between pre-training and fine-tuning: `suffix` labels its corpus
    ('nested' -> 'nested-reset'), `finetune_args` are passed to units.finetune_spec (so they enter the unit hash)."""
    suffix: str
    finetune_args: tuple = ()      # ((name, value), ...); () = the model as pre-trained

    def label(self, corpus: str) -> str:
        return f"{corpus}-{self.suffix}" if self.suffix else corpus


AS_PRETRAINED = Intervention("")


def sweep_size_rows(study: "Study", p, ws: Workspace, sizes, interventions=(AS_PRETRAINED,)) -> list:
    """Per size task and seed: the sweep model (`preset.sweep`: the deep one unless the preset says otherwise)
    from scratch, then pre-trained on each of `sizes` articles under each of `interventions` (the grids of
    ``size`` and ``reset_unseen``)."""
    rows = []
    for name in p.size_tasks:
        task = p.task(name)
        for seed in p.seeds:
            rows += make_rows(ws, study.name, p.sweep, task, seed)
            for n in sizes:
                for iv in interventions:
                    rows += make_rows(ws, study.name, p.sweep, task, seed, articles=n, intervention=iv)
    return rows


def make_row(ws: Workspace, study: str, model: ModelSpec, task: TaskSpec, seed: int, *, articles: int = 0,
             corpus: str = "nested", pretrain_seed: int = 0, member: int = 0, committee: str = "",
             intervention: Intervention = AS_PRETRAINED, lr: float | None = None) -> GridRow:
    """One grid row: scratch when articles == 0, else pre-trained on `articles` of `corpus`; fine-tuned at `lr`
    (None: the recipe's)."""
    pre = None
    if articles:
        pre = pretrain_spec(ws, model, ws.corpus_spec(corpus, articles), pretrain_seed)
    ft = finetune_spec(ws, model, pre, task, seed, member, lr=lr, **dict(intervention.finetune_args))
    label = intervention.label(corpus) if articles else "none"
    return GridRow(study, model, task, seed, pre, ft, articles, label,
                   pretrain_seed if articles else None, committee, member if committee else None)


def make_rows(ws: Workspace, study: str, model: ModelSpec, task: TaskSpec, seed: int, *, articles: int = 0,
              pretrain_seeds: tuple | None = None, **kw) -> list[GridRow]:
    """`make_row` at every lr of the preset's grid (preset.lrs, plus the arm's recorded extensions: lr_select.py)
    and, when pre-trained, for every pre-training seed (`pretrain_seeds`, default the preset's): fine-tuning seed
    `seed` is paired with each of them."""
    p = ws.preset
    seeds = (p.pretrain_seeds if pretrain_seeds is None else pretrain_seeds) if articles else (0,)
    rows = [make_row(ws, study, model, task, seed, articles=articles, pretrain_seed=s, lr=lr, **kw)
            for s in seeds for lr in p.lrs]
    extra = ws.extra_lrs(rows[0].arm[1:])  # lrs the runner added where the choice sat at an end of the grid
    return rows + [make_row(ws, study, model, task, seed, articles=articles, pretrain_seed=s, lr=lr, **kw)
                   for s in seeds for lr in extra]


@dataclass(frozen=True)
class TableInput:
    """What a study's table section may read: its own summary rows, the whole summary, the latency rows, and
    results.csv's rows (for contrasts between arms, `paired_contrast`)."""
    preset: Preset
    ws: Workspace
    rows: object                   # summary.csv rows of this study (a DataFrame, maybe empty)
    summary: object                # the whole summary DataFrame
    latency: list
    results: object = None         # results.csv rows (a DataFrame), None when not given


def paired_contrast(inp: TableInput, study: str, task: str, arm_b: dict, arm_a: dict) -> tuple[float, float, int]:
    """Accuracy of arm b minus arm a of `study` on `task` (each arm given by column values of results.csv, e.g.
    {"corpus": "high"}), paired by fine-tuning seed: per seed, each arm's finished units at its chosen lr
    averaged over its pre-training seeds; then (mean, 95% half-width, n) over the seeds both arms have."""
    df = inp.results
    if df is None or not len(df):
        return mean_ci([])
    d = df[(df["status"] == "ok") & df["lr_chosen"].astype(bool) & df["committee_k"].isna()
           & (df["study"] == study) & (df["task"] == task)]

    def per_seed(arm: dict):
        m = d
        for col, value in arm.items():
            m = m[m[col] == value]
        return m.groupby("seed")["accuracy"].mean()

    b, a = per_seed(arm_b), per_seed(arm_a)
    return mean_ci([b[s] - a[s] for s in sorted(set(b.index) & set(a.index))])


def minus_baseline(inp: TableInput, study: str, task: str, arm: dict) -> tuple[float, float, int]:
    """Accuracy of an arm of `study` on `task` (as in `paired_contrast`) minus the bag-of-words baseline's on the
    same rows, paired by fine-tuning seed (the baseline of seed s sees exactly the rows of seed s's units)."""
    df = inp.results
    if df is None or not len(df):
        return mean_ci([])
    ok = df[(df["status"] == "ok") & (df["task"] == task)]
    base = ok[ok["study"] == "baseline"].groupby("seed")["accuracy"].mean()
    m = ok[ok["lr_chosen"].astype(bool) & ok["committee_k"].isna() & (ok["study"] == study)]
    for col, value in arm.items():
        m = m[m[col] == value]
    model = m.groupby("seed")["accuracy"].mean()
    return mean_ci([model[s] - base[s] for s in sorted(set(model.index) & set(base.index))])


@dataclass(frozen=True)
class Study:
    """One study. `grid(study, preset, ws)` lists its units; `table(TableInput)` returns its markdown sections
    for tables.md ([] when it has nothing to show); `figure(data, out)` draws it from the CSVs (data = the
    loaded CSVs, see plots/make_figures.load) and returns a matplotlib figure or None; a string
    'module:function' is imported only when drawn, so tinybert does not need matplotlib. Optional hooks:
    `derived_rows(ws, grid, records)` adds results.csv rows computed from finished units (committee curves),
    `after_run(preset, ws, log)` writes what the study needs besides units (overlap.csv, latency)."""
    name: str
    grid: Callable
    table: Callable | None = None
    figure: str | Callable | None = None
    interventions: tuple = ()      # Interventions applied to the pre-trained model, if any (reset_unseen)
    derived_rows: Callable | None = None
    after_run: Callable | None = None
    doc: str = ""

    def rows(self, preset: Preset, ws: Workspace) -> list[GridRow]:
        return self.grid(self, preset, ws)

    def figure_function(self) -> Callable | None:
        if isinstance(self.figure, str):
            module, _, name = self.figure.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.figure


REGISTRY: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add (or replace) a study; the runner, tables and figures pick it up from here."""
    REGISTRY[study.name] = study
    return study


def registered(names=None) -> list[Study]:
    """The registered studies in registration order, or those named (in the order given)."""
    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown study {unknown[0]!r}; expected one of {tuple(REGISTRY)} or 'all'")
    return [REGISTRY[n] for n in names]


def study_names() -> tuple:
    return tuple(REGISTRY)


def build_grid(preset: Preset, ws: Workspace, studies=None) -> list[GridRow]:
    """Every unit of the named studies (default: all registered), each labelled by its study."""
    rows: list[GridRow] = []
    for study in registered(studies):
        rows += study.rows(preset, ws)
    return rows
