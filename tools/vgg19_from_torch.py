#!/usr/bin/python3
"""Converts a torchvision VGG-19 state dict into a cnn-batch checkpoint for jobs/vgg19.cfg.

    /usr/bin/python3 tools/vgg19_from_torch.py vgg19.pth -o vgg19.h5 [--cfg jobs/vgg19.cfg]

vgg19.pth: what torch.save(torchvision.models.vgg19(...).state_dict(), path) writes (a whole
pickled model, or a state dict whose keys carry a "module." prefix, work too). The sixteen
features.N.weight / features.N.bias convolutions, in the order of N, become the model's
sixteen [convolutional] layers: PyTorch's Conv2d weight [out, in, kh, kw] is the checkpoint's
layout as it is (docs/FORMATS.md "Checkpoints"). The classifier (fc 4096/4096/1000) is not part of
jobs/vgg19.cfg and is left out. The file is written as OUT.tmp and renamed when complete.

Needs Debian's python3-torch and python3-h5py (both for /usr/bin/python3 only).
"""
import argparse
import os
import re
import sys

import h5py
import numpy as np
import torch


def cfg_layers(text):
    """Section names after [net], in order (the checkpoint's /layers/NNN_KIND groups)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            names.append(m.group(1))
    if not names or names[0] not in ("net", "network"):
        raise SystemExit("the model file must start with [net]")
    alias = {"conv": "convolutional", "max": "maxpool", "avg": "avgpool", "soft": "softmax"}
    return [alias.get(n, n) for n in names[1:]]


def conv_filters(text):
    """filters= of every [convolutional] section, in order."""
    out, cur = [], None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            if cur is not None:
                out.append(cur)
            cur = 1 if line in ("[convolutional]", "[conv]") else None
        elif cur is not None and line.replace(" ", "").startswith("filters="):
            cur = int(line.split("=", 1)[1])
    if cur is not None:
        out.append(cur)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state_dict")
    ap.add_argument("-o", "--output", required=True)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--cfg", default=os.path.join(here, "..", "jobs", "vgg19.cfg"))
    a = ap.parse_args()

    sd = torch.load(a.state_dict, map_location="cpu")
    if hasattr(sd, "state_dict"):
        sd = sd.state_dict()
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    convs = sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(r"features\.(\d+)\.weight", k)] if m})
    text = open(a.cfg).read()
    kinds = cfg_layers(text)
    filters = conv_filters(text)
    conv_idx = [i for i, k in enumerate(kinds) if k == "convolutional"]
    if len(convs) != len(conv_idx):
        sys.exit(f"{a.state_dict}: {len(convs)} convolutions (features.N.weight) but {a.cfg} has {len(conv_idx)}")
    tmp = a.output + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["cnnb_schema"] = "cnnb-checkpoint"
            f.attrs["cnnb_version"] = np.int32(1)
            f.attrs["model_cfg"] = text
            f.attrs["num_layers"] = np.int32(len(kinds))
            for i, k in enumerate(kinds):
                f.create_group(f"layers/{i:03d}_{k}")
            cin = 3
            for n, (li, fi) in enumerate(zip(conv_idx, convs)):
                w = sd[f"features.{fi}.weight"].detach().float().numpy()
                b = sd[f"features.{fi}.bias"].detach().float().numpy()
                want = (filters[n], cin, 3, 3)
                if w.shape != want:
                    sys.exit(f"{a.state_dict}: features.{fi}.weight is {tuple(w.shape)} but layer {li} of {a.cfg} "
                             f"needs {want}")
                g = f[f"layers/{li:03d}_convolutional"]
                g.create_dataset("weights", data=w)
                g.create_dataset("biases", data=b)
                cin = w.shape[0]
        os.replace(tmp, a.output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    left = sorted(k for k in sd if not k.startswith("features."))
    print(f"wrote {a.output}: {len(convs)} convolutions of {a.state_dict}"
          + (f" ({len(left)} classifier tensors left out)" if left else ""))


if __name__ == "__main__":
    main()
