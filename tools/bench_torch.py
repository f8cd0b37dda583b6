#!/usr/bin/python3
"""PyTorch reference for tools/bench (docs/BENCHMARKS.md). Run with /usr/bin/python3 (Debian's
python3-torch, CPU).

  bench_torch.py data OUT.h5 --n N --h H --w W --c C [--classes K] [--seed S]
      writes synthetic uint8 images N x H x W x C and int32 labels in cnn-batch's dataset
      layout (docs/FORMATS.md: /images with mean/std attributes, /labels, root attributes)
  bench_torch.py train lenet5|resnet18 DATA.h5 --batch B --threads T --warmup W --steps S
      trains the same network as jobs/lenet5.cfg or jobs/resnet18.cfg (32x32 input, 10
      outputs) layer for layer on the same images (standardised as cnn-batch does, held in
      memory as N x C x H x W float32), with SGD (momentum 0.9, weight decay as the cfg) and
      softmax cross-entropy; prints one line
      "images_per_s X step_ms Y maxrss_kb Z params P"
      measured over S steps after W warm-up steps; maxrss is this process's peak RSS.
"""
import argparse
import resource
import sys
import time

import h5py
import numpy as np


def cmd_data(a):
    rng = np.random.default_rng(a.seed)
    img = rng.integers(0, 256, size=(a.n, a.h, a.w, a.c), dtype=np.uint8)
    lab = rng.integers(0, a.classes, size=(a.n,), dtype=np.int32)
    x = img.reshape(-1, a.c).astype(np.float64) / 255.0
    mean, std = x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)
    with h5py.File(a.out, "w") as f:
        k = max(1, 65536 // (a.h * a.w * a.c))
        d = f.create_dataset("images", data=img, chunks=(min(k, a.n), a.h, a.w, a.c),
                             compression="gzip", compression_opts=4)
        d.attrs["mean"] = mean
        d.attrs["std"] = std
        f.create_dataset("labels", data=lab)
        f.attrs["cnnb_schema"] = "cnnb-dataset"
        f.attrs["cnnb_version"] = np.int32(1)
        f.attrs["num_classes"] = np.int32(a.classes)
    print(f"wrote {a.out}: {a.n} x {a.h} x {a.w} x {a.c}")


def lenet5(nn):
    # jobs/lenet5.cfg: pad=1 means padding = size/2 = 2; BN convs have no bias (BN's beta)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, 1, 2, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def resnet18(nn, classes=10):
    # jobs/resnet18.cfg with height=width=32 and output=10: stem 7x7/2 conv (padding 3) + BN + relu,
    # 3x3/2 max pool (padding 1), basic blocks 2-2-2-2, projection 1x1/2 conv + BN in the first
    # block of stages 2-4, global average pool, fully connected with bias.
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.b2(self.c2(self.relu(self.b1(self.c1(x)))))
            return self.relu(y + (self.proj(x) if self.proj is not None else x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def cmd_train(a):
    import torch
    from torch import nn
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with h5py.File(a.data, "r") as f:
        img = f["images"][...]
        lab = f["labels"][...]
        mean = np.asarray(f["images"].attrs["mean"], dtype=np.float32)
        std = np.asarray(f["images"].attrs["std"], dtype=np.float32)
    x = torch.from_numpy(((img.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(lab.astype(np.int64))
    del img
    if a.model == "lenet5":
        model, lr, wd = lenet5(nn), 0.02, 0.0005
    else:
        model, lr, wd = resnet18(nn), 0.1, 0.0001
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    loss_fn = nn.CrossEntropyLoss()
    n, B = x.shape[0], a.batch

    def step(i):
        s = (i * B) % (n - B + 1)
        xb, yb = x[s:s + B], y[s:s + B]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(a.warmup + i)
    float(loss)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters())
    print(f"images_per_s {a.steps * B / dt:.1f} step_ms {dt / a.steps * 1e3:.2f} maxrss_kb {rss} params {params}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out")
    d.add_argument("--n", type=int, required=True)
    d.add_argument("--h", type=int, required=True)
    d.add_argument("--w", type=int, required=True)
    d.add_argument("--c", type=int, required=True)
    d.add_argument("--classes", type=int, default=10)
    d.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("train")
    t.add_argument("model", choices=["lenet5", "resnet18"])
    t.add_argument("data")
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--steps", type=int, default=50)
    a = p.parse_args()
    return cmd_data(a) if a.cmd == "data" else cmd_train(a)


if __name__ == "__main__":
    sys.exit(main())
