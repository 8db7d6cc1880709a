#!/usr/bin/env bash
# Issue 21: the three arms of results/robust-training/ on the first N test images of DATASET
# (mnist, the default, or cifar10), the zoo's ConvNet pair, one `ddl robustness` per arm (resumable:
# every (attack, eps, 100-image chunk) is a cached unit under runs/robust-training/<dataset>-convnet-<arm>/),
# then the records copied to results/robust-training/.
#   tools/robust_training_eval.sh [ARM ...]        ARM: adversarial | adversarial-tuned | adversarial-ddl
# DATASET (mnist), EPS (default "0.1 0.2 0.3" for MNIST, "2/255 4/255 8/255" for CIFAR-10), N (1000),
# WORKERS (Ray workers; default: one thread, serial). SUITE=autoattack runs AutoAttack's standard
# suite instead (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, 100 iterations each, Square
# with 5,000 queries; cascade), for the numbers that sit beside published ones; records
# <dataset>-convnet-<arm>-autoattack.json. The gradient attacks go through the defence with
# BPDA, or THREAT (e.g. soft). SUITE=default runs ddl's whole default suite at its default budgets
# (seven attacks, PGD 50 steps, APGD 100 iterations, Square 1,000 queries; cascade); records
# <dataset>-convnet-<arm>-default.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ARMS=${*:-adversarial adversarial-tuned adversarial-ddl}
DS=${DATASET:-mnist}
if [ "$DS" = mnist ]; then DEFAULT_EPS="0.1 0.2 0.3"; else DEFAULT_EPS="2/255 4/255 8/255"; fi
read -r -a EPSV <<< "${EPS:-$DEFAULT_EPS}"
PAR=(--threads 1); [ -n "${WORKERS:-}" ] && PAR=(--workers "$WORKERS")
for arm in $ARMS; do
  case $arm in
    adversarial) v=adversarial; d=none;;
    adversarial-tuned) v=adversarial; d=tuned;;
    adversarial-ddl) v=adversarial-ddl; d=tuned;;
    *) echo "tools/robust_training_eval.sh: unknown arm '$arm' (adversarial, adversarial-tuned, adversarial-ddl)" >&2; exit 2;;
  esac
  if [ "${SUITE:-ddl}" = autoattack ]; then
    t=${THREAT:-bpda}; name=$DS-convnet-$arm-autoattack
    SUITE_ARGS=(--attacks "apgd-ce:$t" "apgd-t:$t" "fab-t:$t" square --apgd-iter 100 --n-target-classes 9
                --square-queries 5000)
  elif [ "${SUITE:-ddl}" = default ]; then
    name=$DS-convnet-$arm-default; SUITE_ARGS=()
  else
    name=$DS-convnet-$arm
    SUITE_ARGS=(--attacks pgd:oblivious pgd:bpda pgd:soft apgd-ce:soft square --pgd-steps 20 --apgd-iter 20
                --square-queries 200)
  fi
  .venv/bin/ddl robustness --dataset "$DS" --zoo convnet --variant "$v" --defence "$d" --eps "${EPSV[@]}" \
    --n-images "${N:-1000}" --cascade "${SUITE_ARGS[@]}" --data-dir ../shared/data --quiet "${PAR[@]}" \
    --out "runs/robust-training/$name"
  cp "runs/robust-training/$name/robustness.json" "results/robust-training/$name.json"
done
