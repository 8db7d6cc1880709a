#!/usr/bin/env bash
# Fine-tune the five zoo models of a data set on reconstructions by the zoo's tuned defence: one
# call of tools/train_zoo.py (several --model; WORKERS=N runs them as Ray tasks of one thread),
# resumable: a model already in the zoo as a denoised variant is skipped, a killed fine-tune resumes
# from its last epoch (runs/zoo_work/*_denoised_zoo.resume.pt).
#
#   tools/train_denoised_zoo.sh mnist [MODEL ...] > runs/denoised_mnist.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:?usage: tools/train_denoised_zoo.sh mnist|cifar10 [MODEL ...]}
shift
PAR=(); [ -n "${WORKERS:-}" ] && PAR=(--workers "$WORKERS")
${PY:-.venv/bin/python} tools/train_zoo.py --dataset "$DATASET" --model ${*:-mlp autoencoder hrnn resnet convnet} \
  --variant denoised --skip-existing --threads 1 --no-progress "${PAR[@]}"
