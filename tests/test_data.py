"""Tests of ddl.data: real file formats written in tmp_path, exact pixel values, every error branch.

The fixtures write tiny fake data sets in the genuine formats (IDX, plain and gzipped; CIFAR-10
protocol-2 pickles with bytes keys, including a hand-assembled Python-2-style pickle like the
original cPickle files), so the real parsers run without the real files. The real data sets are
checked in the `slow` tests against the figures in ../shared/data/README.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import ddl.data as data
from ddl.data import (
    DATASETS,
    ChecksumError,
    DataFormatError,
    DataNotFoundError,
    DownloadError,
    download_dataset,
    load_dataset,
    load_sample,
    make_blobs_images,
    resolve_data_dir,
    to_float_images,
)
from ddl.data import download as dl
from ddl.data.cifar10 import load_cifar10_label_names, read_pickle
from ddl.data.mnist import read_idx
from ddl.data.synthetic import blob_templates

SAMPLE = Path(data.__file__).parent / "sample" / "mnist_sample.npz"
N_FAKE = 10

# ---------------------------------------------------------------------------------------------
# Writers for the real formats


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian int32 dims, data."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool, magic: int | None = None) -> Path:
    raw = idx_bytes(array, magic)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_mnist_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, size=(N_FAKE, 28, 28), dtype=np.uint8),
                rng.permutation(np.arange(N_FAKE) % 10).astype(np.uint8))
        for split in ("train", "test")
    }


def write_fake_mnist(root: Path, arrays, *, gz: bool) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name) in dl.MNIST_FILES.items():
        write_idx(folder / images_name, arrays[split][0], gz=gz)
        write_idx(folder / labels_name, arrays[split][1], gz=gz)
    return folder


def batch_pickle(data_rows, labels, extra: dict | None = None) -> bytes:
    """A CIFAR-10 batch as Python 3 writes it with protocol 2 (bytes keys, like the originals)."""
    d = {b"batch_label": b"fake batch", b"labels": labels, b"data": data_rows,
         b"filenames": [b"x.png"] * len(labels)}
    d.update(extra or {})
    return pickle.dumps(d, protocol=2)


def py2_batch_pickle(data_rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the original cPickle files are: protocol 2, Python-2 `str` opcodes
    (SHORT_BINSTRING / BINSTRING) and the classic ``numpy.core.multiarray._reconstruct`` global."""
    P = pickle

    def s(b: bytes) -> bytes:
        return (P.SHORT_BINSTRING + bytes([len(b)]) if len(b) < 256 else P.BINSTRING + struct.pack("<i", len(b))) + b

    def i(v: int) -> bytes:
        return P.BININT1 + bytes([v]) if 0 <= v < 256 else P.BININT + struct.pack("<i", v)

    n = data_rows.shape[0]
    dtype = (P.GLOBAL + b"numpy\ndtype\n" + s(b"u1") + i(0) + i(1) + P.TUPLE3 + P.REDUCE
             + P.MARK + i(3) + s(b"|") + P.NONE * 3 + i(-1) + i(-1) + i(0) + P.TUPLE + P.BUILD)
    array = (P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL + b"numpy\nndarray\n"
             + i(0) + P.TUPLE1 + s(b"b") + P.TUPLE3 + P.REDUCE
             + P.MARK + i(1) + i(n) + i(3072) + P.TUPLE2 + dtype + P.NEWFALSE
             + s(data_rows.tobytes()) + P.TUPLE + P.BUILD)
    label_list = P.EMPTY_LIST + P.MARK + b"".join(i(v) for v in labels) + P.APPENDS
    return (P.PROTO + b"\x02" + P.EMPTY_DICT + P.MARK + s(b"batch_label") + s(b"testing batch 1 of 1")
            + s(b"labels") + label_list + s(b"data") + array + P.SETITEMS + P.STOP)


def fake_cifar_arrays(seed: int = 0):
    """5 train batches of 2 images (10 records) and a test batch of 10, as (rows, labels)."""
    rng = np.random.default_rng(seed)
    train = [(rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, 2)])
             for _ in range(5)]
    test = (rng.integers(0, 256, size=(N_FAKE, 3072), dtype=np.uint8), [int(v) for v in rng.permutation(10)])
    return train, test


META = pickle.dumps({b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in DATASETS["cifar10"]["classes"]],
                     b"num_vis": 3072}, protocol=2)


