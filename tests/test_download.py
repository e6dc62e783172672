"""Tests for data_prep/download.py against a local HTTP server on 127.0.0.1 (never any other host).

The server serves real files of the resolved data directory (the full shared data, or in a fresh clone the embedded
sample data_prep/sample, whose vocab.txt and pid2name.json are byte copies and whose val_wiki.json is a subset) and
small generated or corrupted variants, under the paths of the real URLs (the download code is pointed at it with `mirror=`). It answers Range
requests (206 / 416) unless told not to, can drop the connection after a number of bytes, and records every
request's path and Range header.
"""

import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from data_prep import download as dl
from data_prep.download import ChecksumError, DownloadError, SOURCES, Source, apply_mirror, download, main
from data_prep.tasks import load_task
from data_prep.wikipedia import iter_articles
from tinybert.data_dir import is_sample_dir, resolve_data_dir

TIMEOUT = 5  # seconds: every request of these tests is bounded
VOCAB_SHA = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


def shared_file(*parts):
    """The bytes of a real data file: the full data's, or the embedded sample's in a fresh clone."""
    path = resolve_data_dir().joinpath(*parts)
    assert path.is_file(), f"{path} missing"
    return path.read_bytes()


def source(dataset, name=None) -> Source:
    return next(s for s in SOURCES if s.dataset == dataset and (name is None or s.name == name))


def url_path(dataset, name=None) -> str:
    return urlsplit(source(dataset, name).url).path


# ---------------------------------------------------------------------------------------------------------------
# the local server


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        srv.seen.append((self.path, self.headers.get("Range")))
        body = srv.routes.get(self.path)
        if body is None:
            return self._send(404, b"not found")
        start, status, headers = 0, 200, {}
        rng = self.headers.get("Range") if srv.ranges else None
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1))
            if start >= len(body):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        payload = body[start:]
        if srv.cut_after is not None:  # announce everything, send a part, drop the connection (once)
            cut, srv.cut_after = srv.cut_after, None
            self.close_connection = True
            return self._send(status, payload, headers, send=payload[:cut])
        self._send(status, payload, headers)

    def _send(self, status, payload, headers=None, send=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload if send is None else send)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.routes, httpd.seen, httpd.ranges, httpd.cut_after = {}, [], True, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


