"""Fetch the official published files of every dataset into the layout our readers expect.

Where it sits in the flow: **data_prep/download.py** -> `<data dir>/{agnews,dbpedia,fewrel,wikipedia,bert_vocab}/`
-> the readers (data_prep/agnews.py, dbpedia.py, fewrel.py, wikipedia.py; the tokenizer reads the vocab).

    python -m data_prep.download agnews dbpedia fewrel bert-vocab [--data-dir DIR] [--force]
    python -m data_prep.download wikipedia --wiki-articles 100000 [--wiki-date 20251229]
    python -m data_prep.download --list              # print the SOURCES table

Every file comes from one table, `SOURCES` (name, URL, sha256, target, post-processing). Files go to `--data-dir`,
else `$TINYBERT_DATA`, else `./data` (created when missing). The project's shared read-only checkout
(`../shared/data`) is never written to, even though the other commands read from it by default.

Downloading a file (`fetch`):
  * it is written to `<target>.part`. A rerun after an interruption sends `Range: bytes=<size of .part>-` and appends
    when the server answers 206 (checking that `Content-Range` starts where the `.part` ends); on a 200 the server
    ignored the range and the download restarts from zero. A 416 whose size equals the `.part` means it is already
    complete (any other 416 restarts from zero).
  * progress: a tqdm bar in bytes, with rate and ETA (`--quiet` turns it off).
  * the sha256 is checked against the table. A mismatch keeps the bytes as `<target>.bad` (nothing is left at the
    target) and is an error naming the file, the expected and the actual hash. A match is moved into place with
    `os.replace` (atomic), so the target is always either absent or complete and verified.
  * sha256 `None` in the table means we do not know it for certain. The first download then records the hash it got
    in `<target>.sha256` (sha256sum format) and prints it; later runs verify against that record. `--force`
    re-downloads and records again.
  * a target that is already there with the right hash is skipped (and said so); one with a different hash is an
    error (delete it or pass `--force`); nothing is overwritten silently.
  * no network: "cannot reach <host> (offline?)"; an HTTP error names the URL and the status. The CLI prints
    `error: ...` and exits with status 2.

Tests and mirrors: `--mirror URL` or `$TINYBERT_DOWNLOAD_MIRROR` replaces the scheme and host of every URL (and
prefixes the mirror's path, if it has one), e.g. `http://127.0.0.1:8000` serves `/fast-ai-nlp/ag_news_csv.tgz`.

Sources and decisions:
  * AG News and DBpedia-14: the original Zhang et al. CSV archives, from the fast.ai S3 mirror (the widely used plain
    HTTPS copies; Zhang's own `dbpedia_csv.tar.gz` sits on Google Drive, which needs a confirmation-token dance).
    The archive is kept (it is what the hash covers) and `train.csv`, `test.csv`, `classes.txt`, `readme.txt` are
    extracted next to it, flat, into `agnews/` and `dbpedia/`. The archives' own sha256 is not known for certain
    (None), but some members have a canonical copy whose hash we do know (agnews/ and dbpedia/PROVENANCE.md); a
    member that differs from it is reported as a warning, not an error: that the archive holds exactly those bytes
    is likely, not certain.
  * FewRel 1.0: the raw files of thunlp/FewRel at a pinned commit, so that the known hashes stay valid.
  * bert-base-uncased `vocab.txt`: from its Hugging Face model repository over plain HTTPS (no HF package).
  * English Wikipedia: the official CirrusSearch "content" dump from dumps.wikimedia.org
    (`enwiki-<date>-cirrussearch-content.json.gz`): Wikimedia's own export of every article (namespace 0, no
    redirects) as gzip-compressed JSON lines whose `text` field is the rendered plain text, which the standard
    library can stream (gzip + json). Alternatives, rejected: the pages-articles XML dumps hold wikitext, which would
    need a wikitext cleaner; the `wikimedia/wikipedia` 20231101.en parquet shards (the paper's source) need pyarrow.
    Differences from the paper's text: a later snapshot, and each article's text is one line (no paragraph breaks);
    only the first 128 tokens of an article are used, so neither matters much. The dumps are weekly and only the
    last few stay online, so the date is looked up in the `current/` listing unless `--wiki-date` pins it.
    The dump is about 40 GB; only a prefix is needed. Its compressed bytes go to
    `wikipedia/enwiki-<date>-cirrussearch-content.json.gz.part` (resumable with Range, like any file) while they
    are decompressed and converted, and the download stops after the first `--wiki-articles` articles, written as
    `wikipedia/enwiki-<date>-cirrussearch-first<N>.jsonl` (`{"id", "title", "text"}` per line, what
    data_prep/wikipedia.py reads; use it with `--source`). The prefix is deleted once the JSON lines are in place.
    There is no fixed hash for a prefix of a dated dump; the sha256 of the JSON lines is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import os
import re
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import ProxyHandler, Request, build_opener

from tqdm import tqdm

from tinybert.data_dir import candidate_data_dirs

MIRROR_ENV = "TINYBERT_DOWNLOAD_MIRROR"
DEFAULT_TIMEOUT = 60.0  # seconds without a byte before a connection or a read gives up
CHUNK = 1 << 20
DEFAULT_WIKI_ARTICLES = 100_000  # covers the paper's largest selection (90k) plus held-out articles
USER_AGENT = "tinybert-download/1.0 (python urllib; research use)"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class DownloadError(RuntimeError):
    """A file could not be fetched or prepared; the message says which, and why."""


class ChecksumError(DownloadError):
    """A download finished but its sha256 is not the expected one (the bytes are kept as `<target>.bad`)."""


@dataclass(frozen=True)
class Source:
    dataset: str  # the CLI name
    name: str  # the file as published
    url: str  # may hold {date} (Wikipedia)
    sha256: str | None  # None: not known for certain; the first download records it in <target>.sha256
    target: str  # relative to the data directory; may hold {date} and {n} (Wikipedia)
    post: str = "none"  # "none" | "extract" (tar members -> the target's folder) | "cirrus-jsonl" (see docstring)
    # "extract": (path in the archive, sha256 of the canonical copy or None); a differing member is a warning
    members: tuple[tuple[str, str | None], ...] = ()
    note: str = ""


_FEWREL = "https://raw.githubusercontent.com/thunlp/FewRel/278a2315d2138810a379cd8d5718914dc56e2582/data/"
CIRRUS_LISTING = "https://dumps.wikimedia.org/other/cirrussearch/current/"

SOURCES: tuple[Source, ...] = (
    Source("agnews", "ag_news_csv.tgz", "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz",
           None,  # not known for certain: the first download records and prints it
           "agnews/ag_news_csv.tgz", "extract",
           members=(("ag_news_csv/train.csv", None),
                    # canonical copies (mhjabreel/CharCnn_Keras, the files torchtext checks), agnews/PROVENANCE.md
                    ("ag_news_csv/test.csv", "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
                    ("ag_news_csv/classes.txt", "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5"),
                    ("ag_news_csv/readme.txt", "779c2e6bbf93dd810d9c7b318006daef7a4bfc34062002461d251dc10fb9f58c")),
           note="Zhang et al. 2015 archive, fast.ai S3 mirror"),
    Source("dbpedia", "dbpedia_csv.tgz", "https://s3.amazonaws.com/fast-ai-nlp/dbpedia_csv.tgz",
           None,  # not known for certain (torchtext's md5 is for Zhang's Google Drive dbpedia_csv.tar.gz)
           "dbpedia/dbpedia_csv.tgz", "extract",
           members=(("dbpedia_csv/train.csv", None), ("dbpedia_csv/test.csv", None),
                    # the official Zhang files, dbpedia/PROVENANCE.md
                    ("dbpedia_csv/classes.txt", "3390a11cf615554211a10dfcc4f807d25bc0293cbb6e62e913c16c2281e7a02c"),
                    ("dbpedia_csv/readme.txt", "b5abe6e8539d6f21ba027450daec0737274b3734264ba133e46cbc9d141bde6e")),
           note="Zhang et al. 2015 archive (Zhang's name: dbpedia_csv.tar.gz), fast.ai S3 mirror"),
    Source("fewrel", "train_wiki.json", _FEWREL + "train_wiki.json",
           None,  # not known for certain: the first download records and prints it
           "fewrel/train_wiki.json", note="thunlp/FewRel @278a2315, 64 relations x 700"),
    Source("fewrel", "val_wiki.json", _FEWREL + "val_wiki.json",
           "76bb44c2485b6faed358a3ce040eadafcc8a8835245cd7e6afc1bef672d4a0bf",  # fewrel/PROVENANCE.md
           "fewrel/val_wiki.json", note="thunlp/FewRel @278a2315, 16 relations x 700"),
    Source("fewrel", "pid2name.json", _FEWREL + "pid2name.json",
           "eeedd25512a8e4c2bc06b78009836d27de81807bcba6ed929debd5cd713c07ea",  # fewrel/PROVENANCE.md
           "fewrel/pid2name.json", note="thunlp/FewRel @278a2315, relation names"),
    Source("bert-vocab", "vocab.txt", "https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt",
           "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",  # bert_vocab/PROVENANCE.md
           "bert_vocab/vocab.txt", note="bert-base-uncased WordPiece vocabulary, 30522 lines"),
    Source("wikipedia", "enwiki-{date}-cirrussearch-content.json.gz",
           "https://dumps.wikimedia.org/other/cirrussearch/{date}/enwiki-{date}-cirrussearch-content.json.gz",
           None,  # a streamed prefix of a weekly dump: no fixed hash; the JSON lines' sha256 is printed
           "wikipedia/enwiki-{date}-cirrussearch-first{n}.jsonl", "cirrus-jsonl",
           note="official CirrusSearch content dump (plain text), first --wiki-articles articles"),
)
DATASETS = tuple(dict.fromkeys(s.dataset for s in SOURCES))


# ---------------------------------------------------------------------------------------------------------------
# HTTP


def apply_mirror(url: str, mirror: str | None) -> str:
    """`url` with its scheme and host replaced by the mirror's (the mirror's path, if any, is prefixed)."""
    if not mirror:
        return url
    m, u = urlsplit(mirror), urlsplit(url)
    if not m.scheme or not m.netloc:
        raise DownloadError(f"mirror {mirror!r} is not a URL like http://host:port")
    return urlunsplit((m.scheme, m.netloc, m.path.rstrip("/") + u.path, u.query, ""))


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _open(url: str, start: int = 0, timeout: float = DEFAULT_TIMEOUT):
    """urlopen with our headers (and `Range: bytes=start-` when start > 0). HTTP errors other than 416 and every
    network error become DownloadError; a 416 HTTPError is returned to the caller to decide."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}  # identity: ranges count the file's bytes
    if start:
        headers["Range"] = f"bytes={start}-"
    host = urlsplit(url).hostname or ""
    opener = build_opener(ProxyHandler({})) if host in _LOOPBACK else build_opener()
    try:
        return opener.open(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416:
            return e
        e.close()
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot reach {_host(url)} (offline?): {reason}") from None


def _content_range(resp) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where absent or `*`."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", (resp.headers.get("Content-Range") or "").strip())
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) else None
    return first, int(m.group(2)) if m.group(2) != "*" else None


