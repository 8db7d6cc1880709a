"""AutoAttack's attacks batched with per-image generators vs one image at a time, on a real case.

``ddl.robustness.autoattack`` used to call ``pyautoattack``'s ``perturb`` on one image at a time
(each with its own seed) so that an image's randomness did not depend on its batch mates; it now
runs APGD and Square batched, each image drawing from its own generator (module docstring of
``ddl.robustness.attacks``). This measures, on the first ``--n`` MNIST test images behind the
tuned defence (zoo ConvNet; APGD-CE through ``--threat``, Square), the seconds of both and how
many images get the same bits and the same outcome (on a real model the forward pass at another
batch size may round differently; the unit test shows bit identity where it does not).

    .venv/bin/python bench/autoattack_batching.py --data-dir ../shared/data --n 100 --eps 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--threat", default="soft", choices=["bpda", "exact", "soft"])
    p.add_argument("--apgd-iter", type=int, default=100)
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--attacks", nargs="+", default=["apgd-ce", "square"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from ddl import zoo
    from ddl.data import load_dataset
    from ddl.experiments.robustness_run import build_defence
    from ddl.robustness import autoattack, defended
    from ddl.robustness.attacks import _image_seed, _make_attack, project_linf

    model = zoo.load("convnet", "mnist")
    den, _ = build_defence("tuned", "mnist", data_dir=args.data_dir, progress=False)
    x, y = load_dataset("mnist", "test", data_dir=args.data_dir)
    x, y = x[:args.n], y[:args.n]
    for attack in args.attacks:
        target = defended(model, den, args.threat if attack != "square" else "bpda")
        t0 = time.perf_counter()
        alone = []
        with torch.random.fork_rng():
            for i in range(len(x)):
                atk = _make_attack(target, attack, args.eps, _image_seed(0, i), x.device, args.apgd_iter, 1,
                                   args.square_queries, 3)
                alone.append(project_linf(atk.perturb(x[i:i + 1], y[i:i + 1]), x[i:i + 1], args.eps))
        alone = torch.cat(alone)
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = autoattack(target, x, y, attack=attack, eps=args.eps, n_iter=args.apgd_iter,
                             n_queries=args.square_queries, n_target_classes=3)
        t_batched = time.perf_counter() - t0
        with torch.no_grad():
            ok_alone = target(alone).argmax(1) == y
            ok_batched = target(batched).argmax(1) == y
        print(json.dumps({
            "attack": attack if attack == "square" else f"{attack}:{args.threat}", "eps": args.eps, "n": len(x),
            "seconds_one_at_a_time": round(t_alone, 1), "seconds_batched": round(t_batched, 1),
            "speed_up": round(t_alone / t_batched, 2),
            "images_same_bits": int(sum(torch.equal(a, b) for a, b in zip(alone, batched))),
            "images_same_outcome": int((ok_alone == ok_batched).sum()),
            "robust_one_at_a_time": int(ok_alone.sum()), "robust_batched": int(ok_batched.sum()),
            "threads": args.threads, "load_1min": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