def write_fake_cifar(root: Path, train, test, *, py2_test: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for k, (rows, labels) in enumerate(train, start=1):
        (folder / f"data_batch_{k}").write_bytes(batch_pickle(rows, labels))
    writer = py2_batch_pickle if py2_test else batch_pickle
    (folder / "test_batch").write_bytes(writer(*test))
    (folder / "batches.meta").write_bytes(META)
    return folder


@pytest.fixture(params=[True, False], ids=["gz", "plain"])
def fake_mnist_dir(request, tmp_path):
    """(root, arrays): tmp_path/mnist with 10 fake images per split, gzipped or plain IDX."""
    arrays = fake_mnist_arrays()
    write_fake_mnist(tmp_path, arrays, gz=request.param)
    return tmp_path, arrays


@pytest.fixture
def fake_cifar_dir(tmp_path):
    """(root, train, test): tmp_path/cifar-10-batches-py, 5 train batches of 2 and a test batch of 10."""
    train, test = fake_cifar_arrays()
    write_fake_cifar(tmp_path, train, test)
    return tmp_path, train, test


@pytest.fixture
def mnist_folder(tmp_path):
    """A valid plain-IDX fake MNIST folder whose files individual tests overwrite."""
    arrays = fake_mnist_arrays()
    return write_fake_mnist(tmp_path, arrays, gz=False), arrays


# ---------------------------------------------------------------------------------------------
# MNIST


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_exact_pixels_and_labels(fake_mnist_dir, split):
    root, arrays = fake_mnist_dir
    x, y = load_dataset("mnist", split, data_dir=root)
    images, labels = arrays[split]
    assert x.shape == (N_FAKE, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (N_FAKE,) and y.dtype == torch.int64
    # every pixel is exactly value / 255 in float32, at the same (n, row, col)
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.float32) / np.float32(255)))
    assert x[3, 0, 5, 7].item() == np.float32(images[3, 5, 7]) / np.float32(255)
    assert y.tolist() == labels.tolist()


def test_mnist_plain_file_preferred_over_gz(tmp_path):
    folder = write_fake_mnist(tmp_path, fake_mnist_arrays(0), gz=True)
    plain = fake_mnist_arrays(1)["test"][0]
    write_idx(folder / "t10k-images-idx3-ubyte", plain, gz=False)
    x, _ = load_dataset("mnist", "test", data_dir=tmp_path)
    assert torch.equal(x[:, 0] * 255, torch.from_numpy(plain.astype(np.float32)))


def test_read_idx_labels_shape(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([3, 1, 4, 1, 5], dtype=np.uint8), gz=True)
    out = read_idx(path, 1)
    assert out.dtype == np.uint8 and out.tolist() == [3, 1, 4, 1, 5]


