"""Files of a run folder: atomic writes, safe loads, verified cache entries, one writer at a time.

- **Atomic writes.** Every file is written under a temporary name in its destination folder
  (``.<name>.<random>.tmp``) and renamed with ``os.replace``, so an interrupted run never leaves a
  half-written file that a later run would trust. A write whose bytes equal the file already
  there does nothing, so re-running a finished run folder changes no file (and works on a
  read-only copy of it). An ``OSError`` while writing (disk full, read-only file system,
  permission denied) removes the temporary file and becomes one :class:`~ddl.errors.RunFolderError`
  naming the folder: ``cannot write runs/x/cache: no space left on device``.
- **Safe loads.** Tensor files are read with ``torch.load(..., weights_only=True)``: they can hold
  tensors, numbers, strings, lists and dicts, never arbitrary objects.
- **Verified cache entries.** Beside each cache file ``F`` a record ``F.entry.json`` says what
  produced it (stage, key, the keys of its inputs, ddl version) and holds the size and SHA-256 of
  its bytes, written after ``F``. :func:`check_entry` compares the file with its record before a
  cache file is used (an edited, swapped or truncated file fails).
- **One writer per run folder.** :func:`lock_run_folder` holds an exclusive ``flock`` on
  ``<folder>/.ddl.lock``, which records the owner's PID and host. The kernel drops the lock when
  its process dies (even by SIGKILL), so a lock left by a killed run is taken over, never waited
  for; a live owner makes a second process wait (or refuse, ``wait=False``) with a message naming
  it. Taking the lock also removes the temporary files of writes that were killed half-way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ddl.errors import RunFolderError

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".ddl.lock"
ENTRY_SUFFIX = ".entry.json"
ENTRY_FORMAT = "ddl-cache-entry-v1"

#: errno values that mean "this folder cannot be written", not "this is a bug"
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def _warn(message: str) -> None:
    """One line on stderr (warnings and waits are not results: stdout stays for the tables)."""
    print(f"ddl: {message}", file=sys.stderr, flush=True)


def folder_error(exc: OSError, folder: str | os.PathLike, verb: str = "write") -> RunFolderError:
    """``RunFolderError("cannot <verb> <folder>: <reason>")`` from an ``OSError``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return RunFolderError(f"cannot {verb} {folder}: {reason[:1].lower()}{reason[1:]}")


