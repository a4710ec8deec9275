#!/usr/bin/env python3
"""An independent evaluator for Retort's synthetic sets, in PyTorch (not Retort's own code).

Trains the distillation literature's ConvNet-3 (width 128, instance norm, ReLU, average
pooling) on a package's `synthetic.parquet` and tests it on a held-out IDX test set. The
recipe is the standard one (DC/DSA/DM `evaluate_synset`): SGD lr 0.01, momentum 0.9, weight
decay 5e-4, batch 256, lr x0.1 at half time, EPOCHS epochs, one random augmentation per image
and step (crop by up to 4 px, scale +-20 %, or rotate +-15 deg; no flips), several seeds.

With `--labels soft` and a `soft_label` column, the loss is the cross-entropy against the stored
probability vectors (temperature 1), as docs/partners.md tells partners; `--labels hard` uses
`label`. Prints one line per seed and `{"accuracy","accuracy_std","accuracies","per_class",
"labels",...}` as the last line (`per_class`: each class's test accuracy, mean over the seeds).

    pip install torch pyarrow numpy
    python3 bench/eval_torch.py PKG/data/synthetic.parquet \\
        --test-images ../shared/data/fashion-mnist/t10k-images-idx3-ubyte.gz \\
        --test-labels ../shared/data/fashion-mnist/t10k-labels-idx1-ubyte.gz --seeds 3
"""
import argparse
import gzip
import json
import math
import sys
import time


def idx(path):
    import numpy as np

    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    nd = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd)
    return arr.reshape(dims)


def load_parquet(path, labels):
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    meta = dict(t.schema.metadata or {})
    meta.update(pq.ParquetFile(path).metadata.metadata or {})
    shape = [int(v) for v in meta[b"retort.shape"].decode().split(",")]
    x = np.stack(t.column("image").to_numpy(zero_copy_only=False)).astype("float32")
    x = x.reshape(-1, *shape)
    y = np.asarray(t.column("label").to_numpy(), dtype="int64")
    soft = None
    if labels == "soft":
        if "soft_label" not in t.column_names:
            sys.exit("--labels soft: this file has no soft_label column")
        soft = np.stack(t.column("soft_label").to_numpy(zero_copy_only=False)).astype("float32")
    return x, y, soft, shape


def convnet(c, h, w, k, width=128):
    import torch.nn as nn

    layers, ch, hh, ww = [], c, h, w
    for _ in range(3):
        layers += [
            nn.Conv2d(ch, width, 3, padding=1),
            nn.GroupNorm(width, width, affine=True),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        ]
        ch, hh, ww = width, hh // 2, ww // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * hh * ww, k))


def augment(x, gen):
    """One of crop / scale / rotate per image, by an affine grid (outside -> 0)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    kind = torch.randint(0, 3, (n,), generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    shift = (torch.randint(-4, 5, (n, 2), generator=gen).float() * 2) / torch.tensor([w, h])
    scale = 1 + (torch.rand(n, generator=gen) * 0.4 - 0.2)
    ang = (torch.rand(n, generator=gen) * 30 - 15) * math.pi / 180
    for i in range(n):
        if kind[i] == 0:
            theta[i, :, 2] = shift[i]
        elif kind[i] == 1:
            theta[i, 0, 0] = theta[i, 1, 1] = 1 / scale[i]
        else:
            c, s = math.cos(ang[i]), math.sin(ang[i])
            theta[i, 0, 0], theta[i, 0, 1], theta[i, 1, 0], theta[i, 1, 1] = c, -s, s, c
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def run(seed, x, y, soft, xt, yt, k, epochs, width):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = convnet(x.shape[1], x.shape[2], x.shape[3], k, width)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    n = x.shape[0]
    batch = 256
    steps = max(1, math.ceil(n / batch)) * epochs
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2], 0.1)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    S = torch.from_numpy(soft) if soft is not None else None
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(0, n, batch):
            i = perm[b : b + batch]
            xb = augment(X[i], gen)
            out = net(xb)
            if S is None:
                loss = F.cross_entropy(out, Y[i])
            else:
                loss = -(S[i] * F.log_softmax(out, dim=1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    right = torch.zeros(k)
    seen = torch.zeros(k)
    with torch.no_grad():
        Xt, Yt = torch.from_numpy(xt), torch.from_numpy(yt)
        for b in range(0, Xt.shape[0], 1000):
            yb = Yt[b : b + 1000]
            ok = (net(Xt[b : b + 1000]).argmax(1) == yb).float()
            right.index_add_(0, yb, ok)
            seen.index_add_(0, yb, torch.ones_like(ok))
    per_class = (right / seen.clamp(min=1)).tolist()
    return right.sum().item() / xt.shape[0], per_class


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parquet")
    ap.add_argument("--test-images", required=True)
    ap.add_argument("--test-labels", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels", choices=["hard", "soft"], default="hard")
    a = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    x, y, soft, shape = load_parquet(a.parquet, a.labels)
    xt = idx(a.test_images).astype("float32") / 255.0
    xt = xt.reshape(-1, *shape)
    yt = idx(a.test_labels).astype("int64")
    k = int(max(y.max(), yt.max()) + 1) if soft is None else soft.shape[1]
    accs, per_class = [], []
    t0 = time.time()
    for s in range(a.seeds):
        acc, pc = run(s, x, y, soft, xt, yt, k, a.epochs, a.width)
        accs.append(acc)
        per_class.append(pc)
        print(f"seed {s}: accuracy {acc:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    m = float(np.mean(accs))
    sd = float(np.std(accs))
    pc = [round(float(v), 4) for v in np.mean(np.array(per_class), axis=0)]
    print(json.dumps({"accuracy": m, "accuracy_std": sd, "accuracies": accs, "per_class": pc,
                      "labels": a.labels,
                      "epochs": a.epochs, "seeds": a.seeds, "images": int(x.shape[0]), "evaluator": "pytorch"}))


if __name__ == "__main__":
    main()
