"""Fine-tuning task readers and sampling (data_prep/tasks.py, agnews.py, dbpedia.py, fewrel.py, csv_task.py).

The first group reads the real data files of whatever tinybert.data_dir resolves: the full shared data, or in a
fresh clone the embedded sample (data_prep/sample), each with its own expected counts (REAL); the rest use tiny
files in tmp_path.
"""

import csv
import json
import time
from collections import Counter

import pytest

from data_prep import agnews, dbpedia, fewrel
from data_prep.csv_task import load_csv_task
from data_prep.fewrel import mark_entities, read_fewrel_json
from data_prep.tasks import (DEFAULT_SIZES, TASKS, Example, RawTask, TaskDataError, dedupe, load_task,
                             sample_per_label)
from tinybert.data_dir import DatasetNotFound, is_sample_dir, resolve_data_dir

DATA = resolve_data_dir()
# What the real files hold: the full shared data, and the embedded sample built from it by data_prep/make_sample.py
# (1,250/1,000 AG News rows per label, 220 DBpedia rows per label, 80 FewRel instances per relation).
REAL = {
    "full": {"agnews_rows": (19995, 7600), "dbpedia_rows": 10000, "fewrel_train_rows": 11575,
             "agnews_first_test": "Fears for T N pension after talks Unions representing",
             "fewrel_unmarked": 11559,  # train64 instances without a literal '@' or '#' token
             "val16_trainval": [629] + [630] * 15,  # 'main subject' has one exact duplicate
             "val16_val_label0": 63},
    "sample": {"agnews_rows": (4995, 4000), "dbpedia_rows": 3080, "fewrel_train_rows": 5120,
               "agnews_first_test": "The Race is On: Second Private Team Sets Launch Date",
               "fewrel_unmarked": 5109,
               "val16_trainval": [10] * 16,  # 80 per relation: 70 test, 9 train, 1 val
               "val16_val_label0": 1},
}["sample" if is_sample_dir(DATA) else "full"]


def per_label(examples):
    return Counter(ex.label for ex in examples)


