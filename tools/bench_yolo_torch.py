#!/usr/bin/python3
"""PyTorch reference for the detection row of tools/bench (docs/BENCHMARKS.md). Run with
/usr/bin/python3 (Debian's python3-torch, CPU).

  bench_yolo_torch.py MODEL.cfg IMGS.h5 [--batch B] [--threads T] [--thresh X]

builds the network of a Darknet cfg (convolutional with batch norm and leaky/linear/logistic,
maxpool with Darknet's padding, route, upsample, yolo) layer for layer in PyTorch with seeded
weights, and does what `cnn-batch detect` does for every image of an image set written by
`cnn-batch import images`: read its pixels (h5py), letterbox to the network size (bilinear
resize keeping the aspect ratio, grey 0.5 border), forward in batches of B under no_grad, decode
the [yolo] outputs (sigmoid x, y, objectness and classes, exp w, h with the anchors) and keep
the boxes whose objectness x class probability exceeds X. (No NMS: with seeded weights and a
high threshold there are no boxes left to suppress, as in cnn-batch's run.) Prints one line
"images_per_s X images N boxes K cpu_ms_per_image C" timed over all images after one warm-up
batch (C: this process's CPU time, a check on a loaded machine).
"""
import argparse
import sys
import time

import h5py
import numpy as np


def parse_cfg(path):
    secs = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            secs.append((line.strip("[]"), {}))
        elif "=" in line:
            k, v = line.split("=", 1)
            secs[-1][1][k.strip()] = v.strip()
    return secs


def build(secs, torch, nn):
    net = secs[0][1]
    c, h, w = int(net.get("channels", 3)), int(net["height"]), int(net["width"])
    mods, shapes, kinds = nn.ModuleList(), [], []
    for kind, kv in secs[1:]:
        if kind == "convolutional":
            f, k, s = int(kv.get("filters", 1)), int(kv.get("size", 1)), int(kv.get("stride", 1))
            p = k // 2 if int(kv.get("pad", 0)) else int(kv.get("padding", 0))
            bn = int(kv.get("batch_normalize", 0))
            layers = [nn.Conv2d(c, f, k, s, p, bias=not bn)]
            if bn:
                layers.append(nn.BatchNorm2d(f))
            act = kv.get("activation", "logistic")
            if act == "leaky":
                layers.append(nn.LeakyReLU(0.1))
            elif act == "relu":
                layers.append(nn.ReLU())
            elif act == "logistic":
                layers.append(nn.Sigmoid())
            mods.append(nn.Sequential(*layers))
            c, h, w = f, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif kind == "maxpool":
            k = int(kv.get("size", 1))
            s = int(kv.get("stride", k))
            pad = int(kv.get("padding", k - 1))
            mods.append(nn.Identity())
            kv["_pool"] = (k, s, pad)
            h, w = (h + pad - k) // s + 1, (w + pad - k) // s + 1
        elif kind == "route":
            idx = [int(v) for v in kv["layers"].split(",")]
            idx = [i if i >= 0 else len(shapes) + i for i in idx]
            kv["_idx"] = idx
            mods.append(nn.Identity())
            c, h, w = sum(shapes[i][0] for i in idx), shapes[idx[0]][1], shapes[idx[0]][2]
        elif kind == "upsample":
            s = int(kv.get("stride", 2))
            mods.append(nn.Upsample(scale_factor=s, mode="nearest"))
            h, w = h * s, w * s
        elif kind == "yolo":
            mods.append(nn.Identity())
            anchors = [float(v) for v in kv["anchors"].split(",")]
            mask = [int(v) for v in kv["mask"].split(",")]
            kv["_anchors"] = torch.tensor([[anchors[2 * m], anchors[2 * m + 1]] for m in mask])
            kv["_classes"] = int(kv.get("classes", 80))
        else:
            raise SystemExit(f"bench_yolo_torch.py: [{kind}] not supported")
        shapes.append((c, h, w))
        kinds.append((kind, kv))
    return mods, kinds, (int(net["height"]), int(net["width"]))


def forward(x, mods, kinds, size, thresh, torch, F):
    outs, boxes = [], 0
    for m, (kind, kv) in zip(mods, kinds):
        if kind == "maxpool":
            k, s, pad = kv["_pool"]
            h = x.shape[2]
            if (h + pad - k) // s == (h - k) // s and pad // 2 == 0:  # padding never reached: plain pool
                x = F.max_pool2d(x, k, s)
            else:  # Darknet's window from -pad/2 (yolov3-tiny's 2x2/1 keeps 13x13)
                lo = pad // 2
                x = F.max_pool2d(F.pad(x, (lo, pad - lo, lo, pad - lo), value=float("-inf")), k, s)
        elif kind == "route":
            x = torch.cat([outs[i] for i in kv["_idx"]], 1) if len(kv["_idx"]) > 1 else outs[kv["_idx"][0]]
        elif kind == "yolo":
            boxes += decode(x, kv, size, thresh, torch)
        else:
            x = m(x)
        outs.append(x)
    return boxes


def decode(x, kv, size, thresh, torch):
    b, _, gh, gw = x.shape
    na, nc = kv["_anchors"].shape[0], kv["_classes"]
    p = x.view(b, na, 5 + nc, gh, gw)
    xy = torch.sigmoid(p[:, :, 0:2])
    gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    bx = (xy[:, :, 0] + gx) / gw
    by = (xy[:, :, 1] + gy) / gh
    bw = torch.exp(p[:, :, 2]) * kv["_anchors"][:, 0].view(1, na, 1, 1) / size[1]
    bh = torch.exp(p[:, :, 3]) * kv["_anchors"][:, 1].view(1, na, 1, 1) / size[0]
    obj = torch.sigmoid(p[:, :, 4])
    prob = obj.unsqueeze(2) * torch.sigmoid(p[:, :, 5:])
    keep = prob > thresh
    _ = (bx, by, bw, bh)
    return int(keep.sum())


def letterbox(img, H, W, torch, F):
    h, w = img.shape[:2]
    if w * H > h * W:
        nw, nh = W, max(1, h * W // w)
    else:
        nh, nw = H, max(1, w * H // h)
    t = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    r = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    out = torch.full((3, H, W), 0.5)
    y0, x0 = (H - nh) // 2, (W - nw) // 2
    out[:, y0:y0 + nh, x0:x0 + nw] = r[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cfg")
    ap.add_argument("images")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--thresh", type=float, default=0.9)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from torch import nn
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    mods, kinds, size = build(parse_cfg(a.cfg), torch, nn)
    mods.eval()
    f = h5py.File(a.images, "r")
    offs, shp, pix = f["offsets"][...], f["shapes"][...], f["pixels"]
    n = len(offs)

    def run(idx):
        x = torch.stack([letterbox(pix[offs[i]:offs[i] + int(np.prod(shp[i]))].reshape(shp[i]), size[0], size[1],
                                   torch, F) for i in idx])
        return forward(x, mods, kinds, size, a.thresh, torch, F)

    with torch.no_grad():
        run(range(min(a.batch, n)))  # warm-up: oneDNN picks its kernels
        t0, c0 = time.perf_counter(), time.process_time()
        boxes = 0
        for s in range(0, n, a.batch):
            boxes += run(range(s, min(s + a.batch, n)))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"images_per_s {n / dt:.2f} images {n} boxes {boxes} cpu_ms_per_image {dc / n * 1e3:.1f}")


if __name__ == "__main__":
    sys.exit(main())
