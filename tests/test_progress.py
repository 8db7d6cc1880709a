"""Progress bars of the long loops (issue 10, item 9): dictionary fitting, OMP over a data set,
PGD and JSMA show a tqdm bar when asked (on a terminal), and the bar changes no number."""

import pytest
import torch

from ddl.attacks import jsma, pgd
from ddl.data import make_blobs_images
from ddl.defence import DictionaryDenoiser
from ddl.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data():
    x, y = make_blobs_images(12, (1, 28, 28), n_classes=10, seed=0, noise=0.2)
    torch.manual_seed(0)
    return build_model("mlp", (1, 28, 28)).eval(), x, y


class _Recorder:
    """Stands in for tqdm: records each bar's description, total and the sum of its updates."""

    bars: list = []

    def __init__(self, total, desc, unit, leave, dynamic_ncols):
        self.record = {"desc": desc, "total": total, "done": 0}
        _Recorder.bars.append(self.record)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.record["done"] += n


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    _Recorder.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    return _Recorder.bars


def test_bars_count_the_work_and_change_no_number(data, bars):
    model, x, y = data
    den = DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=1, max_patches=1000)
    den.fit(x)
    plain = den.transform(x)
    a = pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, batch_size=5)
    j = jsma(model, x[:4], y[:4], gamma=0.02, batch_size=3)
    assert bars == []  # nothing without progress=True

    assert torch.equal(den.transform(x, progress=True), plain)
    assert torch.equal(pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, batch_size=5, progress=True), a)
    assert torch.equal(jsma(model, x[:4], y[:4], gamma=0.02, batch_size=3, progress=True), j)
    assert bars == [{"desc": "denoise", "total": 12, "done": 12},
                    {"desc": "pgd", "total": 36, "done": 36},  # 12 images x 3 steps
                    {"desc": "jsma", "total": 4, "done": 4}]


def test_dictionary_fitting_bar(data, capsys):
    _, x, _ = data
    den = DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=1, max_patches=1000)
    quiet = den.fit(x).dictionary_.clone()
    assert capsys.readouterr().err == ""
    assert torch.equal(den.fit(x, progress=True).dictionary_, quiet)
    assert "online dictionary" in capsys.readouterr().err


def test_pipeline_draws_bars_only_on_a_terminal(monkeypatch):
    import sys

    from ddl.experiments import pipeline

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert pipeline._bars(True) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert pipeline._bars(True) is True and pipeline._bars(False) is False
