#!/usr/bin/env bash
# Side-by-side DP-step benchmark: Retort vs PyTorch + Opacus, interleaved in one run so both see
# the same machine state. Prints one line per round and the median ratio (Retort / Opacus).
#
#   pip install torch opacus
#   cargo build --release
#   bench/compare.sh [ROUNDS] [extra args for both, e.g. --width 64 --batch 128]
#
# Needs jq. Threads: THREADS (default 2) for both (RAYON_NUM_THREADS / torch.set_num_threads).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
threads="${THREADS:-2}"
bin="${RETORT_BIN:-target/release/retort}"
[ -x "$bin" ] || { echo "error: $bin not found; run: cargo build --release" >&2; exit 2; }
command -v jq >/dev/null || { echo "error: jq not found; install it (apt-get install jq)" >&2; exit 2; }
ratios=()
for r in $(seq 1 "$rounds"); do
  ours=$(RAYON_NUM_THREADS="$threads" "$bin" bench dp-step --reps 4 --json "$@" | tail -1)
  peer=$(python3 bench/peer_opacus.py --reps 4 --threads "$threads" --json "$@" 2>/dev/null | tail -1)
  o=$(jq -r .ms_per_step <<<"$ours"); p=$(jq -r .ms_per_step <<<"$peer")
  floor=$(jq -r .floor_ms <<<"$ours")
  ratio=$(python3 -c "print(f'{$o/$p:.3f}')")
  ratios+=("$ratio")
  printf 'round %d: retort %.1f ms/step  opacus %.1f ms/step  ratio %s  (retort/floor %.2f, floor %.1f ms)\n' \
    "$r" "$o" "$p" "$ratio" "$(python3 -c "print($o/$floor)")" "$floor"
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = [float(x) for x in sys.argv[1:]]
print(f"median ratio retort/opacus over {len(r)} rounds: {statistics.median(r):.3f} (range {min(r):.3f}-{max(r):.3f})")
PY