def run(server, dataset, tmp_path, logs=None, **kw):
    logs = [] if logs is None else logs
    return download(dataset, tmp_path, mirror=server.url, timeout=TIMEOUT, progress=False, log=logs.append, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# the table


def test_sources_table_is_consistent():
    assert set(dl.DATASETS) == {"agnews", "dbpedia", "fewrel", "wikipedia", "bert-vocab"}
    for s in SOURCES:
        assert s.url.startswith("https://"), s
        assert s.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", s.sha256), s
        assert s.post in ("none", "extract", "cirrus-jsonl"), s
        assert all(sha is None or re.fullmatch(r"[0-9a-f]{64}", sha) for _, sha in s.members), s
    assert len({s.target for s in SOURCES}) == len(SOURCES)
    assert source("bert-vocab").sha256 == VOCAB_SHA
    assert "agnews/ag_news_csv.tgz" in dl.sources_table()


def test_apply_mirror_replaces_scheme_and_host_only():
    url = "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz"
    assert apply_mirror(url, None) == url
    assert apply_mirror(url, "http://127.0.0.1:8000") == "http://127.0.0.1:8000/fast-ai-nlp/ag_news_csv.tgz"
    assert apply_mirror(url, "http://127.0.0.1:8000/m/") == "http://127.0.0.1:8000/m/fast-ai-nlp/ag_news_csv.tgz"
    with pytest.raises(DownloadError, match="not a URL"):
        apply_mirror(url, "127.0.0.1")


# ---------------------------------------------------------------------------------------------------------------
# single files: checksum, resume, no range support, offline


def test_real_vocab_downloads_and_verifies_then_skips(server, tmp_path):
    vocab = shared_file("bert_vocab", "vocab.txt")
    server.routes[url_path("bert-vocab")] = vocab
    logs = []
    [path] = run(server, "bert-vocab", tmp_path, logs)
    assert path == tmp_path / "bert_vocab" / "vocab.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VOCAB_SHA
    assert not list(path.parent.glob("*.part")) and not (path.parent / "vocab.txt.sha256").exists()
    assert any("sha256 OK" in line for line in logs)
    assert server.seen == [(url_path("bert-vocab"), None)]

    logs.clear()
    run(server, "bert-vocab", tmp_path, logs)
    assert len(server.seen) == 1  # not fetched again
    assert any("already present, sha256 OK; skipping" in line for line in logs)


def test_checksum_mismatch_keeps_bad_copy_and_leaves_no_target(server, tmp_path):
    vocab = bytearray(shared_file("bert_vocab", "vocab.txt"))
    vocab[1000] ^= 0x01
    server.routes[url_path("bert-vocab")] = bytes(vocab)
    with pytest.raises(ChecksumError) as err:
        run(server, "bert-vocab", tmp_path)
    actual = hashlib.sha256(vocab).hexdigest()
    msg = str(err.value)
    assert "vocab.txt" in msg and VOCAB_SHA in msg and actual in msg
    folder = tmp_path / "bert_vocab"
    assert not (folder / "vocab.txt").exists() and not (folder / "vocab.txt.part").exists()
    assert (folder / "vocab.txt.bad").read_bytes() == bytes(vocab)


def test_partial_download_resumes_with_range_request(server, tmp_path):
    vocab = shared_file("bert_vocab", "vocab.txt")
    server.routes[url_path("bert-vocab")] = vocab
    half = len(vocab) // 2
    folder = tmp_path / "bert_vocab"
    folder.mkdir()
    (folder / "vocab.txt.part").write_bytes(vocab[:half])
    logs = []
    [path] = run(server, "bert-vocab", tmp_path, logs)
    assert server.seen == [(url_path("bert-vocab"), f"bytes={half}-")]
    assert path.read_bytes() == vocab
    assert any(f"resuming at {half:,} bytes" in line for line in logs)


def test_interrupted_transfer_keeps_part_and_next_run_resumes(server, tmp_path):
    body = bytes(range(256)) * 400  # 102,400 bytes
    sha = hashlib.sha256(body).hexdigest()
    src = Source("x", "blob.bin", "https://example.org/data/blob.bin", sha, "x/blob.bin")
    server.routes["/data/blob.bin"] = body
    server.cut_after = 30_000
    dest = tmp_path / "blob.bin"
    url = apply_mirror(src.url, server.url)
    with pytest.raises(DownloadError, match="interrupted after 30,000 bytes.*run the same command again"):
        dl.ensure_file(src, url, dest, timeout=TIMEOUT, progress=False, log=lambda *a: None)
    assert (tmp_path / "blob.bin.part").stat().st_size == 30_000 and not dest.exists()
    dl.ensure_file(src, url, dest, timeout=TIMEOUT, progress=False, log=lambda *a: None)
    assert dest.read_bytes() == body
    assert server.seen[-1] == ("/data/blob.bin", "bytes=30000-")


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    vocab = shared_file("bert_vocab", "vocab.txt")
    server.routes[url_path("bert-vocab")] = vocab
    server.ranges = False  # answers 200 with the whole file whatever the Range header says
    folder = tmp_path / "bert_vocab"
    folder.mkdir()
    (folder / "vocab.txt.part").write_bytes(b"garbage that must not survive" * 10)
    logs = []
    [path] = run(server, "bert-vocab", tmp_path, logs)
    assert server.seen[0][1] == "bytes=290-"  # it did ask
    assert path.read_bytes() == vocab
    assert any("does not support resuming" in line for line in logs)


def test_complete_part_file_is_finished_after_416(server, tmp_path):
    vocab = shared_file("bert_vocab", "vocab.txt")
    server.routes[url_path("bert-vocab")] = vocab
    folder = tmp_path / "bert_vocab"
    folder.mkdir()
    (folder / "vocab.txt.part").write_bytes(vocab)
    [path] = run(server, "bert-vocab", tmp_path)
    assert path.read_bytes() == vocab and server.seen == [(url_path("bert-vocab"), f"bytes={len(vocab)}-")]


def test_offline_is_a_clear_error_and_exit_status_2(tmp_path, capsys):
    port = closed_port()
    with pytest.raises(DownloadError, match=rf"cannot reach 127\.0\.0\.1:{port} \(offline\?\)"):
        download("bert-vocab", tmp_path, mirror=f"http://127.0.0.1:{port}", timeout=TIMEOUT, progress=False,
                 log=lambda *a: None)
    rc = main(["bert-vocab", "--data-dir", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}", "--quiet",
               "--timeout", str(TIMEOUT)])
    assert rc == 2
    assert re.search(rf"^error: cannot reach 127\.0\.0\.1:{port} \(offline\?\)", capsys.readouterr().err, re.M)


