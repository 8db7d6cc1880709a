"""Where the data files live, what they must contain, and how they get onto disk.

This is the only module of ddl that touches the network, and it does so only when asked
(``download_dataset(...)``, ``load_dataset(..., download=True)`` or ``ddl download <name>``).
Every downloaded byte is checked against a published checksum before it is used, and every file
is written under a temporary name in its destination folder and then renamed with
``os.replace``, so an interrupted download never leaves a file that a later run would trust.

Folder layout (the standard published layouts, as in ``../shared/data``)::

    <data_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}

``<data_dir>`` is the ``data_dir`` argument, else ``$DDL_DATA``, else
``$XDG_CACHE_HOME/ddl/data`` (``~/.cache/ddl/data`` when ``XDG_CACHE_HOME`` is unset).

Checksums: the four MNIST ``.gz`` files are the original distribution files; their SHA-256 values
are those of the byte-identical copies in ``../shared/data/SHA256SUMS`` (whose MD5s match the
published ones). CIFAR-10 is fetched as the official ``cifar-10-python.tar.gz``, checked against
its published MD5 (c58f30108f718f92721af3b95e74349a, the value torchvision checks) *and* SHA-256
(the value torchvision's prototype datasets check), and only the seven batch files are extracted
(regular files with the expected names; any other member is ignored, so a crafted archive cannot
write outside the folder).

Written by hand rather than with torchvision (which ddl must not depend on) so that the
checksum, atomic-write and offline-error behaviour is explicit and tested.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ddl._validate import check_choice
from ddl.constants import DATASETS

__all__ = [
    "DataNotFoundError",
    "DataFormatError",
    "DownloadError",
    "ChecksumError",
    "resolve_data_dir",
    "download_dataset",
    "MNIST_FOLDER",
    "MNIST_FILES",
    "CIFAR10_FOLDER",
    "CIFAR10_FILES",
]


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not in the data folder (the message says where to put them)."""


class DataFormatError(ValueError):
    """A data file exists but is truncated, corrupt or not in the expected format."""


class DownloadError(OSError):
    """A download failed (no network, HTTP error, every mirror tried)."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the published checksum."""


# ----------------------------------------------------------------------------------------------
# Layout

MNIST_FOLDER = "mnist"
# split -> (images file, labels file), without the optional ".gz".
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{k}" for k in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_META = "batches.meta"

# SHA-256 of the original MNIST .gz files (= ../shared/data/SHA256SUMS).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Tried in order; the first is the mirror torchvision uses, the second the original host.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------------------------
# Folder resolution


