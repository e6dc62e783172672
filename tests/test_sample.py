"""The embedded data sample: the fallback to it (tinybert/data_dir.py), its builder (data_prep/make_sample.py,
sample_wiki.py, sample_tasks.py) on a tiny synthetic data directory, the 128-token cut, and the committed files."""

import csv
import hashlib
import io
import itertools
import json
import tarfile
from dataclasses import asdict

import pytest

import tinybert.data_dir as data_dir_module
from data_prep import make_sample
from data_prep.corpus import encode_first_tokens
from data_prep.sample_wiki import CUT_CHARS, cut_article
from data_prep.tasks import load_task
from data_prep.wikipedia import default_wiki_sources, iter_articles
from tinybert.data_dir import SAMPLE_DATA_DIR, DatasetNotFound, resolve_data_dir
from tinybert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer

VOCAB = resolve_data_dir() / "bert_vocab" / "vocab.txt"  # full data or sample: the same bert-base-uncased file


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer.from_vocab(VOCAB)


# ---------------------------------------------------------------------------------------------------------------
# the fallback


@pytest.fixture()
def nothing_else(tmp_path, monkeypatch):
    """No $TINYBERT_DATA, no ../shared/data next to the (pretend) repository root, no ./data."""
    monkeypatch.delenv("TINYBERT_DATA", raising=False)
    monkeypatch.setattr(data_dir_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_dir_module, "_sample_noted", False)


def test_falls_back_to_the_sample_and_says_so_once(nothing_else, tmp_path, capsys):
    assert resolve_data_dir() == SAMPLE_DATA_DIR
    err = capsys.readouterr().err
    assert err.startswith("note: no data directory found (looked at ")
    assert str(tmp_path / "shared" / "data") in err and str(tmp_path / "data") in err
    assert "using the small embedded sample data_prep/sample (10,000 Wikipedia articles" in err
    assert resolve_data_dir() == SAMPLE_DATA_DIR and capsys.readouterr().err == ""  # once per process
    assert data_dir_module.dataset_dir("agnews") == SAMPLE_DATA_DIR / "agnews"


def test_explicit_missing_dir_is_still_an_error(nothing_else, tmp_path, capsys):
    with pytest.raises(DatasetNotFound, match="no data directory found; looked at: .*nowhere"):
        resolve_data_dir(tmp_path / "nowhere")
    assert capsys.readouterr().err == ""