def test_http_error_names_url_and_status(server, tmp_path):
    with pytest.raises(DownloadError, match=r"vocab\.txt: HTTP 404"):
        run(server, "bert-vocab", tmp_path)


def test_existing_file_with_other_hash_is_not_overwritten(server, tmp_path):
    folder = tmp_path / "bert_vocab"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(DownloadError, match="exists but its sha256.*--force"):
        run(server, "bert-vocab", tmp_path)
    assert server.seen == [] and (folder / "vocab.txt").read_text() == "[PAD]\n"


def test_cli_downloads_into_data_dir(server, tmp_path, capsys):
    server.routes[url_path("bert-vocab")] = shared_file("bert_vocab", "vocab.txt")
    assert main(["bert-vocab", "--data-dir", str(tmp_path), "--mirror", server.url, "--quiet",
                 "--timeout", str(TIMEOUT)]) == 0
    assert (tmp_path / "bert_vocab" / "vocab.txt").is_file()
    assert "sha256 OK" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# archives and the readers' layouts


def zhang_csv(rows):
    return "".join(",".join('"' + str(f).replace('"', '""') + '"' for f in row) + "\n" for row in rows).encode()


def agnews_tgz(train_rows=3) -> bytes:
    train = [(c, f"Train title {c}-{i}", f"Body of training row {i} in class {c}.") for c in range(1, 5)
             for i in range(train_rows)]
    test = [(c, f"Test title {c}-{i}", f"Body of test row {i} in class {c}.") for c in range(1, 5) for i in range(2)]
    files = {"ag_news_csv/train.csv": zhang_csv(train), "ag_news_csv/test.csv": zhang_csv(test),
             "ag_news_csv/classes.txt": b"World\nSports\nBusiness\nSci/Tech\n",
             "ag_news_csv/readme.txt": b"AG's News Topic Classification Dataset\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dir_info = tarfile.TarInfo("ag_news_csv")
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_agnews_archive_is_extracted_into_the_reader_layout(server, tmp_path):
    archive = agnews_tgz()
    server.routes[url_path("agnews")] = archive
    logs = []
    paths = run(server, "agnews", tmp_path, logs)
    folder = tmp_path / "agnews"
    assert sorted(p.name for p in paths) == ["classes.txt", "readme.txt", "test.csv", "train.csv"]
    assert all(p.parent == folder and p.is_file() for p in paths)
    assert (folder / "ag_news_csv.tgz").read_bytes() == archive
    sha = hashlib.sha256(archive).hexdigest()
    assert (folder / "ag_news_csv.tgz.sha256").read_text() == f"{sha}  ag_news_csv.tgz\n"  # recorded: hash was None
    assert any(sha in line and "recorded" in line for line in logs)
    # our generated test.csv is not the canonical one: a warning, not an error
    assert any(line.startswith("warning: test.csv") and "521465c2" in line for line in logs)
    assert not list(folder.glob("*.part"))

    task = load_task("agnews", data_dir=tmp_path, train_per_label=2, test_per_label=2)
    assert task.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(task.test) == 8 and len(task.train) + len(task.val) == 8
    assert task.sources[0].endswith("agnews/train.csv")

    logs.clear()
    run(server, "agnews", tmp_path, logs)  # second run: verified against the record, nothing fetched or extracted
    assert len(server.seen) == 1
    assert any("already present, sha256 OK" in line for line in logs)
    assert any("already extracted" in line for line in logs)

    # the server now has a different archive: a fresh download is checked against the recorded hash
    (folder / "ag_news_csv.tgz").unlink()
    server.routes[url_path("agnews")] = agnews_tgz(train_rows=4)
    with pytest.raises(ChecksumError, match="recorded by an earlier download.*--force"):
        run(server, "agnews", tmp_path)
    assert not (folder / "ag_news_csv.tgz").exists() and (folder / "ag_news_csv.tgz.bad").exists()
    run(server, "agnews", tmp_path, force=True)  # --force accepts the new archive and records its hash
    task = load_task("agnews", data_dir=tmp_path, train_per_label=4, test_per_label=2)
    assert len(task.train) + len(task.val) == 16


def test_archive_without_the_expected_members_is_an_error(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    server.routes[url_path("dbpedia")] = buf.getvalue()
    with pytest.raises(DownloadError, match=r"dbpedia_csv\.tgz: no member dbpedia_csv/train\.csv"):
        run(server, "dbpedia", tmp_path)


def test_fewrel_files_land_where_the_reader_looks(server, tmp_path, monkeypatch):
    val = shared_file("fewrel", "val_wiki.json")
    pid2name = shared_file("fewrel", "pid2name.json")
    val_src, val_sha = source("fewrel", "val_wiki.json"), hashlib.sha256(val).hexdigest()
    data_dir = resolve_data_dir()
    if is_sample_dir(data_dir):
        # The sample's val_wiki.json is a subset of the official file, so the table's (official) sha256 cannot
        # match: the download is checked against the sample's own hash, as recorded when it was built.
        manifest = json.loads((data_dir / "MANIFEST.json").read_text())
        assert val_sha == manifest["files"]["fewrel/val_wiki.json"]["sha256"]
        monkeypatch.setattr(dl, "SOURCES", tuple(replace(s, sha256=val_sha) if s is val_src else s for s in SOURCES))
    else:
        assert val_sha == val_src.sha256
    train = json.dumps({"P1": [{"tokens": ["A", "b", "C"], "h": ["a", "Q1", [[0]]], "t": ["c", "Q2", [[2]]]}]})
    server.routes[url_path("fewrel", "val_wiki.json")] = val
    server.routes[url_path("fewrel", "pid2name.json")] = pid2name
    server.routes[url_path("fewrel", "train_wiki.json")] = train.encode()
    paths = run(server, "fewrel", tmp_path)
    assert [p.name for p in paths] == ["train_wiki.json", "val_wiki.json", "pid2name.json"]
    assert all("/278a2315d2138810a379cd8d5718914dc56e2582/data/" in path for path, _ in server.seen)
    task = load_task("fewrel", data_dir=tmp_path, setting="val16", train_per_label=5, test_per_label=2)
    assert task.num_labels == 16 and len(task.test) == 32


# ---------------------------------------------------------------------------------------------------------------
# Wikipedia: a CirrusSearch dump streamed to JSON lines


def cirrus_dump(n=6) -> bytes:
    """Two concatenated gzip members (as a multi-member dump would be) of bulk-format lines."""
    lines = []
    for i in range(n):
        lines.append({"index": {"_type": "page", "_id": str(100 + i)}})
        lines.append({"namespace": 0, "title": f"Article {i}", "text": f"Article {i} is about the number {i}. " * 3,
                      "source_text": "{{Infobox}} '''wikitext'''", "opening_text": "..."})
        if i == 1:  # not an article: other namespace, and an empty one
            lines += [{"index": {"_id": "7"}}, {"namespace": 4, "title": "Project page", "text": "not content"}]
            lines += [{"index": {"_id": "8"}}, {"namespace": 0, "title": "Empty", "text": "  "}]
    raw = [(json.dumps(x) + "\n").encode() for x in lines]
    raw[-1] = raw[-1].rstrip(b"\n")  # a last line without its newline is still read
    mid = len(raw) // 2
    return gzip.compress(b"".join(raw[:mid])) + gzip.compress(b"".join(raw[mid:]))


WIKI_DATE = "20240101"


def wiki_path():
    return f"/other/cirrussearch/{WIKI_DATE}/enwiki-{WIKI_DATE}-cirrussearch-content.json.gz"


def test_wikipedia_first_n_articles_of_the_dump_as_jsonl(server, tmp_path):
    server.routes[wiki_path()] = cirrus_dump()
    server.routes["/other/cirrussearch/current/"] = (
        f'<a href="enwiki-{WIKI_DATE}-cirrussearch-content.json.gz">x</a> '
        f'<a href="enwiki-20231201-cirrussearch-content.json.gz">x</a> '
        f'<a href="enwiki-20250101-cirrussearch-general.json.gz">x</a>').encode()
    logs = []
    [path] = run(server, "wikipedia", tmp_path, logs, wiki_articles=4)
    assert path == tmp_path / "wikipedia" / f"enwiki-{WIKI_DATE}-cirrussearch-first4.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["title"]) for r in records] == [("100", "Article 0"), ("101", "Article 1"),
                                                        ("102", "Article 2"), ("103", "Article 3")]
    arts = list(iter_articles(path))  # our reader accepts it
    assert [a.title for a in arts] == ["Article 0", "Article 1", "Article 2", "Article 3"]
    assert arts[2].text.startswith("Article 2 is about the number 2.")
    assert not list(path.parent.glob("*.part"))  # the compressed prefix is gone
    assert any(f"newest CirrusSearch dump is {WIKI_DATE}" in line for line in logs)

    logs.clear()
    run(server, "wikipedia", tmp_path, logs, wiki_articles=4, wiki_date=WIKI_DATE)
    assert any("already present; skipping" in line for line in logs)

    [path] = run(server, "wikipedia", tmp_path, wiki_articles=50, wiki_date=WIKI_DATE)  # more than the dump has
    assert path.name == f"enwiki-{WIKI_DATE}-cirrussearch-first6.jsonl" and len(path.read_text().splitlines()) == 6


@pytest.mark.parametrize("ranges", [True, False])
def test_wikipedia_stream_resumes_from_the_compressed_prefix(server, tmp_path, ranges):
    dump = cirrus_dump()
    server.routes[wiki_path()] = dump
    server.ranges = ranges
    folder = tmp_path / "wikipedia"
    folder.mkdir()
    prefix = len(dump) // 3
    (folder / f"enwiki-{WIKI_DATE}-cirrussearch-content.json.gz.part").write_bytes(dump[:prefix])
    [path] = run(server, "wikipedia", tmp_path, wiki_articles=6, wiki_date=WIKI_DATE)
    assert server.seen == [(wiki_path(), f"bytes={prefix}-")]
    assert [json.loads(line)["title"] for line in path.read_text().splitlines()] == [f"Article {i}" for i in range(6)]
    assert not list(folder.glob("*.part"))


def test_wikipedia_prefix_of_another_file_is_detected(server, tmp_path):
    server.routes[wiki_path()] = cirrus_dump()
    server.ranges = False  # the 200 body is compared with the kept prefix instead of appended
    folder = tmp_path / "wikipedia"
    folder.mkdir()
    (folder / f"enwiki-{WIKI_DATE}-cirrussearch-content.json.gz.part").write_bytes(gzip.compress(b"other\n" * 50)[:40])
    with pytest.raises(DownloadError, match="no longer starts with the bytes in"):
        run(server, "wikipedia", tmp_path, wiki_articles=6, wiki_date=WIKI_DATE)


def test_wikipedia_interrupted_stream_keeps_prefix_then_resumes(server, tmp_path):
    dump = cirrus_dump(40)
    server.routes[wiki_path()] = dump
    server.cut_after = len(dump) // 2
    with pytest.raises(DownloadError, match="interrupted.*run the same command again"):
        run(server, "wikipedia", tmp_path, wiki_articles=40, wiki_date=WIKI_DATE)
    part = tmp_path / "wikipedia" / f"enwiki-{WIKI_DATE}-cirrussearch-content.json.gz.part"
    assert part.read_bytes() == dump[: len(dump) // 2]
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no half-written JSON lines
    [path] = run(server, "wikipedia", tmp_path, wiki_articles=40, wiki_date=WIKI_DATE)
    assert server.seen[-1] == (wiki_path(), f"bytes={len(dump) // 2}-")
    assert len(path.read_text().splitlines()) == 40


def test_wikipedia_not_a_cirrus_dump_is_an_error(server, tmp_path):
    server.routes[wiki_path()] = b"<html>not gzip</html>"
    with pytest.raises(DownloadError, match="not a valid gzip stream"):
        run(server, "wikipedia", tmp_path, wiki_articles=3, wiki_date=WIKI_DATE)
    with pytest.raises(ValueError, match="YYYYMMDD"):
        run(server, "wikipedia", tmp_path, wiki_articles=3, wiki_date="2024-01-01")
