#!/usr/bin/env bash
# Baseline purifiers beside the tuned dictionary defence (issue 12, item 4): ddl robustness on the
# MNIST ConvNet and the CIFAR-10 ResNet of the zoo, the first 50 test images, oblivious PGD, BPDA
# PGD and Square, two eps per data set. Resumable (cached under runs/baselines/). Writes
# results/baselines/<dataset>-<model>-<defence>.json; tools/baselines_table.py writes the README.
# Usage: tools/baselines.sh [N_IMAGES] [DATA_DIR]; DATASETS="mnist" limits the data sets,
# DEFENCES="median:3 tuned" the defences, ATTACKS="pgd:oblivious pgd:bpda pgd:exact square" the
# attacks (cached per attack: adding one computes only that one). The committed median and
# Gaussian records add pgd:exact (both are differentiable in torch):
#   DATASETS=mnist DEFENCES="median:3 gauss:1.0" ATTACKS="pgd:oblivious pgd:bpda pgd:exact square" tools/baselines.sh
#   DATASETS=cifar10 DEFENCES="median:3 gauss:0.5" ATTACKS="pgd:oblivious pgd:bpda pgd:exact square" tools/baselines.sh
# Purifier parameters are the usual literature values, not tuned: bit depth 1 (MNIST) / 5
# (CIFAR-10) as Xu et al. 2018; median 3x3; Gaussian sigma 1 (MNIST) / 0.5 (CIFAR-10); JPEG 75;
# TV weight 0.1; wavelet sigma 0.05 (MNIST) / 0.03 (CIFAR-10).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
DATA=${2:-../shared/data}
read -r -a ATT <<< "${ATTACKS:-pgd:oblivious pgd:bpda square}"
BUDGET=(--attacks "${ATT[@]}" --pgd-steps 20 --square-queries 200 --threads 1)
mkdir -p results/baselines runs/baselines
for ds in ${DATASETS:-mnist cifar10}; do
  if [ "$ds" = mnist ]; then
    m=convnet; EPS=(0.1 0.3); DEF=(tuned bits:1 median:3 gauss:1.0 jpeg:75 tv:0.1 wavelet:0.05)
  else
    m=resnet; EPS=(0.00784313725490196 0.03137254901960784); DEF=(tuned bits:5 median:3 gauss:0.5 jpeg:75 tv:0.1 wavelet:0.03)
  fi
  [ -n "${DEFENCES:-}" ] && read -r -a DEF <<< "$DEFENCES"
  for d in "${DEF[@]}"; do
    tag=${d//:/-}
    out=runs/baselines/$ds-$m-$tag
    start=$(date +%s)
    .venv/bin/ddl robustness --dataset "$ds" --zoo "$m" --defence "$d" --eps "${EPS[@]}" \
      --n-images "$N" --data-dir "$DATA" --quiet "${BUDGET[@]}" --out "$out" \
      > "$out.log" 2>&1 || { echo "FAILED $ds $m $d"; cat "$out.log"; continue; }
    cp "$out/robustness.json" "results/baselines/$ds-$m-$tag.json"
    echo "$ds $m $d: $(( $(date +%s) - start )) s"
  done
done
