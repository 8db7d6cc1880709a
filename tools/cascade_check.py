"""Cascade and full run give the same worst case per image (issue 19, item 5).

Runs ``ddl robustness`` twice on the same images, model, defence, ε, attacks and budgets, with and
without ``--cascade``, and compares the per-image worst-case survival in the two
``robustness.json``: identical on every image is the claim (each image's randomness depends only
on (seed, image), not on which other images an attack runs on). Writes a small JSON summary.

    .venv/bin/python tools/cascade_check.py --n-images 200 --eps 0.2 --out results/robustness/cascade_check.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--model", default="convnet")
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--eps", default="0.2")
    ap.add_argument("--budgets", nargs="*", default=["--pgd-steps", "20", "--apgd-iter", "20",
                                                     "--square-queries", "200"])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--runs", default="runs/cascade-check")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ddl = str(Path(sys.executable).with_name("ddl"))
    records, seconds = {}, {}
    for mode in ("full", "cascade"):
        out = Path(args.runs) / mode
        cmd = [ddl, "robustness", "--dataset", args.dataset, "--zoo", args.model, "--defence", "tuned",
               "--eps", args.eps, "--n-images", str(args.n_images), "--data-dir", args.data_dir,
               "--threads", "1", "--quiet", "--out", str(out), *args.budgets]
        if mode == "cascade":
            cmd.append("--cascade")
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds[mode] = round(time.perf_counter() - t, 1)
        records[mode] = json.loads((out / "robustness.json").read_text())
    full, casc = records["full"], records["cascade"]
    summary = {"dataset": args.dataset, "model": args.model, "n_images": args.n_images,
               "attacks": full["params"]["attacks"], "budgets": args.budgets, "seconds": seconds,
               "per_eps": {}}
    for key, bits in full["worst_survival"].items():
        other = casc["worst_survival"][key]
        differ = [i for i, (a, b) in enumerate(zip(bits, other)) if a != b]
        summary["per_eps"][key] = {"worst_case_full": full["worst_case"][key],
                                   "worst_case_cascade": casc["worst_case"][key],
                                   "images_differing": len(differ), "which": differ[:20]}
    summary["machine"] = casc.get("machine")
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=1))
    return 0 if all(v["images_differing"] == 0 for v in summary["per_eps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
