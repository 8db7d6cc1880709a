"""ddl._parallel.Engine: serial and Ray give the same results and the same cache files; a killed
worker's unit is retried; a result computed twice is written once and must agree; an existing
cluster (a head node started by the test) is joined by address. Ray is an extra: CI installs it
(``pip install -e ".[test,ray]"``) to run these tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ddl._parallel import Engine, EngineError
from ddl.robustness import evaluate_robustness


def _offset_square(item: int, *, offset: int) -> int:
    return item * item + offset


def _slow_first_attempt(item: int, *, marker: str) -> int:
    """Item 0's first attempt writes its PID and hangs (the test kills that worker); every
    other attempt returns at once."""
    folder = Path(marker)
    if item == 0 and not (folder / "first").exists():
        (folder / "first").write_text(str(os.getpid()))
        time.sleep(120)
    if item == 0:
        (folder / "retried").write_text(str(os.getpid()))
    return item + 100


def _fails(item: int, *, kind: str) -> int:
    """Raises a user error (a DDLError, one line for the CLI) or a bug (a plain exception)."""
    if kind == "user":
        raise EngineError(f"unit {item}: a user error")
    raise ZeroDivisionError(f"unit {item}: a bug")


@pytest.fixture(scope="module")
def ray_engine():
    import ray.cloudpickle      # a CI requirement: no skip, a missing ray fails here

    # the test module is not importable by Ray's workers: ship its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with Engine(workers=2) as engine:
        yield engine


def test_serial_engine_maps_in_order_and_needs_no_ray():
    engine = Engine()
    assert not engine.parallel and engine.describe() == "serial"
    assert list(engine.map(_offset_square, [3, 1, 2], shared={"offset": 1})) == [(0, 10), (1, 2), (2, 5)]


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "Engine: workers must be an integer >= 1 or None; got 0."),
    ({"workers": True}, "Engine: workers must be an integer >= 1 or None; got True."),
    ({"workers": 2, "address": "auto"}, "Engine: give workers (a local Ray instance) or address (an existing "
                                        "cluster), not both; got workers=2, address='auto'."),
    ({"threads": 0}, "Engine: threads must be an integer >= 1; got 0."),
])
def test_engine_refuses_bad_arguments_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Engine(**kwargs)


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray -> ImportError
    with pytest.raises(EngineError, match=r'^--workers/--ray-address need Ray: pip install -e "\.\[ray\]"'):
        with Engine(workers=2):
            pass


def test_ray_engine_returns_every_result_by_index(ray_engine):
    got = dict(ray_engine.map(_offset_square, list(range(7)), shared={"offset": 5}))
    assert got == {i: i * i + 5 for i in range(7)}
    assert ray_engine.describe() == "ray, 2 local workers"


def test_a_user_error_in_a_ray_task_comes_back_as_itself_and_a_bug_with_its_traceback(ray_engine):
    with pytest.raises(EngineError) as user:
        list(ray_engine.map(_fails, [3], shared={"kind": "user"}))
    assert str(user.value) == "unit 3: a user error"          # the CLI prints it as one line
    with pytest.raises(ZeroDivisionError) as bug:
        list(ray_engine.map(_fails, [4], shared={"kind": "bug"}))
    assert "unit 4: a bug" in str(bug.value) and "in _fails" in str(bug.value)    # the worker's traceback


def test_a_killed_worker_loses_no_unit_and_the_map_completes(ray_engine, tmp_path):
    def kill_when_started():
        pid_file = tmp_path / "first"
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    got = dict(ray_engine.map(_slow_first_attempt, [0, 1, 2, 3], shared={"marker": str(tmp_path)}))
    killer.join()
    assert got == {0: 100, 1: 101, 2: 102, 3: 103}
    first, retried = (tmp_path / "first").read_text(), (tmp_path / "retried").read_text()
    assert first != retried                       # the unit ran again, in another worker process


# --------------------------------------------------------------------------- robustness on Ray
def _tanh_net() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3)).eval()


def _data(model, n=30):
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 3                     # a few clean mistakes: they count as broken
    return x, y


def _entries(folder: Path) -> dict[str, dict]:
    """Each cache entry's content (its record minus the seconds, which are times)."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        blob = json.loads(path.read_text())
        if path.name.endswith(".entry.json"):
            blob = {k: v for k, v in blob.items() if k not in ("seconds", "cpu_seconds", "created")}
        out[path.name] = blob
    return out


