"""User-facing errors: what the ``ddl`` command reports as one line and exit status 2.

Raise :class:`DDLError` (or a subclass) for a mistake of the user or of the environment — a bad
file, a full disk, a locked run folder — whose message already says what happened, where, and
what to do. ``ddl.cli.main`` prints ``ddl <command>: error: <message>`` and exits 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DDLError", "CacheError", "RunFolderError"]


class DDLError(Exception):
    """An error the user can fix; its message is one complete line."""


class RunFolderError(DDLError, OSError):
    """A run folder cannot be written or read (disk full, read-only, permission, locked)."""


class CacheError(DDLError):
    """A cache entry failed verification (edited, swapped, truncated) and ``--strict`` is set."""