def _interrupted(url: str, got: int, part: Path, why) -> DownloadError:
    return DownloadError(f"download of {url} interrupted after {got:,} bytes ({why}); run the same command again "
                         f"to resume from {part}")


def _resumed_response(url: str, part: Path, timeout: float, log: Callable):
    """Open `url` to continue `part`. Returns (response, bytes already valid in part, total size or None).

    206 starting where the part ends: append. 200: the server ignored the range; the part is emptied. 206 starting
    elsewhere: the part is emptied and the request repeated without a range. 416: (resp None) the part is complete
    when the server's size equals it, else it is emptied and the request repeated."""
    have = part.stat().st_size if part.exists() else 0
    for _ in range(2):
        resp = _open(url, have, timeout)
        if isinstance(resp, HTTPError):  # 416 Range Not Satisfiable
            _, total = _content_range(resp)
            resp.close()
            if have and total == have:
                return None, have, total
            log(f"{part.name}: the server says the range {have}- is not satisfiable (size {total}); "
                f"restarting from zero")
        elif resp.status == 206 and have:
            first, total = _content_range(resp)
            if first == have:
                log(f"{part.name}: resuming at {have:,} bytes")
                return resp, have, total
            resp.close()
            log(f"{part.name}: the server answered a different range ({resp.headers.get('Content-Range')}); "
                f"restarting from zero")
        else:
            if have:
                log(f"{part.name}: the server does not support resuming (HTTP {resp.status}); restarting from zero")
            length = resp.headers.get("Content-Length")
            return resp, 0, int(length) if length and length.isdigit() else None
        part.write_bytes(b"")
        have = 0
    raise DownloadError(f"{url}: the server answers range requests inconsistently")


