#!/usr/bin/env bash
# Fine-tune the five zoo models of each data set on reconstructions by the zoo's tuned defence
# (tools/train_zoo.py --variant denoised), one data set per process, one thread each, resumable:
# a model already in the zoo as a denoised variant is skipped, a killed fine-tune resumes from
# its last epoch (runs/zoo_work/*_denoised_zoo.resume.pt).
#
#   tools/train_denoised_zoo.sh mnist   > runs/denoised_mnist.log 2>&1 &
#   tools/train_denoised_zoo.sh cifar10 > runs/denoised_cifar10.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:?usage: tools/train_denoised_zoo.sh mnist|cifar10 [MODEL ...]}
shift
MODELS=${*:-mlp autoencoder hrnn resnet convnet}
PY=${PY:-.venv/bin/python}
for model in $MODELS; do
  if $PY -c "import sys, ddl.zoo; sys.exit(0 if ddl.zoo.find('$model', '$DATASET', 'denoised') else 1)"; then
    echo "[$(date +%T)] $model/$DATASET: denoised variant already in the zoo, skipped"
    continue
  fi
  $PY tools/train_zoo.py --model "$model" --dataset "$DATASET" --variant denoised --threads 1 --no-progress
done
