"""Seconds per epoch of adversarial training through the dictionary defence: bpda vs soft.

Issue 21, item 1: the adversary inside ``fit(adversarial=...)`` attacks through ``transform`` with
a threat model of ``ddl.robustness``; this measures what each costs per epoch on a tiny case
(the MNIST ConvNet behind the zoo's tuned defence, ``--n`` training images, batch 32, PGD-AT with
``--steps`` steps at eps 0.3), beside PGD-AT without the defence and standard training behind it.
Each configuration is run ``--rounds`` times, alternating, one torch thread; one JSON line per
configuration (median seconds per epoch, and the load average when it ran).

    OMP_NUM_THREADS=1 .venv/bin/python bench/adversarial_training_cost.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="training images")
    p.add_argument("--steps", type=int, default=10, help="PGD-AT inner steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(1)

    from ddl import zoo
    from ddl.data import load_dataset
    from ddl.models import build_model
    from ddl.models.train import AdversarialTraining, fit

    x, y = load_dataset("mnist", "train", data_dir=args.data_dir)
    x, y = x[:args.n], y[:args.n]
    den = zoo.load_defence("mnist", "tuned", device=args.device)
    configs = {
        "standard, defence": dict(transform=den),
        "pgd, no defence": dict(adversarial=AdversarialTraining("pgd", 0.3, steps=args.steps)),
        "pgd, defence, bpda": dict(transform=den, adversarial=AdversarialTraining("pgd", 0.3, steps=args.steps)),
        "pgd, defence, soft": dict(transform=den, adversarial=AdversarialTraining("pgd", 0.3, steps=args.steps,
                                                                                  threat="soft")),
    }
    seconds: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for name, kw in configs.items():
            torch.manual_seed(0)
            model = build_model("convnet", (1, 28, 28))
            h = fit(model, x, y, epochs=1, batch_size=32, progress=False, device=args.device, **kw)
            seconds[name].append(h.seconds[0])
    for name, s in seconds.items():
        print(json.dumps({"config": name, "n_images": args.n, "steps": args.steps, "batch_size": 32,
                          "seconds_per_epoch_median": round(statistics.median(s), 3),
                          "seconds": [round(v, 3) for v in s], "threads": 1, "device": args.device,
                          "load_average": [round(v, 2) for v in os.getloadavg()],
                          "machine": platform.processor() or platform.machine(), "at": time.strftime("%F %T")}))


if __name__ == "__main__":
    main()
