"""ddl commands on a shared machine: default threads vs ``--threads 1``, beside a busy process.

Issue 22, item 0: torch's intra-op threads spin against each other when a core is taken, so a
2-thread run beside one busy process can be many times slower than a 1-thread run. This starts
one busy process (a pure-Python spin loop, one core), then runs each command with its default
threads and with ``--threads 1``, alternating, ``--rounds`` times, and prints one JSON line per
command: wall seconds per round, the ratio default / one thread, and the load average.

    .venv/bin/python bench/cli_threads.py --rounds 2 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def commands(data_dir: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "robustness": ["robustness", "--dataset", "mnist", "--zoo", "convnet", "--defence", "tuned",
                       "--eps", "0.1", "--n-images", "10", "--attacks", "pgd:bpda", "apgd-ce:soft",
                       "--pgd-steps", "10", "--apgd-iter", "10", "--data-dir", data_dir, "--quiet",
                       "--out", str(tmp / "rob-{run}")],
        "attack": ["attack", "--zoo", "convnet", "--dataset", "mnist", "--data-dir", data_dir,
                   "--attack", "pgd", "--eps", "0.1", "--n-images", "200", "--out", str(tmp / "adv-{run}.pt")],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--no-busy", action="store_true", help="no competing process (idle baseline)")
    args = ap.parse_args()
    ddl = str(Path(sys.executable).with_name("ddl"))
    busy = None if args.no_busy else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2)
        with tempfile.TemporaryDirectory() as tmp:
            for name, argv in commands(args.data_dir, Path(tmp)).items():
                times = {"default": [], "threads1": []}
                for r in range(args.rounds):
                    for mode in times:
                        run = f"{mode}{r}"
                        cmd = [ddl, *[a.replace("{run}", run) for a in argv]]
                        if mode == "threads1":
                            cmd += ["--threads", "1"]
                        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
                        t = time.perf_counter()
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                        times[mode].append(round(time.perf_counter() - t, 1))
                        if proc.returncode != 0:
                            print(proc.stderr, file=sys.stderr)
                            return 1
                print(json.dumps({"command": name, "busy_process": busy is not None, "wall_s": times,
                                  "default_over_one_thread": round(statistics.median(times["default"]) /
                                                                   statistics.median(times["threads1"]), 2),
                                  "loadavg": os.getloadavg()[0], "cores": os.cpu_count()}), flush=True)
    finally:
        if busy is not None:
            busy.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
