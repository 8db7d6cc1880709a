"""One progress-bar helper for the loops that take more than a few seconds (dictionary fitting,
OMP over a data set, each attack): a tqdm bar on stderr when asked for, a no-op otherwise.

Callers pass ``progress=True`` only on a terminal (the pipeline and the CLI check
``sys.stderr.isatty()``); in a log file they print one line per stage instead, so no long
carriage-return line is ever written to a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool, unit: str = "img") -> Iterator:
    """A context manager yielding an object with ``update(n)``: a tqdm bar (left on screen only
    while running) when ``enabled``, else a no-op."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as b:
        yield b
