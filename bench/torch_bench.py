#!/usr/bin/env python3
"""PyTorch side of the benchmark: the same models, batch, threads and optimiser as bench_models.

Prints one line per repeat: `torch <model> <mode> threads=<t> batch=<b> img_per_s=<x>
step_us_p10=<p> step_us_p50=<q>`, the last two percentiles of the steps' wall times in microseconds.
Run with OPENBLAS_CORETYPE chosen for the CPU and OPENBLAS_NUM_THREADS=1 (run_bench.py does).
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# As xgrad's nn::lenet5() and nn::convnet(), each ReLU that precedes a max-pool is applied after
# it: the same function (ReLU is non-decreasing), with the ReLU on a quarter of the values.
def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def convnet():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10))


MODELS = {"lenet": lenet, "convnet": convnet}


def measure(model, mode, batch, seconds, warmup):
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            model(x)

    step = train_step if mode == "train" else infer_step
    if mode == "train":
        model.train()
    else:
        model.eval()
    for _ in range(warmup):
        step()
    steps, start = [], time.perf_counter()
    last = start
    while True:
        step()
        now = time.perf_counter()
        steps.append((now - last) * 1e6)
        last = now
        elapsed = now - start
        if elapsed >= seconds and len(steps) >= 3:
            steps.sort()
            pick = lambda p: steps[int(p * (len(steps) - 1))]
            return len(steps) * batch / elapsed, pick(0.1), pick(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=sorted(MODELS), default="lenet")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as xgrad's setup_process() does
    model = MODELS[a.model]()
    for _ in range(a.repeats):
        ips, p10, p50 = measure(model, a.mode, a.batch, a.seconds, a.warmup)
        print(f"torch {a.model} {a.mode} threads={a.threads} batch={a.batch} img_per_s={ips:.1f} "
              f"step_us_p10={p10:.1f} step_us_p50={p50:.1f}", flush=True)


if __name__ == "__main__":
    main()
