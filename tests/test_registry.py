"""The task table (data_prep/registry.py): the built-in rows keep today's numbers, a new task is one reader plus one
row (shown with a throwaway TREC-style task defined here), and data_prep's imports have no cycle."""

import ast
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from data_prep import registry
from data_prep.csv_task import load_csv_task
from data_prep.registry import Setting, TaskRow, get_task, task_names
from data_prep.tasks import load_task
from tinybert import overlap
from tinybert.data_dir import dataset_dir

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("eval_cli_registry", ROOT / "eval.py")
evalcli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evalcli)


def test_builtin_rows_keep_the_numbers():
    assert task_names() == ("agnews", "dbpedia", "fewrel", "csv")
    assert task_names(data_dir_only=True) == ("agnews", "dbpedia", "fewrel")
    # what runner.py's NUM_LABELS and tasks.py's DEFAULT_SIZES / FEWREL_SETTINGS held
    assert {n: get_task(n).label_count() for n in task_names()} == {"agnews": 4, "dbpedia": 14, "fewrel": 64,
                                                                     "csv": None}
    assert get_task("fewrel").label_count("val16") == 16 == get_task("fewrel").label_count("fewrel-val16")
    assert get_task("fewrel").label_count("train64") == 64
    assert {n: get_task(n).default_sizes for n in task_names()} == {
        "agnews": (1000, 1000), "dbpedia": (100, 100), "fewrel": (630, 70), "csv": (None, None)}
    assert get_task("fewrel").setting_names == ("train64", "val16")
    assert "class (1-4)" in get_task("agnews").expected and "class (1-14)" in get_task("dbpedia").expected
    with pytest.raises(ValueError, match="unknown task 'imdb'; expected one of agnews, dbpedia, fewrel, csv"):
        get_task("imdb")
    with pytest.raises(ValueError, match="unknown fewrel setting 'all80'"):
        get_task("fewrel").resolve_setting("all80")


def test_rows_are_frozen_and_checked():
    row = get_task("agnews")
    with pytest.raises(AttributeError):
        row.num_labels = 5
    with pytest.raises(ValueError, match="already registered"):
        registry.register(TaskRow("agnews", row.reader, 4, 54))
    with pytest.raises(ValueError, match="unknown reader options"):
        TaskRow("x", row.reader, 2, 10, options=("vocab",))


# ------------------------------------------------------------- a new task: one reader (below) and one row

TREC_EXPECTED = "train.csv and test.csv: CSV with a header, columns question and coarse"


def load_trec(data_dir=None):
    """The whole reader of a TREC-style question-type task: two CSV files in <data dir>/trec/."""
    root = dataset_dir("trec", data_dir, TREC_EXPECTED)
    return load_csv_task(root / "train.csv", root / "test.csv", "question", "coarse")


TREC_ROW = TaskRow("trec", load_trec, num_labels=2, default_sizes=(12, 5),
                   expected=TREC_EXPECTED)

WORDS = ["good", "bad"] + [f"w{i}" for i in range(8)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def write_trec(root: Path, n: int, name: str) -> None:
    (root / "trec").mkdir(parents=True, exist_ok=True)
    with open(root / "trec" / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "coarse"])
        for i in range(n):
            label = ("DESC", "NUM")[i % 2]
            w.writerow([f"{'good' if label == 'DESC' else 'bad'} w{i % 8} w{(3 * i) % 8} {name[:2]}{i}", label])


@pytest.fixture
def trec(tmp_path):
    write_trec(tmp_path, 40, "train.csv")
    write_trec(tmp_path, 12, "test.csv")
    registry.register(TREC_ROW)
    try:
        yield tmp_path
    finally:
        registry.unregister("trec")
    assert "trec" not in task_names()


