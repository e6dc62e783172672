"""No worker outlives its run: the two guards run_parallel (runner.py) puts around its worker processes.

A `multiprocessing` pool stops its workers when the `with` block is left, but only by an exception in the
parent's own Python code. Killed by a signal, the parent dies at once and its spawned workers go on training,
unseen, for as long as their units take (found the hard way: a run stopped with `pkill` left three workers
competing for two cores with the run started after it). So:

* `sigterm_as_interrupt()`: while it is active, SIGTERM (what `kill` and `pkill` send) raises KeyboardInterrupt
  in the parent, which leaves the pool's `with` block the way Ctrl-C does: the pool terminates its workers and
  the runner prints how to resume.
* `exit_when_orphaned()`: in each worker, a daemon thread that ends the worker when its parent is gone (SIGKILL,
  a crash), checked every few seconds. A unit it interrupts has no record yet, so the next run redoes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt inside the block (main thread only; elsewhere it changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_when_orphaned(parent_pid: int, every_s: float = 5.0, getppid=os.getppid, exit=os._exit) -> threading.Thread:
    """Start a daemon thread that calls exit(1) once this process's parent is no longer `parent_pid` (a dead
    parent's children are re-parented, so getppid changes)."""
    def watch():
        while getppid() == parent_pid:
            time.sleep(every_s)
        exit(1)

    thread = threading.Thread(target=watch, name="exit-when-orphaned", daemon=True)
    thread.start()
    return thread
