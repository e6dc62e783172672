"""tinybert/experiments/process_guard.py: a killed run takes its worker processes with it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tinybert.experiments.process_guard import exit_when_orphaned, sigterm_as_interrupt

REPO = Path(__file__).resolve().parent.parent


def test_sigterm_inside_the_block_is_a_keyboard_interrupt_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_watchdog_exits_once_the_parent_changes():
    parents = iter([100, 100, 1])  # re-parented to init on the third look
    exits = []
    thread = exit_when_orphaned(100, every_s=0.01, getppid=lambda: next(parents), exit=exits.append)
    thread.join(timeout=5)
    assert exits == [1] and not thread.is_alive()


def test_a_worker_whose_parent_is_killed_exits(tmp_path):
    """A real parent, SIGKILLed: its spawned child (as a pool worker) notices and exits by itself."""
    child_pid = tmp_path / "child.pid"
    script = tmp_path / "parent.py"  # a file, not -c: spawn re-imports the parent's main module in the child
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, time
        from tinybert.experiments.process_guard import exit_when_orphaned

        def child(parent_pid):
            exit_when_orphaned(parent_pid, every_s=0.05)
            open({str(child_pid)!r}, "w").write(str(os.getpid()))
            time.sleep(60)

        if __name__ == "__main__":
            multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),)).start()
            time.sleep(60)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.time() + 60
        while not (child_pid.exists() and child_pid.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        pid = int(child_pid.read_text())
        parent.kill()
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
