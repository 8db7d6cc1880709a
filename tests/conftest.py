"""Shared fixtures: tiny, synthetic, made in the test (STYLE.md §3.9). No downloads, no ../shared."""

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _omp_kernel_per_test():
    """No test leaks an OMP kernel choice (set_omp_kernel, a CLI --omp-kernel) into the next."""
    from ddl.sparse import kernel

    saved = dict(kernel._state)
    yield
    kernel._state.update(saved)


@pytest.fixture
def rng():
    """A seeded NumPy generator; torch is seeded too so tests never depend on global state."""
    torch.manual_seed(0)
    return np.random.default_rng(0)


@pytest.fixture
def sparse_signal(rng):
    """Known unit-norm dictionary (24 atoms x 16 features), 3-sparse codes, X = codes @ dictionary.

    Returns (X, dictionary, codes) as float64 numpy arrays: X (40, 16), dictionary (24, 16),
    codes (40, 24). Atoms are rows (scikit-learn's orientation).
    """
    n_samples, n_features, n_components, k = 40, 16, 24, 3
    dictionary = rng.standard_normal((n_components, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_components))
    for i in range(n_samples):
        support = rng.choice(n_components, size=k, replace=False)
        codes[i, support] = rng.uniform(1.0, 2.0, size=k) * rng.choice([-1.0, 1.0], size=k)
    return codes @ dictionary, dictionary, codes


@pytest.fixture(params=[1, 3], ids=["grey", "colour"])
def tiny_images(request, rng):
    """6 images of 8x8 with 1 or 3 channels, float32 in [0, 1], shape (6, C, 8, 8)."""
    c = request.param
    return torch.from_numpy(rng.uniform(0.0, 1.0, size=(6, c, 8, 8)).astype(np.float32))


@pytest.fixture
def linear_model():
    """nn.Linear(2, 2) with hand-set weights, in eval mode, so gradients can be worked out by hand.

    logits = W x + b with W = [[1, -2], [3, 0.5]], b = [0.1, -0.2].
    """
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        model.bias.copy_(torch.tensor([0.1, -0.2]))
    return model.eval()


@pytest.fixture
def shared_data_dir():
    """The real data sets in ../shared/data, for `slow` tests; skips with a reason when absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (needed by slow tests only)")
    return SHARED_DATA


@pytest.fixture
def forbid_recompute(monkeypatch):
    """Make training, dictionary fitting and attacks raise: a run that must come from the cache."""
    import ddl.models.train as train
    from ddl.experiments import pipeline
    from ddl.defence import DictionaryDenoiser

    def boom(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    monkeypatch.setattr(train, "fit", boom)
    monkeypatch.setattr(DictionaryDenoiser, "fit", boom)
    monkeypatch.setattr(pipeline, "run_attack", boom)


@pytest.fixture
def sample_data_dir(tmp_path):
    """A data folder holding the bundled MNIST sample as the standard IDX ``.gz`` files (for the
    commands that take ``--data-dir``); returns the folder."""
    import gzip
    import struct

    from ddl.data import load_sample

    def write_idx(path: Path, array: np.ndarray) -> None:
        header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_sample(split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (x[:, 0] * 255).round().numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y.numpy())
    return tmp_path / "data"


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is faster than two on a shared 2-core machine (no OpenMP
    waiting). Test modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: from then on, refuse every file opened for writing under ``folder``
    as a read-only file system does (``EROFS``); ``chmod`` would not stop root."""
    import errno
    import os

    real_open = os.open

    def make(folder):
        root = str(Path(folder).resolve())

        def ro_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(Path(path).resolve()).startswith(root):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", ro_open)

    return make
