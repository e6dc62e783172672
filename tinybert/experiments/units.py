"""Units: one pre-training run or one fine-tuning run, described by a spec dict and cached by its hash.

Where it sits in the flow: the studies (studies.py) describe units; this file runs them with the library
(tinybert.pretrain.pretrain; tinybert.finetune_unit.run_member, eval.py's unit too) and stores them under
`<out>/units/`:

    pretrain-<hash>/   spec.json, metrics.csv, checkpoint.pt while running (resumable; written every
                       CHECKPOINT_EPOCHS epochs), model.pt when done (weights + config + vocab, no optimiser
                       state), done.json (seconds, MLM accuracy, rows)
    ft-<hash>.json     spec, status ('ok' | 'failed'), error, accuracies, curve, overlap, timings
    ft-<hash>.npz      test probabilities/logits (selected and final model) and labels, for the committees
    baseline-<hash>.json/.npz   the bag-of-words baseline (tinybert/baseline.py) on one task sample and seed

A spec holds everything that shapes the result (full model config, corpus description, recipe, seeds, vocab
hash, task sample sizes) and nothing that does not (device, precision, progress settings), so the same unit
is found again by any study, any later run and a grown grid. The hash is the first 16 hex digits of the
SHA-256 of the spec's canonical JSON.

Corpora: every training set of a preset is a subset of one *pool*, the first `pool_size + eval_articles`
articles of the seeded permutation (data_prep/corpus.py, built and cached once). The nested size-N set is the
first N articles of the permutation, exactly the rows `load_or_build_corpus(N)` (and so train.py
--wiki-size N --seq-len L) gives; the held-out rows are the next `eval_articles` after the pool. The overlap
arms are chosen from the first `overlap.pool` articles (tinybert/overlap.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from data_prep.corpus import default_cache_dir, load_or_build_corpus
from data_prep.pretrain_data import load_or_train_vocab
from data_prep.tasks import TaskData, load_task
from data_prep.wikipedia import default_wiki_sources
from tinybert import atomic
from tinybert import overlap as ov
from tinybert.baseline import C_GRID, bag_of_words_baseline
from tinybert.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from tinybert.config import ModelConfig, make_model_config
from tinybert.data_dir import resolve_data_dir
from tinybert.finetune import FinetuneConfig, encode_examples
from tinybert.finetune_unit import MemberSpec, member_seed, run_member, run_members_batched
from tinybert.model import INIT_STD, BertForMaskedLM, count_parameters, init_weights
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, pretrain
from tinybert.runtime import Precision, channels_last_convs, seed_everything
from tinybert.tokenizer import WordPieceTokenizer

from .presets import ModelSpec, Preset, TaskSpec

UNIT_VERSION = 1
# A pre-training unit writes its full checkpoint.pt (model + AdamW state, ~0.8 GB for BERT-6) only after every
# CHECKPOINT_EPOCHS-th epoch and the last (plus pre-training's time-based one, every 10 minutes), not after every
# epoch: with the paper preset's 50 epochs a fifth as many writes (issue 11 counted ~400 GB over the grid with
# one per epoch). An interrupted unit loses at most that many epochs or 10 minutes of work. The weights-only
# model.pt is always written at the end.
CHECKPOINT_EPOCHS = 5


def spec_hash(spec: dict) -> str:
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj) -> None:
    """A unit record: indent 1, numpy values as plain JSON (tinybert/atomic.py writes it)."""
    atomic.write_json_atomic(path, obj, indent=1, default=atomic.json_default)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        if not torch.cuda.is_available():  # `estimate --device cuda` without a GPU: the modelled estimate
            return "cuda (none on this machine)"
        return f"cuda {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type} {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M")


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]


# ----------------------------------------------------------------------------------------------------------
# data: tokenizer, corpus pool, tasks


class Workspace:
    """Everything units share within one run: the tokenizer, the corpus pool, task samples, device."""

    def __init__(self, preset: Preset, out: Path, *, data_dir=None, cache_dir=None, sources=None,
                 device: torch.device = torch.device("cpu"), precision: Precision | None = None,
                 show_progress: bool = False):
        self.preset = preset
        self.out = Path(out)
        self.units = self.out / "units"
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.device = device
        self.precision = precision or Precision("fp32", "default")
        self.show_progress = show_progress
        self.sources = default_wiki_sources(data_dir) if sources is None else [Path(s) for s in sources]
        if preset.vocab == "bert":
            self.vocab_path = resolve_data_dir(data_dir) / "bert_vocab" / "vocab.txt"
            self.vocab_label = "bert-base-uncased"
        elif preset.trained_vocab_size is not None:
            # Trained as train.py trains one (data_prep/pretrain_data.py), on the pool's articles only: the
            # held-out articles after the pool stay unseen. Cached by sources, pool size, seed and size.
            size = preset.trained_vocab_size
            tok, meta = load_or_train_vocab(self.sources, preset.pool_size, preset.corpus_seed, size,
                                            cache_dir or default_cache_dir(), show_progress=show_progress)
            self.vocab_path = Path(meta["vocab"])
            self.vocab_label = f"wordpiece-{size} trained on the {preset.pool_size}-article pool"
        else:
            self.vocab_path = Path(preset.vocab)
            self.vocab_label = str(preset.vocab)
        self.tokenizer = WordPieceTokenizer.from_vocab(self.vocab_path)
        self.exclude = ov.special_ids(self.tokenizer)
        self.machine = machine_name(device)
        self._pool = None
        self._tasks: dict = {}
        self._encoded: dict = {}
        self._corpus_rows: dict = {}
        self._corpus_counts: dict = {}
        self._checkpoint: tuple = ("", None)  # the last loaded pre-trained model.pt (units come grouped by it)
        self.lr_extensions = load_lr_extensions(self.out)

    def extra_lrs(self, key: tuple) -> tuple:
        """Fine-tuning lrs added to the preset's grid for the arm with extension key `key` (lr_select.py)."""
        return tuple(lr for lr in self.lr_extensions.get(key, ()) if lr not in self.preset.lrs)

    def add_lr_extensions(self, added: list, log=print) -> None:
        """Record [(extension key, lr)] in <out>/lr_extensions.json (atomically) and use them from now on."""
        path = self.out / LR_EXTENSIONS
        entries = read_json(path) or []
        for key, lr in added:
            entries.append({"arm": list(key), "lr": lr, "date": now()})
            log(f"lr grid extended: {key} gets lr {lr:g} (its chosen lr was at the end of its grid)")
        write_json_atomic(path, entries)
        self.lr_extensions = load_lr_extensions(self.out)

    # -- identities used in specs -------------------------------------------------------------------------

    @property
    def source_id(self) -> list:
        return [[p.name, p.stat().st_size] for p in self.sources]

    @property
    def max_position(self) -> int:
        return max(self.preset.seq_len, self.preset.finetune["max_length"])

    def model_config(self, spec: ModelSpec) -> ModelConfig:
        return make_model_config(spec.preset, **spec.config_fields(), vocab_size=self.tokenizer.vocab_size,
                                 pad_id=self.tokenizer.pad_id, max_position=self.max_position)

    def corpus_spec(self, kind: str, articles: int) -> dict:
        """'nested' (the seeded selection of `articles`) or an overlap arm 'high' | 'random' | 'low'."""
        p = self.preset
        spec = {"kind": kind, "articles": articles, "seed": p.corpus_seed, "seq_len": p.seq_len, "layout": "paper",
                "sources": self.source_id, "vocab": self.tokenizer.vocab_hash}
        if kind != "nested":
            o = p.overlap
            spec["selection"] = {"task": asdict(self.reference_task()), "max_length": p.finetune["max_length"],
                                 "pool": o.pool, "top_k": o.top_k, "min_tokens": o.min_tokens}
        return spec

    def reference_task(self) -> TaskSpec:
        """The task sample whose token frequencies define the overlap arms (training rows only)."""
        o = self.preset.overlap
        base = self.preset.task(o.task)
        return TaskSpec(base.name, o.reference_per_label, 1, None, base.setting, base.labels)

    # -- corpus ---------------------------------------------------------------------------------------------

    def pool(self):
        """(rows, permutation, sorted chosen article indices): the pool array and how to find articles in it."""
        if self._pool is None:
            p = self.preset
            n_total = p.pool_size + p.eval_articles
            rows, meta = load_or_build_corpus(self.tokenizer, n_total, p.corpus_seed, "paper", p.seq_len,
                                              sources=self.sources, cache_dir=self.cache_dir,
                                              show_progress=self.show_progress)
            kept = int(meta["counts"]["kept"])
            # The same permutation data_prep.corpus.select_articles draws; its first n_total are the pool.
            perm = np.random.default_rng(p.corpus_seed).permutation(kept)
            chosen = np.sort(perm[:n_total])
            if len(chosen) != len(rows):
                raise RuntimeError(f"corpus pool has {len(rows)} rows but the selection gives {len(chosen)}")
            self._pool = (np.asarray(rows), perm, chosen)
        return self._pool

    def _rows_of(self, articles: np.ndarray) -> np.ndarray:
        rows, _, chosen = self.pool()
        return rows[np.searchsorted(chosen, np.sort(articles))]

    def eval_rows(self) -> np.ndarray:
        p = self.preset
        _, perm, _ = self.pool()
        return self._rows_of(perm[p.pool_size:p.pool_size + p.eval_articles])

    def corpus_rows(self, spec: dict) -> np.ndarray:
        key = spec_hash(spec)
        if key not in self._corpus_rows:
            _, perm, _ = self.pool()
            if spec["kind"] == "nested":
                rows = self._rows_of(perm[:spec["articles"]])
            else:
                rows = self._overlap_arm(spec)
            self._corpus_rows[key] = np.ascontiguousarray(rows)
        return self._corpus_rows[key]

    def _overlap_arm(self, spec: dict) -> np.ndarray:
        sel = spec["selection"]
        _, perm, _ = self.pool()
        candidates = self._rows_of(perm[:sel["pool"]])
        ref = TaskSpec(**sel["task"])
        train, val, _ = self.encoded(ref, self.preset.corpus_seed, sel["max_length"])
        counts = ov.token_counts(list(train.ids) + list(val.ids), self.tokenizer.vocab_size, self.exclude)
        frequent = ov.frequent_types(counts, sel["top_k"])
        scores, n_content = ov.article_scores(candidates, frequent, self.exclude)
        idx = ov.select_by_overlap(scores, n_content, spec["articles"], spec["kind"], sel["min_tokens"],
                                   seed=spec["seed"])
        return candidates[idx]

    def corpus_counts(self, spec: dict) -> np.ndarray:
        key = spec_hash(spec)
        if key not in self._corpus_counts:
            self._corpus_counts[key] = ov.token_counts(self.corpus_rows(spec), self.tokenizer.vocab_size,
                                                       self.exclude)
        return self._corpus_counts[key]

    def checkpoint(self, pretrain: dict) -> dict:
        """The finished pre-training unit's model.pt, kept in memory for the next unit that starts from it
        (loading it, vocabulary included, costs a noticeable part of a small fine-tuning unit)."""
        h = spec_hash(pretrain)
        if self._checkpoint[0] != h:
            self._checkpoint = ("", None)
            self._checkpoint = (h, load_checkpoint(pretrain_dir(self, pretrain) / "model.pt", kind="mlm"))
        return self._checkpoint[1]

    def remember_checkpoint(self, pretrain: dict, ckpt: dict) -> None:
        self._checkpoint = (spec_hash(pretrain), ckpt)

    # -- tasks ------------------------------------------------------------------------------------------------

    def task(self, spec: TaskSpec, seed: int) -> TaskData:
        key = (spec, seed)
        if key not in self._tasks:
            task = load_task(spec.name, self.data_dir, setting=spec.setting, train_per_label=spec.train_per_label,
                             test_per_label=spec.test_per_label, val_per_label=spec.val_per_label, seed=seed)
            if spec.labels is not None and spec.labels < task.num_labels:
                keep = spec.labels
                task = TaskData(task.name, f"{task.setting}-{keep}labels", task.label_names[:keep],
                                [e for e in task.train if e.label < keep], [e for e in task.val if e.label < keep],
                                [e for e in task.test if e.label < keep],
                                task.notes + [f"kept the first {keep} of {task.num_labels} labels"], task.sources)
            self._tasks[key] = task
        return self._tasks[key]

    def encoded(self, spec: TaskSpec, seed: int, max_length: int):
        key = (spec, seed, max_length)
        if key not in self._encoded:
            task = self.task(spec, seed)
            self._encoded[key] = tuple(encode_examples(self.tokenizer, split, max_length)
                                       for split in (task.train, task.val, task.test))
        return self._encoded[key]

    def task_overlap(self, task: TaskSpec, seed: int, corpus: dict | None) -> dict:
        """Overlap of one task sample (train+val+test, as the model sees it) with a corpus (None: nothing seen)."""
        enc = self.encoded(task, seed, self.preset.finetune["max_length"])
        ids = [x for split in enc for x in split.ids]
        task_counts = ov.token_counts(ids, self.tokenizer.vocab_size, self.exclude)
        corpus_counts = (np.zeros_like(task_counts) if corpus is None else self.corpus_counts(corpus))
        return ov.overlap_from_counts(task_counts, corpus_counts)