def test_mnist_wrong_magic(mnist_folder):
    folder, arrays = mnist_folder
    write_idx(folder / "train-images-idx3-ubyte", arrays["train"][0], gz=False, magic=0x0801)
    with pytest.raises(DataFormatError, match=r"not an IDX images file: magic number 0x00000801, expected 0x00000803"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_labels_file_with_images_magic(mnist_folder):
    folder, _ = mnist_folder
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros((N_FAKE, 28, 28), np.uint8), gz=False)
    with pytest.raises(DataFormatError, match=r"not an IDX labels file: magic number 0x00000803, expected 0x00000801"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_non_byte_idx_type_refused(mnist_folder):
    folder, arrays = mnist_folder
    write_idx(folder / "t10k-images-idx3-ubyte", arrays["test"][0], gz=False, magic=0x0D03)  # float32 code
    with pytest.raises(DataFormatError, match=r"magic number 0x00000d03"):
        load_dataset("mnist", "test", data_dir=folder.parent)


def test_mnist_wrong_image_size(mnist_folder):
    folder, _ = mnist_folder
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((N_FAKE, 32, 32), np.uint8), gz=False)
    with pytest.raises(DataFormatError, match=r"images of 32x32 pixels; MNIST images are 28x28"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_count_mismatch(mnist_folder):
    folder, arrays = mnist_folder
    write_idx(folder / "train-labels-idx1-ubyte", arrays["train"][1][:9], gz=False)
    with pytest.raises(DataFormatError, match=r"has 10 images but train-labels-idx1-ubyte has 9 labels"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_label_out_of_range(mnist_folder):
    folder, arrays = mnist_folder
    labels = arrays["test"][1].copy()
    labels[6] = 10
    write_idx(folder / "t10k-labels-idx1-ubyte", labels, gz=False)
    with pytest.raises(DataFormatError, match=r"label 10 at index 6; labels must be in \[0, 9\]"):
        load_dataset("mnist", "test", data_dir=folder.parent)


def test_mnist_truncated_plain_data(mnist_folder):
    folder, _ = mnist_folder
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match=r"is truncated: header says \(10, 28, 28\) = 7840 bytes of data, found 7835"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_truncated_header(mnist_folder):
    folder, _ = mnist_folder
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataFormatError, match=r"truncated inside its header \(6 bytes\)"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_empty_file(mnist_folder):
    folder, _ = mnist_folder
    (folder / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"is truncated: 0 bytes, no IDX header"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_corrupt_header_sizes_refused_before_allocating(mnist_folder):
    folder, _ = mnist_folder
    # header claims 2**30 images of 28x28 (21 GB) in a file of a few kB
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 2**30, 28, 28) + bytes(100))
    with pytest.raises(DataFormatError, match=r"truncated or its header is corrupt: sizes \(1073741824, 28, 28\)"):
        load_dataset("mnist", "train", data_dir=folder.parent)


def test_mnist_trailing_bytes(mnist_folder):
    folder, _ = mnist_folder
    path = folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x01\x02")
    with pytest.raises(DataFormatError, match=r"trailing bytes after the \(10,\) values"):
        load_dataset("mnist", "test", data_dir=folder.parent)


def _gz_folder(tmp_path):
    return write_fake_mnist(tmp_path, fake_mnist_arrays(), gz=True)


def test_mnist_truncated_gzip(tmp_path):
    folder = _gz_folder(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])  # lose the end of the deflate stream and the trailer
    with pytest.raises(DataFormatError, match=r"corrupt or truncated gzip file"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_mnist_gzip_crc_error(tmp_path):
    folder = _gz_folder(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # flip a byte of the stored CRC32: the data decompresses but fails the check
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"corrupt or truncated gzip file \(CRC check failed"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_mnist_not_gzip(tmp_path):
    folder = _gz_folder(tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(idx_bytes(np.zeros((N_FAKE, 28, 28), np.uint8)))
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte.gz is a corrupt or truncated gzip file \(Not a gzipped file"):
        load_dataset("mnist", "test", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar_exact_pixels_planes_and_batch_order(fake_cifar_dir):
    root, train, _ = fake_cifar_dir
    x, y = load_dataset("cifar10", "train", data_dir=root)
    assert x.shape == (N_FAKE, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [v for _, labels in train for v in labels]
    rows = np.concatenate([r for r, _ in train])
    # row layout: R plane (1024), G plane, B plane, each 32x32 row-major
    for n, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 31), (9, 2, 31, 0), (6, 2, 17, 9)]:
        assert x[n, c, h, w].item() == np.float32(rows[n, c * 1024 + h * 32 + w]) / np.float32(255)
    expected = torch.from_numpy(rows.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert torch.equal(x, expected)


def test_cifar_python2_style_pickle(tmp_path):
    """The original files use Python-2 str opcodes and numpy.core.multiarray._reconstruct."""
    train, test = fake_cifar_arrays()
    write_fake_cifar(tmp_path, train, test, py2_test=True)
    raw = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    x, y = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert y.tolist() == test[1]
    assert torch.equal(x * 255, torch.from_numpy(test[0].reshape(-1, 3, 32, 32).astype(np.float32)))


def test_cifar_label_names(fake_cifar_dir):
    root, _, _ = fake_cifar_dir
    assert load_cifar10_label_names(root / "cifar-10-batches-py") == list(DATASETS["cifar10"]["classes"])


class _Evil:
    """Pickles as a call to ``func(*args)``; unpickling with plain pickle would run it."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "make, global_name",
    [
        (lambda marker: _Evil(os.system, (f"touch {marker}",)), r"(posix|os|nt)\.system"),
        (lambda marker: _Evil(subprocess.call, (["touch", str(marker)],)), r"(subprocess|commands)\.call"),  # protocol 2 stores Python-2 names
        (lambda marker: _Evil(eval, (f"open({str(marker)!r}, 'w')",)), r"(builtins|__builtin__)\.eval"),
    ],
    ids=["os.system", "subprocess.call", "eval"],
)
def test_restricted_unpickler_refuses_other_globals(fake_cifar_dir, make, global_name):
    root, train, _ = fake_cifar_dir
    marker = root / "pwned"
    rows, labels = train[0]
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(batch_pickle(rows, labels, {b"payload": make(marker)}))
    with pytest.raises(DataFormatError, match=rf"data_batch_2 refers to the global {global_name}.*not allowed"):
        load_dataset("cifar10", "train", data_dir=root)
    assert not marker.exists()  # refused before it could be called


def test_restricted_unpickler_refuses_at_top_level(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps(_Evil(os.system, (f"touch {marker}",)), protocol=2))
    with pytest.raises(DataFormatError, match=rf"{path} refers to the global posix\.system"):
        read_pickle(path)
    assert not marker.exists()


def _cifar_test_file(root: Path) -> Path:
    return root / "cifar-10-batches-py" / "test_batch"


def test_cifar_truncated_pickle(fake_cifar_dir):
    root, _, _ = fake_cifar_dir
    path = _cifar_test_file(root)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataFormatError, match=r"test_batch is truncated or not a valid pickle"):
        load_dataset("cifar10", "test", data_dir=root)


def test_cifar_garbage_file(fake_cifar_dir):
    root, _, _ = fake_cifar_dir
    _cifar_test_file(root).write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataFormatError, match=r"test_batch is truncated or not a valid pickle \(UnpicklingError"):
        load_dataset("cifar10", "test", data_dir=root)


def test_cifar_not_a_dict(fake_cifar_dir):
    root, _, _ = fake_cifar_dir
    _cifar_test_file(root).write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataFormatError, match=r"test_batch holds a list; a CIFAR-10 batch is a dict"):
        load_dataset("cifar10", "test", data_dir=root)


def test_cifar_missing_labels_key(fake_cifar_dir):
    root, _, test = fake_cifar_dir
    _cifar_test_file(root).write_bytes(pickle.dumps({b"data": test[0]}, protocol=2))
    with pytest.raises(DataFormatError, match=r"test_batch has no labels entry"):
        load_dataset("cifar10", "test", data_dir=root)


@pytest.mark.parametrize(
    "rows, desc",
    [
        (np.zeros((N_FAKE, 3000), np.uint8), r"uint8 array of shape \(10, 3000\)"),
        (np.zeros((N_FAKE, 3072), np.float32), r"float32 array of shape \(10, 3072\)"),
        (np.zeros((N_FAKE, 3, 32, 32), np.uint8), r"uint8 array of shape \(10, 3, 32, 32\)"),
        ([[0] * 3072] * N_FAKE, r"list"),
    ],
    ids=["short-rows", "float", "4d", "list"],
)
def test_cifar_wrong_data_shape_or_dtype(fake_cifar_dir, rows, desc):
    root, _, test = fake_cifar_dir
    _cifar_test_file(root).write_bytes(batch_pickle(rows, test[1]))
    with pytest.raises(DataFormatError, match=rf"'data' must be a uint8 array of shape \(n, 3072\); got a {desc}"):
        load_dataset("cifar10", "test", data_dir=root)


def test_cifar_count_mismatch(fake_cifar_dir):
    root, _, test = fake_cifar_dir
    _cifar_test_file(root).write_bytes(batch_pickle(test[0], test[1][:7]))
    with pytest.raises(DataFormatError, match=r"test_batch has 10 images but 7 labels"):
        load_dataset("cifar10", "test", data_dir=root)


@pytest.mark.parametrize("bad", [10, -1])
def test_cifar_label_out_of_range(fake_cifar_dir, bad):
    root, _, test = fake_cifar_dir
    labels = list(test[1])
    labels[4] = bad
    _cifar_test_file(root).write_bytes(batch_pickle(test[0], labels))
    with pytest.raises(DataFormatError, match=rf"test_batch has label {bad} at index 4; labels must be in \[0, 9\]"):
        load_dataset("cifar10", "test", data_dir=root)


def test_cifar_labels_not_ints(fake_cifar_dir):
    root, _, test = fake_cifar_dir
    _cifar_test_file(root).write_bytes(batch_pickle(test[0], [float(v) for v in test[1]]))
    with pytest.raises(DataFormatError, match=r"'labels' must be a list of ints; got dtype float64"):
        load_dataset("cifar10", "test", data_dir=root)


# ---------------------------------------------------------------------------------------------
# load_dataset arguments and missing files


def test_datasets_registry():
    assert sorted(DATASETS) == ["cifar10", "mnist"]
    assert DATASETS["mnist"]["shape"] == (1, 28, 28) and DATASETS["cifar10"]["shape"] == (3, 32, 32)
    assert all(info["n_classes"] == len(info["classes"]) == 10 for info in DATASETS.values())
    assert DATASETS["cifar10"]["classes"][3] == "cat"
    assert DATASETS["mnist"]["files"]["test"] == ("t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]")
    assert DATASETS["cifar10"]["files"]["train"] == tuple(f"data_batch_{k}" for k in range(1, 6))


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match=r"^load_dataset: name must be one of cifar10, mnist; got 'fashion'\.$"):
        load_dataset("fashion", "train", data_dir=tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match=r"^load_dataset: split must be one of train, test; got 'val'\.$"):
        load_dataset("mnist", "val", data_dir=tmp_path)


def test_download_flag_must_be_bool(tmp_path):
    with pytest.raises(TypeError, match=r"load_dataset: download must be a bool; got 'yes'"):
        load_dataset("mnist", "train", data_dir=tmp_path, download="yes")


def test_missing_mnist_error_names_files_folder_and_download(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"data set 'mnist' split 'train' is not in {tmp_path / 'mnist'}" in msg
    assert "comes from the data_dir argument" in msg
    for name in ("train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]"):
        assert f"{tmp_path / 'mnist' / name}   MISSING" in msg
    assert f"ddl download mnist --data-dir {tmp_path}" in msg and "download=True" in msg


def test_missing_cifar_batch_is_named(fake_cifar_dir):
    root, _, _ = fake_cifar_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", "train", data_dir=root)
    msg = str(info.value)
    folder = root / "cifar-10-batches-py"
    assert f"{folder / 'data_batch_3'}   MISSING" in msg
    assert all(f"{folder / f'data_batch_{k}'}   found" in msg for k in (1, 2, 4, 5))
    assert "ddl download cifar10" in msg


def test_missing_files_error_says_folder_came_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DDL_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"comes from \$DDL_DATA"):
        load_dataset("mnist", "test")


def test_download_true_fetches_missing_files_then_loads(tmp_path, monkeypatch):
    arrays = fake_mnist_arrays()
    calls = []

    def fake_download(name, data_dir=None):
        calls.append((name, Path(data_dir)))
        return write_fake_mnist(Path(data_dir), arrays, gz=True)

    monkeypatch.setattr(data, "download_dataset", fake_download)
    x, y = load_dataset("mnist", "test", data_dir=tmp_path, download=True)
    assert calls == [("mnist", tmp_path)]
    assert y.tolist() == arrays["test"][1].tolist() and x.shape == (N_FAKE, 1, 28, 28)
    load_dataset("mnist", "test", data_dir=tmp_path, download=True)
    assert len(calls) == 1  # files present: no second download


# ---------------------------------------------------------------------------------------------
# Folder resolution: argument > $DDL_DATA > $XDG_CACHE_HOME/ddl/data > ~/.cache/ddl/data


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DDL_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_resolve_argument_wins_over_env(clean_env, tmp_path):
    clean_env.setenv("DDL_DATA", str(tmp_path / "env"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_resolve_env_wins_over_cache(clean_env, tmp_path):
    clean_env.setenv("DDL_DATA", str(tmp_path / "env"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "env"


def test_resolve_xdg_cache(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "ddl" / "data"


def test_resolve_home_cache_when_xdg_unset_empty_or_relative(clean_env, tmp_path):
    expected = tmp_path / "home" / ".cache" / "ddl" / "data"
    assert resolve_data_dir() == expected
    clean_env.setenv("DDL_DATA", "")  # empty means unset
    clean_env.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says: ignore relative paths
    assert resolve_data_dir() == expected


def test_resolve_expands_user(clean_env, tmp_path):
    assert resolve_data_dir("~/sets") == tmp_path / "home" / "sets"
    clean_env.setenv("DDL_DATA", "~/env-sets")
    assert resolve_data_dir() == tmp_path / "home" / "env-sets"


def test_resolve_does_not_create_folder(clean_env, tmp_path):
    resolve_data_dir()
    assert not (tmp_path / "home").exists()


def test_resolve_bad_arguments():
    with pytest.raises(TypeError, match=r"resolve_data_dir: data_dir must be a str, an os.PathLike or None; got int"):
        resolve_data_dir(3)
    with pytest.raises(ValueError, match=r"resolve_data_dir: data_dir must not be an empty string"):
        resolve_data_dir("")


def test_load_dataset_reads_from_env_folder(clean_env, fake_mnist_dir):
    root, arrays = fake_mnist_dir
    clean_env.setenv("DDL_DATA", str(root))
    _, y = load_dataset("mnist", "train")
    assert y.tolist() == arrays["train"][1].tolist()


def test_load_dataset_reads_from_cache_folder(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    arrays = fake_mnist_arrays(3)
    write_fake_mnist(tmp_path / "xdg" / "ddl" / "data", arrays, gz=True)
    _, y = load_dataset("mnist", "test")
    assert y.tolist() == arrays["test"][1].tolist()


# ---------------------------------------------------------------------------------------------
# Downloads (the network is replaced by a fake urlopen; nothing leaves the machine)


class _Response(io.BytesIO):
    def __init__(self, payload: bytes, fail_after: int | None = None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self._fail_after = fail_after

    def read(self, n=-1):
        if self._fail_after is not None and self.tell() >= self._fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


class FakeNet:
    """Stands in for urllib.request.urlopen: serves payloads by URL, records every URL asked for."""

    def __init__(self, files: dict[str, bytes] | None = None, fail_after: int | None = None):
        self.files, self.fail_after, self.urls = files or {}, fail_after, []

    def __call__(self, url, timeout=None):
        self.urls.append(url)
        if url not in self.files:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return _Response(self.files[url], self.fail_after)


def _mnist_payloads(arrays) -> dict[str, bytes]:
    out = {}
    for split, (img_name, lab_name) in dl.MNIST_FILES.items():
        out[img_name + ".gz"] = gzip.compress(idx_bytes(arrays[split][0]))
        out[lab_name + ".gz"] = gzip.compress(idx_bytes(arrays[split][1]))
    return out


@pytest.fixture
def fake_mnist_server(monkeypatch):
    """Serves fake MNIST .gz files from the SECOND mirror only; checksums patched to match them."""
    arrays = fake_mnist_arrays(7)
    payloads = _mnist_payloads(arrays)
    for name, blob in payloads.items():
        monkeypatch.setitem(dl.MNIST_SHA256, name, hashlib.sha256(blob).hexdigest())
    net = FakeNet({dl.MNIST_MIRRORS[1] + name: blob for name, blob in payloads.items()})
    monkeypatch.setattr(dl.urllib.request, "urlopen", net)
    return net, arrays, payloads


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_mnist_falls_back_to_second_mirror_and_loads(tmp_path, fake_mnist_server):
    net, arrays, payloads = fake_mnist_server
    folder = download_dataset("mnist", tmp_path)
    assert folder == tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(payloads)
    assert all((folder / n).read_bytes() == blob for n, blob in payloads.items())
    assert net.urls[:2] == [dl.MNIST_MIRRORS[0] + "train-images-idx3-ubyte.gz",
                            dl.MNIST_MIRRORS[1] + "train-images-idx3-ubyte.gz"]
    assert len(net.urls) == 8
    x, y = load_dataset("mnist", "train", data_dir=tmp_path)
    assert torch.equal(x[:, 0] * 255, torch.from_numpy(arrays["train"][0].astype(np.float32)))
    # second call: everything present and verified, no network
    download_dataset("mnist", tmp_path)
    assert len(net.urls) == 8


def test_download_checksum_mismatch_saves_nothing(tmp_path, fake_mnist_server, monkeypatch):
    monkeypatch.setitem(dl.MNIST_SHA256, "train-images-idx3-ubyte.gz", "0" * 64)
    with pytest.raises(DownloadError, match=r"could not download train-images-idx3-ubyte.gz(.|\n)*"
                       r"ChecksumError: download_dataset: sha256 of .*mnist/train-images-idx3-ubyte.gz is [0-9a-f]{64}, expected 0{64}"):
        download_dataset("mnist", tmp_path)
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert _leftovers(tmp_path / "mnist") == []  # no temporary files left behind


def test_download_offline_lists_every_url_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", FakeNet())
    with pytest.raises(DownloadError) as info:
        download_dataset("mnist", tmp_path)
    msg = str(info.value)
    assert all(f"{m}train-images-idx3-ubyte.gz: URLError" in msg for m in dl.MNIST_MIRRORS)
    assert "Temporary failure in name resolution" in msg and "offline" in msg


def test_download_interrupted_leaves_no_partial_file(tmp_path, fake_mnist_server):
    net, _, _ = fake_mnist_server
    net.fail_after = 100
    with pytest.raises(DownloadError, match=r"ConnectionResetError: connection reset by peer"):
        download_dataset("mnist", tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_existing_gz_with_wrong_checksum(tmp_path, fake_mnist_server):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    with pytest.raises(ChecksumError, match=r"existing file .*train-images-idx3-ubyte.gz has sha256 [0-9a-f]{64}.*delete it"):
        download_dataset("mnist", tmp_path)


def test_download_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"^download_dataset: name must be one of cifar10, mnist; got 'svhn'\.$"):
        download_dataset("svhn", tmp_path)


def _cifar_tarball(train, test, *, extra_members: bool = True, skip: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, blob):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        members = {f"data_batch_{k}": batch_pickle(*train[k - 1]) for k in range(1, 6)}
        members["test_batch"] = batch_pickle(*test)
        members["batches.meta"] = META
        for name, blob in members.items():
            if name != skip:
                add(f"cifar-10-batches-py/{name}", blob)
        if extra_members:
            add("cifar-10-batches-py/readme.html", b"<html></html>")
            add("../escaped", b"should never be written")
            link = tarfile.TarInfo("cifar-10-batches-py/batches.meta.link")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
    return buf.getvalue()


def _serve_cifar(monkeypatch, blob: bytes) -> FakeNet:
    monkeypatch.setattr(dl, "CIFAR10_ARCHIVE_MD5", hashlib.md5(blob).hexdigest())
    monkeypatch.setattr(dl, "CIFAR10_ARCHIVE_SHA256", hashlib.sha256(blob).hexdigest())
    net = FakeNet({dl.CIFAR10_URLS[0]: blob})
    monkeypatch.setattr(dl.urllib.request, "urlopen", net)
    return net


def test_download_cifar_extracts_only_batch_files(tmp_path, monkeypatch):
    train, test = fake_cifar_arrays(5)
    _serve_cifar(monkeypatch, _cifar_tarball(train, test))
    root = tmp_path / "data"
    folder = download_dataset("cifar10", root)
    assert folder == root / "cifar-10-batches-py"
    expected = sorted([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch", "batches.meta"])
    assert sorted(p.name for p in folder.iterdir()) == expected  # no readme, no link, no archive left
    assert not (tmp_path / "escaped").exists() and not (root / "escaped").exists()
    x, y = load_dataset("cifar10", "test", data_dir=root)
    assert y.tolist() == test[1]
    assert torch.equal(x * 255, torch.from_numpy(test[0].reshape(-1, 3, 32, 32).astype(np.float32)))


def test_download_cifar_md5_checked(tmp_path, monkeypatch):
    train, test = fake_cifar_arrays(5)
    _serve_cifar(monkeypatch, _cifar_tarball(train, test))
    monkeypatch.setattr(dl, "CIFAR10_ARCHIVE_MD5", "c58f30108f718f92721af3b95e74349a")
    with pytest.raises(DownloadError, match=r"md5 of .*cifar-10-python.tar.gz is [0-9a-f]{32}, expected c58f30108f718f92721af3b95e74349a"):
        download_dataset("cifar10", tmp_path)
    assert list((tmp_path / "cifar-10-batches-py").iterdir()) == []


def test_download_cifar_archive_missing_member(tmp_path, monkeypatch):
    train, test = fake_cifar_arrays(5)
    _serve_cifar(monkeypatch, _cifar_tarball(train, test, skip="data_batch_4"))
    with pytest.raises(DataFormatError, match=r"lacks \['cifar-10-batches-py/data_batch_4'\]"):
        download_dataset("cifar10", tmp_path)
    assert _leftovers(tmp_path / "cifar-10-batches-py") == []


def test_download_cifar_skips_when_present(fake_cifar_dir, monkeypatch):
    root, _, _ = fake_cifar_dir
    net = FakeNet()
    monkeypatch.setattr(dl.urllib.request, "urlopen", net)
    assert download_dataset("cifar10", root) == root / "cifar-10-batches-py"
    assert net.urls == []


def test_real_checksums_are_the_published_ones():
    assert dl.CIFAR10_ARCHIVE_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert dl.MNIST_SHA256["train-labels-idx1-ubyte.gz"] == "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"


# ---------------------------------------------------------------------------------------------
# to_float_images


def test_to_float_images_nchw_and_nhwc(rng):
    nhwc = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    before = nhwc.copy()
    out = to_float_images(nhwc, layout="NHWC")
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32 and out.is_contiguous()
    assert out[1, 2, 3, 4].item() == np.float32(nhwc[1, 3, 4, 2]) / np.float32(255)
    assert torch.equal(out, to_float_images(torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())))
    np.testing.assert_array_equal(nhwc, before)
    assert to_float_images(np.array([[[[0, 255]]]], dtype=np.uint8)).tolist() == [[[[0.0, 1.0]]]]


def test_to_float_images_errors():
    with pytest.raises(TypeError, match=r"to_float_images: images must be a uint8 numpy array or tensor; got dtype float32"):
        to_float_images(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(TypeError, match=r"got list"):
        to_float_images([[1, 2]])
    with pytest.raises(ValueError, match=r"to_float_images: images must be 4-D \(NCHW\); got shape \(2, 2, 2\)"):
        to_float_images(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"^to_float_images: layout must be one of NCHW, NHWC; got 'CHW'\.$"):
        to_float_images(np.zeros((1, 1, 2, 2), np.uint8), layout="CHW")


# ---------------------------------------------------------------------------------------------
# The bundled MNIST sample


def test_sample_file_small_and_plain_arrays():
    assert SAMPLE.stat().st_size <= 3 * 1024 * 1024
    with np.load(SAMPLE, allow_pickle=False) as z:
        assert sorted(z.files) == ["test_indices", "train_indices", "x_test", "x_train", "y_test", "y_train"]
        assert z["x_train"].shape == (5000, 28, 28) and z["x_train"].dtype == np.uint8
        assert z["x_test"].shape == (1000, 28, 28) and z["x_test"].dtype == np.uint8
        train_idx = z["train_indices"]
        assert np.all(np.diff(train_idx) > 0) and train_idx[0] >= 0 and train_idx[-1] < 60_000
        np.testing.assert_array_equal(z["test_indices"], np.arange(1000))


@pytest.mark.parametrize("split, n", [("train", 5000), ("test", 1000)])
def test_load_sample(split, n):
    x, y = load_sample(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.equal(torch.round(x * 255) / 255, x)  # exactly k / 255 values
    counts = torch.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.min().item() > 0
    if split == "train":
        assert counts.tolist() == [500] * 10
        assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # original MNIST order
    else:
        assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        assert counts.tolist() == [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]


def test_load_sample_bad_split():
    with pytest.raises(ValueError, match=r"^load_sample: split must be one of train, test; got 'validation'\.$"):
        load_sample("validation")


# ---------------------------------------------------------------------------------------------
# Synthetic images


def test_blobs_shapes_range_and_balance():
    x, y = make_blobs_images(23, shape=(3, 8, 6), n_classes=4, seed=3)
    assert x.shape == (23, 3, 8, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() >= 0.0 and x.max().item() <= 1.0
    assert sorted(torch.bincount(y).tolist()) == [5, 6, 6, 6]


def test_blobs_are_template_plus_noise():
    templates = blob_templates((1, 28, 28), 10)
    assert templates.shape == (10, 1, 28, 28) and templates.dtype == np.float32
    assert templates.min() == pytest.approx(0.15) and templates.max() == pytest.approx(0.85)
    x, y = make_blobs_images(400, seed=0, noise=0.1)
    residual = x.numpy() - templates[y.numpy()]
    assert abs(residual.mean()) < 0.002 and residual.std() == pytest.approx(0.1, abs=0.003)
    x0, _ = make_blobs_images(50, seed=0, noise=0.0)
    _, y0 = make_blobs_images(50, seed=0)
    np.testing.assert_array_equal(x0.numpy(), templates[y0.numpy()])


def test_blobs_deterministic_and_seed_changes_only_sampling():
    a, ya = make_blobs_images(30, seed=5)
    b, yb = make_blobs_images(30, seed=5)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    c, _ = make_blobs_images(30, seed=6)
    assert not torch.equal(a, c)


def test_blobs_learnable_across_seeds():
    """Classes are separable: train on seed 0, test on seed 1 (shared templates)."""
    from sklearn.neighbors import NearestCentroid

    templates = blob_templates((1, 28, 28), 10).reshape(10, -1)
    dists = np.linalg.norm(templates[:, None] - templates[None], axis=-1)
    # nearest-template errs only if the noise moves d/2 along the line between two templates,
    # a 1-D N(0, 0.1) excursion: d/2 > 1.0 is more than 10 standard deviations
    assert dists[~np.eye(10, dtype=bool)].min() > 2.0
    x_tr, y_tr = make_blobs_images(200, seed=0)
    x_te, y_te = make_blobs_images(200, seed=1)
    clf = NearestCentroid().fit(x_tr.reshape(200, -1).numpy(), y_tr.numpy())
    assert clf.score(x_te.reshape(200, -1).numpy(), y_te.numpy()) == 1.0
    nearest = np.argmin(np.linalg.norm(x_te.reshape(200, 1, -1).numpy() - templates[None], axis=-1), axis=1)
    assert (nearest == y_te.numpy()).mean() == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, r"n must be an int >= 1; got 0"),
        ({"n": 2.0}, r"n must be an int >= 1; got 2.0"),
        ({"shape": (28, 28)}, r"shape must be a tuple \(C, H, W\) of ints >= 1; got \(28, 28\)"),
        ({"shape": (1, 0, 4)}, r"shape must be a tuple \(C, H, W\) of ints >= 1; got \(1, 0, 4\)"),
        ({"n_classes": 1}, r"n_classes must be an int >= 2; got 1"),
        ({"seed": -1}, r"seed must be an int >= 0; got -1"),
        ({"noise": -0.1}, r"noise must be a finite number >= 0; got -0.1"),
        ({"noise": float("nan")}, r"noise must be a finite number >= 0; got nan"),
    ],
)
def test_blobs_errors(kwargs, match):
    args = {"n": 10, **kwargs}
    with pytest.raises(ValueError, match=rf"make_blobs_images: {match}"):
        make_blobs_images(**args)


# ---------------------------------------------------------------------------------------------
# The real data sets (../shared/data): the verification figures of its README


@pytest.mark.slow
def test_real_mnist_verification_figures(shared_data_dir):
    x, y = load_dataset("mnist", "train", data_dir=shared_data_dir)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y[0].item() == 5
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert (x.double() * 255).mean().item() == pytest.approx(33.3184, abs=1e-4)
    assert (x.double() * 255).std().item() == pytest.approx(78.5675, abs=1e-4)
    with np.load(SAMPLE, allow_pickle=False) as z:  # the bundled sample is these images
        idx = torch.from_numpy(z["train_indices"].astype(np.int64))
        assert torch.equal(x[idx], load_sample("train")[0]) and torch.equal(y[idx], load_sample("train")[1])
    del x
    xt, yt = load_dataset("mnist", "test", data_dir=shared_data_dir)
    assert xt.shape == (10000, 1, 28, 28) and yt[0].item() == 7
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (xt.double() * 255).mean().item() == pytest.approx(33.7912, abs=1e-4)
    assert (xt.double() * 255).std().item() == pytest.approx(79.1725, abs=1e-4)
    assert torch.equal(xt[:1000], load_sample("test")[0]) and torch.equal(yt[:1000], load_sample("test")[1])


@pytest.mark.slow
def test_real_cifar10_verification_figures(shared_data_dir):
    x, y = load_dataset("cifar10", "train", data_dir=shared_data_dir)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.bincount(y).tolist() == [5000] * 10
    assert torch.bincount(y[:10000]).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    assert [round(v * 255) for v in x[0, 0, 0, :3].tolist()] == [59, 43, 50]  # first row of data_batch_1
    mean = (x.double() * 255).mean(dim=(0, 2, 3)).tolist()
    std = (x.double() * 255).std(dim=(0, 2, 3)).tolist()
    assert mean == pytest.approx([125.30692, 122.95039, 113.86538], abs=1e-5)
    assert std == pytest.approx([62.99322, 62.08871, 66.70490], abs=1e-5)
    del x
    xt, yt = load_dataset("cifar10", "test", data_dir=shared_data_dir)
    assert xt.shape == (10000, 3, 32, 32) and yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(yt).tolist() == [1000] * 10
    hwc = torch.round(xt[0] * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()
    assert hashlib.sha256(hwc).hexdigest() == "af12e1241a1e7a0c9ba326825279bef5fe961ceb5f95212a99f9b1f22711f913"
    assert (xt.double() * 255).mean(dim=(0, 2, 3)).tolist() == pytest.approx([126.02464, 123.70850, 114.85432], abs=1e-5)
    assert load_cifar10_label_names(shared_data_dir / "cifar-10-batches-py") == list(DATASETS["cifar10"]["classes"])
