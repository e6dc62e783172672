"""The fine-tuning parts of the embedded sample (data_prep/make_sample.py): per-label subsets of the task files.

Where it sits: the full AG News / DBpedia CSVs and FewRel JSONs -> **data_prep/sample_tasks.py** (seeded per-label
subsets, same file names and formats) -> `data_prep/sample/{agnews,dbpedia,fewrel}/`, read by the unchanged
readers (data_prep/agnews.py, dbpedia.py, fewrel.py).

Rules shared by every file:
  * each label's rows (a FewRel relation's instances) are a `random.Random` sample seeded from the string
    "seed/file/label" (stable across Python versions, and one label's size never shifts another's sample);
  * the chosen rows keep their order in the source file;
  * CSV rows that are quirks of the full files are always kept, so that the readers' skip and dedupe paths run on
    the sample too: rows with an Excel-damaged `#NAME?` field and every copy of an exactly repeated row;
  * the output is written in the source's own serialization (checked: re-serializing the whole source must give
    back its exact bytes, otherwise this is an error rather than a silently different format).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from pathlib import Path

EXCEL_DAMAGE = "#NAME?"


def _rng(seed: int, *parts) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def pick(rng: random.Random, pool: list[int], forced: list[int], n: int, where: str) -> list[int]:
    """`forced` plus a random sample of the rest of `pool`, `n` indices in all, sorted."""
    if len(pool) < n:
        raise ValueError(f"{where}: {len(pool)} rows, fewer than the {n} the sample asks for")
    if len(forced) > n:
        raise ValueError(f"{where}: {len(forced)} rows must be kept (quirks), more than the {n} asked")
    kept = set(forced)
    rest = [i for i in pool if i not in kept]
    return sorted(forced + rng.sample(rest, n - len(forced)))


# ---------------------------------------------------------------------------------------------------------------
# Zhang-format CSV (AG News, DBpedia)


def _csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


def read_csv_rows(path: Path) -> list[list[str]]:
    """Every row of a fully quoted, LF-terminated CSV; an error if the file is written any other way."""
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if _csv_text(rows) != text:
        raise ValueError(f"{path}: not written as every field quoted with LF line endings (Python csv.QUOTE_ALL); "
                         f"the sample would not keep its format")
    return rows


def quirk_rows(rows: list[list[str]]) -> set[int]:
    """Indices of rows with a `#NAME?` field and of every copy of a row that occurs more than once."""
    counts = Counter(tuple(r) for r in rows)
    return {i for i, r in enumerate(rows) if EXCEL_DAMAGE in r or counts[tuple(r)] > 1}


def sample_csv(src: Path, dest: Path, per_label: int, seed: int) -> dict:
    """Write `per_label` rows of each class (first field) of `src` to `dest`; return the manifest facts."""
    rows = read_csv_rows(src)
    quirks = quirk_rows(rows)
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row[0], []).append(i)
    chosen = []
    for label in sorted(by_label, key=lambda x: (len(x), x)):  # '1' < '2' < ... < '10'
        pool = by_label[label]
        forced = [i for i in pool if i in quirks]
        chosen += pick(_rng(seed, src.name, label), pool, forced, per_label, f"{src} class {label}")
    chosen.sort()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(_csv_text([rows[i] for i in chosen]), encoding="utf-8")
    return {"rows": len(chosen), "per_label": per_label, "labels": len(by_label),
            "quirk_rows_kept": sum(i in quirks for i in chosen)}


# ---------------------------------------------------------------------------------------------------------------
# FewRel JSON


def _json_style(text: str, data) -> dict:
    """The json.dumps arguments that reproduce `text` exactly (the shared files differ in ensure_ascii)."""
    for style in ({"ensure_ascii": True}, {"ensure_ascii": False}):
        if json.dumps(data, **style) == text:
            return style
    raise ValueError("not written by json.dumps with its default separators; the sample would not keep its format")


def sample_fewrel(src: Path, dest: Path, per_relation: int, seed: int) -> dict:
    """Write `per_relation` instances of every relation of `src` to `dest`, relations in file order."""
    text = src.read_text(encoding="utf-8")
    data = json.loads(text)
    try:
        style = _json_style(text, data)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None
    out = {}
    for pid, instances in data.items():
        keep = pick(_rng(seed, src.name, pid), list(range(len(instances))), [], per_relation,
                    f"{src} relation {pid}")
        out[pid] = [instances[i] for i in keep]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, **style), encoding="utf-8")
    return {"relations": len(out), "per_relation": per_relation, "instances": per_relation * len(out)}
