"""Wikipedia readers: raw article files in, plain-text `Article`s out.

Where it sits in the flow: raw files -> **data_prep/wikipedia.py** -> data_prep/corpus.py (selection, token
arrays, cache) -> tinybert/data.py batches -> model. Nothing here tokenizes.

Formats, chosen by file name (`iter_articles` dispatches):
  * WikiExtractor output: `<doc id="..." url="..." title="...">` blocks, one article each. The first body line
    repeats the title and is dropped. Read as plain files (`wiki_00`), single compressed files (`wiki_00.bz2`,
    `.xz`, `.gz`), directories of those (walked in sorted order), and tar archives (`.tar`, `.tar.xz`,
    `.tar.gz`, `.tgz`, `.tar.bz2`) streamed member by member without unpacking to disk.
  * JSON lines (`.jsonl`, optionally compressed): one object per line with a `text` field, optional `title`, `id`.
  * Plain text (`.txt`, optionally compressed): one article per line.

Bad input policy (errors are `CorpusReadError`, which the CLIs turn into `error: ...` and exit status 2):
  * missing or unreadable file, corrupt or truncated archive / compressed stream -> error naming the file
    (and the tar member);
  * a source that yields no non-empty article at all -> error (it is almost surely the wrong file);
  * a malformed `<doc>` block (no `</doc>` before the next `<doc>` or the end, header without `id`/`title`),
    an article containing a non-UTF-8 byte, a JSON line that is not JSON, not an object, or lacks a string
    `text` -> that one article is skipped and counted in `ReadStats.skipped_malformed`; the first few are
    logged as warnings naming file, member and line. One bad article in 259k should not stop a run;
  * an article whose body is empty or whitespace -> skipped and counted in `ReadStats.skipped_empty`
    (WikiTasks has 60k of them: lists and stubs with no prose after extraction).
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import re
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tinybert.data_dir import DatasetNotFound, dataset_dir

log = logging.getLogger(__name__)

MAX_LOGGED_PROBLEMS = 5  # per ReadStats: enough to diagnose, not enough to flood the terminal
_EXPECTED = ("WikiExtractor files (<doc id=... title=...> blocks) as files, directories or .tar[.xz|.gz|.bz2] "
             "archives; .jsonl with a 'text' field; or .txt with one article per line")
_COMPRESSED = {".bz2": bz2.open, ".xz": lzma.open, ".gz": gzip.open}
_TAR_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, tarfile.TarError)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape turns a non-UTF-8 byte into


class CorpusReadError(ValueError):
    """A source cannot be read at all (missing, corrupt, empty); the message names the file and what was expected."""


@dataclass
class Article:
    title: str
    text: str  # the body, title line dropped, stripped
    source: str  # "path" or "path:member"
    doc_id: str  # the <doc id>, the JSON `id`, or the line number


@dataclass
class ReadStats:
    """Counts over everything read. Invariant: read == skipped_empty + skipped_malformed + kept."""

    read: int = 0
    skipped_empty: int = 0
    skipped_malformed: int = 0
    kept: int = 0
    kept_per_source: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)  # the first few skip reasons, "file:member:line: why"

    def skip_malformed(self, where: str, why: str) -> None:
        self.read += 1
        self.skipped_malformed += 1
        if len(self.problems) < MAX_LOGGED_PROBLEMS:
            self.problems.append(f"{where}: {why}")
            log.warning("skipped malformed article at %s: %s", where, why)

    def merge(self, other: "ReadStats") -> None:
        """Add another ReadStats (e.g. from a worker process) into this one."""
        self.read += other.read
        self.skipped_empty += other.skipped_empty
        self.skipped_malformed += other.skipped_malformed
        self.kept += other.kept
        for src, n in other.kept_per_source.items():
            self.kept_per_source[src] = self.kept_per_source.get(src, 0) + n
        self.problems.extend(other.problems[: max(0, MAX_LOGGED_PROBLEMS - len(self.problems))])

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"read {self.read:,} articles: kept {self.kept:,}, skipped {self.skipped_empty:,} empty and "
                f"{self.skipped_malformed:,} malformed")


# ---------------------------------------------------------------------------------------------------------------
# public entry points


def iter_articles(paths: Iterable[str | os.PathLike] | str | os.PathLike,
                  stats: ReadStats | None = None) -> Iterator[Article]:
    """Yield the non-empty articles of each path in order; count everything into `stats` (see module docstring)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        path = Path(path)
        kept_before, read_before = stats.kept, stats.read
        yield from _iter_path(path, stats)
        kept = stats.kept - kept_before
        stats.kept_per_source[str(path)] = stats.kept_per_source.get(str(path), 0) + kept
        if kept == 0:
            raise CorpusReadError(
                f"{path}: no non-empty article found ({stats.read - read_before} read); expected {_EXPECTED}")