def test_a_real_candidate_wins_over_the_sample(nothing_else, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYBERT_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path and capsys.readouterr().err == ""


def test_no_sample_either_is_an_error(nothing_else, tmp_path, monkeypatch):
    monkeypatch.setattr(data_dir_module, "SAMPLE_DATA_DIR", tmp_path / "no-sample")
    with pytest.raises(DatasetNotFound, match="Pass --data-dir DIR"):
        resolve_data_dir()


# ---------------------------------------------------------------------------------------------------------------
# the 128-token cut


def test_cut_keeps_the_first_128_tokens_of_real_articles(bert):
    """A handful of real articles, cut with a limit so small that the first tries must fail the token check."""
    source = default_wiki_sources(resolve_data_dir())[0]
    texts = [a.text for a in itertools.islice(iter_articles(source), 200) if len(a.text) > 900][:6]
    assert len(texts) == 6
    cuts = [cut_article(text, bert, limit=150) for text in texts]
    for text, cut in zip(texts, cuts):
        assert text.startswith(cut) and (cut == text or text[len(cut)].isspace())
        assert encode_first_tokens(bert, cut, 128) == encode_first_tokens(bert, text, 128)
        assert len(bert.encode(cut, add_special_tokens=False)) >= 126 or cut == text
    assert sum(len(cut) < len(text) for cut, text in zip(cuts, texts)) >= 4  # the cut really happened


def test_cut_grows_until_the_tokens_agree():
    word = "a" * 30  # one token each, so 1,500 characters hold only ~48 of the 126 tokens needed
    tok = WordPieceTokenizer([*SPECIAL_TOKENS, word])
    text = " ".join([word] * 200)
    cut = cut_article(text, tok)
    assert 4 * CUT_CHARS - 31 <= len(cut) <= 4 * CUT_CHARS  # 1,500 and 3,000 are too short; 6,000 is enough
    assert encode_first_tokens(tok, cut, 128) == encode_first_tokens(tok, text, 128)
    assert cut_article("short text", tok) == "short text"
    assert cut_article("x" * 4000, tok) == "x" * 4000  # no space to cut at: kept whole


# ---------------------------------------------------------------------------------------------------------------
# the builder on a tiny synthetic data directory


TINY = make_sample.Sizes(wiki_articles=12, articles_per_member=3, articles_per_archive=5, agnews_train=4,
                         agnews_test=3, dbpedia=3, fewrel=3)


def _tar_xz(path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:  # ordinary metadata: the builder must not depend on it
        for name, text in members:
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _docs(first_id, n):
    out = []
    for i in range(first_id, first_id + n):
        body = "" if i % 7 == 0 else " ".join(f"word{i} the history of town number {j}." for j in range(i * 9))
        out.append(f'<doc id="{i}" url="http://en.wikipedia.org/wiki?curid={i}" title="Town {i}">\nTown {i}\n\n'
                   f"{body}\n</doc>\n")
    return "".join(out)


def _csv(path, rows):
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())


def _fewrel(path, pids, n, ensure_ascii):
    inst = lambda pid, k: {"tokens": ["Zoë", "met", f"{pid}person{k}", "."], "h": ["zoë", "Q1", [[0]]],  # noqa
                           "t": [f"{pid}person{k}", "Q2", [[2]]]}
    path.write_text(json.dumps({pid: [inst(pid, k) for k in range(n)] for pid in pids}, ensure_ascii=ensure_ascii))


def make_full_data(root):
    """A data directory in the full data's layout, a few rows of each file, with the quirks the builder keeps."""
    _tar_xz(root / "wikipedia" / "patcheddistro_enwiki2014_AA.tar.xz", [("AA/wiki_01", _docs(1, 10))])
    _tar_xz(root / "wikipedia" / "patcheddistro_enwiki2014_AB.tar.xz", [("AB/wiki_00", _docs(11, 10))])
    (root / "bert_vocab").mkdir()
    (root / "bert_vocab" / "vocab.txt").write_bytes(VOCAB.read_bytes())
    agnews = [[str(c), f"title {c}.{i}", f"news {c} {i}"] for i in range(8) for c in range(1, 5)]
    agnews[5][2] = "#NAME?"
    _csv(root / "agnews" / "train_subset_20k.csv", agnews)
    _csv(root / "agnews" / "test.csv", [[r[0], r[1], r[2] + " test"] for r in agnews if r[2] != "#NAME?"])
    (root / "agnews" / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    dbpedia = [[str(c), "", f"thing {c} {i}"] for i in range(6) for c in range(1, 15)]
    _csv(root / "dbpedia" / "dbpedia_dhim_10k_zhangformat.csv", dbpedia + [dbpedia[3]])  # one exact duplicate
    (root / "fewrel").mkdir()
    _fewrel(root / "fewrel" / "train_wiki_partial_lowercased_from_CFRL.json", ["P1", "P2"], 6, False)
    _fewrel(root / "fewrel" / "val_wiki.json", ["P3", "P4"], 5, True)
    (root / "fewrel" / "pid2name.json").write_text(json.dumps({f"P{k}": [f"rel {k}", "desc"] for k in range(1, 5)}))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builder_is_deterministic_and_its_output_reads(tmp_path):
    make_full_data(tmp_path / "full")
    logs = []
    make_sample.build_sample(tmp_path / "full", tmp_path / "one", TINY, log=logs.append)
    for p in (tmp_path / "full").rglob("*"):  # new mtimes on every input must not change a byte
        p.touch()
    make_sample.build_sample(tmp_path / "full", tmp_path / "two", TINY, log=logs.append)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two
    assert sorted(one) == ["MANIFEST.json", "agnews/classes.txt", "agnews/test.csv", "agnews/train_subset_20k.csv",
                           "bert_vocab/vocab.txt", "dbpedia/dbpedia_dhim_10k_zhangformat.csv", "fewrel/pid2name.json",
                           "fewrel/train_wiki_partial_lowercased_from_CFRL.json", "fewrel/val_wiki.json",
                           "wikipedia/patcheddistro_enwiki2014_sample_AA.tar.xz",
                           "wikipedia/patcheddistro_enwiki2014_sample_AB.tar.xz",
                           "wikipedia/patcheddistro_enwiki2014_sample_AC.tar.xz"]
    _check_tiny_sample(tmp_path / "one")


def _check_tiny_sample(out):
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["wikipedia"]["articles"] == 12 and manifest["wikipedia"]["articles_cut"] >= 1
    assert manifest["files"]["agnews/train_subset_20k.csv"]["quirk_rows_kept"] == 1
    assert all(m["sha256"] == hashlib.sha256((out / f).read_bytes()).hexdigest() for f, m in manifest["files"].items())
    assert set(manifest["inputs"]) >= {"wikipedia/patcheddistro_enwiki2014_AA.tar.xz", "agnews/test.csv"}
    articles = list(iter_articles(default_wiki_sources(out)))
    assert len(articles) == 12 and all(a.doc_id.isdigit() and a.title.startswith("Town") for a in articles)
    with tarfile.open(out / "wikipedia" / "patcheddistro_enwiki2014_sample_AA.tar.xz") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(1399680000, 0, 0, "")}
        assert tar.getnames() == ["patcheddistro_sample/AA", "patcheddistro_sample/AA/wiki_00",
                                  "patcheddistro_sample/AA/wiki_01"]
    agnews = load_task("agnews", out, train_per_label=2, test_per_label=3)
    assert len(agnews.test) == 12 and any("'#NAME?'" in n and "1 rows" in n for n in agnews.notes)
    dbpedia = load_task("dbpedia", out, train_per_label=1, test_per_label=1)
    assert dbpedia.num_labels == 14 and any("1 exact duplicate" in n for n in dbpedia.notes)
    fewrel = load_task("fewrel", out, train_per_label=1, test_per_label=2)
    assert fewrel.label_names == ["rel 1", "rel 2"] and len(fewrel.test) == 4
    assert "Zoë" in (out / "fewrel" / "train_wiki_partial_lowercased_from_CFRL.json").read_text()  # kept its style
    assert "Zo\\u00eb" in (out / "fewrel" / "val_wiki.json").read_text()


def test_builder_errors_name_the_file(tmp_path):
    make_full_data(tmp_path / "full")
    (tmp_path / "full" / "agnews" / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"agnews/test\.csv: missing"):
        make_sample.build_sample(tmp_path / "full", tmp_path / "out", TINY, log=lambda *a: None)
    with pytest.raises(ValueError, match="asked for 99 sample articles but the sources hold only 18"):
        make_sample.build_sample(tmp_path / "full", tmp_path / "out", make_sample.Sizes(wiki_articles=99),
                                 log=lambda *a: None)
    with pytest.raises(ValueError, match="is the data directory itself"):
        make_sample.build_sample(tmp_path / "full", tmp_path / "full", TINY)


# ---------------------------------------------------------------------------------------------------------------
# the committed sample


def test_committed_sample_matches_its_manifest():
    manifest = json.loads((SAMPLE_DATA_DIR / "MANIFEST.json").read_text())
    files = {p.relative_to(SAMPLE_DATA_DIR).as_posix() for p in SAMPLE_DATA_DIR.rglob("*") if p.is_file()}
    assert files == set(manifest["files"]) | {"MANIFEST.json", "PROVENANCE.md"}
    for name, facts in manifest["files"].items():
        data = (SAMPLE_DATA_DIR / name).read_bytes()
        assert len(data) == facts["bytes"] <= make_sample.MAX_FILE_BYTES, name
        assert hashlib.sha256(data).hexdigest() == facts["sha256"], name
    assert manifest["sizes"] == asdict(make_sample.Sizes()) and manifest["seed"] == make_sample.SEED
    articles = list(iter_articles(default_wiki_sources(SAMPLE_DATA_DIR)))
    assert len(articles) == manifest["wikipedia"]["articles"] == 10_500
    assert len({a.doc_id for a in articles}) == 10_500
