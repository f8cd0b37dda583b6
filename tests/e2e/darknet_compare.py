"""Compares cnn-batch detect's output (HDF5) with darknet_ref's printout, image by image and
class by class: every box must have a partner of the same class within PIX pixels on x, y, w
and h and within SCORE on the score. Boxes whose score lies within SCORE of the threshold may
be missing on one side (rounding decides which side of the threshold they fall).
usage: darknet_compare.py DETS.h5 REF.txt THRESH [PIX] [SCORE]; prints the figures, exits 1
on a mismatch."""
import sys

import h5py
import numpy as np

dets, ref, thresh = sys.argv[1], sys.argv[2], float(sys.argv[3])
PIX = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
SC = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-3

refs = []  # per image: list of (class, score, x, y, w, h)
for line in open(ref):
    p = line.split()
    if p[0] == "image":
        refs.append([])
    else:
        refs[-1].append((int(p[0]), float(p[1]), *map(float, p[2:6])))
f = h5py.File(dets, "r")
off, cls, score, box = f["offsets"][:], f["class"][:], f["score"][:], f["box"][:]
assert len(off) - 1 == len(refs), (len(off) - 1, len(refs))
maxpix = maxsc = 0.0
nmatch = bad = 0
for i, rb in enumerate(refs):
    rb = np.array(rb, dtype=np.float64).reshape(-1, 6)
    used = np.zeros(len(rb), bool)
    for r in range(off[i], off[i + 1]):
        o = np.array([cls[r], score[r], *box[r]], dtype=np.float64)
        d = np.abs(rb[:, 2:] - o[2:]).max(1) if len(rb) else np.zeros(0)
        ds = np.abs(rb[:, 1] - o[1]) if len(rb) else np.zeros(0)
        ok = (~used) & (rb[:, 0] == o[0]) & (d <= PIX) & (ds <= SC) if len(rb) else np.zeros(0, bool)
        if not ok.any():
            if abs(o[1] - thresh) > SC:
                print(f"image {i}: cnn-batch box without a darknet partner: {o.tolist()}")
                bad += 1
            continue
        j = np.flatnonzero(ok)[np.argmin(d[ok])]
        used[j] = True
        nmatch += 1
        maxpix, maxsc = max(maxpix, d[j]), max(maxsc, ds[j])
    for j in np.flatnonzero(~used):
        if abs(rb[j, 1] - thresh) > SC:
            print(f"image {i}: darknet box without a cnn-batch partner: {rb[j].tolist()}")
            bad += 1
print(f"images {len(refs)} boxes matched {nmatch} (darknet {sum(len(r) for r in refs)}, cnn-batch {len(cls)}) "
      f"max pixel difference {maxpix:.4g} max score difference {maxsc:.3g} unmatched {bad}")
sys.exit(1 if bad or nmatch == 0 else 0)
