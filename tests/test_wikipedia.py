"""Tests for data_prep/wikipedia.py: each input format and archive type, each kind of bad input, the real tarballs."""

import bz2
import gzip
import io
import itertools
import logging
import lzma
import tarfile

import pytest

from data_prep.wikipedia import CorpusReadError, ReadStats, default_wiki_sources, iter_articles
from tinybert.data_dir import DatasetNotFound, is_sample_dir, resolve_data_dir

WIKI = (
    '<doc id="1" url="?curid=1" title="Alpha">\nAlpha\n\nAlpha is the first letter.\nSecond line.\n\n</doc>\n'
    '<doc id="2" url="?curid=2" title="Empty">\nEmpty\n\n\n</doc>\n'
    '<doc id="3" url="?curid=3" title="Gamma">\nGamma\n\nGamma rays are energetic.\n</doc>\n'
)


def texts(paths, stats=None):
    return [a.text for a in iter_articles(paths, stats)]


def write_tar(path, members: dict, mode: str):
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------------------------------------------------------
# formats


def test_wikiextractor_file_drops_title_line_and_skips_empty(tmp_path):
    path = tmp_path / "wiki_00"
    path.write_text(WIKI)
    stats = ReadStats()
    arts = list(iter_articles(path, stats))
    assert [(a.title, a.doc_id) for a in arts] == [("Alpha", "1"), ("Gamma", "3")]
    assert arts[0].text == "Alpha is the first letter.\nSecond line."  # title line dropped, stripped
    assert arts[0].source == str(path)
    assert (stats.read, stats.skipped_empty, stats.skipped_malformed, stats.kept) == (3, 1, 0, 2)
    assert stats.kept_per_source == {str(path): 2}


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz"),
                                         (".tar.xz", "w:xz"), (".tar.bz2", "w:bz2")])
def test_tar_archives_are_streamed_member_by_member(tmp_path, suffix, mode):
    path = write_tar(tmp_path / f"wiki{suffix}", {"AA/wiki_00": WIKI.encode(), "AA/wiki_01": WIKI.encode()}, mode)
    arts = list(iter_articles(path))
    assert [a.title for a in arts] == ["Alpha", "Gamma", "Alpha", "Gamma"]
    assert arts[2].source == f"{path}:AA/wiki_01"
    assert not (tmp_path / "AA").exists()  # nothing unpacked to disk


@pytest.mark.parametrize("suffix,opener", [(".bz2", bz2.open), (".xz", lzma.open), (".gz", gzip.open)])
def test_single_compressed_files(tmp_path, suffix, opener):
    wiki = tmp_path / f"wiki_00{suffix}"
    with opener(wiki, "wt") as f:
        f.write(WIKI)
    jsonl = tmp_path / f"a.jsonl{suffix}"
    with opener(jsonl, "wt") as f:
        f.write('{"text": "one"}\n{"text": "two"}\n')
    assert texts(wiki) == ["Alpha is the first letter.\nSecond line.", "Gamma rays are energetic."]
    assert texts(jsonl) == ["one", "two"]


def test_directory_is_walked_in_sorted_order(tmp_path):
    (tmp_path / "AB").mkdir()
    (tmp_path / "AA").mkdir()
    (tmp_path / "AB" / "wiki_00").write_text('<doc id="9" title="Late">\nLate\nlate text\n</doc>\n')
    (tmp_path / "AA" / "wiki_00").write_text(WIKI)
    assert [a.title for a in iter_articles(tmp_path)] == ["Alpha", "Gamma", "Late"]


def test_jsonl_and_txt(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": "7", "title": "T", "text": "  body one "}\n\n{"text": "body two"}\n{"text": " "}\n')
    stats = ReadStats()
    arts = list(iter_articles(jsonl, stats))
    assert [(a.title, a.text, a.doc_id) for a in arts] == [("T", "body one", "7"), ("", "body two", "3")]
    assert (stats.read, stats.skipped_empty, stats.kept) == (3, 1, 2)

    txt = tmp_path / "a.txt"
    txt.write_text("first article\n\nsecond article\n")
    stats = ReadStats()
    assert texts(txt, stats) == ["first article", "second article"]
    assert (stats.read, stats.skipped_empty, stats.kept) == (3, 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# bad input: errors


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CorpusReadError, match="nope.tar.xz: no such file"):
        texts(tmp_path / "nope.tar.xz")


@pytest.mark.parametrize("name", ["bad.tar.xz", "bad.tar", "bad.bz2", "bad.gz", "bad.xz"])
def test_corrupt_archive_is_an_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an archive at all" * 20)
    with pytest.raises(CorpusReadError) as err:
        texts(path)
    assert name in str(err.value)


def test_truncated_archive_names_file_and_member(tmp_path):
    big = (WIKI * 200).encode()
    full = write_tar(tmp_path / "full.tar.xz", {"AA/wiki_00": big, "AA/wiki_01": big, "AA/wiki_02": big}, "w:xz")
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CorpusReadError, match=r"cut\.tar\.xz.*(member AA/wiki_0\d).*corrupt or truncated"):
        texts(cut)


