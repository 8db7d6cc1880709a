#!/usr/bin/env bash
# Baseline purifiers beside the tuned dictionary defence (issue 12, item 4): one `ddl robustness`
# per data set with every defence (MNIST ConvNet, CIFAR-10 ResNet of the zoo), oblivious PGD, BPDA
# PGD and Square, two eps per data set. Resumable (cached under runs/baselines/<dataset>-<model>-<defence>/).
# Copies the records to results/baselines/; tools/baselines_table.py writes the README table.
# Usage: tools/baselines.sh [N_IMAGES] [DATA_DIR]; WORKERS=2 runs the units on Ray workers;
# DATASETS="mnist" (or "cifar10") runs one data set; under --cascade (default; CASCADE=0 turns it
# off) each attack runs on the images the attacks before it left correct, so the attack columns
# are cumulative ("robust so far") and the last is the worst case.
# Purifier parameters are the usual literature values, not tuned: bit depth 1 (MNIST) / 5
# (CIFAR-10) as Xu et al. 2018; median 3x3; Gaussian sigma 1 (MNIST) / 0.5 (CIFAR-10); JPEG 75;
# TV weight 0.1; wavelet sigma 0.05 (MNIST) / 0.03 (CIFAR-10). The committed median and Gaussian
# records add pgd:exact (both are differentiable in torch): ATTACKS="pgd:oblivious pgd:bpda pgd:exact square".
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DATA=${2:-../shared/data}
read -r -a ATT <<< "${ATTACKS:-pgd:oblivious pgd:bpda square}"
PAR=(--threads 1); [ -n "${WORKERS:-}" ] && PAR=(--workers "$WORKERS")
[ "${CASCADE:-1}" = 1 ] && PAR+=(--cascade)
DATASETS=${DATASETS:-mnist cifar10}
mkdir -p results/baselines
[[ " $DATASETS " == *" mnist "* ]] && .venv/bin/ddl robustness --dataset mnist --zoo convnet --defence tuned bits:1 median:3 gauss:1.0 jpeg:75 tv:0.1 \
  wavelet:0.05 --eps 0.1 0.3 --n-images "$N" --attacks "${ATT[@]}" --pgd-steps 20 --square-queries 200 \
  --data-dir "$DATA" --out runs/baselines --quiet "${PAR[@]}"
[[ " $DATASETS " == *" cifar10 "* ]] && .venv/bin/ddl robustness --dataset cifar10 --zoo resnet --defence tuned bits:5 median:3 gauss:0.5 jpeg:75 tv:0.1 \
  wavelet:0.03 --eps 2/255 8/255 --n-images "$N" --attacks "${ATT[@]}" --pgd-steps 20 --square-queries 200 \
  --data-dir "$DATA" --out runs/baselines --quiet "${PAR[@]}"
for f in runs/baselines/*/robustness.json; do cp "$f" "results/baselines/$(basename "$(dirname "$f")").json"; done