def test_a_new_task_is_one_reader_and_one_row(trec, capsys):
    # load_task: dispatch, default sizes and the sample's name all come from the row
    task = load_task("trec", trec, seed=3)
    assert task.name == "trec" and task.setting == "trec-12/5" and task.label_names == ["DESC", "NUM"]
    assert len(task.train) + len(task.val) == 24 and len(task.test) == 10
    assert task.sources == [str(trec / "trec" / "train.csv"), str(trec / "trec" / "test.csv")]
    with pytest.raises(ValueError, match="train_file only apply to the csv task"):
        load_task("trec", trec, train_file="x.csv")
    with pytest.raises(ValueError, match=r"setting only applies to fewrel \(train64 or val16\)"):
        load_task("trec", trec, setting="val16")

    # the commands' --task choices (parsers built after the row was registered)
    assert evalcli.build_parser().parse_args(["--task", "trec", "--no-pretrain"]).task == "trec"
    assert overlap.build_parser().parse_args(["--task", "trec", "--wiki-size", "1"]).task == "trec"
    assert get_task("trec").label_count() == 2  # the runner's estimate

    # and eval.py end to end, with the real reader: nothing else was changed for this task
    (trec / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    out = trec / "out"
    rc = evalcli.main(["--task", "trec", "--data-dir", str(trec), "--no-pretrain", "--preset", "tiny",
                       "--vocab", str(trec / "vocab.txt"), "--out", str(out), "--device", "cpu", "--precision",
                       "fp32", "--batch-size", "8", "--max-length", "16", "--epochs", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "trec" and res["setting"] == "trec-12/5" and res["label_names"] == ["DESC", "NUM"]
    assert res["runs"][0]["data"]["test"] == 10


def test_an_unregistered_task_is_refused_everywhere(tmp_path, capsys):
    assert "trec" not in task_names()
    with pytest.raises(ValueError, match="unknown task 'trec'"):
        load_task("trec", tmp_path)
    assert evalcli.main(["--task", "trec", "--no-pretrain"]) == 2
    assert "invalid choice: 'trec'" in capsys.readouterr().err


def test_a_row_with_settings_passes_the_setting_to_its_reader(tmp_path):
    seen = []

    def reader(data_dir=None, setting="a"):
        seen.append(setting)
        return load_trec(data_dir)

    write_trec(tmp_path, 20, "train.csv")
    write_trec(tmp_path, 20, "test.csv")
    registry.register(TaskRow("trec2", reader, 2, (4, 2), settings=(Setting("a"), Setting("b", 3))))
    try:
        assert load_task("trec2", tmp_path).setting == "trec2-a"
        assert load_task("trec2", tmp_path, setting="trec2-b", train_per_label=3).setting == "trec2-b-3/2"
        assert seen == ["a", "b"] and get_task("trec2").label_count("b") == 3
    finally:
        registry.unregister("trec2")


# ------------------------------------------------------------------------------------------ import graph


def _data_prep_imports(path: Path) -> set[str]:
    """data_prep modules that `path` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("data_prep"):
            if node.module == "data_prep":  # from data_prep import agnews, ...
                found |= {f"data_prep.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("data_prep.")}
    return found


def test_data_prep_has_no_import_cycles():
    modules = {f"data_prep.{p.stem}": p for p in (ROOT / "data_prep").glob("*.py") if p.stem != "__init__"}
    graph = {name: _data_prep_imports(path) & set(modules) for name, path in modules.items()}
    assert "data_prep.registry" in graph["data_prep.tasks"] and "data_prep.task_types" in graph["data_prep.agnews"]

    state = {}  # name -> "open" while on the DFS stack, "done" after

    def visit(name, stack):
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(stack + [name, dep])}"
            if dep not in state:
                visit(dep, stack + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # the readers know nothing of the table or the sampler
    for reader in ("agnews", "dbpedia", "fewrel", "csv_task", "zhang_csv", "task_types"):
        assert not graph[f"data_prep.{reader}"] & {"data_prep.tasks", "data_prep.registry"}, reader