def test_empty_source_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusReadError, match="empty.txt: no non-empty article found"):
        texts(tmp_path / "empty.txt")
    (tmp_path / "wiki_00").write_text('<doc id="2" title="E">\nE\n\n</doc>\n')  # docs, but all empty
    with pytest.raises(CorpusReadError, match=r"wiki_00: no non-empty article found \(1 read\)"):
        texts(tmp_path / "wiki_00")


# ---------------------------------------------------------------------------------------------------------------
# bad input: counted skips with a warning naming file and line


def test_unclosed_doc_and_bad_header_are_skipped_with_warning(tmp_path, caplog):
    path = tmp_path / "wiki_00"
    path.write_text(
        '<doc id="1" title="Open">\nOpen\nnever closed\n'  # line 1: no </doc> before the next <doc>
        '<doc url="x" title="No id">\nNo id\nbody\n</doc>\n'  # line 4: no id attribute
        '<doc id="3" title="Good">\nGood\ngood body\n</doc>\n'
        '<doc id="4" title="Tail">\nTail\nthe file ends inside this doc\n')  # line 12: unclosed at the end
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        assert texts(path, stats) == ["good body"]
    assert (stats.read, stats.skipped_malformed, stats.kept) == (4, 3, 1)
    assert f"{path}:1" in caplog.text and f"{path}:4" in caplog.text and f"{path}:12" in caplog.text
    assert "not closed" in caplog.text and "bad <doc> header" in caplog.text
    assert len(stats.problems) == 3


def test_non_utf8_byte_skips_only_that_article(tmp_path, caplog):
    path = tmp_path / "wiki_00"
    path.write_bytes(WIKI.replace("Gamma rays", "Gamma \xff rays").encode().replace(b"\xc3\xbf", b"\xff"))
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        assert texts(path, stats) == ["Alpha is the first letter.\nSecond line."]
    assert stats.skipped_malformed == 1  # the byte is on line 16, in the doc that starts on line 13
    assert f"{path}:16: byte 0xff is not UTF-8 (article 3, starting on {path}:13)" in caplog.text


def test_bad_json_lines_are_skipped_with_line_numbers(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{not json\n{"title": "no text"}\n["a list"]\n{"text": "bad \xff byte"}\n')
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        assert texts(path, stats) == ["ok"]
    assert (stats.read, stats.skipped_malformed, stats.kept) == (5, 4, 1)
    for line in (2, 3, 4, 5):
        assert f"{path}:{line}" in caplog.text
    assert "not JSON" in caplog.text and "'text' field" in caplog.text and "not UTF-8" in caplog.text


def test_only_the_first_few_problems_are_logged(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    path.write_text("{bad\n" * 20 + '{"text": "ok"}\n')
    stats = ReadStats()
    with caplog.at_level(logging.WARNING):
        texts(path, stats)
    assert stats.skipped_malformed == 20 and len(caplog.records) == len(stats.problems) == 5


# ---------------------------------------------------------------------------------------------------------------
# default sources and the real data


def test_default_wiki_sources_layout(tmp_path):
    (tmp_path / "wikipedia").mkdir()
    with pytest.raises(DatasetNotFound, match=r"no \*\.tar\.xz"):
        default_wiki_sources(tmp_path)
    for name in ("b.tar.xz", "a.tar.xz", "notes.md"):
        (tmp_path / "wikipedia" / name).write_text("")
    assert [p.name for p in default_wiki_sources(tmp_path)] == ["a.tar.xz", "b.tar.xz"]
    with pytest.raises(DatasetNotFound, match="wikipedia"):
        default_wiki_sources(tmp_path / "elsewhere")


# What the real archives hold, for the full shared data and for the embedded sample (data_prep/sample, what a
# fresh clone resolves to): number of archives, the first one's name, the first article of the last one.
REAL_WIKI = {
    "full": (8, "patcheddistro_enwiki2014_AA.tar.xz", "Jarred Shaw", "Jarred Shaw (born September 28, 1990)"),
    "sample": (5, "patcheddistro_enwiki2014_sample_AA.tar.xz", "Zambrzyniec",
               "Zambrzyniec is a village in the administrative district of Gmina Łochów"),
}


def test_real_tarball_yields_real_articles():
    data_dir = resolve_data_dir()
    n_sources, first_name, title, start = REAL_WIKI["sample" if is_sample_dir(data_dir) else "full"]
    sources = default_wiki_sources(data_dir)
    assert len(sources) == n_sources and sources[0].name == first_name
    stats = ReadStats()
    arts = list(itertools.islice(iter_articles(sources[-1], stats), 200))  # stops inside the first member
    assert len(arts) == 200 and stats.skipped_malformed == 0
    assert all(a.title and a.doc_id.isdigit() and a.text.strip() == a.text for a in arts)
    assert arts[0].title == title and arts[0].text.startswith(start)
    assert sum(len(a.text.split()) for a in arts) > 10_000