# ---------------------------------------------------------------------------------------------------------------
# files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
          progress: bool = True, log: Callable = print) -> str:
    """Download `url` to `dest` via `dest.part` (resumable), check `sha256` when given, move into place.
    Returns the file's sha256. See the module docstring for the exact rules."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resp, have, total = _resumed_response(url, part, timeout, log)
    h = hashlib.sha256()
    if have:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    if resp is not None:
        got = have
        with resp, open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                     disable=not progress, mininterval=0.5, leave=False) as bar:
            try:
                while block := resp.read(CHUNK):
                    f.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise _interrupted(url, got, part, e) from None
            f.flush()
            os.fsync(f.fileno())
        if total is not None and got != total:
            raise _interrupted(url, got, part, f"expected {total:,} bytes")
    actual = h.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise ChecksumError(f"{dest.name}: sha256 mismatch: expected {sha256}, got {actual} (from {url}). "
                            f"The download is kept as {bad} for inspection; nothing was written to {dest}.")
    os.replace(part, dest)
    return actual


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_record(dest: Path) -> str | None:
    try:
        text = _record_path(dest).read_text().split()
    except FileNotFoundError:
        return None
    return text[0] if text and re.fullmatch(r"[0-9a-f]{64}", text[0]) else None


def ensure_file(src: Source, url: str, dest: Path, *, force: bool = False, timeout: float = DEFAULT_TIMEOUT,
                progress: bool = True, log: Callable = print) -> Path:
    """`dest` present and verified: skip. Otherwise fetch it and verify against the table or the recorded hash."""
    recorded = None if force else _read_record(dest)
    expected = src.sha256 or recorded
    if dest.exists() and not force:
        actual = sha256_file(dest)
        if expected is None:
            log(f"{dest}: already present (sha256 {actual}, no known hash to compare with); skipping")
            return dest
        if actual == expected:
            log(f"{dest}: already present, sha256 OK; skipping")
            return dest
        source = "the SOURCES table" if src.sha256 else str(_record_path(dest))
        raise DownloadError(f"{dest} exists but its sha256 is {actual}, not {expected} (from {source}); delete it "
                            f"or pass --force to download it again")
    if force:
        dest.with_name(dest.name + ".part").unlink(missing_ok=True)
    log(f"{dest.name}: downloading {url}")
    try:
        actual = fetch(url, dest, expected, timeout=timeout, progress=progress, log=log)
    except ChecksumError as e:
        if src.sha256 is None:  # the expected hash came from an earlier download, not from the table
            raise ChecksumError(f"{e} The expected hash was recorded by an earlier download in "
                                f"{_record_path(dest)}; pass --force to accept the new file.") from None
        raise
    if src.sha256:
        log(f"{dest}: done, sha256 OK")
    elif recorded:
        log(f"{dest}: done, sha256 matches the recorded {_record_path(dest).name}")
    else:
        _record_path(dest).write_text(f"{actual}  {dest.name}\n")
        log(f"{dest}: done, sha256 {actual} (not in the SOURCES table; recorded in {_record_path(dest).name}, "
            f"later runs verify against it)")
    return dest


def extract_members(archive: Path, members, out_dir: Path, *, force: bool = False, log: Callable = print
                    ) -> list[Path]:
    """Write the listed archive members into `out_dir` (flat, by base name) via `.part` + rename. A member is found
    by its base name (so `./ag_news_csv/train.csv` also matches), which must be unique in the archive. A member
    whose canonical hash is known and differs: a warning (see the module docstring)."""
    outs = [out_dir / Path(path).name for path, _ in members]
    if not force and all(p.is_file() for p in outs):
        log(f"{out_dir}: {', '.join(p.name for p in outs)} already extracted; skipping")
        return outs
    wanted = {Path(path).name: (path, sha) for path, sha in members}
    done = set()
    try:
        with tarfile.open(archive, "r|*") as tar:  # one streaming pass, however large the archive
            for member in tar:
                base = Path(member.name).name
                if not member.isfile() or base not in wanted:
                    continue
                path, canonical = wanted[base]
                if base in done:
                    raise DownloadError(f"{archive}: more than one member named {base} (expected {path}); is it "
                                        f"the right archive? Delete it or pass --force")
                out = out_dir / base
                tmp = out.with_name(out.name + ".part")
                h = hashlib.sha256()
                with tar.extractfile(member) as f_in, open(tmp, "wb") as f_out:
                    for block in iter(lambda: f_in.read(CHUNK), b""):
                        f_out.write(block)
                        h.update(block)
                os.replace(tmp, out)
                done.add(base)
                if canonical and h.hexdigest() != canonical:
                    log(f"warning: {base} from {archive.name} has sha256 {h.hexdigest()}, but the canonical copy "
                        f"(PROVENANCE.md) has {canonical}; check the archive's source")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DownloadError(f"{archive}: cannot read the archive ({type(e).__name__}: {e}); delete it or pass "
                            f"--force to download it again") from None
    missing = [path for base, (path, _) in wanted.items() if base not in done]
    if missing:
        raise DownloadError(f"{archive}: no member {', '.join(missing)}; is it the right archive? Delete it or pass "
                            f"--force")
    log(f"{out_dir}: extracted {', '.join(p.name for p in outs)}")
    return outs


# ---------------------------------------------------------------------------------------------------------------
# Wikipedia: the first N articles of a CirrusSearch content dump, streamed


def latest_cirrus_date(listing_url: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The newest YYYYMMDD of `enwiki-*-cirrussearch-content.json.gz` in the dump directory listing."""
    resp = _open(listing_url, 0, timeout)
    if isinstance(resp, HTTPError):
        resp.close()
        raise DownloadError(f"{listing_url}: HTTP {resp.code} {resp.reason}")
    try:
        with resp:
            page = resp.read(4 << 20).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"cannot read {listing_url} ({e})") from None
    dates = re.findall(r"enwiki-(\d{8})-cirrussearch-content\.json\.gz", page)
    if not dates:
        raise DownloadError(f"no enwiki-<date>-cirrussearch-content.json.gz listed at {listing_url}; pass "
                            f"--wiki-date YYYYMMDD (a directory of https://dumps.wikimedia.org/other/cirrussearch/)")
    return max(dates)


