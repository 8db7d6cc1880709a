"""A stand-in for a slow step whose wall time and CPU time are known: the CPU-time tests of the
robustness units and of the training epochs wrap the real step with it."""

from __future__ import annotations

import time


def asleep_then_busy(fn, asleep: float, busy: float):
    """``fn`` preceded by ``asleep`` seconds of sleep (wall time, no CPU) and ``busy`` seconds of
    this process's CPU time spent spinning."""

    def slow(*a, **k):
        time.sleep(asleep)
        c0 = time.process_time()
        while time.process_time() - c0 < busy:
            pass
        return fn(*a, **k)

    return slow
