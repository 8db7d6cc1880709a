#!/usr/bin/env bash
# The whole default adaptive suite of `ddl robustness` at its default budgets (PGD 50 steps, APGD-CE
# and APGD-T 100 iterations, 3 target classes, Square 1,000 queries, all seven attacks) on 1,000 test
# images, under --cascade, for the MNIST ConvNet and the CIFAR-10 ResNet behind the tuned defence
# (issue 19, item 6). One thread. Each eps is its own call, cheapest first (where the defence falls
# the cascade leaves little to attack), then one call over the three eps reads every unit from the
# cache and writes the record; results go to results/robustness-default/<dataset>-<model>.json.
# Resumable: every (attack, eps, 100-image chunk) is cached under runs/robustness-default/; re-run
# the same command after an interruption. Usage: tools/robustness_default_budgets.sh [N] [DATA_DIR];
# RUNS="mnist:convnet" one of them; WORKERS=2 the units on Ray workers.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DATA=${2:-../shared/data}
PAR=(--threads 1); [ -n "${WORKERS:-}" ] && PAR=(--workers "$WORKERS")
mkdir -p results/robustness-default
for run in ${RUNS:-mnist:convnet cifar10:resnet}; do
  ds=${run%%:*}; model=${run#*:}
  # EPS cheapest first; ALL (the record over the three, read from the cache) in increasing order,
  # which is what --eps takes
  if [ "$ds" = mnist ]; then EPS=(0.3 0.2 0.1); ALL=(0.1 0.2 0.3); else EPS=(8/255 4/255 2/255); ALL=(2/255 4/255 8/255); fi
  OUT=runs/robustness-default/$ds-$model
  for e in "${EPS[@]}" ALL; do
    if [ "$e" = ALL ]; then E=("${ALL[@]}"); else E=("$e"); fi
    .venv/bin/ddl robustness --dataset "$ds" --zoo "$model" --defence tuned --eps "${E[@]}" --n-images "$N" \
      --cascade --data-dir "$DATA" --out "$OUT" --quiet "${PAR[@]}"
  done
  cp "$OUT/robustness.json" "results/robustness-default/$ds-$model.json"
done
