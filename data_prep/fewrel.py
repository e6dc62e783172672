"""FewRel 1.0 reader (Han et al., EMNLP 2018): relation JSON -> sentences with marked entities, one label per relation.

Where it sits in the flow: raw files -> **data_prep/fewrel.py** -> texts + labels (RawTask) -> data_prep/tasks.py
samples 630/70 per relation -> tokenizer -> batches -> model.

Format: `{relation_pid: [{"tokens": [...], "h": [name, qid, [[token idx, ...], ...]], "t": [...]}, ...]}`.
Labels are the relations in file order, named by `pid2name.json` (`{pid: [name, description]}`; the pid itself when
that file or the entry is missing, with a note).

Text: the paper's code never says how an instance becomes text (docs/paper-recipe.md#fine-tuning-data). We use the
entity-marker ("punct") scheme of Zhou & Chen 2021, "An improved baseline for sentence-level relation extraction":
`@` before and after the head span, `#` before and after the tail span, inserted into the token list, which is then
joined with single spaces. For example `@ cape girardeau bridge @ ... # mississippi river #`. Both are single
characters that every BERT vocab has, so no new tokens or embeddings are needed. Zhou & Chen's *typed* variant also
adds the entity type (`@ * person * Bill @`); FewRel has no types, so the untyped form is used. An entity listed
with several mentions is marked at its first one (as FewRel's own BERT encoder does, `h[2][0]`). Whitespace-only
tokens, which val_wiki.json has, are dropped when joining.

Settings (`load_fewrel(data_dir, setting)`), in `<data>/fewrel/`:
  * `train64` (the paper's 64 training relations): the official `train_wiki.json` (700 per relation) when present,
    else `train_wiki_partial_lowercased_from_CFRL.json`, the shared partial, lowercased rebuild with 137-406
    instances per relation. Either is one pool per relation: 70 test, the rest for training, capped at 630.
  * `val16`: the 16 relations of the official `val_wiki.json` (700 each), split 630/70 as the paper does.

Errors (TaskDataError, naming file, line, relation, instance and field): invalid JSON, a structure other than the
one above, an empty sentence, entity positions that are not integers or lie outside the sentence. Nothing is skipped.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import NoReturn

from data_prep.task_types import Example, RawTask, TaskDataError, read_text
from tinybert.data_dir import dataset_dir

HEAD_MARK, TAIL_MARK = "@", "#"
FILES = {"train64": ("train_wiki.json", "train_wiki_partial_lowercased_from_CFRL.json"), "val16": ("val_wiki.json",)}
RELATIONS = {"train64": 64, "val16": 16}
EXPECTED = ("train_wiki.json (or train_wiki_partial_lowercased_from_CFRL.json), val_wiki.json and pid2name.json: "
            "FewRel 1.0 JSON {relation: [{tokens, h: [name, id, [[positions]]], t: [...]}]}")
_WS = re.compile(r"\s*")


def mark_entities(tokens: list[str], head: tuple[int, int], tail: tuple[int, int]) -> str:
    """The sentence with `@ ... @` around tokens head[0]..head[1] and `# ... #` around the tail span (inclusive)."""
    opens, closes = {}, {}
    # The span that starts first (or, on a tie, is longer) opens first and closes last, so nested spans stay nested.
    spans = sorted([(head, HEAD_MARK), (tail, TAIL_MARK)], key=lambda s: (s[0][0], -s[0][1]))
    for (start, _), mark in spans:
        opens.setdefault(start, []).append(mark)
    for (_, end), mark in reversed(spans):
        closes.setdefault(end, []).append(mark)
    out = []
    for i, token in enumerate(tokens):
        out += opens.get(i, [])
        out.append(token)
        out += closes.get(i, [])
    return " ".join(t.strip() for t in out if t.strip())


def _instance_line(text: str, relation: str, index: int) -> int | None:
    """Line where instance `index` of `relation` starts in the JSON `text` (only computed for an error message)."""
    decoder = json.JSONDecoder()
    try:
        pos = _WS.match(text, 0).end() + 1  # past '{'
        while True:
            key, pos = decoder.raw_decode(text, _WS.match(text, pos).end())
            pos = _WS.match(text, pos).end() + 1  # past ':'
            pos = _WS.match(text, pos).end()
            if key != relation:
                _, pos = decoder.raw_decode(text, pos)  # skip this relation's whole list
                pos = _WS.match(text, pos).end() + 1  # past ','
                continue
            pos += 1  # past '['
            for _ in range(index):
                _, pos = decoder.raw_decode(text, _WS.match(text, pos).end())
                pos = _WS.match(text, pos).end() + 1  # past ','
            return text.count("\n", 0, _WS.match(text, pos).end()) + 1
    except (ValueError, IndexError):
        return None


def _fail(path: Path, text: str, relation: str, index: int, what: str) -> NoReturn:
    line = _instance_line(text, relation, index)
    raise TaskDataError(f"{path}: line {line or '?'}, relation {relation!r} instance {index}, {what}")


def _span(inst: dict, key: str, n_tokens: int, fail) -> tuple[int, int]:
    """(first, last) token of the entity's first mention, after checking every listed position."""
    role = "head" if key == "h" else "tail"
    entity = inst.get(key)
    if not isinstance(entity, list) or len(entity) < 3 or not isinstance(entity[2], list) or not entity[2]:
        fail(f"field {key!r} ({role} entity): expected [name, id, [[token positions], ...]], got "
             f"{json.dumps(entity)[:80]}")
    for mention in entity[2]:
        if not isinstance(mention, list) or not mention:
            fail(f"field {key!r} ({role} entity) positions: expected a non-empty list of token indices, got "
                 f"{json.dumps(mention)[:80]}")
        for p in mention:
            if isinstance(p, bool) or not isinstance(p, int):
                fail(f"field {key!r} ({role} entity) positions: {json.dumps(p)[:40]} is not a token index")
            if not 0 <= p < n_tokens:
                fail(f"field {key!r} ({role} entity) positions: token index {p} is outside the sentence "
                     f"({n_tokens} tokens, valid 0-{n_tokens - 1})")
    first = entity[2][0]
    return min(first), max(first)


