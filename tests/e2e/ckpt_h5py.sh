#!/usr/bin/env bash
# Checkpoints seen from outside: the layout of docs/FORMATS.md "Checkpoints" read back with
# h5py, and the porting recipe of that section (write a checkpoint from Python) run for real:
# `eval` must load the Python-written file and use its weights.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3 # Debian's h5py is built for the system interpreter only
$PY -c 'import h5py' 2>/dev/null || { echo "SKIP: h5py not importable by $PY"; exit 0; }
F=/usr/share/datasets/fashion-mnist
[ -f $F/train-images-idx3-ubyte.gz ] || { echo "SKIP: dataset-fashion-mnist not installed"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
CFG=$CNNB_SOURCE_DIR/jobs/lenet5.cfg

"$CNNB_BIN" import idx --images $F/train-images-idx3-ubyte.gz --labels $F/train-labels-idx1-ubyte.gz \
  --limit 512 -o train.h5 >/dev/null || fail "import train"
"$CNNB_BIN" import idx --images $F/t10k-images-idx3-ubyte.gz --labels $F/t10k-labels-idx1-ubyte.gz \
  --limit 1000 -o test.h5 >/dev/null || fail "import test"
out=$("$CNNB_BIN" train "$CFG" --data train.h5 --max-steps 3 --seed 5 -o ck.h5 2>&1) || fail "train: $out"
[ -f ck.h5 ] && [ ! -e ck.h5.tmp ] || fail "train left no complete checkpoint"
h5dump -H ck.h5 >h5dump.txt 2>&1 || fail "h5dump -H ck.h5: $(head -5 h5dump.txt)"
grep -q '"/layers/000_convolutional"\|GROUP "000_convolutional"' h5dump.txt || fail "h5dump shows no layer group"

# The file as documented: attributes, groups, dataset names, shapes, types, optimizer state.
CFG="$CFG" $PY - <<'PY' || fail "checkpoint layout"
import os, h5py, numpy as np
f = h5py.File("ck.h5", "r")
a = f.attrs
assert a["cnnb_schema"] == "cnnb-checkpoint", a["cnnb_schema"]
assert a["cnnb_version"] == 1 and a["cnnb_version"].dtype == np.int32
assert a["model_cfg"] == open(os.environ["CFG"]).read(), "model_cfg differs from the cfg file"
want_meta = dict(num_layers=8, epoch=0, step=3, epoch_step=3, images_seen=192, seed=5, world_size=1,
                 global_batch=64)
for k, v in want_meta.items():
    assert a[k] == v, (k, a[k], v)
for k in ("epoch", "step", "epoch_step", "images_seen", "seed"):
    assert a[k].dtype == np.int64, (k, a[k].dtype)
bn = lambda c: {"scales": (c,), "biases": (c,), "rolling_mean": (c,), "rolling_variance": (c,)}
want = {
    "000_convolutional": {"weights": (6, 1, 5, 5), **bn(6)},
    "001_maxpool": {},
    "002_convolutional": {"weights": (16, 6, 5, 5), **bn(16)},
    "003_maxpool": {},
    "004_connected": {"weights": (120, 400), "biases": (120,)},
    "005_connected": {"weights": (84, 120), "biases": (84,)},
    "006_connected": {"weights": (10, 84), "biases": (10,)},
    "007_softmax": {},
}
assert list(f["layers"].keys()) == list(want), list(f["layers"].keys())
ntrain = 0
for g, ds in want.items():
    got = {k: f["layers"][g][k].shape for k in f["layers"][g]}
    assert got == ds, (g, got, ds)
    for k in ds:
        assert f["layers"][g][k].dtype == np.float32, (g, k)
        if not k.startswith("rolling_"):
            ntrain += int(np.prod(ds[k]))
# Trained for 3 steps: BN running statistics have left their initial 0 / 1.
assert np.any(f["layers/000_convolutional/rolling_mean"][:] != 0)
o = f["optimizer"]
assert o.attrs["kind"] == "sgd" and o.attrs["t"] == 3, dict(o.attrs)
assert list(o.keys()) == ["m"] and o["m"].shape == (ntrain,) and o["m"].dtype == np.float32
assert ntrain == 61728, ntrain
# m is flat in the order of the trainable parameters: the last connected layer's biases are the
# last 10 values, and their momentum is non-zero after 3 steps.
assert np.all(o["m"][-10:] != 0)
print("layout ok:", ntrain, "trainable parameters")
PY

# The porting recipe of docs/FORMATS.md: tensors from "another framework" (here: read from
# ck.h5) written into a new file with the documented layout; the last layer's weights zeroed
# and its biases replaced.
CFG="$CFG" $PY - <<'PY' || fail "writing a checkpoint from Python"
import os, h5py, numpy as np
src = h5py.File("ck.h5", "r")
tensors = {f"{g}/{k}": src["layers"][g][k][:] for g in src["layers"] for k in src["layers"][g]}
tensors["006_connected/weights"] *= 0
# Distinct biases (3 steps of training leave them near 0, where any near-uniform output would
# give the same loss): the loss below then pins down exactly which tensors eval used.
tensors["006_connected/biases"] = np.linspace(-1.0, 1.5, 10, dtype=np.float32)[::-1].copy()
# --- the snippet of docs/FORMATS.md, as documented ---
cfg_text = open(os.environ["CFG"]).read()
layer_groups = ["000_convolutional", "001_maxpool", "002_convolutional", "003_maxpool",
                "004_connected", "005_connected", "006_connected", "007_softmax"]
with h5py.File("ported.h5.tmp", "w") as f:
    f.attrs["cnnb_schema"] = "cnnb-checkpoint"
    f.attrs["cnnb_version"] = np.int32(1)
    f.attrs["model_cfg"] = cfg_text
    f.attrs["num_layers"] = np.int32(len(layer_groups))
    for g in layer_groups:
        f.create_group(f"layers/{g}")
    for name, t in tensors.items():  # e.g. "000_convolutional/weights" -> (6, 1, 5, 5)
        f.create_dataset(f"layers/{name}", data=np.asarray(t, dtype=np.float32))
os.replace("ported.h5.tmp", "ported.h5")
# --- end of snippet ---
PY

out=$("$CNNB_BIN" eval "$CFG" --weights ported.h5 --data test.h5 2>&1) || fail "eval of the Python checkpoint: $out"
echo "$out"
loss=$(sed -n 's/^loss: //p' <<<"$out")
acc=$(sed -n 's/^accuracy: //p' <<<"$out")
# Zero last-layer weights: every image gets logits = biases, so one class for all (chance
# accuracy) and a loss that follows from the biases alone. Matching that loss shows the
# Python-written tensors were the ones used.
LOSS="$loss" ACC="$acc" $PY - <<'PY' || fail "eval did not use the Python-written weights: $out"
import os, h5py, numpy as np
b = h5py.File("ported.h5", "r")["layers/006_connected/biases"][:].astype(np.float64)
lab = h5py.File("test.h5", "r")["labels"][:]
logp = b - b.max() - np.log(np.exp(b - b.max()).sum())
want_loss, want_acc = -logp[lab].mean(), (lab == b.argmax()).mean()
loss, acc = float(os.environ["LOSS"]), float(os.environ["ACC"])
assert abs(loss - want_loss) < 2e-3, (loss, want_loss)
assert abs(acc - want_acc) < 1e-3 and acc < 0.2, (acc, want_acc)
print(f"ported checkpoint used: loss {loss} (expected {want_loss:.4f}), accuracy {acc} (chance)")
PY

# The unchanged tensors written the same way give exactly the trained network's results.
$PY - <<'PY' || fail "rewriting the checkpoint unchanged"
import h5py, numpy as np
with h5py.File("ck.h5", "r") as src, h5py.File("same.h5", "w") as f:
    for k in ("cnnb_schema", "cnnb_version", "model_cfg", "num_layers"):
        f.attrs[k] = src.attrs[k]
    for g in src["layers"]:
        f.create_group(f"layers/{g}")
        for k in src["layers"][g]:
            f.create_dataset(f"layers/{g}/{k}", data=src["layers"][g][k][:])
PY
a=$("$CNNB_BIN" eval "$CFG" --weights ck.h5 --data test.h5 2>&1) || fail "eval ck.h5: $a"
b=$("$CNNB_BIN" eval "$CFG" --weights same.h5 --data test.h5 2>&1) || fail "eval same.h5: $b"
[ "$a" = "$b" ] || fail "rewritten checkpoint evaluates differently: $a vs $b"
[ "$a" != "$out" ] || fail "zeroed weights made no difference"
echo "PASS"
