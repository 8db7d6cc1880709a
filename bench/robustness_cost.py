"""Cost of the adaptive evaluation (issue "Honest robustness"), by hand, 1 thread by default.

1. Forward+backward time of each threat model through the tuned MNIST defence, relative to the
   bare zoo ConvNet, on ``--n-grad`` test images (median of ``--repeat`` runs).
2. Seconds per attack of ``ddl.robustness.evaluate_robustness`` on the first ``--n`` MNIST test
   images (ConvNet, tuned defence, ε = 0.3), with the budgets given, and which attack dominates.

    .venv/bin/python bench/robustness_cost.py --data-dir ../shared/data --n 1000        # the issue's setting
    .venv/bin/python bench/robustness_cost.py --data-dir ../shared/data --n 100 --skip-attacks
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-grad", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pgd-steps", type=int, default=50)
    p.add_argument("--apgd-iter", type=int, default=100)
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--skip-attacks", action="store_true")
    p.add_argument("--cascade", action="store_true",
                   help="each attack only on the survivors of the earlier ones (AutoAttack's scheme)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from ddl import zoo
    from ddl.data import load_dataset
    from ddl.robustness import DEFAULT_ATTACKS, defended, evaluate_robustness
    from ddl.experiments.robustness_run import build_defence

    model = zoo.load("convnet", "mnist")
    den, desc = build_defence("tuned", "mnist", data_dir=args.data_dir, progress=False)
    x, y = load_dataset("mnist", "test", data_dir=args.data_dir)

    xs, ys = x[:args.n_grad], y[:args.n_grad]

    def fwd_bwd(m):
        xr = xs.clone().requires_grad_(True)
        t0 = time.perf_counter()
        torch.autograd.grad(F.cross_entropy(m(xr), ys, reduction="sum"), xr)
        return time.perf_counter() - t0

    def fwd(m):
        t0 = time.perf_counter()
        with torch.no_grad():
            m(xs)
        return time.perf_counter() - t0

    rows = {}
    for name, m in [("bare", model)] + [(t, defended(model, den, t)) for t in ("bpda", "exact", "soft")]:
        fwd_bwd(m)                                                   # warm-up
        rows[name] = (statistics.median(fwd(m) for _ in range(args.repeat)),
                      statistics.median(fwd_bwd(m) for _ in range(args.repeat)))
    print(f"forward / forward+backward on {args.n_grad} MNIST images, {args.threads} thread(s), "
          f"median of {args.repeat}:")
    base = rows["bare"][1]
    for name, (f, fb) in rows.items():
        print(f"  {name:6s} fwd {1e3 * f:7.1f} ms   fwd+bwd {1e3 * fb:7.1f} ms   {fb / base:5.1f}x bare")
    if args.skip_attacks:
        return
    t0 = time.perf_counter()
    res = evaluate_robustness(model, x[:args.n], y[:args.n], defence=den, eps=[0.3],
                              attacks=DEFAULT_ATTACKS, pgd_steps=args.pgd_steps,
                              apgd_iter=args.apgd_iter, square_queries=args.square_queries,
                              unbounded=False, cascade=args.cascade, progress=True)
    total = time.perf_counter() - t0
    what = "cumulative robust accuracy" if args.cascade else "accuracy"
    print(f"\nseconds per attack, {args.n} images, eps = 0.3 ({what}):")
    for a, s in sorted(res.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {a:14s} {s:8.1f} s   {100 * res.attacks[a][repr(0.3)]:5.1f} %")
    print(f"  worst case {100 * res.worst_case[repr(0.3)]:.1f} %; whole evaluation {total:.0f} s "
          f"(target: <= 1800 s for 1,000 images)")
    print(json.dumps({"seconds": res.seconds, "total": total}))


if __name__ == "__main__":
    main()
