#!/usr/bin/python3
"""PyTorch reference for tools/oneshot and tools/bench (metric learning, issue #7). Run with
/usr/bin/python3 (Debian's python3-torch, CPU); reference only, never needed at run time.

  oneshot_torch.py train MODEL.cfg DATA.h5 [--classes 0-6] [--epochs E] [--seed S] [--threads T]
                   [--lr X] [--init CKPT.h5] --embed IN.h5 OUT.h5 [--embed IN2.h5 OUT2.h5 ...]
      builds MODEL.cfg's network layer for layer from the same Darknet-style cfg cnn-batch reads
      ([convolutional] with batch norm, [maxpool], [avgpool], [route], [connected], [l2norm],
      and the [triplet] loss with its margin and hard/semi-hard mining), trains it on the P x K
      batches that `cnn-batch train` draws for the same seed (the same xoshiro256** generator and
      the same plan, ported below), with SGD as cnn-batch's (momentum, weight decay on weights
      only, the cfg's learning-rate policy), then writes embedding files in `cnn-batch embed`'s
      layout, so that `cnn-batch verify` and `cnn-batch identify` score both programs alike.
      --init starts from a cnn-batch checkpoint's values (`cnn-batch train --epochs 0` writes the
      initial ones), so both programs start from the same point; batch norm then computes as
      cnn-batch's (unbiased variance in training batches).
  oneshot_torch.py bench MODEL.cfg --threads T [--warmup W] [--steps S]
      triplet training steps of MODEL on synthetic images (the cfg's batch of pk_p x pk_k);
      prints "images_per_s X step_ms Y".

Without --init the initial values are PyTorch's draws from the same distributions (He-normal
weights, zero biases, unit batch-norm scales); `bench` uses PyTorch's own fused batch norm
(biased variance in training batches), the fast path a PyTorch user gets.
"""
import argparse
import math
import sys
import time

import h5py
import numpy as np

M64 = (1 << 64) - 1


# ---- cnn-batch's random numbers (src/core/rng.c): splitmix64-seeded xoshiro256** ----
def _splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    def __init__(self, seed, a=0, b=0, c=0):
        x = seed & M64
        _, z = _splitmix(x)
        x = z ^ ((a * 0xD1342543DE82EF95) & M64)
        _, z = _splitmix(x)
        x = z ^ ((b * 0xA0761D6478BD642F) & M64)
        _, z = _splitmix(x)
        x = z ^ ((c * 0xE7037ED1A0B428DB) & M64)
        self.s = []
        for _ in range(4):
            x, z = _splitmix(x)
            self.s.append(z)

    def u64(self):
        s = self.s
        out = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return out

    def below(self, n):
        lim = ((1 << 64) - n) % n
        while True:
            x = self.u64()
            if x >= lim:
                return x % n

    def shuffle(self, a, lo, hi):
        """cnnb_rng_shuffle_long on a[lo:hi] in place."""
        n = hi - lo
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            a[lo + i], a[lo + j] = a[lo + j], a[lo + i]


def class_list_has(spec, label):
    if spec is None:
        return True
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if int(lo) <= label <= int(hi or lo):
            return True
    return False


