#!/usr/bin/env bash
# Adaptive evaluation of the zoo classifiers behind the tuned defence: one `ddl robustness --zoo all`
# per data set (committed budgets, --cascade), then the records copied to
# results/robustness/<dataset>-<model>.json. Resumable: every (attack, eps, 100-image chunk) result
# is cached under runs/robustness/<dataset>-<model>/; re-run the same command after an interruption.
# Usage: tools/robustness_zoo.sh [N_IMAGES] [DATA_DIR]; WORKERS=2 runs the units on Ray workers;
# DATASETS="mnist" one data set; MODELS="convnet resnet" some models (default: all of the zoo);
# VARIANT=denoised the zoo's denoised variants (records to results/denoised-training/robustness/,
# caches under runs/robustness-denoised/).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DATA=${2:-../shared/data}
VARIANT=${VARIANT:-standard}
PAR=(--threads 1); [ -n "${WORKERS:-}" ] && PAR=(--workers "$WORKERS")
if [ "$VARIANT" = standard ]; then RUNS=runs/robustness; DEST=results/robustness
else RUNS=runs/robustness-$VARIANT; DEST=results/$VARIANT-training/robustness; fi
mkdir -p "$DEST"
for ds in ${DATASETS:-mnist cifar10}; do
  if [ "$ds" = mnist ]; then EPS=(0.1 0.2 0.3); else EPS=(2/255 4/255 8/255); fi
  read -r -a ZOO <<< "${MODELS:-all}"
  OUT=$RUNS; [ "${#ZOO[@]}" = 1 ] && [ "${ZOO[0]}" != all ] && OUT=$RUNS/$ds-${ZOO[0]}   # one model: no subfolder
  .venv/bin/ddl robustness --dataset "$ds" --zoo "${ZOO[@]}" --variant "$VARIANT" --defence tuned --eps "${EPS[@]}" \
    --n-images "$N" --cascade --attacks pgd:oblivious pgd:bpda pgd:soft apgd-ce:soft square --pgd-steps 20 \
    --apgd-iter 20 --square-queries 200 --data-dir "$DATA" --out "$OUT" --quiet "${PAR[@]}"
  for f in "$RUNS"/"$ds"-*/robustness.json; do cp "$f" "$DEST/$(basename "$(dirname "$f")").json"; done
done
