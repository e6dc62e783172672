"""run.json: what a pre-training run is, and how each of its segments (the start and every --resume) ended.

train.py writes it from rank 0 only, atomically (a temporary file renamed over the old one). Layout:
  command, git_commit, started, model_config, train_config, data, device, precision, processes, ...
                  the start's settings (written once, when the run starts)
  segments        one entry per start or resume: {command, git_commit, started, device, precision, processes,
                  epochs, status, ended, final}; status is 'running' until the segment ends, then 'done',
                  'interrupted' (Ctrl-C) or 'diverged' (NaN loss)
  status, ended, final   the same three of the last segment, at the top for a quick look
`final` holds the last epoch's metrics (the row metrics.csv got: epoch, step, lr, losses, accuracy, tokens/s).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .atomic import write_json_atomic

RUN_JSON = "run.json"


def start_segment(out: Path, segment: dict, first: dict | None = None) -> None:
    """Record a start (`first`: the run's settings, written once) or a resume (appended to the existing file)."""
    path = Path(out) / RUN_JSON
    record = dict(first) if first is not None else read(path)
    record.setdefault("segments", []).append({**segment, "started": time.strftime("%F %T"), "status": "running"})
    record.update(status="running", ended=None)
    write(path, record)


def end_segment(out: Path, status: str, final: dict | None = None, error: str | None = None) -> None:
    """Close the last segment: its end time, how it ended, and the final metrics (if any)."""
    path = Path(out) / RUN_JSON
    if not path.is_file():  # interrupted before the run was recorded
        return
    record = read(path)
    if record.get("status") != "running":  # Ctrl-C before this segment was recorded: the last one is not ours
        return
    end = {"status": status, "ended": time.strftime("%F %T")}
    if final:
        end["final"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in final.items()}
    if error:
        end["error"] = error
    if record.get("segments"):
        record["segments"][-1].update(end)
    record.update(end)
    write(path, record)


def read(path: Path) -> dict:
    """The record, or an empty one where a run has none (runs from before run.json kept segments are extended)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write(path: Path, record: dict) -> None:
    write_json_atomic(path, record)
