#!/usr/bin/env python3
"""Time the same DP-SGD step as `retort bench dp-step` with PyTorch + Opacus, side by side.

The network is the distillation ConvNet-3 exactly as Retort builds it: 3 x [conv3x3 (no bias,
padding 1) -> GroupNorm(W, W) (= instance norm, affine) -> ReLU/GELU -> AvgPool2d(2)] ->
Linear(W*3*3 -> 10) for 28x28x1 inputs (maps 28 -> 14 -> 7 -> 3), or the MLP 784 -> W -> 10.
One step = Opacus per-sample gradients (GradSampleModule, hooks), per-sample clipping to C = 1,
the sum, Gaussian noise (sigma = 1) and an SGD update, on `--batch` random images.
Reports the median over `--reps` timed steps after one warm-up step.

    pip install torch opacus
    python3 bench/peer_opacus.py --model convnet --width 128 --batch 256 --threads 2 --reps 5
    RAYON_NUM_THREADS=2 retort bench dp-step --model convnet --width 128 --batch 256 --reps 5

Run both on an otherwise idle machine, one after the other, with the same thread count.
`--json` prints {"ms_per_step", "samples_per_s", "model", "width", "batch", "threads",
"framework"} as the last line, like retort's.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings


def build(model, width, act):
    import torch.nn as nn

    a = nn.ReLU if act == "relu" else (lambda: nn.GELU(approximate="tanh"))
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, width), a(), nn.Linear(width, 10))
    layers, cin, side = [], 1, 28
    for _ in range(3):
        layers += [
            nn.Conv2d(cin, width, 3, padding=1, bias=False),
            nn.GroupNorm(width, width, affine=True),
            a(),
            nn.AvgPool2d(2),
        ]
        cin, side = width, side // 2
    layers += [nn.Flatten(), nn.Linear(width * side * side, 10)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["convnet", "mlp"], default="convnet")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--activation", choices=["relu", "gelu"], default="relu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from opacus import GradSampleModule

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    net = GradSampleModule(build(args.model, args.width, args.activation))
    params = [q for q in net.parameters() if q.requires_grad]
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    clip, sigma, lr = 1.0, 1.0, 0.01 / args.batch
    times = []
    for rep in range(args.reps + 1):
        t = time.perf_counter()
        for q in params:
            q.grad_sample = None
            q.grad = None
        loss_fn(net(x), y).backward()
        # per-sample clipping over all parameters together, as Opacus's DPOptimizer does
        gs = [q.grad_sample.reshape(args.batch, -1) for q in params]
        norms = torch.stack([g.norm(2, dim=1) for g in gs], dim=1).norm(2, dim=1)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        with torch.no_grad():
            for q, g in zip(params, gs):
                s = torch.einsum("i,ij->j", factor, g).view_as(q)
                s += torch.normal(0.0, sigma * clip, size=s.shape)
                q -= lr * s
        dt = (time.perf_counter() - t) * 1e3
        if rep > 0:
            times.append(dt)
    med = statistics.median(times)
    print(f"torch {torch.__version__}, opacus GradSampleModule, {args.threads} threads", file=sys.stderr)
    print(f"step  {med:.1f} ms median, {min(times):.1f} ms best over {len(times)}: {[round(t, 1) for t in times]}")
    print(f"throughput  {args.batch / (med / 1e3):.0f} samples/s")
    if args.json:
        print(json.dumps({
            "ms_per_step": med, "min_ms_per_step": min(times),
            "samples_per_s": args.batch / (med / 1e3), "model": args.model,
            "width": args.width, "batch": args.batch, "threads": args.threads,
            "framework": f"torch {torch.__version__} + opacus",
        }))


if __name__ == "__main__":
    main()
