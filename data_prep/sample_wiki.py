"""The Wikipedia part of the embedded sample (data_prep/make_sample.py): articles in, small `.tar.xz` archives out.

Where it sits: the full WikiExtractor archives -> data_prep/wikipedia.py (reader) -> **data_prep/sample_wiki.py**
(seeded selection, cut, deterministic archives) -> `data_prep/sample/wikipedia/*.tar.xz`, which the same reader
reads back like the full archives.

Cut: the paper layout (data_prep/corpus.py) keeps only the first 128 tokens of an article, so the rest of a long
article is dead weight in a sample. `cut_article` keeps the first ~CUT_CHARS characters, cut at a space or newline,
but only when the cut text's first 128 WordPiece tokens equal the full article's (checked, not assumed); otherwise
the limit is doubled until they do (or the whole article is kept). So the `paper` layout built from the sample
equals the one built from the same articles in full. (The `packed` layout and vocabulary training see the cut
text only.)

Archives are byte-reproducible: members in a fixed order, fixed mtime/uid/gid/mode and no user names in the tar
headers (ustar format), compressed in one thread by `lzma.compress` with a fixed preset (no timestamps in xz).
"""

from __future__ import annotations

import io
import lzma
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.corpus import encode_first_tokens
from data_prep.wikipedia import Article, ReadStats, iter_articles

SOURCE_GLOB = "patcheddistro_enwiki2014_*.tar.xz"  # the WikiExtractor archives of the default pre-training source
CUT_CHARS = 1500
SEQ_LEN = 128  # the paper layout's row length, the tokens a cut must keep
ARCHIVE_PREFIX = "patcheddistro_enwiki2014_sample"  # sorts like the full archives' names; one archive per code
TAR_MTIME = 1399680000  # 2014-05-10 00:00 UTC, the date the full archives carry (their source commit's date)
XZ_PRESET = 9 | lzma.PRESET_EXTREME  # smallest files; the sample is built rarely


@dataclass
class SampleArticle:
    doc_id: str
    title: str
    text: str  # possibly cut (see cut_article)
    full_chars: int  # the length of the article before the cut


def read_source_articles(wiki_dir: Path, stats: ReadStats) -> tuple[list[Path], list[Article]]:
    """Every non-empty article of the PatchedDistro archives in `wiki_dir`, in corpus order (sorted archive names)."""
    sources = sorted(wiki_dir.glob(SOURCE_GLOB))
    if not sources:
        raise FileNotFoundError(f"{wiki_dir}: no {SOURCE_GLOB}; expected the WikiExtractor archives of the full data")
    return sources, list(iter_articles(sources, stats))


def choose(n_total: int, n: int, seed: int) -> list[int]:
    """`n` indices drawn without replacement with `seed`, in corpus order (as corpus.select_articles draws)."""
    if n > n_total:
        raise ValueError(f"asked for {n:,} sample articles but the sources hold only {n_total:,} non-empty ones")
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n_total)[:n])


def cut_article(text: str, tokenizer, limit: int = CUT_CHARS, seq_len: int = SEQ_LEN) -> str:
    """The text cut at the last space/newline within `limit` characters, if that keeps the first `seq_len` tokens
    of the paper layout unchanged; else with the limit doubled, and so on; the whole text when nothing shorter does."""
    want = encode_first_tokens(tokenizer, text, seq_len)
    while limit < len(text):
        end = max(text.rfind(" ", 0, limit + 1), text.rfind("\n", 0, limit + 1))
        piece = text[:end].rstrip() if end > 0 else ""
        # rstrip: the reader strips each body, so only a stripped text reads back unchanged
        if piece and encode_first_tokens(tokenizer, piece, seq_len) == want:
            return piece
        limit *= 2
    return text


def sample_articles(articles: list[Article], n: int, seed: int, tokenizer) -> list[SampleArticle]:
    """The seeded selection of `n` articles, each cut by cut_article."""
    chosen = [articles[i] for i in choose(len(articles), n, seed)]
    return [SampleArticle(a.doc_id, a.title, cut_article(a.text, tokenizer), len(a.text)) for a in chosen]


def doc_block(a: SampleArticle) -> str:
    """One article in WikiExtractor's layout: header, the title line (the reader drops it), a blank line, the body.
    The url is rebuilt from the id: every PatchedDistro header has exactly this form."""
    url = f"http://en.wikipedia.org/wiki?curid={a.doc_id}"
    return f'<doc id="{a.doc_id}" url="{url}" title="{a.title}">\n{a.title}\n\n{a.text}\n</doc>\n'


def archive_code(i: int) -> str:
    """0 -> 'AA', 1 -> 'AB', ... as WikiExtractor names its folders."""
    return chr(ord("A") + i // 26) + chr(ord("A") + i % 26)


def tar_xz(members: list[tuple[str, bytes]], folder: str) -> bytes:
    """A byte-reproducible .tar.xz of `folder/` and the given (name, bytes) members, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries = [(folder + "/", None)] + [(f"{folder}/{name}", data) for name, data in members]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, preset=XZ_PRESET)


def write_archives(articles: list[SampleArticle], out_dir: Path, per_member: int, per_archive: int) -> list[Path]:
    """Write the articles, in order, into archives of `per_archive` articles, members `wiki_NN` of `per_member`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{ARCHIVE_PREFIX}_*.tar.xz"):  # a rebuild with other sizes may write fewer
        stale.unlink()
    paths = []
    for k, start in enumerate(range(0, len(articles), per_archive)):
        chunk = articles[start:start + per_archive]
        members = [(f"wiki_{j // per_member:02d}",
                    "".join(doc_block(a) for a in chunk[j:j + per_member]).encode("utf-8"))
                   for j in range(0, len(chunk), per_member)]
        code = archive_code(k)
        path = out_dir / f"{ARCHIVE_PREFIX}_{code}.tar.xz"
        path.write_bytes(tar_xz(members, f"patcheddistro_sample/{code}"))
        paths.append(path)
    return paths


def check_read_back(paths: list[Path], articles: list[SampleArticle]) -> None:
    """The reader must give back exactly the written (id, title, text) list: no article lost, split or altered."""
    got = [(a.doc_id, a.title, a.text) for a in iter_articles(paths)]
    want = [(a.doc_id, a.title, a.text) for a in articles]
    if got != want:
        bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        raise RuntimeError(f"sample archives read back wrong at article {bad} (doc id "
                           f"{want[bad][0] if bad < len(want) else '?'}): {len(got)} read, {len(want)} written")
