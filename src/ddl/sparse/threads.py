"""ddl's thread policy on the CPU: torch held at one thread, ddl's own workers on Python threads.

On a busy machine torch's OpenMP workers spin while the other cores are taken (measured on 2
cores at load 5: the torch OMP kernel at k = 5 ran 15x slower on 2 threads than on 1). ddl's
OMP entry points (:func:`holds_torch_threads`) therefore hold torch at one thread for the whole
call and share the work among :func:`worker_count` Python threads that block instead of spin
(:func:`run_workers`). torch's thread count is process-wide: the first of overlapping calls saves
it and sets 1, the last to finish restores it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import numpy as np
import torch
from torch import Tensor

__all__ = ["default_threads", "held_at_one_thread", "holds_torch_threads", "run_workers",
           "worker_count"]


_lock = threading.Lock()
_state = {"active": 0, "previous": 1}


@contextlib.contextmanager
def held_at_one_thread():
    """Hold torch at one thread for the whole call; yields the thread count ddl's own workers
    use (torch's setting when the outermost call began).

    On a busy machine torch's OpenMP workers spin while the other cores are taken: measured
    here, the torch kernel at k = 5 ran 15x slower on 2 threads than on 1 with the load
    average at 5 on 2 cores, and even the few whole-array operations before coding (norms,
    the finite check) cost more than the coding. ddl's workers are Python threads that block
    instead. torch's thread count is process-wide: the first of overlapping calls saves it and
    sets 1, the last one to finish restores it (a counter under a lock).
    """
    with _lock:
        if _state["active"] == 0:
            _state["previous"] = torch.get_num_threads()
            if _state["previous"] != 1:
                torch.set_num_threads(1)
        _state["active"] += 1
        n_threads = _state["previous"]
    try:
        yield n_threads
    finally:
        with _lock:
            _state["active"] -= 1
            if _state["active"] == 0 and _state["previous"] != 1:
                torch.set_num_threads(_state["previous"])


def worker_count() -> int:
    """Threads for ddl's workers: torch's count before :func:`held_at_one_thread`,
    lowered to the cores the load average leaves free (never below 1).

    Measured on a 2-core machine at load average 5: a second worker made W1 k = 5 about 10 %
    slower than one (0.82-1.21x per round), since the other core is taken anyway; so with
    ``ncores - loadavg`` below one spare core ddl uses one worker. An idle machine gets
    torch's count (its default: the number of cores).
    """
    requested = _state["previous"] if _state["active"] else torch.get_num_threads()
    return _within_free_cores(requested, own_share=1.0)   # the caller is part of the load


def default_threads(requested: int | None = None) -> int:
    """torch's intra-op threads for a command run without ``--threads``: torch's own count (the
    cores), lowered to the cores the 1-minute load average leaves free, never below 1.

    torch's OpenMP workers spin when a core is taken: measured on 2 cores beside busy processes
    (load 3), ``ddl robustness`` took 11.9 s with torch's 2 threads and 5.3 s with 1, ``ddl
    attack`` 10.6 s and 8.2 s (bench/cli_threads.py; issue 22 measured 10-12x at load 3.3). An
    idle machine keeps every core.
    """
    requested = torch.get_num_threads() if requested is None else requested
    return _within_free_cores(requested, own_share=0.0)   # before the command starts


def _within_free_cores(requested: int, *, own_share: float) -> int:
    """``requested`` lowered to the cores the 1-minute load average leaves free (``own_share``:
    how much of that load is the caller's own), never below 1; unchanged where there is no
    load average."""
    if requested <= 1:
        return 1
    try:
        spare = (os.cpu_count() or 1) - os.getloadavg()[0] + own_share
    except (AttributeError, OSError):
        return requested
    return max(1, min(requested, int(spare + 0.5)))


def run_workers(worker, n_threads: int) -> None:
    """worker(0..n_threads-1) on Python threads (the caller holds torch at one thread)."""
    if n_threads <= 1:
        worker(0)
        return
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(1, n_threads)]
    for t in threads:
        t.start()
    worker(0)
    for t in threads:
        t.join()


def holds_torch_threads(func):
    """Run ``func`` under :func:`held_at_one_thread` when its first argument lives on
    the CPU (a NumPy array or a CPU tensor); unchanged on CUDA. The torch kernel (no compiler)
    then runs on one thread: on 2 threads it was 25x slower than on 1 at load average 5.
    (The wrapper is one more frame: the functions warn with ``stacklevel=3``.)"""
    @functools.wraps(func)
    def wrapper(X, *args, **kwargs):
        on_cpu = isinstance(X, np.ndarray) or (isinstance(X, Tensor) and X.device.type == "cpu")
        if not on_cpu:
            return func(X, *args, **kwargs)
        with held_at_one_thread():
            return func(X, *args, **kwargs)
    return wrapper