def _prefix_chunks(url: str, part: Path, timeout: float, log: Callable, counter: list) -> Iterator[bytes]:
    """The dump's bytes from the start: first those already in `part`, then from the server (appended to `part`).

    The server is only contacted when the local bytes run out. A 206 continues where `part` ends; a 200 (no range
    support) is read from zero, and its first bytes are compared with `part` instead of written again."""
    have = part.stat().st_size if part.exists() else 0
    if have:
        log(f"{part.name}: reusing {have:,} bytes downloaded earlier")
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                yield block
    resp = _open(url, have, timeout)
    if isinstance(resp, HTTPError):  # 416: the part already holds the whole file
        resp.close()
        return
    skip, length = 0, resp.headers.get("Content-Length")
    end = int(length) if length and length.isdigit() else None  # where the file ends, when the server says
    if have and resp.status == 206:
        first, total = _content_range(resp)
        end = total if total is not None else (None if end is None else have + end)
        if first != have:
            resp.close()
            raise DownloadError(f"{url}: the server answered range {resp.headers.get('Content-Range')} to a request "
                                f"for bytes {have}-; delete {part} and run again")
    elif have:
        log(f"{part.name}: the server does not support resuming (HTTP {resp.status}); re-reading from zero")
        skip = have
    got = have
    with resp, open(part, "ab") as f_out, open(part, "rb") as f_have:
        try:
            while block := resp.read(CHUNK):
                if skip:
                    n = min(skip, len(block))
                    if f_have.read(n) != block[:n]:
                        raise DownloadError(f"{url} no longer starts with the bytes in {part} (the file changed "
                                            f"on the server); delete {part} and run again")
                    skip -= n
                    block = block[n:]
                    if not block:
                        continue
                f_out.write(block)
                f_out.flush()
                got += len(block)
                counter[0] = got
                yield block
        except (OSError, http.client.HTTPException) as e:
            raise _interrupted(url, got, part, e) from None
    if end is not None and got != end:
        raise _interrupted(url, got, part, f"expected {end:,} bytes")


