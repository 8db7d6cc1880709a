"""Where independent units of work run: in this process, one after the other (the default), or as
Ray tasks on local workers (``workers=N``) or on an existing cluster (``address=...``).

ddl writes no scheduler or process pool of its own: Ray (an extra, ``pip install -e ".[ray]"``)
places the tasks, retries a task whose worker died, and moves the shared inputs once through its
object store. What this module adds is the contract every caller relies on:

- **A unit is a pure function of its inputs** (``fn(item, **shared)``, ``fn`` a module-level
  function, so it pickles by name). Results come back to the driver, which writes them through
  the caller's verified, keyed cache (``ddl robustness``, ``ddl tune``; ``ddl reproduce``'s
  cells and ``ddl train``'s checkpoints are the exceptions: their workers write them, so on a
  cluster those folders must be on a file system every node shares), so a serial and a parallel run give
  the same files, a unit whose worker was killed is retried (up to ``max_retries`` times, Ray's
  own mechanism) and an interrupted run resumes from what the driver had written.
- **Threads per task are fixed**: each task runs with ``threads`` torch intra-op threads (default
  one), and a task declares ``num_cpus=threads``, so N workers never oversubscribe the cores
  (issue 22: torch's threads spinning against busy neighbours made a run 10–12× slower).
- **Order**: :meth:`Engine.map` yields ``(index, result)`` as units finish (serial: in order).
  Callers that need an order put the results back by index.

Examples
--------
>>> from ddl._parallel import Engine
>>> with Engine() as engine:              # serial: no Ray needed
...     sorted(engine.map(pow, [2, 3], shared={"exp": 2}))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ddl.errors import DDLError


#: Ray's local start-up waits a fixed 30 s for its raylet; on a loaded machine that can expire
#: (measured: a 2-core machine at load 4), so a local start is tried this many times.
_START_ATTEMPTS = 3


class EngineError(DDLError):
    """Ray is missing, or the cluster address cannot be reached."""


def _run_unit(fn: Callable, item: Any, shared: dict[str, Any], threads: int) -> Any:
    """What one Ray task runs: ``fn(item, **shared)`` with torch held at ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    return fn(item, **shared)


class Engine:
    """Runs units serially or on Ray; a context manager: on exit a local Ray instance it started
    is shut down, and from a cluster it joined it disconnects (the cluster keeps running).

    Parameters
    ----------
    workers : int >= 1 or None
        Start a local Ray instance with this many CPUs (one task per CPU at ``threads=1``).
        ``None`` with ``address=None``: serial, in this process, no Ray.
    address : str or None
        Join an existing Ray cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        its CPUs set the parallelism. Every node needs ddl installed, and the data sets where
        ``--data-dir`` says.
    threads : int >= 1, default 1
        torch intra-op threads of each task (declared to Ray as the task's ``num_cpus``).
    max_retries : int >= 0, default 3
        Times Ray re-runs a task whose worker process died (Ray's default).
    """

    def __init__(self, workers: int | None = None, address: str | None = None, *, threads: int = 1,
                 max_retries: int = 3):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"Engine: workers must be an integer >= 1 or None; got {workers!r}.")
        if workers is not None and address is not None:
            raise ValueError(f"Engine: give workers (a local Ray instance) or address (an existing "
                             f"cluster), not both; got workers={workers}, address={address!r}.")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"Engine: threads must be an integer >= 1; got {threads!r}.")
        self.workers, self.address, self.threads, self.max_retries = workers, address, threads, max_retries
        self._started = False
        self._ray = None

    @property
    def parallel(self) -> bool:
        """True when units run as Ray tasks."""
        return self.workers is not None or self.address is not None

    def describe(self) -> str:
        """``"serial"``, ``"ray, 2 local workers"`` or ``"ray at ADDRESS"`` (for logs and records)."""
        if self.workers is not None:
            return f"ray, {self.workers} local worker{'s' if self.workers != 1 else ''}"
        if self.address is not None:
            return f"ray at {self.address}"
        return "serial"

    def __enter__(self) -> Engine:
        if self.parallel:
            self._connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self):
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError as exc:
            raise EngineError('--workers/--ray-address need Ray: pip install -e ".[ray]" '
                              f"(import failed: {exc})") from None
        if not ray.is_initialized():
            env = {"env_vars": {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
                                "DDL_OMP_KERNEL": os.environ.get("DDL_OMP_KERNEL", "auto")}}
            where = self.address or f"a local instance of {self.workers} workers"
            for attempt in range(_START_ATTEMPTS):
                try:
                    if self.address is not None:
                        ray.init(address=self.address, runtime_env=env, logging_level="ERROR",
                                 log_to_driver=True)
                    else:
                        ray.init(num_cpus=self.workers * self.threads, runtime_env=env,
                                 include_dashboard=False, logging_level="ERROR", log_to_driver=True)
                    break
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise EngineError(f"cannot start Ray ({where}): {str(exc).splitlines()[0]}") from None
                except Exception as exc:      # Ray raises a bare Exception when its start-up wait expires
                    if "timed out during startup" not in str(exc) or attempt + 1 == _START_ATTEMPTS:
                        raise EngineError(f"cannot start Ray ({where}): {str(exc).splitlines()[0]}") from None
                    ray.shutdown()
                    print(f"ddl: Ray did not start within its 30 s wait (a busy machine?); trying again "
                          f"({attempt + 2} of {_START_ATTEMPTS})", file=sys.stderr, flush=True)
            self._started = True
        self._ray = ray
        return ray

    def close(self) -> None:
        """Shut down the local Ray instance this engine started, or disconnect from the cluster it
        joined (which keeps running); nothing when Ray was already initialised by the caller."""
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray, self._started = None, False

    def map(self, fn: Callable, items: Iterable[Any], *, shared: dict[str, Any] | None = None,
            num_gpus: float = 0) -> Iterator[tuple[int, Any]]:
        """``(i, fn(items[i], **shared))`` for every item, as the units finish.

        ``shared`` holds the large inputs every unit reads (images, model, defence): on Ray they
        are put into the object store once, not once per task. A unit that raises stops the map
        with its exception (on Ray: re-raised here, with the worker's traceback; a
        :class:`~ddl.errors.DDLError`, a user error, as itself, so the CLI prints its one line).
        """
        items = list(items)
        shared = dict(shared or {})
        if not self.parallel:
            for i, item in enumerate(items):
                yield i, fn(item, **shared)
            return
        ray = self._connect()
        remote = ray.remote(num_cpus=self.threads, num_gpus=num_gpus, max_retries=self.max_retries,
                            retry_exceptions=False)(_run_unit)
        shared_ref = ray.put(shared)
        pending = {remote.remote(fn, item, shared_ref, self.threads): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        yield i, ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        if isinstance(exc.cause, DDLError):    # a user error: its one line, as serially
                            raise exc.cause from None
                        raise exc.as_instanceof_cause() from None
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def add_engine_arguments(parser) -> None:
    """``--workers N`` and ``--ray-address ADDR`` (mutually exclusive) on an argparse parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="run independent units as Ray tasks on a local Ray instance of N "
                            "workers, one torch thread each (needs the ray extra: "
                            'pip install -e ".[ray]"; default: serial, in this process)')
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="run the units on an existing Ray cluster (e.g. auto or ray://HOST:10001); "
                            "every node needs ddl installed and the data sets (default: none)")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {value}")
    return value


__all__ = ["Engine", "EngineError", "add_engine_arguments"]
