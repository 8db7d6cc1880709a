"""README's adaptive-robustness table, generated from results/robustness/<dataset>-<model>.json.

Each cell: oblivious PGD → **worst case over the adaptive attacks** [95 % Wilson interval], and the
number of test images of that record (the tables are being re-run on 1,000 images; a cell says
which size it rests on). ``--write`` replaces the table between README's markers
``<!-- robustness-table -->`` and ``<!-- /robustness-table -->``; tests/test_readme.py checks it.

    .venv/bin/python tools/robustness_readme_table.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "convnet", "autoencoder", "resnet", "hrnn")
ROWS = (("mnist", "0.1", "MNIST ε = 0.1"), ("mnist", "0.2", "MNIST ε = 0.2"), ("mnist", "0.3", "MNIST ε = 0.3"),
        ("cifar10", "0.00784313725490196", "CIFAR-10 ε = 2/255"),
        ("cifar10", "0.01568627450980392", "CIFAR-10 ε = 4/255"),
        ("cifar10", "0.03137254901960784", "CIFAR-10 ε = 8/255"))


def cell(rec, eps) -> str:
    from ddl.experiments.robustness_report import accuracy_ci

    if rec is None or eps not in rec["worst_case"]:
        return "—"
    lo, hi = accuracy_ci(rec, "worst_case", eps)
    return (f"{100 * rec['attacks']['pgd:oblivious'][eps]:.1f} → **{100 * rec['worst_case'][eps]:.1f}** "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] n={rec['n_images']}")


def table(folder: Path = ROOT / "results" / "robustness") -> str:
    recs = {}
    for ds in ("mnist", "cifar10"):
        for m in MODELS:
            p = folder / f"{ds}-{m}.json"
            recs[ds, m] = json.loads(p.read_text()) if p.is_file() else None
    lines = ["| tuned defence | MLP | ConvNet | AutoEncoder | ResNet | HRNN |", "|---|---|---|---|---|---|"]
    for ds, eps, label in ROWS:
        if not any(r is not None and eps in r["worst_case"] for (d, _), r in recs.items() if d == ds):
            continue
        lines.append(f"| {label} | " + " | ".join(cell(recs[ds, m], eps) for m in MODELS) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    t = table()
    if not args.write:
        print(t)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    a, b = "<!-- robustness-table -->", "<!-- /robustness-table -->"
    i, j = text.index(a) + len(a), text.index(b)
    readme.write_text(text[:i] + "\n" + t + "\n" + text[j:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