def _gunzip(chunks: Iterator[bytes], url: str) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream chunk by chunk; a truncated end is an error."""
    d, pending = zlib.decompressobj(16 + zlib.MAX_WBITS), False
    try:
        for chunk in chunks:
            while chunk:
                pending = True
                yield d.decompress(chunk)
                if d.eof:
                    chunk, d, pending = d.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS), False
                else:
                    chunk = b""
    except zlib.error as e:
        raise DownloadError(f"{url}: not a valid gzip stream ({e}); delete the .part file and run again") from None
    if pending:
        raise DownloadError(f"{url}: the gzip stream ends early (truncated file)")


def cirrus_to_jsonl(url: str, out: Path, n_articles: int, *, timeout: float = DEFAULT_TIMEOUT,
                    progress: bool = True, log: Callable = print) -> tuple[Path, int]:
    """Stream the dump at `url`, write its first `n_articles` non-empty namespace-0 articles to `out` as JSON lines.

    The compressed prefix is kept in `<dump name>.part` next to `out` until `out` is in place, so an interrupted run
    resumes. If the dump holds fewer articles, all are written to a name with the real count. Returns (path, count).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.parent / (Path(urlsplit(url).path).name + ".part")
    tmp = out.with_name(out.name + ".part")
    counter, written, malformed, doc_id = [0], 0, 0, None
    chunks = _prefix_chunks(url, part, timeout, log, counter)
    h = hashlib.sha256()
    with open(tmp, "w", encoding="utf-8", newline="\n") as f, \
            tqdm(total=n_articles, unit="article", desc=out.name, disable=not progress, mininterval=0.5,
                 leave=False) as bar:
        buf = b""
        try:  # (on failure the JSON lines so far are dropped: a rerun rebuilds them from the kept prefix)
            for data in itertools.chain(_gunzip(chunks, url), [b"\n"]):  # the newline ends a last, unended line
                lines = (buf + data).split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        malformed += 1
                        continue
                    if not isinstance(obj, dict):
                        malformed += 1
                        continue
                    if set(obj) == {"index"}:  # the Elasticsearch bulk action line before each document
                        doc_id = (obj["index"] or {}).get("_id") if isinstance(obj["index"], dict) else None
                        continue
                    text = obj.get("text")
                    if obj.get("namespace", 0) == 0 and isinstance(text, str) and text.strip():
                        record = {"id": str(doc_id if doc_id is not None else obj.get("page_id", "")),
                                  "title": str(obj.get("title", "")), "text": text.strip()}
                        encoded = json.dumps(record, ensure_ascii=False) + "\n"
                        f.write(encoded)
                        h.update(encoded.encode("utf-8"))
                        written += 1
                        bar.update(1)
                        if counter[0]:
                            bar.set_postfix_str(f"{counter[0] / 2**20:,.0f} MiB downloaded", refresh=False)
                    doc_id = None
                    if written >= n_articles:
                        break
                if written >= n_articles:
                    break
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            chunks.close()  # stops the download (closes the response) when we leave early
    if written == 0:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{url}: no article with a non-empty 'text' field found ({malformed} malformed lines); "
                            f"is it a CirrusSearch content dump?")
    if written < n_articles:
        log(f"note: the dump holds only {written:,} articles, fewer than the {n_articles:,} asked; keeping them all")
        out = out.with_name(out.name.replace(f"first{n_articles}", f"first{written}"))
    if malformed:
        log(f"note: skipped {malformed} lines that are not JSON objects")
    os.replace(tmp, out)
    downloaded = part.stat().st_size if part.exists() else 0
    part.unlink(missing_ok=True)
    log(f"{out}: {written:,} articles from {downloaded / 2**20:,.1f} MiB of the dump (compressed); "
        f"sha256 {h.hexdigest()}")
    return out, written


