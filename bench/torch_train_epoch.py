#!/usr/bin/env python3
"""One full LeNet-5 training epoch on Fashion-MNIST in PyTorch, for the peak-RSS comparison.

Reads Debian's gzip'd IDX files with numpy, as xgrad's example does, batch 64, SGD momentum.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from torch_bench import lenet

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=DATA)
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (0: all)")
    a = p.parse_args()
    if a.limit < 0:
        p.error(f"--limit must be 0 (all) or more, not {a.limit}")
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as xgrad's setup_process() does
    torch.manual_seed(0)
    images = read_idx(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"))
    if a.limit:
        images, labels = images[:a.limit], labels[:a.limit]
    model = lenet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = np.random.default_rng(0).permutation(len(images))
    start = time.perf_counter()
    for i in range(0, len(order) - 63, 64):
        idx = order[i:i + 64]
        x = torch.from_numpy((images[idx].astype(np.float32) / 255.0 - 0.2860) / 0.3530).unsqueeze(1)
        y = torch.from_numpy(labels[idx].astype(np.int64))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    print(f"torch epoch img_per_s={len(order) / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    main()
