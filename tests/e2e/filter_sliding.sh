#!/usr/bin/env bash
# The filter command and predict --sliding / --layer as whole programs on 2 ranks: results
# checked against NumPy and against the classifier run crop by crop, and their bad inputs (a
# kernel file of the wrong shape, a classifier with global average pooling), each a clear
# message, exit status 1 and no output file.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3 # Debian's h5py is built for the system interpreter only
$PY -c 'import h5py, numpy' 2>/dev/null || { echo "SKIP: h5py not importable by $PY"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun -n 2 --oversubscribe"

$PY - <<'PY' || fail "make data"
import h5py, numpy as np
rs = np.random.RandomState(0)
with h5py.File("rgb.h5", "w") as f:  # 5 images: rows split 3 + 2 over the ranks
    f.create_dataset("images", data=rs.randint(0, 256, (5, 9, 11, 3)).astype(np.uint8))
with h5py.File("train.h5", "w") as f:
    f.create_dataset("images", data=rs.randint(0, 256, (64, 12, 12, 1)).astype(np.uint8))
    f.create_dataset("labels", data=rs.randint(0, 4, 64).astype(np.int32))
with h5py.File("big.h5", "w") as f:
    f.create_dataset("images", data=rs.randint(0, 256, (3, 24, 20, 1)).astype(np.uint8))
PY

# ---- filter: sobel, stride 2, padding 1, per channel, against NumPy ----
out=$($MPIRUN "$CNNB_BIN" filter --kernel sobel --data rgb.h5 --stride 2 --pad 1 -o sobel.h5 --png png 2>&1) \
  || fail "filter: $out"
echo "$out"
$PY - <<'PY' || fail "filter output differs from NumPy"
import h5py, numpy as np
k = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
x = h5py.File("rgb.h5", "r")["images"][:].astype(np.float64)
n, h, w, c = x.shape
p = np.zeros((n, h + 2, w + 2, c)); p[:, 1:-1, 1:-1] = x
oh, ow = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
ref = np.zeros((n, oh, ow, c))
for i in range(oh):
    for j in range(ow):
        ref[:, i, j] = np.einsum("nabc,ab->nc", p[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], k)
with h5py.File("sobel.h5", "r") as f:
    assert f.attrs["complete"] == 1 and f.attrs["stride"] == 2 and f.attrs["padding"] == 1
    y = f["filtered"][:]
assert y.shape == ref.shape == (5, 5, 6, 3), (y.shape, ref.shape)
assert np.abs(y - ref).max() < 1e-3, np.abs(y - ref).max()
PY
[ "$(ls png | wc -l)" = 5 ] || fail "expected 5 PNG files, got: $(ls png)"

printf '1 2 1\n0 0\n-1 -2 -1\n' > bad.kernel
out=$($MPIRUN "$CNNB_BIN" filter --kernel bad.kernel --data rgb.h5 -o bad.h5 2>&1) && fail "a bad kernel file was accepted"
echo "$out" | grep -q "bad.kernel:2: row 2 has 2 numbers but row 1 has 3" || fail "bad kernel message: $out"
[ ! -e bad.h5 ] && [ ! -e bad.h5.tmp ] || fail "a failed filter left an output file"

# ---- predict --sliding: a briefly trained classifier, score maps vs crop by crop ----
cat > cls.cfg <<'CFG'
[net]
height=12
width=12
channels=1
batch=16
[convolutional]
filters=4
size=3
activation=relu
[maxpool]
size=2
stride=2
[connected]
output=8
activation=relu
[connected]
output=4
activation=linear
[softmax]
CFG
out=$("$CNNB_BIN" train cls.cfg --data train.h5 --max-steps 3 -o cls.h5 2>&1) || fail "train: $out"
out=$($MPIRUN "$CNNB_BIN" predict cls.cfg --weights cls.h5 --data big.h5 --sliding -o map.h5 2>&1) || fail "sliding: $out"
echo "$out"
out=$($MPIRUN "$CNNB_BIN" predict cls.cfg --weights cls.h5 --data big.h5 --sliding --crops -o crops.h5 2>&1) \
  || fail "sliding --crops: $out"
echo "$out"
$PY - <<'PY' || fail "score maps"
import h5py, numpy as np
a, b = h5py.File("map.h5", "r"), h5py.File("crops.h5", "r")
s, r = a["scores"][:], b["scores"][:]
# 24x20 images, 12x12 windows at stride 2: 7 x 5 positions of 4 classes
assert s.shape == r.shape == (3, 7, 5, 4), (s.shape, r.shape)
assert a["scores"].attrs["stride"] == 2 and a["scores"].attrs["window_height"] == 12
assert np.allclose(s.sum(-1), 1, atol=1e-5), "softmax per position"
d = np.abs(s - r).max()
print(f"max |sliding - crops| = {d:.2e}")
assert d <= 1e-5, d
PY

# --layer: the first convolution's activations (N x C x H x W) of the classifier's own input size
$PY -c '
import h5py, numpy as np
with h5py.File("small.h5", "w") as f:
    f.create_dataset("images", data=np.random.RandomState(2).randint(0, 256, (3, 12, 12, 1)).astype(np.uint8))'
out=$($MPIRUN "$CNNB_BIN" predict cls.cfg --weights cls.h5 --data small.h5 --layer 0 -o l0.h5 2>&1) || fail "--layer: $out"
$PY -c '
import h5py
f = h5py.File("l0.h5", "r"); assert f["activations"].shape == (3, 4, 10, 10), f["activations"].shape' || fail "--layer shape"

# a classifier that cannot run convolutionally
sed 's/^\[maxpool\]$/[avgpool]/; /^size=2$/d; /^stride=2$/d' cls.cfg > gap.cfg
out=$("$CNNB_BIN" predict gap.cfg --weights cls.h5 --data big.h5 --sliding -o gap.h5 2>&1) && fail "global pooling accepted"
echo "$out" | grep -q "gap.cfg:.*layer 1 \[avgpool\] is a global average pooling" || fail "global pooling message: $out"
[ ! -e gap.h5 ] || fail "a refused sliding run left an output file"
echo "PASS"
