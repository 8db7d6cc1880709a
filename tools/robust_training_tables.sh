#!/usr/bin/env bash
# Issue 21: results/robust-training/ (MNIST) and results/robust-training/cifar10/ from the committed
# records: README.md, summary.json and accuracy_vs_eps.png of each (tools/robust_training_table.py),
# then the reports that embed them (ddl report results/tuned ... --robust-training). Each arm joins
# its runs on the same images with + (the worst case over all of them); reads records only.
set -euo pipefail
cd "$(dirname "$0")/.."
R=results/robust-training
for ds in mnist cifar10; do
  if [ "$ds" = mnist ]; then out=$R; else out=$R/cifar10; fi
  .venv/bin/python tools/robust_training_table.py --dataset "$ds" --model convnet --out "$out" \
    --arm "adversarial=$R/$ds-convnet-adversarial.json+$R/$ds-convnet-adversarial-autoattack.json" \
    --arm "adversarial + dictionary at test=$R/$ds-convnet-adversarial-tuned.json+$R/$ds-convnet-adversarial-tuned-default.json" \
    --arm "adversarial-ddl=$R/$ds-convnet-adversarial-ddl.json+$R/$ds-convnet-adversarial-ddl-default.json" \
    --arm "standard + dictionary=results/robustness/$ds-convnet.json$([ "$ds" = mnist ] && echo "+results/robustness-default/mnist-convnet.json")" \
    --arm "denoised + dictionary=results/denoised-training/robustness/$ds-convnet.json" \
    --reading "$out/reading.md" > /dev/null
done
.venv/bin/ddl report results/tuned --robustness results/robustness --robust-training "$R"
