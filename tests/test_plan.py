"""tinybert/plan.py: the durations and the CPU note of the start-up plan."""

import torch

from tinybert.plan import cpu_note, format_duration


def test_format_duration():
    assert [format_duration(s) for s in (0.2, 40, 600, 4917, 3.5 * 3600, 37 * 3600)] == [
        "~1 s", "~40 s", "~10 min", "~82 min", "~3.5 h", "~37 h"]


def test_cpu_note_only_for_long_cpu_runs():
    assert cpu_note(3600, torch.device("cpu")) is None
    assert cpu_note(10 * 3600, torch.device("cuda")) is None  # (no GPU needed: only the device type is read)
    note = cpu_note(37 * 3600, torch.device("cpu"))
    assert note.startswith("note: this run is projected to take ~37 h on this CPU") and "tinybert.quickstart" in note
