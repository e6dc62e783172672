"""Build the small real data sample embedded in the repository, `data_prep/sample/`, from the full data.

    python -m data_prep.make_sample [--data-dir FULL] [--out data_prep/sample]

What it holds (see data_prep/sample/PROVENANCE.md for sources and licences): every dataset the project reads, cut
down to a few MB, in exactly the full data's layout and formats, so that every reader reads it unchanged:
  * `wikipedia/`: 10,500 real articles (10,000 for pre-training + 500 held out: `train.py --wiki-size 10000
    --eval-articles 500` works on it) drawn with a fixed seed from the PatchedDistro WikiExtractor archives, each
    cut to ~1,500 characters where that keeps its first 128 tokens (data_prep/sample_wiki.py), in several
    `.tar.xz` archives;
  * `agnews/`: 1,250 training rows and 1,000 test rows per label (the paper samples 1000/1000);
  * `dbpedia/`: 220 rows per label of the shared 10k pool (the paper samples 100/100);
  * `fewrel/`: 80 instances per relation of both JSON files (the paper asks 630/70: load_task notes the shortfall);
    `pid2name.json` whole;
  * `bert_vocab/vocab.txt`: a copy;
  * `MANIFEST.json`: each generated file's size, sha256 and counts, and the sha256 of every input it came from.

How it fits: tinybert/data_dir.py falls back to this folder when no full data directory exists (with a note on
stderr), so a fresh clone runs the tests, train.py and eval.py. Results on the sample are not the paper's numbers.

Reproducible: fixed seeds, ordered members, fixed tar metadata, single-threaded xz: building twice gives
byte-identical files (tests/test_sample.py checks that on a tiny input). The hand-written PROVENANCE.md in the
output folder is left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep import sample_tasks, sample_wiki
from data_prep.dbpedia import SHARED_FILE as DBPEDIA_FILE
from data_prep.fewrel import FILES as FEWREL_FILES
from data_prep.wikipedia import ReadStats
from data_prep.zhang_csv import find_file
from tinybert.data_dir import SAMPLE_DATA_DIR, candidate_data_dirs
from tinybert.tokenizer import WordPieceTokenizer

SEED = 20250718  # any fixed value; changing it changes every file of the sample
REBUILD_COMMAND = "python -m data_prep.make_sample --data-dir ../shared/data --out data_prep/sample"  # from the root
MAX_FILE_BYTES = 2_000_000  # no generated file may be larger (kept small for git)
COPIED = ("bert_vocab/vocab.txt", "fewrel/pid2name.json")  # copied whole; required
COPIED_IF_PRESENT = ("agnews/classes.txt", "agnews/readme.txt", "dbpedia/classes.txt", "dbpedia/readme.txt",
                     "fewrel/LICENSE.thunlp-FewRel.txt")  # the datasets' own descriptions and licence terms


@dataclass(frozen=True)
class Sizes:
    """How much of each dataset the sample holds (the defaults are the committed sample's)."""

    wiki_articles: int = 10_500
    articles_per_member: int = 350
    articles_per_archive: int = 2_100
    agnews_train: int = 1_250  # per label
    agnews_test: int = 1_000  # per label
    dbpedia: int = 220  # per label
    fewrel: int = 80  # per relation, in each of the two JSON files


def default_full_data_dir() -> Path:
    """The first existing data directory of tinybert/data_dir.py, never the sample itself (a sample of the
    sample would silently shrink it)."""
    for path in candidate_data_dirs():
        if path.is_dir() and path.resolve() != SAMPLE_DATA_DIR.resolve():
            return path
    raise FileNotFoundError("no full data directory found (looked at "
                            + ", ".join(map(str, candidate_data_dirs())) + "); pass --data-dir FULL")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_wikipedia(data_dir: Path, out: Path, sizes: Sizes, seed: int, log) -> tuple[dict, list[Path]]:
    """The Wikipedia archives of the sample; returns (manifest facts, input files)."""
    stats = ReadStats()
    sources, articles = sample_wiki.read_source_articles(data_dir / "wikipedia", stats)
    log(f"wikipedia: {stats.summary()} from {len(sources)} archives")
    tokenizer = WordPieceTokenizer.from_vocab(data_dir / "bert_vocab" / "vocab.txt")
    chosen = sample_wiki.sample_articles(articles, sizes.wiki_articles, seed, tokenizer)
    paths = sample_wiki.write_archives(chosen, out / "wikipedia", sizes.articles_per_member,
                                       sizes.articles_per_archive)
    sample_wiki.check_read_back(paths, chosen)
    n_cut = sum(len(a.text) < a.full_chars for a in chosen)
    log(f"wikipedia: {len(chosen):,} articles into {len(paths)} archives, {n_cut:,} cut")
    facts = {"articles": len(chosen), "archives": len(paths), "articles_cut": n_cut,
             "chars_kept": sum(len(a.text) for a in chosen), "chars_full": sum(a.full_chars for a in chosen),
             "source_non_empty_articles": stats.kept, "cut_chars": sample_wiki.CUT_CHARS,
             "first_tokens_kept": sample_wiki.SEQ_LEN}
    return facts, sources


def build_tasks(data_dir: Path, out: Path, sizes: Sizes, seed: int) -> tuple[dict, list[Path]]:
    """The AG News, DBpedia and FewRel files of the sample; returns (manifest facts, input files)."""
    facts, inputs = {}, []
    ag = data_dir / "agnews"
    jobs = [(find_file([ag], "train.csv", "train_subset_20k.csv"), "agnews", sizes.agnews_train, "csv"),
            (ag / "test.csv", "agnews", sizes.agnews_test, "csv"),
            (data_dir / "dbpedia" / DBPEDIA_FILE, "dbpedia", sizes.dbpedia, "csv"),
            (find_file([data_dir / "fewrel"], *FEWREL_FILES["train64"]), "fewrel", sizes.fewrel, "json"),
            (data_dir / "fewrel" / FEWREL_FILES["val16"][0], "fewrel", sizes.fewrel, "json")]
    for src, folder, n, kind in jobs:
        if src is None or not src.is_file():
            raise FileNotFoundError(f"{src or data_dir / folder}: missing; the sample is built from the full "
                                    f"data's layout (see the folder's readers in data_prep/)")
        dest = out / folder / src.name
        build = sample_tasks.sample_csv if kind == "csv" else sample_tasks.sample_fewrel
        facts[f"{folder}/{src.name}"] = build(src, dest, n, seed)
        inputs.append(src)
    return facts, inputs


def copy_files(data_dir: Path, out: Path) -> list[Path]:
    """Copy the small files that go into the sample whole; returns the inputs copied."""
    copied = []
    for rel in COPIED + COPIED_IF_PRESENT:
        src = data_dir / rel
        if not src.is_file():
            if rel in COPIED:
                raise FileNotFoundError(f"{src}: missing; it is copied into the sample whole")
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(src.read_bytes())  # bytes only: no mtime or mode carried over
        copied.append(src)
    return copied


def generated_files(out: Path) -> list[Path]:
    """Every file the builder owns in `out` (all but the hand-written PROVENANCE.md), sorted."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != "PROVENANCE.md")


def write_manifest(out: Path, data_dir: Path, inputs: list[Path], facts: dict, sizes: Sizes, seed: int) -> Path:
    """MANIFEST.json: the command's settings, every input's sha256 and every output's size, sha256 and counts."""
    files = {}
    for path in generated_files(out):
        rel = path.relative_to(out).as_posix()
        if rel != "MANIFEST.json":
            files[rel] = {"bytes": path.stat().st_size, "sha256": sha256(path), **facts.get(rel, {})}
    manifest = {
        "command": REBUILD_COMMAND,
        "seed": seed,
        "sizes": asdict(sizes),
        "wikipedia": facts["wikipedia"],
        # relative paths only, so that the file does not depend on where the full data was mounted
        "inputs": {p.relative_to(data_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                   for p in sorted(inputs)},
        "files": files,
    }
    path = out / "MANIFEST.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def check_sizes(out: Path) -> None:
    too_big = [(p, p.stat().st_size) for p in generated_files(out) if p.stat().st_size > MAX_FILE_BYTES]
    if too_big:
        raise ValueError("sample files over the " + f"{MAX_FILE_BYTES:,}-byte limit: "
                         + ", ".join(f"{p} ({n:,} bytes)" for p, n in too_big)
                         + "; use smaller Sizes (e.g. articles_per_archive)")


def build_sample(data_dir: Path, out: Path, sizes: Sizes = Sizes(), seed: int = SEED, log=print) -> Path:
    """Build the whole sample from `data_dir` into `out`; returns the manifest's path."""
    data_dir, out = Path(data_dir), Path(out)
    if out.resolve() == data_dir.resolve():
        raise ValueError(f"--out {out} is the data directory itself; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    wiki_facts, wiki_inputs = build_wikipedia(data_dir, out, sizes, seed, log)
    task_facts, task_inputs = build_tasks(data_dir, out, sizes, seed)
    copied = copy_files(data_dir, out)
    manifest = write_manifest(out, data_dir, wiki_inputs + task_inputs + copied,
                              {"wikipedia": wiki_facts, **task_facts}, sizes, seed)
    check_sizes(out)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="the full data (default: the first of $TINYBERT_DATA, ../shared/data, ./data)")
    p.add_argument("--out", default=str(SAMPLE_DATA_DIR), help="output folder (default: %(default)s)")
    a = p.parse_args(argv)
    start = time.perf_counter()
    try:
        data_dir = Path(a.data_dir) if a.data_dir else default_full_data_dir()
        manifest = build_sample(data_dir, Path(a.out))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = json.loads(manifest.read_text())["files"]
    total = sum(f["bytes"] for f in files.values())
    print(f"wrote {len(files)} files, {total:,} bytes, to {manifest.parent} in {time.perf_counter() - start:.0f} s; "
          f"see {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
