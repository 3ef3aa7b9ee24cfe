#!/usr/bin/env bash
# The worst-case attack matrix of docs/attacks.md: every method × SEEDS seeds of one deep
# experiment, each run attacked with the deep suite, then combined by `condimmune
# attack-matrix`. Runs that already have an attack_suite in metrics.json are skipped, so
# the script can be re-run after an interruption (the Optuna studies resume too).
# θ0 is the same for every method of a seed, so its searches live in OUT_DIR/theta0_studies.db
# and are made once per seed (attack.theta0_storage; a later --set overrides it).
#
# usage: benchmarks/attack_matrix.sh EXPERIMENT OUT_DIR [WORKERS] -- [--set attack.KEY=VALUE ...]
# e.g.   benchmarks/attack_matrix.sh mnist-cnn runs/matrix 2 -- --set attack.trials=20
# A failed run or attack makes the script fail before the matrix is written; run it again
# (finished runs are kept, a killed run resumes from its checkpoint).
# Each worker runs one thread (OMP_NUM_THREADS=1): on a busy CPU, torch's thread pool
# otherwise spends most of its time waiting.
# KEEP=DIR copies each attacked run's metrics.json (all `condimmune attack-matrix` reads, a
# few hundred kB) to DIR/<run>/metrics.json, so that a matrix too long for one session can be
# committed piece by piece and combined later: `condimmune attack-matrix DIR --out REPORT`.
# A (method, seed) whose attacked metrics.json is already in KEEP is skipped, so the same
# command picks up where an earlier session stopped.
# RUN_ARGS="--set KEY=VALUE ..." goes to every `condimmune run` (the run's data or training
# settings, e.g. the whole-network defence's matrix of docs/attacks.md).
set -euo pipefail
experiment=$1
out=$2
workers=${3:-1}
shift 3 || shift $#
[[ ${1:-} == "--" ]] && shift
# θ0's searches are shared by every method's run of a seed: each is made once
attack_args=(--set "attack.theta0_storage=sqlite:///$(realpath -m "$out")/theta0_studies.db" "$@")
methods=${METHODS:-"condnum none r-ill-only opt-kappa imma closed-form leace condnum-leace"}
seeds=${SEEDS:-"0 1 2"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$out"

one() {  # one (method, seed): run if missing, attack if not attacked yet; 1 on failure
  local method=$1 seed=$2 dir="$out/$experiment-$1-s$2"
  local kept=${KEEP:+$KEEP/${dir##*/}/metrics.json}
  if [[ -n $kept && -f $kept ]] && grep -q '"attack_suite"' "$kept"; then
    echo "kept $method seed $seed"  # attacked in an earlier session: nothing to do
    return 0
  fi
  if [[ ! -f $dir/metrics.json ]]; then
    # shellcheck disable=SC2086  # RUN_ARGS is a list of words
    condimmune run "$experiment" --seed "$seed" --set train.method="$method" ${RUN_ARGS:-} \
      --out "$dir" --no-progress > "$dir.run.log" 2>&1 || { echo "run failed: $dir"; return 1; }
  fi
  if ! grep -q '"attack_suite"' "$dir/metrics.json"; then
    condimmune attack "$dir" --no-progress "${attack_args[@]}" > "$dir.attack.log" 2>&1 ||
      { echo "attack failed: $dir"; return 1; }
  fi
  if [[ -n ${KEEP:-} ]]; then
    mkdir -p "$KEEP/${dir##*/}" && cp "$dir/metrics.json" "$KEEP/${dir##*/}/metrics.json"
  fi
  echo "done $method seed $seed"
}
export -f one
export experiment out KEEP RUN_ARGS
export attack_args_text="${attack_args[*]}"

start=$(date +%s)
# method-major: workers running at once attack different seeds' θ0 (made once, then read)
for method in $methods; do for seed in $seeds; do echo "$method $seed"; done; done |
  xargs -P "$workers" -L 1 bash -c 'attack_args=($attack_args_text); one "$0" "$1"'
condimmune attack-matrix "${KEEP:-$out}" --out "$out-report"  # KEEP holds every session's runs
echo "wall seconds: $(( $(date +%s) - start ))"