# ---------------------------------------------------------------------------------------------------------------
# datasets


def default_download_dir() -> Path:
    """`$TINYBERT_DATA`, else `./data` (the last candidate of tinybert/data_dir.py). The shared checkout
    `../shared/data` is skipped on purpose: it is read-only project data, and downloading the official full files
    into it would silently change what every other run reads."""
    env = os.environ.get("TINYBERT_DATA")
    return Path(env).expanduser() if env else candidate_data_dirs()[-1]


def sources_for(dataset: str) -> list[Source]:
    found = [s for s in SOURCES if s.dataset == dataset]
    if not found:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return found


def download(dataset: str, data_dir=None, *, force: bool = False, wiki_articles: int = DEFAULT_WIKI_ARTICLES,
             wiki_date: str = "latest", mirror: str | None = None, timeout: float = DEFAULT_TIMEOUT,
             progress: bool = True, log: Callable = print) -> list[Path]:
    """Fetch and prepare every file of `dataset` under `data_dir`; return the paths the readers will use.
    `mirror` None: `$TINYBERT_DOWNLOAD_MIRROR` (unset: the real hosts)."""
    data_dir = Path(data_dir) if data_dir is not None else default_download_dir()
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    paths = []
    for src in sources_for(dataset):
        if src.post == "cirrus-jsonl":
            paths.append(_download_wiki(src, data_dir, force=force, n_articles=wiki_articles, date=wiki_date,
                                        mirror=mirror, timeout=timeout, progress=progress, log=log))
            continue
        dest = data_dir / src.target
        ensure_file(src, apply_mirror(src.url, mirror), dest, force=force, timeout=timeout, progress=progress,
                    log=log)
        if src.post == "extract":
            paths += extract_members(dest, src.members, dest.parent, force=force, log=log)
        else:
            paths.append(dest)
    return paths


