"""DBpedia-14 reader (Zhang, Zhao & LeCun 2015, `dbpedia_csv`): the raw CSV files -> labelled texts.

Where it sits in the flow: raw files -> **data_prep/dbpedia.py** -> texts + labels (RawTask) -> data_prep/tasks.py
samples 100/100 per label -> tokenizer -> batches -> model.

Format: as AG News (data_prep/zhang_csv.py): no header, `class (1-14)`, `title`, `content`. Class i becomes label i-1,
named as in `classes.txt` (Company ... WrittenWork). The text is `title + " " + content`, or the content alone when
the title is empty, which it is in every row of the shared copy (its source kept no titles). The content almost
always starts with the entity's name anyway. (The paper's code uses the content only.)

Files, looked for in `<data>/dbpedia/` and then `<data>/dbpedia/dbpedia_csv/` (how the official tarball unpacks):
  * the official `train.csv` + `test.csv`, when both are present: train and test are sampled from their own file;
  * otherwise `dbpedia_dhim_10k_zhangformat.csv` (the shared copy, see PROVENANCE.md): 10,000 real rows, 664-754 per
    class, already in Zhang class order. It has no official train/test split (its rows come from both official
    splits), so the 10k rows are one pool: load_task shuffles each label's rows with the seed and takes the test
    rows first and the training rows after them, so train and test are disjoint. The one duplicated row is
    dropped before that. A note in TaskData.notes says which of the two ran.
Not read: `dhim/*.csv` (the same 10k rows in DHIM's own class numbering) and `keaml_deeptextclustering/` (re-tokenized
text with TABs between sentences; its style would differ from the rest).

Skips and errors: as AG News (`#NAME?` rows skipped and counted; anything else invalid is a TaskDataError).
"""

from __future__ import annotations

from data_prep.task_types import RawTask
from data_prep.zhang_csv import find_file, read_zhang_csv
from tinybert.data_dir import DatasetNotFound, dataset_dir

LABEL_NAMES = ["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
               "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"]
SHARED_FILE = "dbpedia_dhim_10k_zhangformat.csv"
EXPECTED = (f"train.csv + test.csv, or {SHARED_FILE}: Zhang-format CSV, no header, class (1-14), title, content")
FIELDS = ("class", "title", "content")


def load_dbpedia(data_dir=None) -> RawTask:
    """Every usable DBpedia row: official train/test pools, or the shared 10k file as one pool."""
    root = dataset_dir("dbpedia", data_dir, EXPECTED)
    folders = [root, root / "dbpedia_csv"]
    train, test = find_file(folders, "train.csv"), find_file(folders, "test.csv")
    if train is not None and test is not None:
        train_rows, notes = read_zhang_csv(train, LABEL_NAMES, FIELDS, EXPECTED)
        test_rows, more = read_zhang_csv(test, LABEL_NAMES, FIELDS, EXPECTED)
        return RawTask(LABEL_NAMES, train_rows, test_rows, [str(train), str(test)], notes + more)

    pool = find_file(folders, SHARED_FILE)
    if pool is None:
        raise DatasetNotFound(f"{root}: no DBpedia files. Expected there: {EXPECTED}.")
    rows, notes = read_zhang_csv(pool, LABEL_NAMES, FIELDS, EXPECTED)
    notes.append(f"no official train/test split here: train and test are drawn disjointly per label from the "
                 f"{len(rows)} rows of {pool.name} (seeded shuffle per label, test rows first)")
    return RawTask(LABEL_NAMES, rows, None, [str(pool)], notes)
