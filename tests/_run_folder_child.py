"""A `ddl reproduce` run of the TINY preset in its own process, killed with SIGKILL on request.

    python tests/_run_folder_child.py RUN_DIR [KILL]

KILL is ``EVENT:PATTERN:N``: send SIGKILL to this process at the N-th write whose destination
file name matches the glob PATTERN, at EVENT: ``mid_write`` (half of the bytes are in the
temporary file), ``before_replace`` (the temporary file is complete, not yet renamed) or
``after_replace`` (the file is in place, nothing after it has run); or, with EVENT ``hold``,
print ``holding`` there and wait (holding the run folder) until ``RUN_DIR.release`` exists. The hooks wrap ``ddl._io``'s
write and ``os.replace``; nothing else is changed. Prints ``started`` once the run begins.

Not collected by pytest (no ``test_`` prefix); ``test_run_folder.py`` imports TINY from here.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import time

import torch

from ddl.experiments.config import DefenceConfig
from ddl.experiments.reproduce import ReproduceConfig

#: The smallest reproduction that still has every stage: synthetic 28x28 images, an MLP trained
#: for 2 epochs (so a run can be killed between epochs), FGSM on 40 images, JSMA on 4, a 16-atom
#: dictionary, and a one-ε sweep.
TINY = ReproduceConfig(
    name="tiny", datasets=("mnist",), models=("mlp",), source="synthetic", n_train=200, n_test=40,
    fgsm_eps={"mnist": 0.1}, jsma_n_images={"mnist": 4}, sweep_n_images=20, eps_sweep={"mnist": (0.2,)},
    train_epochs=2,
    defence={"mnist": DefenceConfig(patch_size=5, n_components=16, n_nonzero_coefs=2, max_patches=2000)})
THREADS = 1  # the same in every process: float sums may depend on the thread count


def _install_kill(spec: str) -> None:
    import ddl._io as io

    event, pattern, n = spec.split(":")
    seen = {"n": 0}

    def hit(name: str) -> bool:
        if fnmatch.fnmatch(os.path.basename(name), pattern):
            seen["n"] += 1
            return seen["n"] == int(n)
        return False

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if event == "mid_write":
        real_write = io._write_all

        def write_all(f, data, path):
            if hit(str(path)):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()
            real_write(f, data, path)

        io._write_all = write_all
    elif event == "hold":  # stop before the rename until RUN_DIR.release exists
        real_replace = os.replace

        def replace(src, dst, **kw):
            if hit(str(dst)):
                print("holding", flush=True)
                release = f"{sys.argv[1].rstrip(os.sep)}.release"
                while not os.path.exists(release):
                    time.sleep(0.05)
            real_replace(src, dst, **kw)

        os.replace = replace
    elif event in ("before_replace", "after_replace"):
        real_replace = os.replace

        def replace(src, dst, **kw):
            if event == "before_replace" and hit(str(dst)):
                die()
            real_replace(src, dst, **kw)
            if event == "after_replace" and hit(str(dst)):
                die()

        os.replace = replace
    else:
        raise SystemExit(f"unknown kill event {event!r}")


def main(argv: list[str]) -> int:
    from ddl.experiments.reproduce import reproduce

    torch.set_num_threads(THREADS)
    run_dir = argv[0]
    if len(argv) > 1 and argv[1]:
        _install_kill(argv[1])
    print("started", flush=True)
    reproduce(TINY, run_dir, figures=False, progress=True)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
