"""Build the bundled offline MNIST sample ``src/ddl/data/sample/mnist_sample.npz``.

Which images (so anyone can rebuild and check it):

* ``train``: the first 500 images of each digit 0-9 in the original MNIST training set
  (train-images-idx3-ubyte), 5,000 in all, kept in their original order (sorted by index), so
  "the first k images" of the sample stay a mix of digits. Their indices into the 60,000
  training images are stored as ``train_indices``.
* ``test``: the first 1,000 images of the original test set (t10k-images-idx3-ubyte),
  ``test_indices`` = 0..999.

Arrays in the file (all written with ``np.savez_compressed``, no pickled objects):
``x_train`` uint8 (5000, 28, 28), ``y_train`` uint8 (5000,), ``train_indices`` int32 (5000,),
``x_test`` uint8 (1000, 28, 28), ``y_test`` uint8 (1000,), ``test_indices`` int32 (1000,).

Usage::

    python tools/make_sample.py [--data-dir ../shared/data] [--out src/ddl/data/sample/mnist_sample.npz]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from ddl.data.mnist import load_mnist

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = 500
N_TEST = 1000


def build(data_dir: Path) -> dict[str, np.ndarray]:
    """The sample's arrays, read from ``data_dir/mnist``."""
    x_train, y_train = load_mnist(data_dir / "mnist", "train")
    x_test, y_test = load_mnist(data_dir / "mnist", "test")
    train_idx = np.sort(np.concatenate([np.flatnonzero(y_train == c)[:PER_CLASS] for c in range(10)]))
    test_idx = np.arange(N_TEST)
    return {
        "x_train": x_train[train_idx, 0],
        "y_train": y_train[train_idx].astype(np.uint8),
        "train_indices": train_idx.astype(np.int32),
        "x_test": x_test[test_idx, 0],
        "y_test": y_test[test_idx].astype(np.uint8),
        "test_indices": test_idx.astype(np.int32),
    }


def write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "ddl" / "data" / "sample" / "mnist_sample.npz")
    args = parser.parse_args()
    arrays = build(args.data_dir)
    write_atomic(args.out, arrays)
    counts = np.bincount(arrays["y_train"], minlength=10).tolist()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); train label counts {counts}, "
          f"last train index {int(arrays['train_indices'][-1])}; test labels "
          f"{np.bincount(arrays['y_test'], minlength=10).tolist()}")


if __name__ == "__main__":
    main()
