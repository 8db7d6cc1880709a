#!/usr/bin/env bash
# Adaptive evaluation of the ten zoo classifiers behind the tuned defence (issue "Honest
# robustness"). Resumable: every (attack, eps) result is cached under runs/robustness/; re-run
# the same command after an interruption. Writes results/robustness/<dataset>-<model>.json.
# Usage: tools/robustness_zoo.sh [N_IMAGES] [DATA_DIR]   (1 thread; budgets below)
# ATTACKS="..." overrides the attack list (default: ddl robustness's default suite);
# DATASETS="mnist" limits the data sets, MODELS="convnet resnet" the models (in that order);
# CASCADE=0 runs every attack on every image (default: --cascade, the same worst case per image);
# RESULTS=results/robustness-full writes elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
DATA=${2:-../shared/data}
BUDGET=(--pgd-steps 20 --pgd-restarts 1 --apgd-iter 20 --square-queries 200)
if [ -n "${ATTACKS:-}" ]; then read -r -a A <<< "$ATTACKS"; BUDGET+=(--attacks "${A[@]}"); fi
if [ "${CASCADE:-1}" != 0 ]; then BUDGET+=(--cascade); fi
RESULTS=${RESULTS:-results/robustness}
RUNS=runs/$(basename "$RESULTS")
mkdir -p "$RESULTS" "$RUNS"
for ds in ${DATASETS:-mnist cifar10}; do
  if [ "$ds" = mnist ]; then EPS=(0.1 0.2 0.3); else EPS=(0.00784313725490196 0.01568627450980392 0.03137254901960784); fi
  for m in ${MODELS:-convnet mlp autoencoder resnet hrnn}; do
    out=$RUNS/$ds-$m
    .venv/bin/ddl robustness --dataset "$ds" --zoo "$m" --defence tuned --eps "${EPS[@]}" \
      --n-images "$N" --data-dir "$DATA" --threads 1 --quiet "${BUDGET[@]}" --out "$out" \
      > "$out.log" 2>&1 || { mkdir -p "$(dirname "$out")"; echo "FAILED $ds $m"; cat "$out.log"; continue; }
    cp "$out/robustness.json" "$RESULTS/$ds-$m.json"
    tail -n 20 "$out.log"
  done
done
