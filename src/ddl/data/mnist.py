"""MNIST: parse the IDX files (plain or gzipped) into uint8 arrays.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>`` (type 0x08 = unsigned byte), then ``ndim`` big-endian int32 sizes,
then the values in row-major order. Images files are ``0x00000803`` (N, 28, 28), labels files
``0x00000801`` (N,).

Hand-written (about 60 lines) instead of using torchvision, which ddl must not depend on. The
pixels are read with ``readinto`` straight into one preallocated array, so a 60,000-image file is
decompressed once and never copied; reading on to the end of the file makes ``gzip`` check its
CRC, so a corrupt or truncated ``.gz`` is an error, never silently short data.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ddl.data.download import MNIST_FILES, DataFormatError, find_mnist_file

__all__ = ["read_idx", "load_mnist"]

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10
_IDX_TYPES = {0x08: "unsigned byte"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_exact(f, buf: memoryview) -> int:
    """Fill ``buf`` from ``f``; return the number of bytes read (less than len(buf) at end of file)."""
    filled = 0
    while filled < len(buf):
        n = f.readinto(buf[filled:])
        if not n:
            break
        filled += n
    return filled


def _read_header(f, path: Path, ndim: int, what: str) -> tuple[int, ...]:
    magic = f.read(4)
    want = 0x0800 + ndim
    if len(magic) < 4:
        raise DataFormatError(f"read_idx: {path} is truncated: {len(magic)} bytes, no IDX header.")
    code = int.from_bytes(magic, "big")
    if magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES or magic[3] != ndim:
        raise DataFormatError(
            f"read_idx: {path} is not an IDX {what} file: magic number 0x{code:08x}, expected "
            f"0x{want:08x} (unsigned bytes, {ndim} dimension{'s' * (ndim > 1)})."
        )
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataFormatError(f"read_idx: {path} is truncated inside its header ({4 + len(raw)} bytes).")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4"))
    _check_sizes(path, dims)
    return dims


def _check_sizes(path: Path, dims: tuple[int, ...]) -> None:
    """Refuse impossible sizes before allocating (a corrupt header could ask for terabytes)."""
    n_bytes = int(np.prod(dims, dtype=np.int64))
    on_disk = path.stat().st_size
    # deflate expands at most ~1032:1, so a .gz file of s bytes holds < 1032 * s + 1024 bytes.
    limit = 1032 * on_disk + 1024 if path.suffix == ".gz" else on_disk
    if min(dims) < 0 or n_bytes > limit:
        raise DataFormatError(
            f"read_idx: {path} is truncated or its header is corrupt: sizes {dims} need "
            f"{n_bytes} bytes of data; the file has {on_disk} bytes"
            f"{' (gzipped)' if path.suffix == '.gz' else ''}."
        )


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain, or gzipped when the name ends in ``.gz``).

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    ndim : int
        Number of dimensions the file must have: 3 for images, 1 for labels.

    Returns
    -------
    numpy.ndarray of uint8
        Shape given by the file's header, e.g. (N, 28, 28) or (N,).

    Raises
    ------
    DataFormatError
        Wrong magic number, truncated header or data, trailing bytes, or a corrupt gzip stream.
    """
    path = Path(path)
    what = {1: "labels", 3: "images"}.get(ndim, f"{ndim}-d")
    try:
        with _open(path) as f:
            dims = _read_header(f, path, ndim, what)
            out = np.empty(dims, dtype=np.uint8)
            got = _read_exact(f, memoryview(out).cast("B"))
            if got < out.size:
                raise DataFormatError(
                    f"read_idx: {path} is truncated: header says {dims} = {out.size} bytes of data, "
                    f"found {got}."
                )
            extra = len(f.read(1 << 16))  # also reaches the gzip trailer, which checks the CRC
            if extra:
                raise DataFormatError(
                    f"read_idx: {path} has trailing bytes after the {dims} values its header announces."
                )
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataFormatError(f"read_idx: {path} is a corrupt or truncated gzip file ({exc}).") from exc
    return out


def load_mnist(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split from ``folder`` (the ``<data_dir>/mnist`` folder).

    Parameters
    ----------
    folder : str or pathlib.Path
        Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; a plain file is
        preferred over its ``.gz`` when both exist.
    split : {"train", "test"}
        ``"test"`` reads the ``t10k`` files.

    Returns
    -------
    images : numpy.ndarray of uint8, shape (N, 1, 28, 28)
    labels : numpy.ndarray of int64, shape (N,), values in [0, 9]

    Raises
    ------
    FileNotFoundError
        A file is missing (`ddl.data.load_dataset` checks first and gives a fuller message).
    DataFormatError
        See `read_idx`; also wrong image size, image/label count mismatch, labels > 9.
    """
    folder = Path(folder)
    paths = []
    for name in MNIST_FILES[split]:
        path = find_mnist_file(folder, name)
        if path is None:
            raise FileNotFoundError(f"load_mnist: neither {folder / name} nor {name}.gz exists.")
        paths.append(path)
    images = read_idx(paths[0], 3)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(
            f"load_mnist: {paths[0]} holds images of {images.shape[1]}x{images.shape[2]} pixels; "
            f"MNIST images are 28x28."
        )
    labels = read_idx(paths[1], 1)
    if len(labels) != len(images):
        raise DataFormatError(
            f"load_mnist: {paths[0].name} has {len(images)} images but {paths[1].name} has "
            f"{len(labels)} labels; the two files must come from the same split."
        )
    if labels.size and labels.max() >= N_CLASSES:
        bad = int(np.argmax(labels >= N_CLASSES))
        raise DataFormatError(
            f"load_mnist: {paths[1]} has label {labels[bad]} at index {bad}; labels must be in [0, 9]."
        )
    return images[:, None], labels.astype(np.int64)