# ----------------------------------------------------------------------------------------------------------
# specs


LR_EXTENSIONS = "lr_extensions.json"


def load_lr_extensions(out: Path) -> dict:
    """{extension key (tuple): sorted lrs} from <out>/lr_extensions.json (lr_select.py; {} when absent)."""
    entries = read_json(Path(out) / LR_EXTENSIONS) or []
    table: dict = {}
    for i, e in enumerate(entries):
        try:
            key, lr = tuple(e["arm"]), float(e["lr"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{Path(out) / LR_EXTENSIONS}: entry {i}: expected {{'arm': [...], 'lr': number}}, "
                             f"got {e!r}") from exc
        table.setdefault(key, set()).add(lr)
    return {k: tuple(sorted(v)) for k, v in table.items()}


def pretrain_spec(ws: Workspace, model: ModelSpec, corpus: dict, seed: int) -> dict:
    """The preset's pre-training recipe with the model's own changes (ModelSpec.pretrain) on top."""
    return {"version": UNIT_VERSION, "kind": "pretrain", "model": ws.model_config(model).to_dict(),
            "corpus": corpus, "train": {**ws.preset.pretrain, **dict(model.pretrain)}, "seed": seed}


def finetune_spec(ws: Workspace, model: ModelSpec, pretrain: dict | None, task: TaskSpec, seed: int,
                  member: int = 0, reset_unseen: bool = False, reinit_blocks: bool = False,
                  lr: float | None = None) -> dict:
    """`lr`: the fine-tuning lr of this unit (None: the recipe's); it replaces finetune['lr'], so a unit at the
    recipe's lr keeps the hash it had before the lr grid existed."""
    recipe = dict(ws.preset.finetune)
    if lr is not None:
        recipe["lr"] = lr
    spec = {"version": UNIT_VERSION, "kind": "finetune", "model": ws.model_config(model).to_dict(),
            "pretrain": None if pretrain is None else spec_hash(pretrain), "task": asdict(task),
            "finetune": recipe, "seed": seed, "init_seed": member_seed(seed, member),
            "vocab": ws.tokenizer.vocab_hash}
    # the interventions of the reset_unseen study; keys only when set, so every other unit keeps its hash
    for key, on in (("reset_unseen", reset_unseen), ("reinit_blocks", reinit_blocks)):
        if on:
            if pretrain is None:
                raise ValueError(f"{key} needs a pre-trained model")
            spec[key] = True
    return spec


def reinit_blocks(model, seed: int) -> None:
    """Give the transformer blocks fresh initial weights (BERT init, seeded), keeping the embeddings (and a
    conv front end) as pre-trained: where does a harmful pre-training live, in the blocks or the embeddings?"""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for block in model.bert.blocks:
            block.apply(init_weights)


def reset_unseen_rows(model, corpus_counts: np.ndarray, exclude, seed: int) -> int:
    """Draw the word-embedding rows of the tokens absent from the pre-training rows (`corpus_counts` == 0,
    special tokens excluded) afresh from the initial N(0, INIT_STD), seeded; return how many rows were reset."""
    unseen = corpus_counts == 0
    unseen[list(exclude)] = False
    idx = torch.from_numpy(np.flatnonzero(unseen))
    weight = model.bert.embeddings.word_embeddings.weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight[idx] = (torch.randn(len(idx), weight.shape[1], generator=g) * INIT_STD).to(weight)
    return len(idx)


def pretrain_config(spec: dict, rows: int) -> PretrainConfig:
    fields = dict(spec["train"])
    frac = fields.pop("warmup_frac", None)
    cfg = PretrainConfig(**fields, seed=spec["seed"], log_every=25)
    if frac:
        cfg.warmup_steps = int(round(frac * cfg.epochs * (rows // cfg.batch_size)))
    return cfg


# ----------------------------------------------------------------------------------------------------------
# running


def pretrain_dir(ws: Workspace, spec: dict) -> Path:
    return ws.units / f"pretrain-{spec_hash(spec)}"


def pretrain_done(ws: Workspace, spec: dict) -> dict | None:
    d = pretrain_dir(ws, spec)
    done = read_json(d / "done.json")
    return done if done is not None and (d / "model.pt").is_file() else None


def run_pretrain(ws: Workspace, spec: dict, log=print) -> dict:
    """Run (or resume, or reuse) one pre-training unit; return its done.json record. Raises on failure."""
    done = pretrain_done(ws, spec)
    if done is not None:
        return done
    d = pretrain_dir(ws, spec)
    d.mkdir(parents=True, exist_ok=True)
    (d / "failed.json").unlink(missing_ok=True)
    write_json_atomic(d / "spec.json", spec)
    rows = ws.corpus_rows(spec["corpus"])
    eval_rows = ws.eval_rows()
    cfg = pretrain_config(spec, len(rows))
    config = ModelConfig.from_dict(spec["model"])
    seed_everything(spec["seed"])
    model = channels_last_convs(BertForMaskedLM(config).to(ws.device), ws.device)
    resume = (d / "checkpoint.pt").is_file()
    prior = _last_elapsed(d / "metrics.csv") if resume else 0.0
    tok = ws.tokenizer
    start = time.perf_counter()
    final = pretrain(model, MLMData(tok.vocab, tok.mask_id, tok.pad_id, rows, eval_rows), cfg,
                     RunOptions(d, ws.device, ws.precision, resume=resume, show_progress=ws.show_progress,
                                checkpoint_extra={"unit": spec_hash(spec)},
                                checkpoint_epochs=CHECKPOINT_EPOCHS))
    seconds = prior + time.perf_counter() - start
    payload = {"kind": "mlm", "model_config": config.to_dict(), "train_config": asdict(cfg), "vocab": tok.vocab,
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "unit": spec_hash(spec)}
    save_checkpoint(d / "model.pt", payload)
    ws.remember_checkpoint(spec, {"format": CHECKPOINT_FORMAT, **payload})  # its fine-tuning units come next
    (d / "checkpoint.pt").unlink(missing_ok=True)  # optimiser state: only needed to resume
    n_content = int(np.count_nonzero(~np.isin(rows, ws.exclude)))
    done = {"hash": spec_hash(spec), "seconds": seconds, "eval_acc": final.get("eval_acc"),
            "eval_loss": final.get("eval_loss"), "train_loss": final.get("train_loss"), "rows": len(rows),
            "content_tokens": n_content, "params": count_parameters(model), "warmup_steps": cfg.warmup_steps,
            "device": ws.machine, "precision": ws.precision.name, "date": now()}
    write_json_atomic(d / "done.json", done)
    return done


def _last_elapsed(metrics: Path) -> float:
    try:
        lines = metrics.read_text().strip().splitlines()
        header = lines[0].split(",")
        return float(lines[-1].split(",")[header.index("elapsed_s")]) if len(lines) > 1 else 0.0
    except (OSError, ValueError, IndexError):
        return 0.0


def ft_paths(ws: Workspace, spec: dict) -> tuple[Path, Path]:
    h = spec_hash(spec)
    prefix = "baseline" if spec["kind"] == "baseline" else "ft"
    return ws.units / f"{prefix}-{h}.json", ws.units / f"{prefix}-{h}.npz"


def ft_record(ws: Workspace, spec: dict) -> dict | None:
    return read_json(ft_paths(ws, spec)[0])


def record_failure(ws: Workspace, spec: dict, error: str, tb: str = "") -> dict:
    rec = {"hash": spec_hash(spec), "spec": spec, "status": "failed", "error": error, "traceback": tb,
           "device": ws.machine, "date": now()}
    write_json_atomic(ft_paths(ws, spec)[0], rec)
    return rec


def run_finetune(ws: Workspace, spec: dict, pretrain: dict | None, pretrain_info: dict | None) -> dict:
    """Fine-tune one unit and write ft-<hash>.json/.npz. `pretrain` is its pre-training spec (None: scratch).
    Exceptions propagate (the runner records them)."""
    unit = _FinetuneInputs(ws, spec, pretrain)
    member = run_member(unit.ckpt, unit.config, unit.data.num_labels, unit.encoded, unit.cfg, ws.device,
                        ws.precision, init_seed=spec["init_seed"], prepare=unit.prepare)
    return unit.write(member, pretrain_info)


def batch_key(spec: dict) -> str:
    """Fine-tuning units with equal keys can run as one batched model (run_finetune_batched): they differ only in
    their seeds. With the conv front end the seed (the rows and batch order) must be equal too, so that the members'
    batches have equal widths (BatchNorm's training statistics count padding: tinybert/finetune_batched.py)."""
    if spec.get("kind") == "baseline":  # nothing to batch: a key of its own
        return "baseline:" + spec_hash(spec)
    conv = spec["model"].get("conv_layers", 0) > 0
    drop = ("init_seed",) if conv else ("seed", "init_seed")
    return json.dumps({k: v for k, v in spec.items() if k not in drop}, sort_keys=True, default=list)


def run_finetune_batched(ws: Workspace, specs: list[dict], pretrain: dict | None,
                         pretrain_info: dict | None) -> list[dict]:
    """run_finetune for several units of one batch_key at once, as one batched model
    (finetune_unit.run_members_batched); each unit gets the records a separate run writes (its finetune_seconds
    is the shared time). Exceptions propagate (the runner then runs the units one at a time)."""
    if len({batch_key(s) for s in specs}) > 1:
        raise ValueError("run_finetune_batched: the units differ in more than their seeds")
    units = [_FinetuneInputs(ws, spec, pretrain) for spec in specs]
    members = run_members_batched(
        [MemberSpec(u.ckpt, u.config, u.encoded, u.cfg, u.spec["init_seed"], u.prepare) for u in units],
        units[0].data.num_labels, ws.device, ws.precision)
    return [u.write(m, pretrain_info) for u, m in zip(units, members)]


class _FinetuneInputs:
    """One fine-tuning unit's inputs (task sample, encoding, model config, checkpoint, recipe, interventions) and
    the writing of its records."""

    def __init__(self, ws: Workspace, spec: dict, pretrain: dict | None):
        self.ws, self.spec, self.pretrain = ws, spec, pretrain
        self.task = TaskSpec(**spec["task"])
        fcfg = dict(spec["finetune"])
        self.encoded = ws.encoded(self.task, spec["seed"], fcfg["max_length"])
        self.data = ws.task(self.task, spec["seed"])
        self.config = ModelConfig.from_dict(spec["model"])
        self.ckpt = None if pretrain is None else ws.checkpoint(pretrain)
        self.cfg = FinetuneConfig(**fcfg, seed=spec["seed"], log_every=50)
        self.n_reset = 0

    def prepare(self, model):  # the reset_unseen study's interventions, on the freshly built model
        spec, ws = self.spec, self.ws
        if spec.get("reset_unseen"):
            self.n_reset = reset_unseen_rows(model, ws.corpus_counts(self.pretrain["corpus"]), ws.exclude,
                                             spec["init_seed"])
        if spec.get("reinit_blocks"):
            reinit_blocks(model, spec["init_seed"])

    def write(self, member, pretrain_info: dict | None) -> dict:
        """ft-<hash>.npz and ft-<hash>.json from the member's result; returns the JSON record."""
        ws, spec, pretrain, data = self.ws, self.spec, self.pretrain, self.data
        train, val, test = self.encoded
        res = member.result
        overlap = ws.task_overlap(self.task, spec["seed"], None if pretrain is None else pretrain["corpus"])
        json_path, npz_path = ft_paths(ws, spec)
        atomic.write_npz_atomic(npz_path, **{k: (v if k == "labels" else v.astype(np.float32))
                                             for k, v in member.arrays().items()})
        rec = {
            "hash": spec_hash(spec), "spec": spec, "status": "ok", "error": "",
            "accuracy": res["selected_test_acc"], "final_accuracy": res["final_test_acc"],
            "best_val_accuracy": res["best_val_acc"], "selected_epoch": res["selected_epoch"], "lr": self.cfg.lr,
            "selected_last_epoch": res["selected_epoch"] == len(res["curve"]) - 1,
            "selection": res["selection"], "steps": res["steps"], "finetune_seconds": member.seconds,
            "setting": data.setting, "num_labels": data.num_labels,
            "n_train": len(train), "n_val": len(val), "n_test": len(test), "params": member.params,
            "overlap": {k: overlap[k] for k in ("overlap_tokens", "overlap_types", "task_tokens", "task_types")},
            "pretrain": pretrain_info, "reset_rows": self.n_reset, "curve": res["curve"], "notes": data.notes,
            "device": ws.machine, "precision": ws.precision.name, "date": now(),
        }
        write_json_atomic(json_path, rec)
        return rec


BASELINE_MODEL = "bag-of-words"
BASELINE_RECIPE = "tfidf word uni+bigrams (sublinear tf, smooth idf, l2 rows) + l2 softmax regression, C on val"


def baseline_spec(task: TaskSpec, seed: int) -> dict:
    """The bag-of-words baseline (tinybert/baseline.py) on the train / validation / test rows that the
    fine-tuning units of `task` with fine-tuning seed `seed` see (Workspace.task(task, seed), as run_finetune)."""
    return {"version": UNIT_VERSION, "kind": "baseline", "model": BASELINE_MODEL, "recipe": BASELINE_RECIPE,
            "c_grid": list(C_GRID), "task": asdict(task), "seed": seed}


def run_baseline(ws: Workspace, spec: dict) -> dict:
    """Fit the baseline (C chosen on validation) and write baseline-<hash>.json/.npz, fields as run_finetune's
    (accuracy, best_val_accuracy, n_train, ...; no lr, no epochs). Exceptions propagate (the runner records them)."""
    task = TaskSpec(**spec["task"])
    data = ws.task(task, spec["seed"])
    start = time.perf_counter()
    res = bag_of_words_baseline(data.train, data.val, data.test, data.num_labels, spec["c_grid"])
    seconds = time.perf_counter() - start
    json_path, npz_path = ft_paths(ws, spec)
    labels = np.array([ex.label for ex in data.test], dtype=np.int64)
    atomic.write_npz_atomic(npz_path, probs=res.test_probs.astype(np.float32),
                            final_probs=res.test_probs.astype(np.float32), labels=labels)
    rec = {"hash": spec_hash(spec), "spec": spec, "status": "ok", "error": "", "accuracy": res.test_acc,
           "final_accuracy": res.test_acc, "best_val_accuracy": res.val_acc, "selected_epoch": None, "lr": None,
           "selected_last_epoch": None, "c": res.c, "c_grid": res.grid, "features": res.features,
           "finetune_seconds": seconds, "setting": data.setting, "num_labels": data.num_labels,
           "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test), "params": None,
           "overlap": {}, "pretrain": None, "notes": data.notes, "device": ws.machine, "precision": "fp32",
           "date": now()}
    write_json_atomic(json_path, rec)
    return rec


def load_probs(ws: Workspace, spec: dict) -> dict | None:
    path = ft_paths(ws, spec)[1]
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def format_exception(exc: BaseException) -> tuple[str, str]:
    return error_text(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