class PKSampler:
    """src/io/pk_sampler.c: the same identities, the same plan for the same seed and epoch."""

    def __init__(self, labels, p, k, batch, classes):
        rows = [i for i, y in enumerate(labels) if y >= 0 and class_list_has(classes, int(y))]
        rows.sort(key=lambda r: (int(labels[r]), r))
        self.p, self.k, self.batch = p, k, batch
        self.rows, self.start = [], []
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and labels[rows[j]] == labels[rows[i]]:
                j += 1
            if j - i >= k:
                self.start.append(len(self.rows))
                self.rows.extend(rows[i:j])
            i = j
        self.start.append(len(self.rows))
        self.nid = len(self.start) - 1
        assert p * k == batch and self.nid >= p, "pk_p x pk_k must be the batch and fit the data"
        self.steps = max(1, len(self.rows) // batch)

    def plan(self, seed, epoch):
        r = Rng(seed, 0x9C4B, epoch, 0)
        work = list(self.rows)
        for i in range(self.nid):
            r.shuffle(work, self.start[i], self.start[i + 1])
        cursor = [0] * self.nid
        order = list(range(self.nid))
        plan = []
        for _ in range(self.steps):
            for j in range(self.p):
                t = j + r.below(self.nid - j)
                ident = order[t]
                order[t] = order[j]
                order[j] = ident
                lo, cnt = self.start[ident], self.start[ident + 1] - self.start[ident]
                if cursor[ident] + self.k > cnt:
                    r.shuffle(work, lo, lo + cnt)
                    cursor[ident] = 0
                plan.extend(work[lo + cursor[ident]: lo + cursor[ident] + self.k])
                cursor[ident] += self.k
        return plan


# ---- the model file ----
def parse_cfg(path):
    secs = []
    for line in open(path):
        line = line.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            secs.append((line.strip("[]"), {}))
        else:
            k, _, v = line.partition("=")
            secs[-1][1][k.strip()] = v.strip()
    return secs


def build(secs, torch, nn, F, exact_bn=False):
    net = secs[0][1]
    C, H, W = int(net["channels"]), int(net["height"]), int(net["width"])
    acts = {"relu": nn.ReLU, "linear": nn.Identity, "logistic": nn.Sigmoid, "tanh": nn.Tanh,
            "leaky": lambda: nn.LeakyReLU(0.1)}

    class Pad(nn.Module):
        """Darknet's pool windows: start at -padding/2, as many outputs as (h + pad - size)/stride + 1."""

        def __init__(self, l, r, t, b, value):
            super().__init__()
            self.p, self.v = (l, r, t, b), value

        def forward(self, x):
            return F.pad(x, self.p, value=self.v) if any(self.p) else x

    class DarknetBN(nn.Module):
        """cnn-batch's batch norm (src/layers/batchnorm_impl.h): training batches are normalised
        with the unbiased variance, which also feeds the running average (momentum 0.99)."""

        def __init__(self, c):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(c))
            self.bias = nn.Parameter(torch.zeros(c))
            self.register_buffer("running_mean", torch.zeros(c))
            self.register_buffer("running_var", torch.ones(c))

        def forward(self, x):
            dims = [0] + list(range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            if self.training:
                m, v = x.mean(dims), x.var(dims, unbiased=True)
                with torch.no_grad():
                    self.running_mean.mul_(0.99).add_(0.01 * m)
                    self.running_var.mul_(0.99).add_(0.01 * v)
            else:
                m, v = self.running_mean, self.running_var
            return (x - m.view(shape)) / torch.sqrt(v.view(shape) + 1e-5) * self.weight.view(shape) + self.bias.view(shape)

    def bn2d(c):
        return DarknetBN(c) if exact_bn else nn.BatchNorm2d(c, eps=1e-5, momentum=0.01)

    def bn1d(c):
        return DarknetBN(c) if exact_bn else nn.BatchNorm1d(c, eps=1e-5, momentum=0.01)

    class L2Norm(nn.Module):
        def forward(self, x):
            return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)

    mods, shapes, routes, head = [], [], [], None
    shape = (C, H, W)
    for i, (kind, kv) in enumerate(secs[1:]):
        c, h, w = shape
        route = None
        if kind in ("convolutional", "conv"):
            f, size, stride = int(kv.get("filters", 1)), int(kv.get("size", 1)), int(kv.get("stride", 1))
            pad = size // 2 if int(kv.get("pad", 0)) else int(kv.get("padding", 0))
            bn = int(kv.get("batch_normalize", 0))
            layers = [nn.Conv2d(c, f, size, stride, pad, bias=not bn)]
            if bn:
                layers.append(bn2d(f))
            layers.append(acts[kv.get("activation", "logistic")]())
            m = nn.Sequential(*layers)
            shape = (f, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1)
        elif kind in ("maxpool", "max", "avgpool", "avg"):
            is_max = kind.startswith("max")
            if not is_max and "size" not in kv:
                m = nn.AdaptiveAvgPool2d(1)
                shape = (c, 1, 1)
            else:
                size = int(kv.get("size", kv.get("stride", 1)))
                stride = int(kv.get("stride", size))
                pad = int(kv.get("padding", size - 1 if is_max else 0))
                oh, ow = (h + pad - size) // stride + 1, (w + pad - size) // stride + 1
                lt = pad // 2
                rb_h, rb_w = (oh - 1) * stride + size - h - lt, (ow - 1) * stride + size - w - lt
                padm = Pad(lt, max(rb_w, 0), lt, max(rb_h, 0), float("-inf") if is_max else 0.0)
                pool = nn.MaxPool2d(size, stride) if is_max else nn.AvgPool2d(size, stride)
                m = nn.Sequential(padm, pool)
                shape = (c, oh, ow)
        elif kind == "route":
            idx = [int(v) for v in kv["layers"].split(",")]
            route = [j if j >= 0 else i + j for j in idx]
            m = None
            shape = (sum(shapes[j][0] for j in route), shapes[route[0]][1], shapes[route[0]][2])
        elif kind in ("connected", "conn"):
            out = int(kv.get("output", 1))
            layers = [nn.Flatten(), nn.Linear(c * h * w, out, bias=not int(kv.get("batch_normalize", 0)))]
            if int(kv.get("batch_normalize", 0)):
                layers.append(bn1d(out))
            layers.append(acts[kv.get("activation", "logistic")]())
            m = nn.Sequential(*layers, nn.Unflatten(1, (out, 1, 1)))
            shape = (out, 1, 1)
        elif kind == "l2norm":
            m = L2Norm()
        elif kind in ("triplet", "siamese"):
            head = (kind, kv)
            m = nn.Identity()
        else:
            sys.exit(f"oneshot_torch.py: layer [{kind}] is not supported here")
        mods.append(m)
        routes.append(route)
        shapes.append(shape)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([m if m is not None else nn.Identity() for m in mods])

        def forward(self, x):
            outs = []
            for m, r in zip(self.layers, routes):
                x = torch.cat([outs[j] for j in r], 1) if r is not None else m(x)
                outs.append(x)
            return x.flatten(1)

    model = Net()
    for m in model.modules():  # cnn-batch's distributions: He-normal (fan in), zero bias
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model, head


