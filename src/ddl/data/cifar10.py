"""CIFAR-10: read the python-pickle batches with a restricted unpickler, into uint8 arrays.

Each batch file (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) is a pickled dict
``{b'batch_label', b'labels', b'data', b'filenames'}``; ``data`` is a (10000, 3072) uint8 array
whose rows hold the R plane, then the G plane, then the B plane, each 32x32 row-major, so a row
reshapes to (3, 32, 32) (channels first) without copying. The files are protocol-2 pickles with
Python-2 ``str`` opcodes, read here with ``encoding="bytes"``.

Why a restricted unpickler: ``pickle.load`` on a file runs any callable the file names, so a
tampered or mislabelled "batch" could run ``os.system``. ``_RestrictedUnpickler.find_class``
allows only the few globals a numpy array needs (``numpy.core.multiarray._reconstruct`` or its
numpy-2 home ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, and
``_codecs.encode``, which Python 3 uses for ``bytes`` in protocol-2 pickles); lists, dicts, str,
bytes and ints need no global. Anything else is refused with an error naming the global and the
file, before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ddl.data.download import CIFAR10_FILES, CIFAR10_META, DataFormatError

__all__ = ["load_cifar10", "load_cifar10_label_names", "read_pickle"]

IMAGE_SHAPE = (3, 32, 32)
N_CLASSES = 10
_ROW = 3 * 32 * 32


def _allowed_globals() -> dict[tuple[str, str], object]:
    import codecs

    try:  # numpy >= 2: numpy.core is a deprecated alias of numpy._core; avoid importing it
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
        ("codecs", "encode"): codecs.encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"read_pickle: {self._path} refers to the global {module}.{name}, which is not "
                "allowed (only numpy arrays, lists, dicts, strings and numbers may be unpickled); "
                "refusing to load it. The file is not a genuine CIFAR-10 batch."
            ) from None


def read_pickle(path: str | Path) -> object:
    """Unpickle ``path`` with the restricted unpickler (``encoding="bytes"``).

    Parameters
    ----------
    path : str or pathlib.Path
        A CIFAR-10 batch or ``batches.meta`` file.

    Returns
    -------
    object
        The unpickled object (for CIFAR-10: a dict with ``bytes`` keys).

    Raises
    ------
    DataFormatError
        The file refers to a forbidden global, or is truncated or corrupt.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except DataFormatError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, UnicodeDecodeError, OverflowError) as exc:
            raise DataFormatError(
                f"read_pickle: {path} is truncated or not a valid pickle ({type(exc).__name__}: {exc})."
            ) from exc


def _as_str_keys(obj: object, path: Path) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise DataFormatError(f"load_cifar10: {path} holds a {type(obj).__name__}; a CIFAR-10 batch is a dict.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _check_batch(batch: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch dict; return data (n, 3, 32, 32) uint8 and labels (n,) int64."""
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataFormatError(f"load_cifar10: {path} has no {' or '.join(missing)} entry; keys: {sorted(map(str, batch))}.")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"load_cifar10: {path} 'data' must be a uint8 array of shape (n, 3072); got a {desc}.")
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataFormatError(
            f"load_cifar10: {path} 'labels' must be a list of ints; got dtype {labels.dtype}, shape {labels.shape}."
        )
    if len(labels) != len(data):
        raise DataFormatError(
            f"load_cifar10: {path} has {len(data)} images but {len(labels)} labels; they must match."
        )
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    if bad.size:
        raise DataFormatError(
            f"load_cifar10: {path} has label {labels[bad[0]]} at index {bad[0]}; labels must be in [0, 9]."
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def load_cifar10(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 split from ``folder`` (the ``<data_dir>/cifar-10-batches-py`` folder).

    Parameters
    ----------
    folder : str or pathlib.Path
        Folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.
    split : {"train", "test"}
        ``"train"`` concatenates the five training batches in order.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (N, 3, 32, 32)
        Channels R, G, B.
    labels : numpy.ndarray of int64, shape (N,), values in [0, 9]

    Raises
    ------
    FileNotFoundError
        A batch file is missing (`ddl.data.load_dataset` checks first and gives a fuller message).
    DataFormatError
        Forbidden global, corrupt pickle, wrong keys, wrong data shape or dtype, count mismatch,
        labels outside [0, 9].
    """
    folder = Path(folder)
    images, labels = [], []
    for name in CIFAR10_FILES[split]:
        path = folder / name
        x, y = _check_batch(_as_str_keys(read_pickle(path), path), path)
        images.append(x)
        labels.append(y)
    if len(images) == 1:
        return images[0], labels[0]
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10_label_names(folder: str | Path) -> list[str]:
    """Class names from ``batches.meta`` (``airplane`` ... ``truck``), read with the restricted unpickler."""
    path = Path(folder) / CIFAR10_META
    meta = _as_str_keys(read_pickle(path), path)
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataFormatError(f"load_cifar10_label_names: {path} has no list of 'label_names'.")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