@pytest.mark.parametrize("cascade", [False, True])
def test_serial_and_ray_give_the_same_result_and_cache_files(ray_engine, tmp_path, cascade):
    model = _tanh_net()
    x, y = _data(model)
    kw = dict(eps=[0.05, 0.2], attacks=["pgd:exact", "apgd-ce:exact", "square"], pgd_steps=3, apgd_iter=3,
              square_queries=15, cascade=cascade, chunk_size=7, cache_key="k", unbounded=True)
    serial = evaluate_robustness(model, x, y, cache_dir=tmp_path / "serial", **kw).to_dict()
    parallel = evaluate_robustness(model, x, y, cache_dir=tmp_path / "ray", engine=ray_engine, **kw).to_dict()
    assert 0 < serial["worst_case"]["0.05"] < 1                      # images both survive and break
    for d in (serial, parallel):
        d.pop("seconds"), d.pop("cpu_seconds")
    assert parallel == serial
    assert _entries(tmp_path / "ray") == _entries(tmp_path / "serial")
    assert len(_entries(tmp_path / "serial")) > 2 * 5 * 2


def test_a_result_computed_twice_is_written_once_and_must_agree(tmp_path):
    from ddl.robustness import evaluate as ev

    driver = ev._Driver(10, 5, tmp_path, "k", {"cache_key": "k"}, progress=False, engine=None)
    done = {"name": "pgd:bpda", "eps": 0.1, "start": 0, "stop": 5, "attacked": [0, 1, 2, 3, 4],
            "survival": torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool), "seconds": 1.5, "cpu_seconds": 1.0}
    driver._save(done)
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    driver._save({**done, "seconds": 9.0})                           # same key, same survival
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == files  # the first write stays
    with pytest.raises(RuntimeError, match=r"^evaluate_robustness: two computations of pgd:bpda at eps 0\.1 "
                                           r"on images \[0, 5\) disagree"):
        driver._save({**done, "survival": torch.tensor([1, 1, 1, 1, 0], dtype=torch.bool)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DRIVER = """
import json, sys
from ddl._parallel import Engine
with Engine(address=sys.argv[1]) as engine:
    print(json.dumps({"describe": engine.describe(),
                      "results": sorted(engine.map(pow, [1, 2, 3], shared={"exp": 2}))}))
"""


def test_engine_joins_an_existing_cluster_by_address(tmp_path):
    """A head node started here stands in for a remote cluster (``--ray-address``), with token
    authentication on, as a cluster should run (the token is this test's own); the driver is a
    separate process, as on a real cluster (Ray reads its authentication settings at import)."""
    import secrets

    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and head.poll() is None:   # the head takes seconds to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        for attempt in range(30):
            driver = subprocess.run([sys.executable, "-c", _DRIVER, address], env=env, capture_output=True,
                                    text=True, timeout=180)
            if driver.returncode == 0 or head.poll() is not None:
                break
            time.sleep(2)
        assert driver.returncode == 0, driver.stderr[-2000:]
        out = json.loads(driver.stdout.strip().splitlines()[-1])
        assert out == {"describe": f"ray at {address}", "results": [[0, 1], [1, 4], [2, 9]]}
        assert head.poll() is None                 # the driver disconnected; the cluster runs on
    finally:
        os.killpg(head.pid, signal.SIGTERM)     # `ray stop` would stop every Ray of this user
        try:
            head.wait(5)
        except subprocess.TimeoutExpired:          # its clean shutdown takes ~30 s; nothing to keep
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def test_training_several_models_on_ray_workers_writes_the_checkpoints_of_separate_serial_runs(tmp_path,
                                                                                                 monkeypatch):
    """`ddl train --model mlp convnet --workers 2`: each model one Ray task; every checkpoint holds
    the weights that `ddl train --model X` alone gives (same seed, one thread), as does the serial
    run of both models in one process (the second model's initial weights do not depend on the
    first one's training: before the seed was set per model, the serial run's ConvNet differed)."""
    import gzip
    import struct

    import numpy as np

    from ddl.cli import main
    from ddl.data import load_sample
    from ddl.models.checkpoint import load_checkpoint

    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for split, prefix, n in (("train", "train", 96), ("test", "t10k", 32)):
        x, y = load_sample(split)
        for kind, a in (("images-idx3", (x[:n, 0] * 255).round().numpy()), ("labels-idx1", y[:n].numpy())):
            header = struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
            (data / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))
    common = ["train", "--dataset", "mnist", "--epochs", "1", "--batch-size", "16", "--threads", "1", "--quiet",
              "--data-dir", str(tmp_path / "data")]
    weights = {}
    for run, extra in (("alone-mlp", ["--model", "mlp"]), ("alone-convnet", ["--model", "convnet"]),
                       ("serial", ["--model", "mlp", "convnet"]), ("ray", ["--model", "mlp", "convnet", "--workers", "2"])):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        assert main(common + extra) == 0
        for model in ("mlp", "convnet"):
            path = Path("runs/train") / f"{model}-mnist.pt"
            if path.exists():
                net, meta = load_checkpoint(path)
                weights[run, model] = (net.state_dict(), meta["test_accuracy"])
    for model in ("mlp", "convnet"):
        ref, acc = weights[f"alone-{model}", model]
        for run in ("serial", "ray"):
            state, run_acc = weights[run, model]
            assert run_acc == acc and state.keys() == ref.keys(), (run, model)
            assert all(torch.equal(state[k], ref[k]) for k in ref), (run, model)
