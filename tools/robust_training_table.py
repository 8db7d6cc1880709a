"""results/robust-training/: adversarial training with and without the dictionary (issue 21).

Reads the ``ddl robustness`` records of the arms on the same test images (each a
``robustness.json``), and writes ``results/robust-training/README.md`` (table with 95 % Wilson
intervals, paired McNemar tests of adversarial-ddl − adversarial and of the test-time-only arm,
training curves and seconds per epoch from zoo_logs/), ``summary.json`` and ``accuracy_vs_eps.png``
(worst-case accuracy vs ε with intervals, one line per arm: the standard and denoised zoo models
behind the defence are arms too, given their records on the same images). The numbers and the
tables are ddl's (:mod:`ddl.experiments.robust_training_report`); ``ddl report RUN
--robust-training results/robust-training`` embeds the same tables from the summaries.

    R=results/robust-training
    .venv/bin/python tools/robust_training_table.py --dataset mnist --model convnet \\
        --arm "adversarial=$R/mnist-convnet-adversarial.json+$R/mnist-convnet-adversarial-autoattack.json" \\
        --arm "adversarial + dictionary at test=$R/mnist-convnet-adversarial-tuned.json+$R/mnist-convnet-adversarial-tuned-default.json" \\
        --arm "adversarial-ddl=$R/mnist-convnet-adversarial-ddl.json+$R/mnist-convnet-adversarial-ddl-default.json" \\
        --arm "standard + dictionary=results/robustness/mnist-convnet.json+results/robustness-default/mnist-convnet.json" \\
        --arm "denoised + dictionary=results/denoised-training/robustness/mnist-convnet.json" \\
        --reading results/robust-training/reading.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ddl.experiments import robust_training_report as rtr  # noqa: E402
from ddl.experiments.report import to_markdown  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--arm", action="append", required=True, metavar="NAME=FILE[+FILE...]",
                   help="an arm's name and its robustness.json, or several joined by + (runs of the same arm on the same "
                        "images: the worst case over all of them); the first arm is the reference of the paired tests")
    p.add_argument("--out", default=str(REPO / "results" / "robust-training"))
    p.add_argument("--zoo-logs", default=str(REPO / "zoo_logs"))
    p.add_argument("--reading", default=None, help="a Markdown file appended as the README's reading of the table")
    args = p.parse_args(argv)

    arms = {}
    for spec in args.arm:
        name, _, path = spec.partition("=")
        paths = path.split("+")
        records = [json.loads(Path(q).read_text()) for q in paths]
        try:
            arms[name] = records[0] if len(records) == 1 else rtr.union(records, paths)
        except ValueError as exc:
            raise SystemExit(f"robust_training_table: {exc}") from None
    try:
        summary = rtr.summarise(arms, dataset=args.dataset, model=args.model, zoo_logs=args.zoo_logs)
    except ValueError as exc:
        raise SystemExit(f"robust_training_table: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    blocks = rtr.section_blocks(summary, heading="h1", title=f"{rtr.TITLE} ({args.dataset} {args.model})")
    text = to_markdown(blocks)
    if args.reading:
        text += "\n" + Path(args.reading).read_text().rstrip() + "\n"
    (out / "README.md").write_text(text)
    rtr.figure(summary, out / "accuracy_vs_eps.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
