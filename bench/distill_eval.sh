#!/usr/bin/env bash
# One measured distillation on a Fashion-MNIST cohort, scored by the independent PyTorch evaluator.
#
#   bench/distill_eval.sh OUT_PREFIX        # writes OUT_PREFIX.parquet and OUT_PREFIX.log
#
# The distillation is `tests/it/distill.rs::measure_dm_fashion` (release build, `measure`
# feature), configured by its environment: PER_CLASS (default 500), EPS (1), DM='{json}' (dm
# parameters patched into the plan, which is recalibrated), TEACHER=off|'{json}', RARE=c:m (class
# c gets only m training images), SAVE_REAL_PQ=path (ten random real images per class of the same
# cohort, for the random-real reference). The set is then scored by bench/eval_torch.py (ConvNet
# w128, EPOCHS epochs (300), SEEDS seeds (3)) with each of LABELS ("hard"; "hard soft" for a run
# with a teacher). PYTHON (default python3) must have torch, pyarrow and numpy.
# FASHION (default ../shared/data/fashion-mnist) holds the official test files.
set -euo pipefail
out=${1:?usage: bench/distill_eval.sh OUT_PREFIX}
root=$(cd "$(dirname "$0")/.." && pwd)
fashion=${FASHION:-$root/../shared/data/fashion-mnist}
python=${PYTHON:-python3}
bin=$(cd "$root" && cargo test --release --features measure --test it --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build the measurement harness" >&2; exit 1; }
{
  echo "== $(date -u +%FT%TZ) PER_CLASS=${PER_CLASS:-500} EPS=${EPS:-1} DM=${DM:-} TEACHER=${TEACHER:-} RARE=${RARE:-}"
  NO_EVAL=1 SAVE_PQ="$out.parquet" "$bin" distill::measure_dm_fashion --ignored --nocapture 2>&1 |
    grep -v '^test \|^running\|^$'
  for labels in ${LABELS:-hard}; do
    "$python" "$root/bench/eval_torch.py" "$out.parquet" --seeds "${SEEDS:-3}" --epochs "${EPOCHS:-300}" \
      --labels "$labels" \
      --test-images "$fashion/t10k-images-idx3-ubyte.gz" \
      --test-labels "$fashion/t10k-labels-idx1-ubyte.gz" 2>&1 | tail -1
  done
} | tee "$out.log"