def default_wiki_sources(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The real corpus, sorted by name: the WikiExtractor tarballs `<data dir>/wikipedia/*.tar.xz` and JSON-lines
    exports `*.jsonl` (what `python -m data_prep.download wikipedia` writes)."""
    expected = ("the WikiExtractor tarballs wikipedia/*.tar.xz (see wikipedia/PROVENANCE.md) or JSON-lines "
                "wikipedia/*.jsonl with a 'text' field")
    folder = dataset_dir("wikipedia", data_dir, expected=expected)
    sources = sorted([*folder.glob("*.tar.xz"), *folder.glob("*.jsonl")])
    if not sources:
        raise DatasetNotFound(f"no *.tar.xz or *.jsonl in {folder}. Expected there: {expected}.")
    return sources


# ---------------------------------------------------------------------------------------------------------------
# dispatch on file type


def _iter_path(path: Path, stats: ReadStats) -> Iterator[Article]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        for file in files:
            yield from _iter_path(file, stats)
        return
    if not path.is_file():
        raise CorpusReadError(f"{path}: no such file; expected {_EXPECTED}")
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        yield from _iter_tar(path, stats)
        return
    try:
        opener = _COMPRESSED.get(path.suffix.lower(), open)
        with opener(path, "rb") as f:
            data = f.read()
    except _READ_ERRORS as e:
        raise CorpusReadError(f"{path}: cannot read ({type(e).__name__}: {e}); expected {_EXPECTED}") from e
    yield from _parse_bytes(data, _inner_name(name), str(path), stats)


def _inner_name(name: str) -> str:
    """`foo.jsonl.gz` -> `foo.jsonl`: the name that tells the format inside a compressed file."""
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _iter_tar(path: Path, stats: ReadStats) -> Iterator[Article]:
    """Stream a tar archive ("r|*": no seeking, no unpacking); each regular member is parsed by its name."""
    member_name = None
    try:
        tar = tarfile.open(path, "r|*")
    except _READ_ERRORS as e:
        raise CorpusReadError(f"{path}: not a readable tar archive ({type(e).__name__}: {e}); "
                              f"expected {_EXPECTED}") from e
    with tar:
        while True:
            try:  # only the reading is guarded: errors from parsing/consumers must keep their own message
                member = tar.next()
                if member is None:
                    break
                member_name = member.name
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
            except _READ_ERRORS as e:
                where = f"{path} (after member {member_name})" if member_name else str(path)
                raise CorpusReadError(f"{where}: corrupt or truncated archive ({type(e).__name__}: {e})") from e
            yield from _parse_bytes(data, _inner_name(member.name.lower()), f"{path}:{member.name}", stats)


def _parse_bytes(data: bytes, name: str, where: str, stats: ReadStats) -> Iterator[Article]:
    if name.endswith(".jsonl"):
        return _parse_jsonl(data, where, stats)
    if name.endswith(".txt"):
        return _parse_txt(data, where, stats)
    return _parse_wikiextractor(data, where, stats)


# ---------------------------------------------------------------------------------------------------------------
# the three formats


def _parse_wikiextractor(data: bytes, where: str, stats: ReadStats) -> Iterator[Article]:
    try:
        text, bad_bytes = data.decode("utf-8"), False
    except UnicodeDecodeError:
        # Decode anyway so the good articles survive; the bad bytes become lone surrogates, which valid UTF-8 can
        # never produce, so the articles that hold them can be found and skipped one by one.
        text, bad_bytes = data.decode("utf-8", "surrogateescape"), True

    def line_of(pos: int) -> str:  # only called on the (rare) problem path
        return f"{where}:{text.count(chr(10), 0, pos) + 1}"

    n_docs = 0
    start = 0 if text.startswith("<doc") else _find_line_start(text, "<doc", 0)
    while start >= 0:
        n_docs += 1
        eol = text.find("\n", start)
        eol = len(text) if eol < 0 else eol
        close = text.find("\n</doc>", eol) if eol < len(text) else -1
        following = _find_line_start(text, "<doc", eol)
        if close < 0 or 0 <= following < close:
            stats.skip_malformed(line_of(start), "<doc> block not closed by </doc> before the next <doc> or the end")
            start = following
            continue
        attrs = dict(_ATTR.findall(text, start, eol))
        if "id" not in attrs or "title" not in attrs or not text[start:eol].rstrip().endswith(">"):
            stats.skip_malformed(line_of(start), f'bad <doc> header {text[start:eol][:80]!r}; expected '
                                                 f'<doc id="..." url="..." title="...">')
            start = following
            continue
        title_end = text.find("\n", eol + 1)  # the first body line repeats the title: drop it
        body = text[title_end + 1: close].strip() if 0 <= title_end < close else ""
        bad = _SURROGATE.search(text, start, close) if bad_bytes else None
        if bad:
            stats.skip_malformed(line_of(bad.start()), f"byte 0x{ord(bad.group()) - 0xDC00:02x} is not UTF-8 "
                                                       f"(article {attrs['id']}, starting on {line_of(start)})")
        elif not body:
            stats.read += 1
            stats.skipped_empty += 1
        else:
            stats.read += 1
            stats.kept += 1
            yield Article(attrs["title"], body, where, attrs["id"])
        start = following
    if n_docs == 0 and text.strip():
        log.warning("%s: no <doc> blocks found; expected WikiExtractor output", where)


def _find_line_start(text: str, token: str, pos: int) -> int:
    """Index of the next `token` at the start of a line at or after `pos`, or -1."""
    i = text.find("\n" + token, pos)
    return i + 1 if i >= 0 else -1


def _iter_lines(data: bytes, where: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) for each line; a line with a non-UTF-8 byte is a counted skip."""
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            stats.skip_malformed(f"{where}:{lineno}", f"line is not UTF-8 ({e.reason} at byte {e.start})")


def _parse_jsonl(data: bytes, where: str, stats: ReadStats) -> Iterator[Article]:
    for lineno, line in _iter_lines(data, where, stats):
        if not line.strip():
            continue  # blank lines between records are not records
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            stats.skip_malformed(f"{where}:{lineno}", f"not JSON ({e.msg}); expected an object with a 'text' field")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            stats.skip_malformed(f"{where}:{lineno}", "expected a JSON object with a string 'text' field")
            continue
        body = record["text"].strip()
        stats.read += 1
        if not body:
            stats.skipped_empty += 1
            continue
        stats.kept += 1
        yield Article(str(record.get("title", "")), body, where, str(record.get("id", lineno)))


def _parse_txt(data: bytes, where: str, stats: ReadStats) -> Iterator[Article]:
    for lineno, line in _iter_lines(data, where, stats):
        body = line.strip()
        stats.read += 1
        if not body:
            stats.skipped_empty += 1
            continue
        stats.kept += 1
        yield Article("", body, where, str(lineno))