def _same_bytes(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a file holding exactly ``data`` (False when it cannot be read)."""
    try:
        if not path.is_file() or path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def _write_all(f, data: bytes, path: Path) -> None:
    """Write ``data`` to the open temporary file ``f`` of ``path`` (a seam for fault tests)."""
    f.write(data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    Nothing is written when ``path`` already holds exactly ``data``. Raises
    :class:`~ddl.errors.RunFolderError` ("cannot write <folder>: <reason>") when the folder cannot
    be written; the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if _same_bytes(path, data):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise folder_error(exc, path.parent) from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise folder_error(exc, path.parent) from exc
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data, path)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise folder_error(exc, path.parent) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-finite floats as null is *not* done: NaN stays NaN)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to memory, then write atomically (``torch.save`` bytes are deterministic,
    so saving equal tensors again leaves the file untouched)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | os.PathLike, *, map_location: str = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safe_torch_load: no file at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# --- verified cache entries -------------------------------------------------------------------
def entry_record_path(path: str | os.PathLike) -> Path:
    """``<file>.entry.json``: the record of the cache file ``path``."""
    path = Path(path)
    return path.with_name(path.name + ENTRY_SUFFIX)


def write_entry_record(path: str | os.PathLike, *, key: str, stage: str, inputs: dict,
                       **extra: Any) -> dict:
    """Hash the cache file ``path`` (just written) and write its record beside it.

    The record holds ``file``, ``key``, ``stage``, ``inputs`` (the keys of what it was computed
    from), ``ddl_version``, ``size``, ``sha256`` and ``extra`` (e.g. ``seconds``)."""
    from ddl import __version__

    path = Path(path)
    try:
        sha, size = sha256_file(path)
    except OSError as exc:
        raise folder_error(exc, path.parent, "read") from exc
    record = {"format": ENTRY_FORMAT, "file": path.name, "key": key, "stage": stage,
              "inputs": inputs, "ddl_version": __version__, "size": size, "sha256": sha, **extra}
    atomic_write_json(entry_record_path(path), record)
    return record


def check_entry(path: str | os.PathLike, *, key: str, stage: str) -> tuple[str, dict | None, str]:
    """Compare the cache file ``path`` with its record.

    Returns ``(status, record, reason)``; ``status`` is ``"missing"`` (no file, no record),
    ``"unrecorded"`` (a file without a record: a run killed between the two writes, or a file
    from an older ddl; recompute it), ``"ok"`` (``record`` is the verified record) or ``"bad"``
    (``reason`` says what failed: the file was edited, swapped, truncated or deleted)."""
    path = Path(path)
    rec_path = entry_record_path(path)
    has_file, has_record = path.is_file(), rec_path.is_file()
    if not has_record:
        return ("unrecorded" if has_file else "missing"), None, ""
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, ValueError) as exc:
        return "bad", None, f"its record {rec_path.name} cannot be read ({type(exc).__name__})"
    if not isinstance(record, dict) or record.get("format") != ENTRY_FORMAT:
        return "bad", None, f"its record {rec_path.name} is not a ddl cache record"
    if (record.get("file"), record.get("key"), record.get("stage")) != (path.name, key, stage):
        return "bad", None, (f"its record describes another entry ({record.get('stage')} "
                             f"{record.get('file')})")
    if not has_file:
        return "bad", None, "the file is missing"
    try:
        size = path.stat().st_size
        if size != record.get("size"):
            return "bad", None, f"size {size} bytes, recorded {record.get('size')} (truncated or extended)"
        sha, _ = sha256_file(path)
    except OSError as exc:
        raise folder_error(exc, path.parent, "read") from exc
    if sha != record.get("sha256"):
        return "bad", None, "SHA-256 differs from its record (the file was edited or swapped)"
    return "ok", record, ""


def remove_entry(path: str | os.PathLike) -> None:
    """Delete a cache file and its record (a failed entry, before it is recomputed)."""
    for p in (Path(path), entry_record_path(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            raise folder_error(exc, p.parent) from exc


# --- one writer per run folder ----------------------------------------------------------------
def remove_stale_temp_files(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """Delete ``.<name>.<random>.tmp`` files under ``folder``: the temporary files of atomic writes
    that a killed process never renamed. Call only while holding the folder's lock.
    Returns the (path, size in bytes) of each file removed."""
    removed = []
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                p = Path(dirpath) / name
                try:
                    size = p.stat().st_size
                    p.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise folder_error(exc, dirpath) from exc
                removed.append((p, size))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    started = owner.get("started")
    since = f", since {time.strftime('%H:%M:%S', time.localtime(started))}" if started else ""
    return f"PID {owner.get('pid', '?')} on {owner.get('host', '?')}{since}"


class RunFolderLock:
    """Exclusive lock of one run folder (see the module docstring). Use :func:`lock_run_folder`.

    After :meth:`acquire`, ``read_only`` is True when the folder exists but cannot be written
    (read-only file system, no permission): nothing is locked then, and any write that is
    really needed fails with :class:`~ddl.errors.RunFolderError`. ``took_over`` is the owner
    record of a stale lock that was taken over (else None); ``removed`` the stale temp files.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.read_only = False
        self.write_error: RunFolderError | None = None  # why the folder cannot be written
        self.took_over: dict | None = None
        self.removed: list[tuple[Path, int]] = []
        self._fd: int | None = None

    def _owner_record(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "argv": sys.argv[:8]}).encode()

    def acquire(self, *, wait: bool = True, poll: float = 0.2,
                log: Callable[[str], None] | None = _warn) -> RunFolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise folder_error(exc, self.folder) from exc
        try:
            import fcntl
        except ImportError:  # not POSIX: an O_EXCL lock file whose PID is checked
            fcntl = None
        waited = False
        while True:
            writable = True
            try:
                if fcntl is None:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                else:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileExistsError:  # fallback lock only
                owner = _read_owner(self.path)
                if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
                    self.took_over = owner
                    self.path.unlink(missing_ok=True)
                    continue
                waited = self._busy(owner, wait, waited, log)
                time.sleep(poll)
                continue
            except OSError as exc:
                if exc.errno not in _READ_ONLY_ERRNOS or not self.folder.is_dir():
                    raise folder_error(exc, self.folder) from exc
                self.write_error = folder_error(exc, self.folder)
                try:  # a lock file we may not write (read-only copy, another user's): flock works
                    fd, writable = os.open(self.path, os.O_RDONLY), False
                except OSError:  # no lock file and none can be made: a read-only folder
                    self.read_only = True
                    return self
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    waited = self._busy(_read_owner(self.path), wait, waited, log)
                    time.sleep(poll)
                    continue
                try:  # the previous owner may have removed the file while we waited: retry
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                previous = _read_owner(self.path)
                if previous and writable:  # a lock file whose owner holds no lock: it was killed
                    self.took_over = previous
            self._fd = fd
            break
        self.read_only = not writable
        try:
            if writable:
                os.ftruncate(self._fd, 0)
                os.write(self._fd, self._owner_record())
                os.fsync(self._fd)
                self.removed = remove_stale_temp_files(self.folder)
        except OSError as exc:
            self.release()
            raise folder_error(exc, self.folder) from exc
        if log is not None and self.took_over:
            log(f"took over the lock of {self.folder} left by {_describe(self.took_over)} "
                f"(that process is no longer running)")
        if log is not None and self.removed:
            mb = sum(size for _, size in self.removed) / 1e6
            log(f"removed {len(self.removed)} temporary file(s) ({mb:.1f} MB) of interrupted writes "
                f"in {self.folder}")
        return self

    def _busy(self, owner: dict, wait: bool, waited: bool, log) -> bool:
        who = _describe(owner) if owner else "another process"
        if not wait:
            raise RunFolderError(f"{self.folder} is in use by another ddl run ({who}); wait for it "
                                 f"to finish or choose another run folder")
        if not waited and log is not None:
            log(f"{self.folder} is in use by another ddl run ({who}); waiting for it to finish")
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: a waiter then re-opens a fresh file
        os.close(self._fd)
        self._fd = None


_HELD: list[RunFolderLock] = []


def check_writable(folder: str | os.PathLike) -> None:
    """Raise the ``RunFolderError`` of a held, read-only run folder that contains ``folder``
    (before computing something that could not be stored); nothing otherwise."""
    resolved = Path(folder).resolve()
    for held in _HELD:
        root = held.folder.resolve()
        if held.read_only and held.write_error is not None and (resolved == root or root in resolved.parents):
            raise RunFolderError(f"{held.write_error}; nothing can be computed in a folder that "
                                 f"cannot be written")


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike, *, wait: bool = True,
                    log: Callable[[str], None] | None = _warn) -> Iterator[RunFolderLock]:
    """Hold the lock of ``folder`` for the ``with`` block (re-entrant: a folder inside one this
    process already holds is covered by that lock)."""
    folder = Path(folder)
    resolved = folder.resolve()
    for held in _HELD:
        if resolved == held.folder.resolve() or held.folder.resolve() in resolved.parents:
            yield held
            return
    lock = RunFolderLock(folder).acquire(wait=wait, log=log)
    _HELD.append(lock)
    try:
        yield lock
    finally:
        _HELD.remove(lock)
        lock.release()