def load_checkpoint(torch, model, path):
    """Parameters and running statistics of a cnn-batch checkpoint (docs/FORMATS.md
    "Checkpoints"): layer i's group /layers/NNN_KIND fills the i-th module's convolution or
    linear map and its batch norm."""
    with h5py.File(path, "r") as f, torch.no_grad():
        g = f["layers"]
        for name in g:
            i = int(name.split("_")[0])
            mods = list(model.layers[i].modules())
            lin = next((m for m in mods if hasattr(m, "weight") and m.weight is not None and m.weight.dim() > 1), None)
            bn = next((m for m in mods if hasattr(m, "running_mean")), None)
            d = {k: torch.from_numpy(g[name][k][()]) for k in g[name]}
            if "weights" in d:
                lin.weight.copy_(d["weights"].reshape(lin.weight.shape))
            if bn is not None:
                bn.weight.copy_(d["scales"])
                bn.bias.copy_(d["biases"])
                bn.running_mean.copy_(d["rolling_mean"])
                bn.running_var.copy_(d["rolling_variance"])
            elif "biases" in d:
                lin.bias.copy_(d["biases"])


def triplet_loss(torch, e, y, margin, mining):
    """src/layers/triplet.c: the sum over anchors (an anchor's loss is its triplets' mean)."""
    d = (e.unsqueeze(1) - e.unsqueeze(0)).pow(2).sum(-1)
    G = e.shape[0]
    same = y.unsqueeze(1) == y.unsqueeze(0)
    eye = torch.eye(G, dtype=torch.bool)
    pos, neg = same & ~eye, ~same
    inf = torch.tensor(float("inf"))
    if mining == "hard":
        hp = torch.where(pos, d, -inf).max(1)
        hn = torch.where(neg, d, inf).min(1)
        ok = pos.any(1) & neg.any(1)
        return torch.relu(hp.values - hn.values + margin)[ok].sum()
    # semi-hard: for (a, p) the nearest negative farther than p, else the farthest negative
    cand = neg.unsqueeze(1) & (d.unsqueeze(1) > d.unsqueeze(2))  # [a, p, n]
    outside = torch.where(cand, d.unsqueeze(1).expand(G, G, G), inf).min(2).values
    inside = torch.where(neg, d, -inf).max(1).values.unsqueeze(1).expand(G, G)
    dn = torch.where(cand.any(2), outside, inside)
    t = torch.relu(d - dn + margin)
    npos = pos.sum(1, keepdim=True).clamp(min=1)
    ok = pos & neg.any(1, keepdim=True)
    return (torch.where(ok, t, torch.zeros_like(t)) / npos).sum()


def lr_at(net, base, step, total):
    """cnnb_lr_at for the constant, steps and cosine/poly policies."""
    burn = int(net.get("burn_in", 0))
    power = float(net.get("power", 4))
    total = int(net.get("max_batches", 0)) or total
    if burn and step < burn:
        return base * ((step + 1) / burn) ** power
    t = min(1.0, step / total) if total > 0 else 0
    pol = net.get("policy", "constant")
    if pol == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    if pol == "poly":
        return base * (1 - t) ** power
    if pol == "steps":
        lr = base
        for s, sc in zip(net.get("steps", "").split(","), net.get("scales", "").split(",")):
            if s and int(s) <= step:
                lr *= float(sc)
        return lr
    return base


def normaliser(net, f):
    if "input_mean" in net:
        mean = np.array([float(v) for v in net["input_mean"].split(",")], np.float32) / 255.0
        std = np.full_like(mean, 1.0 / (255.0 * float(net["input_scale"])))
    else:
        mean, std = f["images"].attrs["mean"].astype(np.float32), f["images"].attrs["std"].astype(np.float32)
    return mean, std


