"""setup.cfg: train.py and eval.py install with the core dependencies only; the extras hold the rest, and `.[test]`
(what .ci/run and the README install) holds everything the test suite imports."""

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_ONLY = ("pandas", "matplotlib", "sentencepiece")


def requirements(text: str) -> set[str]:
    return {line.split(";")[0].split(">")[0].split("=")[0].strip() for line in text.splitlines() if line.strip()}


def test_core_and_extras():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    core = requirements(cfg["options"]["install_requires"])
    extras = {name: requirements(value) for name, value in cfg["options.extras_require"].items()}
    assert core == {"torch", "numpy", "tqdm"}
    assert extras["experiments"] == {"pandas"} and extras["plots"] == {"pandas", "matplotlib"}
    assert extras["test"] >= {"pytest", *EXTRAS_ONLY}


def test_commands_do_not_import_the_extras():
    code = ("import sys; import train, eval, data_prep.tasks, data_prep.pretrain_data; "
            f"print([m for m in {EXTRAS_ONLY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