def _data_dir_and_source(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """Resolve the data folder and say where the choice came from (for error messages)."""
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(
                f"resolve_data_dir: data_dir must be a str, an os.PathLike or None; "
                f"got {type(data_dir).__name__}."
            )
        if str(data_dir) == "":
            raise ValueError("resolve_data_dir: data_dir must not be an empty string; got ''.")
        return Path(data_dir).expanduser(), "the data_dir argument"
    env = os.environ.get("DDL_DATA", "")
    if env:
        return Path(env).expanduser(), "$DDL_DATA"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return cache / "ddl" / "data", "the default cache folder (no data_dir argument, $DDL_DATA unset)"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds the data sets' folders.

    Parameters
    ----------
    data_dir : str, os.PathLike or None, default None
        Explicit folder. When None, ``$DDL_DATA`` is used if set and non-empty, else
        ``$XDG_CACHE_HOME/ddl/data`` (``~/.cache/ddl/data`` if ``XDG_CACHE_HOME`` is unset or
        not an absolute path).

    Returns
    -------
    pathlib.Path
        The folder, with ``~`` expanded. It is not created and need not exist.

    Examples
    --------
    >>> resolve_data_dir("/data/sets").as_posix()
    '/data/sets'
    """
    return _data_dir_and_source(data_dir)[0]


# ----------------------------------------------------------------------------------------------
# Which files are missing, and the message that says what to do


def find_mnist_file(folder: Path, name: str) -> Path | None:
    """The plain IDX file ``name`` if present (faster: no decompression), else ``name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def expected_files(name: str, split: str) -> list[str]:
    """File names (relative to the data set's folder) that ``split`` of data set ``name`` needs."""
    if name == "mnist":
        return [f"{f}[.gz]" for f in MNIST_FILES[split]]
    return list(CIFAR10_FILES[split])


def missing_files(name: str, split: str, folder: Path) -> list[str]:
    """The entries of ``expected_files(name, split)`` that are not in ``folder``."""
    if name == "mnist":
        return [f"{f}[.gz]" for f in MNIST_FILES[split] if find_mnist_file(folder, f) is None]
    return [f for f in CIFAR10_FILES[split] if not (folder / f).is_file()]


def not_found_error(where: str, name: str, split: str, data_dir, missing: list[str]) -> DataNotFoundError:
    """Build the error that names every expected file, the folder, and how to download."""
    root, source = _data_dir_and_source(data_dir)
    folder = root / (MNIST_FOLDER if name == "mnist" else CIFAR10_FOLDER)
    lines = [
        f"{where}: data set {name!r} split {split!r} is not in {folder} "
        f"(data folder {root} comes from {source}).",
        "Expected files (a file 'x[.gz]' may be plain or gzipped):",
    ]
    lines += [f"  {folder / f}   {'MISSING' if f in missing else 'found'}" for f in expected_files(name, split)]
    lines += [
        "Standard layout: <data_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] and "
        "<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}.",
        f"To get them: copy the files into {folder}, or download them (needs internet) with "
        f"`ddl download {name} --data-dir {root}` or "
        f"load_dataset({name!r}, {split!r}, data_dir={str(root)!r}, download=True). "
        "Use --data-dir / $DDL_DATA to point at another folder.",
    ]
    return DataNotFoundError("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Network


def _fetch(url: str, dest: Path, checks: dict[str, str]) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify ``checks`` ({algo: hexdigest}), rename."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    hashes = {algo: hashlib.new(algo) for algo in checks}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=dest.name, disable=None, leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        for algo, want in checks.items():
            got = hashes[algo].hexdigest()
            if got != want:
                raise ChecksumError(
                    f"download_dataset: {algo} of {url} is {got}, expected {want}; "
                    "the file was not saved (corrupt transfer or a changed file on the server)."
                )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch_first(urls: list[str], dest: Path, checks: dict[str, str]) -> None:
    """Try each URL in turn; raise DownloadError listing every failure if none works."""
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, checks)
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ChecksumError is an OSError
            failures.append(f"  {url}: {type(exc).__name__}: {exc}")
    raise DownloadError(
        f"download_dataset: could not download {dest.name} into {dest.parent}; tried:\n"
        + "\n".join(failures)
        + f"\nIf this machine is offline, copy the file there by hand (standard layout: see "
        "ddl.data.download)."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _download_mnist(root: Path) -> Path:
    folder = root / MNIST_FOLDER
    for split_files in MNIST_FILES.values():
        for name in split_files:
            gz = folder / f"{name}.gz"
            if (folder / name).is_file():
                continue  # the plain IDX file is there; nothing to fetch
            if gz.is_file():
                got = _sha256(gz)
                if got != MNIST_SHA256[gz.name]:
                    raise ChecksumError(
                        f"download_dataset: existing file {gz} has sha256 {got}, expected "
                        f"{MNIST_SHA256[gz.name]}; delete it and download again."
                    )
                continue
            _fetch_first([m + gz.name for m in MNIST_MIRRORS], gz, {"sha256": MNIST_SHA256[gz.name]})
    return folder


def _extract_cifar10(archive: Path, folder: Path) -> None:
    """Copy the 7 batch files out of the verified archive, each written atomically."""
    wanted = {f"{CIFAR10_FOLDER}/{n}" for files in CIFAR10_FILES.values() for n in files}
    wanted.add(f"{CIFAR10_FOLDER}/{CIFAR10_META}")
    found = set()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name not in wanted or not member.isreg():
                continue  # readme.html, directories, links, anything unexpected: ignored
            src = tar.extractfile(member)
            dest = folder / Path(member.name).name
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            found.add(member.name)
    if found != wanted:
        raise DataFormatError(
            f"download_dataset: {archive.name} lacks {sorted(wanted - found)}; "
            "it passed the checksum, so please report this."
        )


def _download_cifar10(root: Path) -> Path:
    folder = root / CIFAR10_FOLDER
    needed = [*CIFAR10_FILES["train"], *CIFAR10_FILES["test"], CIFAR10_META]
    if all((folder / n).is_file() for n in needed):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f".{CIFAR10_ARCHIVE}"
    checks = {"md5": CIFAR10_ARCHIVE_MD5, "sha256": CIFAR10_ARCHIVE_SHA256}
    try:
        _fetch_first(list(CIFAR10_URLS), archive, checks)
        _extract_cifar10(archive, folder)
    finally:
        archive.unlink(missing_ok=True)
    return folder


def download_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Download a data set's files into the standard layout, checksummed and atomically.

    Files that are already present are kept (an existing MNIST ``.gz`` is checked against its
    SHA-256 first). Nothing is downloaded unless this function is called.

    Parameters
    ----------
    name : {"mnist", "cifar10"}
        The data set.
    data_dir : str, os.PathLike or None, default None
        Root data folder; see `resolve_data_dir`.

    Returns
    -------
    pathlib.Path
        The data set's folder: ``<data_dir>/mnist`` or ``<data_dir>/cifar-10-batches-py``.

    Raises
    ------
    ValueError
        Unknown ``name``.
    DownloadError
        No mirror could be reached; the message lists each URL tried and why it failed.
    ChecksumError
        The downloaded bytes (or an existing MNIST ``.gz``) do not match the published checksum.
    """
    check_choice("download_dataset", "name", name, sorted(DATASETS))
    root = resolve_data_dir(data_dir)
    return _download_mnist(root) if name == "mnist" else _download_cifar10(root)