def _download_wiki(src: Source, data_dir: Path, *, force: bool, n_articles: int, date: str, mirror, timeout,
                   progress, log) -> Path:
    if isinstance(n_articles, bool) or not isinstance(n_articles, int) or n_articles < 1:
        raise ValueError(f"--wiki-articles must be a positive integer, got {n_articles!r}")
    if date in (None, "", "latest"):
        date = latest_cirrus_date(apply_mirror(CIRRUS_LISTING, mirror), timeout)
        log(f"wikipedia: newest CirrusSearch dump is {date}")
    elif not re.fullmatch(r"\d{8}", date):
        raise ValueError(f"--wiki-date must be YYYYMMDD or 'latest', got {date!r}")
    out = data_dir / src.target.format(date=date, n=n_articles)
    if out.exists() and not force:
        log(f"{out}: already present; skipping (pass --force to rebuild)")
        return out
    url = apply_mirror(src.url.format(date=date), mirror)
    if force:
        (out.parent / (Path(urlsplit(url).path).name + ".part")).unlink(missing_ok=True)
    log(f"{out.name}: streaming the first {n_articles:,} articles of {url}")
    path, _ = cirrus_to_jsonl(url, out, n_articles, timeout=timeout, progress=progress, log=log)
    return path


def sources_table() -> str:
    rows = [f"{'dataset':<11} {'sha256':<16} {'target':<52} url"]
    for s in SOURCES:
        sha = s.sha256[:12] + "..." if s.sha256 else "unknown (None)"
        rows.append(f"{s.dataset:<11} {sha:<16} {s.target:<52} {s.url}")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.download", description=__doc__.split("\n")[0])
    p.add_argument("datasets", nargs="*", metavar="DATASET", help=f"{', '.join(DATASETS)} or all")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where to put the files (default: $TINYBERT_DATA, else ./data)")
    p.add_argument("--force", action="store_true", help="download and extract again even if present")
    p.add_argument("--wiki-articles", type=int, default=DEFAULT_WIKI_ARTICLES,
                   help=f"Wikipedia: keep the first N articles of the dump (default {DEFAULT_WIKI_ARTICLES:,})")
    p.add_argument("--wiki-date", default="latest",
                   help="Wikipedia: CirrusSearch dump date YYYYMMDD (default: the newest in the current/ listing)")
    p.add_argument("--mirror", default=None, help=f"replace scheme+host of every URL (also ${MIRROR_ENV})")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="network timeout in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="print the table of sources and exit")
    a = p.parse_args(argv)
    if a.list:
        print(sources_table())
        return 0
    names = list(DATASETS) if "all" in a.datasets else a.datasets
    unknown = [n for n in names if n not in DATASETS]
    if not names or unknown:
        p.error(f"give one or more of {', '.join(DATASETS)}, all" + (f" (unknown: {', '.join(unknown)})"
                                                                      if unknown else ""))
    data_dir = a.data_dir if a.data_dir is not None else default_download_dir()
    print(f"data directory: {data_dir}")
    try:
        for name in names:
            download(name, data_dir, force=a.force, wiki_articles=a.wiki_articles, wiki_date=a.wiki_date,
                     mirror=a.mirror, timeout=a.timeout, progress=not a.quiet)
    except (DownloadError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