def assert_disjoint(task):
    ids = [{id(ex) for ex in split} for split in (task.train, task.val, task.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    texts = [{ex.text for ex in split} for split in (task.train, task.val, task.test)]
    assert not texts[0] & texts[2] and not texts[1] & texts[2]


# ---------------------------------------------------------------- real files (full data or the sample)


def test_agnews_shared_defaults_fast_and_balanced():
    t0 = time.perf_counter()
    task = load_task("agnews", DATA)
    assert time.perf_counter() - t0 < 3.0
    assert (task.name, task.setting) == ("agnews", "agnews-1000/1000")
    assert task.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert per_label(task.train) == {k: 900 for k in range(4)}
    assert per_label(task.val) == {k: 100 for k in range(4)}
    assert per_label(task.test) == {k: 1000 for k in range(4)}
    assert [p.split("/")[-1] for p in task.sources] == ["train_subset_20k.csv", "test.csv"]
    assert any("'#NAME?'" in n and "5 rows" in n for n in task.notes)
    assert not any("#NAME?" in ex.text for ex in task.train + task.val)
    assert_disjoint(task)


def test_agnews_text_is_title_space_description():
    with open(DATA / "agnews" / "test.csv", encoding="utf-8", newline="") as f:
        first = next(csv.reader(f))
    raw = agnews.load_agnews(DATA)
    assert raw.test[0] == Example(f"{first[1]} {first[2]}", int(first[0]) - 1)
    assert raw.test[0].text.startswith(REAL["agnews_first_test"])
    assert (len(raw.train), len(raw.test)) == REAL["agnews_rows"]


def test_dbpedia_shared_pool_split_and_empty_titles():
    task = load_task("dbpedia", DATA)
    assert task.setting == "dbpedia-100/100" and len(task.label_names) == 14
    assert per_label(task.train) == {k: 90 for k in range(14)}
    assert per_label(task.val) == {k: 10 for k in range(14)}
    assert per_label(task.test) == {k: 100 for k in range(14)}
    assert_disjoint(task)
    assert any("no official train/test split" in n for n in task.notes)
    assert any("1 exact duplicate" in n for n in task.notes)
    with open(DATA / "dbpedia" / "dbpedia_dhim_10k_zhangformat.csv", encoding="utf-8", newline="") as f:
        cls, title, content = next(csv.reader(f))
    raw = dbpedia.load_dbpedia(DATA)
    assert title == "" and raw.train[0] == Example(content, int(cls) - 1)  # empty title: content alone, no space
    assert raw.test is None and len(raw.train) == REAL["dbpedia_rows"]
    assert all(ex.text == ex.text.strip() for ex in raw.train)


def test_fewrel_train64_shared_counts_and_markers():
    task = load_task("fewrel", DATA)
    assert task.setting == "fewrel-train64" and len(task.label_names) == 64
    assert task.label_names[0] == "place served by transport hub"  # P931, named via pid2name.json
    assert per_label(task.test) == {k: 70 for k in range(64)}
    raw = fewrel.load_fewrel(DATA, "train64")
    assert len(raw.train) == REAL["fewrel_train_rows"]
    # Per relation: 70 for test, the rest (capped at 630) for train + val, less any text that is a test text
    # (41 marked sentences carry two relations).
    test_texts = {ex.text for ex in task.test}
    left = Counter(ex.label for ex in dedupe(raw.train, "pool")[0] if ex.text not in test_texts)
    trainval = per_label(task.train + task.val)
    assert all(trainval[k] == min(630, left[k]) for k in range(64))
    assert 0 < sum(min(630, n) for n in per_label(dedupe(raw.train, "pool")[0]).values()) - 70 * 64 - len(
        task.train + task.val) <= 41
    assert any("64 of 64 labels have fewer rows" in n for n in task.notes)
    assert all(ex.text.count("@") >= 2 and ex.text.count("#") >= 2 for ex in task.train + task.test)
    assert_disjoint(task)


def test_fewrel_markers_around_the_right_words():
    val = read_fewrel_json(DATA / "fewrel" / "val_wiki.json")
    assert val["P177"][0] == ("In June 1987 , the Missouri Highway and Transportation Department approved design "
                              "location of a new four - lane # Mississippi River # bridge to replace the "
                              "deteriorating @ Cape Girardeau Bridge @ .")
    # In the rebuilt file every head/tail name is the space-joined span, so the marked words must equal it.
    path = DATA / "fewrel" / "train_wiki_partial_lowercased_from_CFRL.json"
    raw, marked = json.loads(path.read_text()), read_fewrel_json(path)
    checked = 0
    for pid, instances in raw.items():
        for inst, text in zip(instances, marked[pid]):
            if any(t in ("@", "#") for t in inst["tokens"]):
                continue
            for mark, entity in (("@", inst["h"]), ("#", inst["t"])):
                start = text.index(f"{mark} ") + 2
                assert text[start:text.index(f" {mark}", start)] == entity[0]
            checked += 1
    assert checked == REAL["fewrel_unmarked"]


def test_fewrel_val16_shared():
    task = load_task("fewrel", DATA, setting="val16")
    assert task.setting == "fewrel-val16" and len(task.label_names) == 16
    assert task.label_names[:2] == ["crosses", "original language of film or TV show"]
    assert per_label(task.test) == {k: 70 for k in range(16)}
    trainval = per_label(task.train + task.val)
    assert sorted(trainval.values()) == REAL["val16_trainval"]
    assert per_label(task.val)[0] == REAL["val16_val_label0"]
    assert "val_wiki.json" in task.sources[0]


# ---------------------------------------------------------------- tiny files: readers


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def zhang(rows):
    return "".join(",".join(f'"{f}"' for f in row) + "\n" for row in rows)


def agnews_dir(tmp_path, train_rows=None, test_rows=None, train_name="train_subset_20k.csv"):
    rows = [("1", "T1", "world news"), ("2", "T2", "sports news"), ("3", "T3", "business"), ("4", "T4", "tech")]
    write(tmp_path / "agnews" / train_name, zhang(train_rows or rows))
    write(tmp_path / "agnews" / "test.csv", zhang(test_rows or [(c, t + "x", d) for c, t, d in rows]))
    return tmp_path


def test_agnews_tiny_files_and_official_train_preferred(tmp_path):
    agnews_dir(tmp_path)
    raw = agnews.load_agnews(tmp_path)
    assert raw.train[1] == Example("T2 sports news", 1) and raw.test[3] == Example("T4x tech", 3)
    write(tmp_path / "agnews" / "train.csv", zhang([("4", 'say ""hi""', "b")]))
    raw = agnews.load_agnews(tmp_path)
    assert raw.sources[0].endswith("/train.csv") and raw.train == [Example('say "hi" b', 3)]


@pytest.mark.parametrize("rows, line, field", [
    ('"1","a","b"\n"2","only two"\n', "line 2", "expected 3 fields (class, title, description), got 2"),
    ('"1","a","b"\n\n"5","a","b"\n', "line 3", "field 1 (class): expected an integer 1-4, got '5'"),
    ('"x","a","b"\n', "line 1", "field 1 (class): expected an integer 1-4, got 'x'"),
    ('"1","a","b"\n"2"," ",""\n', "line 2", "fields 2-3 (title, description): both empty"),
    ('"1","a","b"\n"2","a","unterminated\n', "line 2", "malformed CSV (unexpected end of data)"),
])
def test_agnews_bad_rows_name_file_line_field(tmp_path, rows, line, field):
    agnews_dir(tmp_path)
    write(tmp_path / "agnews" / "test.csv", rows)
    with pytest.raises(TaskDataError) as e:
        load_task("agnews", tmp_path)
    message = str(e.value)
    assert "test.csv" in message and (f"{line}:" in message or f"{line}," in message) and field in message


def test_non_utf8_byte_reports_line(tmp_path):
    agnews_dir(tmp_path)
    write(tmp_path / "agnews" / "test.csv", b'"1","a","b"\n"2","a","b"\n"3","caf\xe9","b"\n')
    with pytest.raises(TaskDataError, match=r"test\.csv: line 3, byte 9 of the line: 0xe9 is not valid UTF-8"):
        load_task("agnews", tmp_path)


def test_missing_files_say_what_was_expected(tmp_path):
    with pytest.raises(DatasetNotFound, match="agnews does not exist.*test.csv and train.csv"):
        load_task("agnews", tmp_path)
    write(tmp_path / "agnews" / "train_subset_20k.csv", zhang([("1", "a", "b")]))
    with pytest.raises(DatasetNotFound, match="no test.csv"):
        load_task("agnews", tmp_path)
    (tmp_path / "dbpedia").mkdir()
    with pytest.raises(DatasetNotFound, match="dbpedia_dhim_10k_zhangformat.csv"):
        load_task("dbpedia", tmp_path)
    (tmp_path / "fewrel").mkdir()
    with pytest.raises(DatasetNotFound, match="val_wiki.json: no such file"):
        load_task("fewrel", tmp_path, setting="val16")


def test_dbpedia_titles_classes_and_official_split(tmp_path):
    write(tmp_path / "dbpedia" / "dbpedia_dhim_10k_zhangformat.csv",
          zhang([("14", "", " Mfumu'eto is a magazine."), ("1", "Acme", " Acme is a company.")]))
    raw = dbpedia.load_dbpedia(tmp_path)
    assert raw.train == [Example("Mfumu'eto is a magazine.", 13), Example("Acme Acme is a company.", 0)]
    assert raw.test is None and any("drawn disjointly" in n for n in raw.notes)
    write(tmp_path / "dbpedia" / "dbpedia_csv" / "train.csv", zhang([("2", "A", "x")]))
    write(tmp_path / "dbpedia" / "dbpedia_csv" / "test.csv", zhang([("15", "A", "x")]))
    with pytest.raises(TaskDataError, match=r"test\.csv: line 1, field 1 \(class\): expected an integer 1-14, "
                                            r"got '15'"):
        dbpedia.load_dbpedia(tmp_path)


def test_mark_entities():
    toks = ["Bill", "Gates", "was", "born", "in", " ", "Seattle", "."]
    assert mark_entities(toks, (0, 1), (6, 6)) == "@ Bill Gates @ was born in # Seattle # ."
    assert mark_entities(toks, (6, 6), (0, 0)) == "# Bill # Gates was born in @ Seattle @ ."
    assert mark_entities(toks, (0, 3), (1, 2)) == "@ Bill # Gates was # born @ in Seattle ."  # nested
    assert mark_entities(toks, (2, 2), (2, 2)) == "Bill Gates @ # was # @ born in Seattle ."  # same span


def fewrel_instance(tokens, h, t):
    return {"tokens": tokens, "h": ["h", "Q1", [h]], "t": ["t", "Q2", [t]]}


def test_fewrel_tiny_settings_names_and_markers(tmp_path):
    data = {"P1": [fewrel_instance(["a", "b", "c"], [0], [2])] * 2 + [fewrel_instance(["d", "e", "f"], [1], [0])],
            "P2": [fewrel_instance(["x", "y", "z", "w"], [1, 2], [3]), fewrel_instance(["p", "q"], [0], [1])]}
    write(tmp_path / "fewrel" / "val_wiki.json", json.dumps(data))
    raw = fewrel.load_fewrel(tmp_path, "val16")
    assert raw.label_names == ["P1", "P2"] and any("no name in pid2name.json" in n for n in raw.notes)
    assert raw.train[0] == Example("@ a @ b # c #", 0) and raw.train[-2] == Example("x @ y z @ # w #", 1)
    write(tmp_path / "fewrel" / "pid2name.json", json.dumps({"P1": ["one", "d"], "P2": ["two", "d"]}))
    partial = tmp_path / "fewrel" / "train_wiki_partial_lowercased_from_CFRL.json"
    write(partial, json.dumps({"P2": data["P2"]}))
    small = dict(train_per_label=1, test_per_label=1, val_per_label=0)
    with pytest.raises(TaskDataError, match=r"1 class \('two'\); classification needs at least two"):
        load_task("fewrel", tmp_path, **small)
    write(partial, json.dumps({"P2": data["P2"], "P1": data["P1"]}))
    task = load_task("fewrel", tmp_path, **small)
    assert task.setting == "fewrel-train64-1/1" and task.label_names == ["two", "one"]  # in file order
    assert any("2 relations, not the 64" in n for n in task.notes)
    write(tmp_path / "fewrel" / "train_wiki.json", json.dumps(data))  # the official file wins
    assert load_task("fewrel", tmp_path, **small).label_names == ["one", "two"]
    task = load_task("fewrel", tmp_path, setting="val16", **small)
    assert task.setting == "fewrel-val16-1/1" and any("dropped 1 exact duplicate" in n for n in task.notes)
    # the paper's 70 test rows per relation would take every row of these tiny relations: nothing left to train on
    with pytest.raises(TaskDataError, match=r"2 class\(es\) have test rows but no training rows: 'one' \(2 test"):
        load_task("fewrel", tmp_path, setting="val16")


@pytest.mark.parametrize("instance, match", [
    (fewrel_instance(["a", "b"], [0], [2]), r"field 't' \(tail entity\) positions: token index 2 is outside the "
                                            r"sentence \(2 tokens, valid 0-1\)"),
    (fewrel_instance(["a", "b"], [-1], [1]), r"field 'h' \(head entity\) positions: token index -1 is outside"),
    (fewrel_instance(["a", "b"], ["0"], [1]), r"field 'h' \(head entity\) positions: \"0\" is not a token index"),
    (fewrel_instance(["a", "b"], [], [1]), r"field 'h' \(head entity\) positions: expected a non-empty list"),
    (fewrel_instance([" ", ""], [0], [1]), r"field 'tokens': empty sentence"),
    ({"tokens": ["a"], "h": ["a", "Q1"], "t": ["a", "Q2", [[0]]]}, r"field 'h' \(head entity\): expected \[name"),
])
def test_fewrel_bad_instances_name_file_line_relation_field(tmp_path, instance, match):
    good = fewrel_instance(["a", "b"], [0], [1])
    data = {"P1": [good, good], "P2": [good, instance]}
    path = write(tmp_path / "fewrel" / "val_wiki.json", json.dumps(data, indent=2))
    starts = [i + 1 for i, line in enumerate(json.dumps(data, indent=2).split("\n")) if line == "    {"]
    instance_line = starts[3]  # the second instance of P2
    with pytest.raises(TaskDataError, match=match) as e:
        read_fewrel_json(path)
    assert str(e.value).startswith(f"{path}: line {instance_line}, relation 'P2' instance 1, ")
    write(path, json.dumps(data))  # one-line JSON, as the official files are: line 1
    with pytest.raises(TaskDataError, match=rf"{path.name}: line 1, relation 'P2' instance 1, "):
        read_fewrel_json(path)


def test_fewrel_invalid_json_and_structure(tmp_path):
    path = write(tmp_path / "val_wiki.json", '{"P1": [\n  {"tokens": ["a"],}\n]}')
    with pytest.raises(TaskDataError, match=r"val_wiki\.json: line 2, column \d+: not valid JSON"):
        read_fewrel_json(path)
    write(path, '[{"tokens": ["a"]}]')
    with pytest.raises(TaskDataError, match=r"line 1: expected a JSON object"):
        read_fewrel_json(path)


# ---------------------------------------------------------------- sampling


def pools(n_per_label=(50, 50, 50), test=True):
    train = [Example(f"train {k} {i}", k) for k, n in enumerate(n_per_label) for i in range(n)]
    tst = [Example(f"test {k} {i}", k) for k, n in enumerate(n_per_label) for i in range(n)] if test else None
    return RawTask([f"L{k}" for k in range(len(n_per_label))], train, tst, ["a.csv", "b.csv"])


@pytest.mark.parametrize("two_files", [True, False])
def test_sampling_balanced_disjoint_deterministic(two_files):
    raw = pools(test=two_files)
    train, val, test, notes = sample_per_label(raw, 20, 10, None, seed=3)
    assert per_label(train) == {0: 18, 1: 18, 2: 18} and per_label(val) == {0: 2, 1: 2, 2: 2}
    assert per_label(test) == {0: 10, 1: 10, 2: 10} and notes == []
    texts = [{ex.text for ex in s} for s in (train, val, test)]
    assert len(set.union(*texts)) == 90  # no example twice, across or within splits
    if two_files:
        assert all(t.startswith("test") for t in texts[2]) and not any(t.startswith("test") for t in texts[0])
    assert (train, val, test) == sample_per_label(raw, 20, 10, None, seed=3)[:3]  # deterministic
    other = sample_per_label(raw, 20, 10, None, seed=4)
    assert {ex.text for ex in other[0]} != texts[0] and {ex.text for ex in other[2]} != texts[2]
    assert [ex.label for ex in train] != sorted(ex.label for ex in train)  # labels interleaved


def test_sampling_fewer_than_asked_and_val_sizes():
    train, val, test, notes = sample_per_label(pools((50, 12, 50)), 20, 10, None, seed=0)
    assert per_label(train + val) == {0: 20, 1: 12, 2: 20} and per_label(test) == {0: 10, 1: 10, 2: 10}
    assert per_label(val) == {0: 2, 1: 1, 2: 2}
    assert notes == ["train: label 'L1' has 12 rows, fewer than the 20 asked; using 12"]
    # single pool: test is taken first, the rest goes to train
    train, val, test, notes = sample_per_label(pools((50, 12, 50), test=False), 20, 10, 0, seed=0)
    assert per_label(test)[1] == 10 and per_label(train)[1] == 2 and val == []
    assert notes == ["train: label 'L1' has 2 rows left after its test rows, fewer than the 20 asked; using 2"]
    _, val, _, notes = sample_per_label(pools((50, 3, 50)), 20, 10, 5, seed=0)
    assert per_label(val) == {0: 5, 1: 2, 2: 5}
    assert "val: label 'L1' has 3 training rows; carving 2 for validation, not the 5 asked" in notes
    assert "test: label 'L1' has 3 rows, fewer than the 10 asked; using 3" in notes
    *_, notes = sample_per_label(pools((5,) * 8), 20, 1, None, seed=0)  # many short labels: one merged note
    assert notes == ["train: 8 of 8 labels have fewer rows than the 20 asked; using what there is (5-5 per label): "
                     + ", ".join(f"'L{k}' 5" for k in range(8))]


def test_sampling_keeps_test_texts_out_of_train_across_labels():
    # One text under two labels (a FewRel sentence that carries two relations) must not be in test and train both.
    rows = [Example(f"t{i}", i % 2) for i in range(40)] + [Example("shared", 0), Example("shared", 1)]
    raw = RawTask(["a", "b"], rows, None, ["pool.csv"])
    left_out = 0
    for seed in range(20):
        train, val, test, notes = sample_per_label(raw, 100, 5, None, seed)
        assert not {ex.text for ex in test} & {ex.text for ex in train + val}
        left_out += any("left out because their text is in the test set" in n for n in notes)
    assert left_out > 0


def test_load_task_arguments(tmp_path):
    assert TASKS == ("agnews", "dbpedia", "fewrel", "csv")
    assert DEFAULT_SIZES == {"agnews": (1000, 1000), "dbpedia": (100, 100), "fewrel": (630, 70)}
    agnews_dir(tmp_path)
    task = load_task("agnews", tmp_path, train_per_label=1, test_per_label=1, val_per_label=0, seed=1)
    assert task.setting == "agnews-1/1" and len(task.train) == 4 and task.val == [] and task.num_labels == 4
    with pytest.raises(ValueError, match="unknown task"):
        load_task("imdb", tmp_path)
    with pytest.raises(ValueError, match="train_file only apply to the csv task"):
        load_task("agnews", tmp_path, train_file="x.csv")
    with pytest.raises(ValueError, match="setting only applies to fewrel"):
        load_task("agnews", tmp_path, setting="val16")
    with pytest.raises(ValueError, match="train_per_label must be an integer >= 1"):
        load_task("agnews", tmp_path, train_per_label=0)
    with pytest.raises(ValueError, match="unknown fewrel setting"):
        load_task("fewrel", tmp_path, setting="all80")


# ---------------------------------------------------------------- generic CSV task


def test_csv_string_labels_union_sorted(tmp_path):
    train = write(tmp_path / "train.csv", 'text,label\n"good, really",pos\nbad movie,neg\nfine,pos\n')
    test_only = write(tmp_path / "test_only.csv", "text,label\nmeh,neutral\nawful,neg\nso so,neutral\n")
    with pytest.raises(TaskDataError, match=r"test_only\.csv: label\(s\) 'neutral' \(lines 2, 4\) never occur in "
                                            r"the training file .*train\.csv"):
        load_task("csv", train_file=train, test_file=test_only)
    test = write(tmp_path / "test.csv", "text,label\nawful,neg\nok,pos\n")
    task = load_task("csv", train_file=train, test_file=test, train_per_label=None)
    assert task.setting == "csv:train.csv" and task.label_names == ["neg", "pos"]
    assert sorted((ex.text, ex.label) for ex in task.train + task.val) == [
        ("bad movie", 0), ("fine", 1), ("good, really", 1)]
    assert sorted((ex.text, ex.label) for ex in task.test) == [("awful", 0), ("ok", 1)]


def test_csv_tsv_by_extension_and_by_sniffing_with_index_columns(tmp_path):
    text = "".join(f'{k}\t"quoted" text {k} number {i}\n' for i in range(10) for k in (2, 10))
    for name in ("data.tsv", "data.txt"):
        raw = load_csv_task(write(tmp_path / name, text), text_col=1, label_col="0")
        assert raw.label_names == ["2", "10"]  # integer labels: numeric order
        assert raw.train[0] == Example('"quoted" text 2 number 0', 0) and raw.train[1].label == 1
    task = load_task("csv", train_file=tmp_path / "data.tsv", text_col=1, label_col=0, seed=5)
    assert per_label(task.test) == {0: 2, 1: 2} and per_label(task.train + task.val) == {0: 8, 1: 8}
    assert any("no test file" in n for n in task.notes)
    assert_disjoint(task)


def test_csv_jsonl_objects_and_arrays(tmp_path):
    rows = [{"sentence": f"s {i}", "y": ["b", "a"][i % 2]} for i in range(6)]
    path = write(tmp_path / "d.jsonl", "\n".join(map(json.dumps, rows)) + "\n\n")
    raw = load_csv_task(path, text_col="sentence", label_col="y")
    assert raw.label_names == ["a", "b"] and raw.train[0] == Example("s 0", 1)
    path = write(tmp_path / "d.json", '["one two", 1]\n["three", 0]\n')
    assert load_csv_task(path, text_col=0, label_col=1).train == [Example("one two", 1), Example("three", 0)]


@pytest.mark.parametrize("name, content, cols, match", [
    ("a.csv", "text,label\nx,1\ny,2,3\n", {}, r"a\.csv: line 3: expected 2 fields \(as on the first line\), got 3"),
    ("a.csv", "text,label\nx,1\n  ,2\n", {}, r"a\.csv: line 3, field 'text' \(text column\): empty text"),
    ("a.csv", "text,label\nx,1\ny,\n", {}, r"a\.csv: line 3, field 'label' \(label column\): empty label"),
    ("a.csv", "sentence,label\nx,1\n", {}, r"a\.csv: line 1: no column named 'text' \(the text column\)"),
    ("a.tsv", "sentence\tlabel\nsome text\t1\nmore text\t0\n", {"text_col": 0, "label_col": 1},
     r"a\.tsv: line 1, field 1 \(label column\): 'label' looks like a header"),
    ("a.tsv", "x\t1\n", {"text_col": 0, "label_col": 2}, r"a\.tsv: line 1: label column index 2 but the line has 2"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1.5}\n', {},
     r"a\.jsonl: line 2, field 'label' \(label column\): expected an integer or a string, got 1.5"),
    ("a.jsonl", '{"text": "a", "label": true}\n', {}, r"line 1, field 'label' \(label column\): expected an integer"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b" "label": 1}\n', {},
     r"a\.jsonl: line 2, column \d+: not valid"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 1}\n', {}, r"line 2, field 'text' \(text column\)"),
    ("a.csv", b"text,label\nok,1\n\xff,2\n", {}, r"a\.csv: line 3, byte 1 of the line: 0xff is not valid UTF-8"),
    ("a.csv", "text,label\n", {}, r"a\.csv: no data rows"),
])
def test_csv_bad_input_names_file_line_field(tmp_path, name, content, cols, match):
    path = write(tmp_path / name, content)
    with pytest.raises(TaskDataError, match=match):
        load_task("csv", train_file=path, **cols)


def test_csv_classes_that_cannot_be_measured(tmp_path):
    one = write(tmp_path / "one.csv", "text,label\na b,pos\nc d,pos\ne f,pos\n")
    with pytest.raises(TaskDataError, match=r"one\.csv: 1 class \('pos'\); classification needs at least two"):
        load_task("csv", train_file=one)
    # integers and strings in one label column would become separate classes ('1', '2', 'pos', ...)
    mixed = write(tmp_path / "mixed.csv", "text,label\na,1\nb,2\nc,pos\nd,1\n")
    with pytest.raises(TaskDataError, match=r"mixed\.csv: line 4, field 'label' \(label column\): 'pos' is a string "
                                            r"label, but .*mixed\.csv line 2 has the integer label '1'"):
        load_task("csv", train_file=mixed)
    train = write(tmp_path / "train.csv", "text,label\na,1\nb,2\n")
    test = write(tmp_path / "test.csv", "text,label\nc,01\nd,neg\n")
    with pytest.raises(TaskDataError, match=r"test\.csv: line 3, .*'neg' is a string label, but .*train\.csv line 2 "
                                            r"has the integer label '1'"):
        load_task("csv", train_file=train, test_file=test)


def test_small_test_sets_and_a_three_row_csv_are_flagged(tmp_path):
    rows = "".join(f"text {i},{['pos', 'neg'][i % 2]}\n" for i in range(40))
    task = load_task("csv", train_file=write(tmp_path / "forty.csv", "text,label\n" + rows))  # 4 test rows a class
    assert any(n.startswith("warning: the test set is too small to measure well: 2 of 2 classes have fewer than 10 "
                            "test rows ('neg' 4, 'pos' 4); with 8 test rows one prediction moves the accuracy by "
                            "12.5 points") for n in task.notes), task.notes
    rows = "".join(f"text {i},{['pos', 'neg'][i % 2]}\n" for i in range(120))
    big = load_task("csv", train_file=write(tmp_path / "big.csv", "text,label\n" + rows))  # 12 test rows a class
    assert not any("too small" in n for n in big.notes)
    tiny = load_task("csv", train_file=write(tmp_path / "three.csv", "text,label\na,pos\nb,pos\nc,neg\n"))
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (2, 0, 1)
    assert any("'neg' 0, 'pos' 1" in n for n in tiny.notes) and any("no validation rows" in n for n in tiny.notes)