def read_fewrel_json(path: Path) -> dict[str, list[str]]:
    """{relation pid: [marked sentence, ...]} in file order; every instance is checked (see the module docstring)."""
    text = read_text(path, EXPECTED)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not data:
        raise TaskDataError(f"{path}: line 1: expected a JSON object {{relation: [instances]}}, got "
                            f"{type(data).__name__ if data else 'an empty object'}")
    out = {}
    for relation, instances in data.items():
        if not isinstance(instances, list):
            raise TaskDataError(f"{path}: line {_instance_line(text, relation, 0) or '?'}, relation {relation!r}: "
                                f"expected a list of instances, got {type(instances).__name__}")
        sentences = []
        for i, inst in enumerate(instances):
            fail = partial(_fail, path, text, relation, i)
            if not isinstance(inst, dict):
                fail(f"expected an object with tokens, h and t, got {type(inst).__name__}")
            tokens = inst.get("tokens")
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                fail(f"field 'tokens': expected a list of strings, got {json.dumps(tokens)[:80]}")
            if not any(t.strip() for t in tokens):
                fail("field 'tokens': empty sentence")
            head = _span(inst, "h", len(tokens), fail)
            tail = _span(inst, "t", len(tokens), fail)
            sentences.append(mark_entities(tokens, head, tail))
        out[relation] = sentences
    return out


def read_pid2name(path: Path) -> dict[str, str]:
    """{pid: relation name} from FewRel's pid2name.json."""
    try:
        data = json.loads(read_text(path, EXPECTED))
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise TaskDataError(f"{path}: line 1: expected a JSON object {{pid: [name, description]}}")
    return {pid: v[0] for pid, v in data.items() if isinstance(v, list) and v and isinstance(v[0], str)}


def load_fewrel(data_dir=None, setting: str = "train64") -> RawTask:
    """All instances of the `setting`'s relations as one pool (load_task draws disjoint train and test from it)."""
    root = dataset_dir("fewrel", data_dir, EXPECTED)
    path = next((root / name for name in FILES[setting] if (root / name).is_file()), root / FILES[setting][0])
    sentences = read_fewrel_json(path)  # a missing file raises DatasetNotFound naming the expected layout
    notes = []
    if len(sentences) != RELATIONS[setting]:
        notes.append(f"{path.name}: {len(sentences)} relations, not the {RELATIONS[setting]} that {setting} expects")
    if path.name.startswith("train_wiki_partial"):
        counts = [len(v) for v in sentences.values()]
        notes.append(f"train64 uses {path.name}, a partial, lowercased rebuild of train_wiki.json "
                     f"({min(counts)}-{max(counts)} instances per relation, not 700); see PROVENANCE.md")

    names_file = root / "pid2name.json"
    names, sources = {}, [str(path)]
    if names_file.is_file():
        names = read_pid2name(names_file)
        sources.append(str(names_file))
    unnamed = [pid for pid in sentences if pid not in names]
    if unnamed:
        notes.append(f"no name in pid2name.json for {', '.join(unnamed)}; using the pid as the label name")
    label_names = [names.get(pid, pid) for pid in sentences]
    pool = [Example(text, k) for k, texts in enumerate(sentences.values()) for text in texts]
    return RawTask(label_names, pool, None, sources, notes)
