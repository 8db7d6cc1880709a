"""Data sets as tensors: MNIST and CIFAR-10 from their standard files, a bundled MNIST sample,
and synthetic images for tests.

Every loader returns ``x`` float32 of shape (N, C, H, W) with values in [0, 1] (pixel / 255) and
``y`` int64 of shape (N,). This package is the only place where uint8 / HWC data is converted
(DESIGN.md §2); everything downstream works in [0, 1] pixel space.

Where the files are looked for: the ``data_dir`` argument, else ``$DDL_DATA``, else
``$XDG_CACHE_HOME/ddl/data`` (``~/.cache/ddl/data``); see `resolve_data_dir`. Nothing is
downloaded unless asked for (``download=True``, `download_dataset`, ``ddl download <name>``); when
files are missing the error lists each expected file, the folder and how to get them.

Examples
--------
>>> from ddl.data import load_sample
>>> x, y = load_sample("test")
>>> tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
((1000, 1, 28, 28), torch.float32, (1000,), torch.int64)
>>> y[:5].tolist()
[7, 2, 1, 0, 4]
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np
import torch

from ddl._validate import check_bool, check_choice
from ddl.data.cifar10 import load_cifar10, load_cifar10_label_names
from ddl.data.download import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    MNIST_FILES,
    MNIST_FOLDER,
    ChecksumError,
    DataFormatError,
    DataNotFoundError,
    DownloadError,
    download_dataset,
    missing_files,
    not_found_error,
    resolve_data_dir,
)
from ddl.data.mnist import load_mnist
from ddl.data.synthetic import make_blobs_images

__all__ = [
    "DATASETS",
    "SPLITS",
    "load_dataset",
    "load_sample",
    "resolve_data_dir",
    "download_dataset",
    "to_float_images",
    "make_blobs_images",
    "load_cifar10_label_names",
    "DataNotFoundError",
    "DataFormatError",
    "DownloadError",
    "ChecksumError",
]

SPLITS = ("train", "test")

DATASETS: dict[str, dict] = {
    "mnist": {
        "shape": (1, 28, 28),
        "n_classes": 10,
        "n_images": {"train": 60_000, "test": 10_000},
        "folder": MNIST_FOLDER,
        "files": {split: tuple(f"{f}[.gz]" for f in files) for split, files in MNIST_FILES.items()},
        "classes": tuple(str(d) for d in range(10)),
    },
    "cifar10": {
        "shape": (3, 32, 32),
        "n_classes": 10,
        "n_images": {"train": 50_000, "test": 10_000},
        "folder": CIFAR10_FOLDER,
        "files": dict(CIFAR10_FILES),
        "classes": ("airplane", "automobile", "bird", "cat", "deer",
                    "dog", "frog", "horse", "ship", "truck"),
    },
}

_LOADERS = {"mnist": load_mnist, "cifar10": load_cifar10}
_SAMPLE = "sample/mnist_sample.npz"


def _check_name_split(where: str, name: object, split: object) -> None:
    check_choice(where, "name", name, sorted(DATASETS))
    check_choice(where, "split", split, SPLITS)


def to_float_images(images: np.ndarray | torch.Tensor, *, layout: str = "NCHW") -> torch.Tensor:
    """Convert uint8 images to float32 (N, C, H, W) in [0, 1] (value / 255).

    Parameters
    ----------
    images : numpy.ndarray or torch.Tensor of uint8, shape (N, C, H, W) or (N, H, W, C)
        The images; not modified.
    layout : {"NCHW", "NHWC"}, default "NCHW"
        Axis order of ``images``; "NHWC" is moved to channels-first.

    Returns
    -------
    torch.Tensor of float32, shape (N, C, H, W)
        A new contiguous tensor with values ``images / 255``.

    Raises
    ------
    TypeError
        ``images`` is not a uint8 numpy array or tensor.
    ValueError
        ``images`` is not 4-D, or ``layout`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> to_float_images(np.array([[[[0, 51], [255, 102]]]], dtype=np.uint8)).tolist()
    [[[[0.0, 0.20000000298023224], [1.0, 0.4000000059604645]]]]
    """
    check_choice("to_float_images", "layout", layout, ("NCHW", "NHWC"))
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        got = f"dtype {images.dtype}" if isinstance(images, np.ndarray) else type(images).__name__
        raise TypeError(f"to_float_images: images must be a uint8 numpy array or tensor; got {got}.")
    if images.ndim != 4:
        raise ValueError(
            f"to_float_images: images must be 4-D ({layout}); got shape {tuple(images.shape)}."
        )
    if layout == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    out = torch.empty(images.shape, dtype=torch.float32)
    out.numpy()[...] = images  # one pass: cast while copying, no intermediate array
    return out.div_(255.0)


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split of MNIST or CIFAR-10 from its standard files.

    Parameters
    ----------
    name : {"mnist", "cifar10"}
        The data set.
    split : {"train", "test"}
        MNIST: 60,000 / 10,000 images; CIFAR-10: 50,000 / 10,000 images, in the original order.
    data_dir : str, os.PathLike or None, default None
        Root data folder holding ``mnist/`` and ``cifar-10-batches-py/``; None means
        ``$DDL_DATA``, else the cache folder (see `resolve_data_dir`).
    download : bool, default False
        If the files are missing, download them (checksummed) instead of raising.

    Returns
    -------
    x : torch.Tensor of float32, shape (N, C, H, W), values in [0, 1]
        (N, 1, 28, 28) for MNIST, (N, 3, 32, 32) RGB for CIFAR-10.
    y : torch.Tensor of int64, shape (N,), values in [0, 9]

    Raises
    ------
    ValueError
        Unknown ``name`` or ``split``.
    DataNotFoundError
        Files missing and ``download=False``; the message lists them and how to get them.
    DataFormatError
        A file is truncated, corrupt or malformed (the message names the file and the fault).
    """
    _check_name_split("load_dataset", name, split)
    check_bool("load_dataset", "download", download)
    root = resolve_data_dir(data_dir)
    folder = root / DATASETS[name]["folder"]
    missing = missing_files(name, split, folder)
    if missing and not download:
        raise not_found_error("load_dataset", name, split, data_dir, missing)
    if missing:
        download_dataset(name, root)
    images, labels = _LOADERS[name](folder, split)
    return to_float_images(images), torch.from_numpy(labels)


def load_sample(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST sample bundled with ddl, for offline demos and tests.

    ``train``: 5,000 images, the first 500 of each digit in the original training set, kept in
    their original order (indices stored as ``train_indices``). ``test``: the first 1,000 images
    of the original test set (t10k). Made by ``tools/make_sample.py``.

    Parameters
    ----------
    split : {"train", "test"}

    Returns
    -------
    x : torch.Tensor of float32, shape (N, 1, 28, 28), values in [0, 1]
        N = 5,000 for train, 1,000 for test.
    y : torch.Tensor of int64, shape (N,)
    """
    check_choice("load_sample", "split", split, SPLITS)
    ref = resources.files("ddl.data").joinpath(_SAMPLE)
    if not ref.is_file():
        raise DataNotFoundError(
            f"load_sample: the bundled sample {_SAMPLE} is missing from the ddl.data package "
            "(reinstall ddl, or rebuild it with tools/make_sample.py)."
        )
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as z:
        images, labels = z[f"x_{split}"], z[f"y_{split}"]
    return to_float_images(images[:, None]), torch.from_numpy(labels.astype(np.int64))