def load_images(path, net):
    with h5py.File(path, "r") as f:
        img = f["images"][()]
        lab = f["labels"][()].astype(np.int64) if "labels" in f else None
        mean, std = normaliser(net, f)
    x = (img.astype(np.float32) / 255.0 - mean) / std  # N x H x W x C
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), lab


def optimizer(torch, model, net, lr):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    return torch.optim.SGD([{"params": decay, "weight_decay": float(net.get("decay", 0.0001))},
                            {"params": rest, "weight_decay": 0.0}], lr=lr,
                           momentum=float(net.get("momentum", 0.9)))


def cmd_train(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    secs = parse_cfg(a.model)
    net = secs[0][1]
    model, head = build(secs, torch, nn, F, exact_bn=True)
    if a.init:
        load_checkpoint(torch, model, a.init)
    assert head and head[0] == "triplet", "the reference trains [triplet] models"
    margin, mining = float(head[1].get("margin", 0.2)), head[1].get("mining", "semihard")
    x, y = load_images(a.data, net)
    P, K = int(net["pk_p"]), int(net["pk_k"])
    B = P * K
    sampler = PKSampler(y, P, K, B, a.classes)
    total = a.epochs * sampler.steps
    base = a.lr if a.lr else float(net.get("learning_rate", 0.001))
    opt = optimizer(torch, model, net, base)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    step, t0 = 0, time.time()
    for epoch in range(a.epochs):
        plan = np.array(sampler.plan(a.seed, epoch), np.int64)
        model.train()
        win = 0.0
        for s in range(sampler.steps):
            if a.max_steps and step >= a.max_steps:
                break
            idx = torch.from_numpy(plan[s * B:(s + 1) * B])
            for g in opt.param_groups:
                g["lr"] = lr_at(net, base, step, total)
            opt.zero_grad()
            loss = triplet_loss(torch, model(xt[idx]), yt[idx], margin, mining) / B
            loss.backward()
            opt.step()
            step += 1
            win += loss.item()
            if (s + 1) % a.log_every == 0 or s + 1 == sampler.steps or step == a.max_steps:
                n = (s % a.log_every) + 1
                print(f"torch epoch {epoch + 1}/{a.epochs} step {s + 1}/{sampler.steps} loss {win / n:.6f} "
                      f"{step * B / (time.time() - t0):.0f} img/s", flush=True)
                win = 0.0
    print(f"torch trained {step} steps in {time.time() - t0:.1f} s", flush=True)
    model.eval()
    with torch.no_grad():
        for src, dst in a.embed:
            ex, ey = load_images(src, net)
            emb = torch.cat([model(torch.from_numpy(ex[i:i + 256])) for i in range(0, len(ex), 256)]).numpy()
            with h5py.File(dst, "w") as f:
                f.create_dataset("embeddings", data=emb.astype(np.float32))
                if ey is not None:
                    f.create_dataset("labels", data=ey)
                f.attrs["schema"] = "cnnb-embeddings"
                f.attrs["dim"] = np.int64(emb.shape[1])
                f.attrs["model_hash"] = "pytorch-reference"
                f.attrs["model"] = a.model
                f.attrs["source"] = src
                f.attrs["complete"] = np.int64(1)
            print(f"torch embedded {len(emb)} images of {src} -> {dst}")


def cmd_bench(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    secs = parse_cfg(a.model)
    net = secs[0][1]
    model, head = build(secs, torch, nn, F)
    margin, mining = float(head[1].get("margin", 0.2)), head[1].get("mining", "semihard")
    P, K = int(net["pk_p"]), int(net["pk_k"])
    B = P * K
    C, H, W = int(net["channels"]), int(net["height"]), int(net["width"])
    x = torch.randn(B, C, H, W)
    y = torch.arange(P).repeat_interleave(K)
    opt = optimizer(torch, model, net, float(net.get("learning_rate", 0.001)))
    model.train()

    def step():
        opt.zero_grad()
        loss = triplet_loss(torch, model(x), y, margin, mining) / B
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.time()
    for _ in range(a.steps):
        step()
    dt = (time.time() - t0) / a.steps
    print(f"images_per_s {B / dt:.2f} step_ms {dt * 1000:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("model")
    t.add_argument("data")
    t.add_argument("--classes")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=0)
    t.add_argument("--log-every", type=int, default=250)
    t.add_argument("--max-steps", type=int, default=0, help="stop after N steps (tests)")
    t.add_argument("--init", help="start from this cnn-batch checkpoint (e.g. train --epochs 0)")
    t.add_argument("--embed", nargs=2, action="append", default=[], metavar=("IN.h5", "OUT.h5"))
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    cmd_train(a) if a.cmd == "train" else cmd_bench(a)


if __name__ == "__main__":
    main()
