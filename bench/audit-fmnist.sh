#!/bin/bash
# Privacy-audit measurements (issue 23, docs/privacy.md "Empirical audit"): a Fashion-MNIST
# subset (the first 150 training and 50 test images of each class from ../shared/data) ingested
# --audit-only, then one `retort privacy audit` per claimed epsilon given as arguments.
#   bench/audit-fmnist.sh 1 4 8 50            (ITERS=150 synthesis iterations by default)
set -eu
cd "$(dirname "$0")/.."
B=${RETORT:-target/release/retort}
SRC=${FMNIST:-../shared/data/fashion-mnist}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
python3 - "$SRC" "$T/fm1500" <<'PY'
import gzip, os, struct, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
def subset(img, lab, per, oimg, olab):
    px = gzip.open(os.path.join(src, img)).read()
    lb = gzip.open(os.path.join(src, lab)).read()
    n = struct.unpack(">I", lb[4:8])[0]
    take, seen = [], {}
    for i in range(n):
        c = lb[8 + i]
        if seen.get(c, 0) < per:
            seen[c] = seen.get(c, 0) + 1
            take.append(i)
    with open(os.path.join(out, olab), "wb") as f:
        f.write(struct.pack(">II", 2049, len(take)) + bytes(lb[8 + i] for i in take))
    with open(os.path.join(out, oimg), "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(take), 28, 28))
        for i in take:
            f.write(px[16 + i * 784:16 + (i + 1) * 784])
subset("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 150, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
subset("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 50, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
PY
W="$T/ws"
$B --workspace "$W" init --site audit-measure > /dev/null
$B --workspace "$W" ingest "$T/fm1500" --name fm1500 --audit-only --json | tail -1 | cut -c1-120
for e in "$@"; do
  s=$(date +%s)
  $B --workspace "$W" privacy audit --dataset fm1500 --epsilon "$e" --iterations "${ITERS:-150}" --json -q > "$T/out" 2>&1 || { tail -3 "$T/out"; exit 1; }
  echo "epsilon $e wall $(( $(date +%s) - s )) s: $(tail -1 "$T/out")"
done
