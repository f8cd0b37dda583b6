#!/usr/bin/env bash
# Whole commands on real data: import a Fashion-MNIST subset, train LeNet-5 on 2 MPI ranks,
# evaluate, predict, and every bad input of the foundation issue with its one-line error.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
F=/usr/share/datasets/fashion-mnist
[ -f $F/train-images-idx3-ubyte.gz ] || { echo "SKIP: dataset-fashion-mnist not installed"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
J=$CNNB_SOURCE_DIR/jobs
MPIRUN="mpirun -n 2 --oversubscribe"
PY=/usr/bin/python3

"$CNNB_BIN" import idx --images $F/train-images-idx3-ubyte.gz --labels $F/train-labels-idx1-ubyte.gz \
  --limit 8000 -o train.h5 >/dev/null || fail "import train"
"$CNNB_BIN" import idx --images $F/t10k-images-idx3-ubyte.gz --labels $F/t10k-labels-idx1-ubyte.gz \
  --limit 2000 -o test.h5 >/dev/null || fail "import test"

# Train 2 epochs on 8,000 images over 2 ranks: far above chance (10%) on unseen images.
out=$($MPIRUN "$CNNB_BIN" train $J/lenet5.cfg --data train.h5 --val test.h5 --epochs 2 -o ck.h5 --log-every 1000 \
  --metrics metrics.csv 2>&1) || fail "train: $out"
grep -q "epoch 2 validation" <<<"$out" || fail "no validation line: $out"
out=$("$CNNB_BIN" eval $J/lenet5.cfg --weights ck.h5 --data test.h5 2>&1) || fail "eval: $out"
acc=$(sed -n 's/^accuracy: //p' <<<"$out")
awk -v a="$acc" 'BEGIN { exit !(a >= 0.75) }' || fail "accuracy $acc < 0.75 after 2 epochs on 8000 images"
echo "accuracy after 2 epochs on 8000 images: $acc"
# The same evaluation on 2 ranks gives the same figure.
out2=$($MPIRUN "$CNNB_BIN" eval $J/lenet5.cfg --weights ck.h5 --data test.h5 2>&1) || fail "eval -n 2: $out2"
[ "$(sed -n 's/^accuracy: //p' <<<"$out2")" = "$acc" ] || fail "eval on 2 ranks differs: $out2 vs $out"
[ "$(wc -l < metrics.csv)" -ge 3 ] || fail "metrics.csv has too few rows"

# predict on 2 ranks writes N x 10 probabilities and the row indices into one file.
$MPIRUN "$CNNB_BIN" predict $J/lenet5.cfg --weights ck.h5 --data test.h5 -o pred.h5 >/dev/null 2>&1 || fail "predict"
[ -f pred.h5 ] && [ ! -f pred.h5.tmp ] || fail "predict left no complete file"
if $PY -c "import h5py" 2>/dev/null; then
  $PY - <<'PY' || fail "predict output"
import h5py, numpy as np
f = h5py.File("pred.h5", "r")
y, i = f["outputs"][:], f["indices"][:]
assert y.shape == (2000, 10) and y.dtype == np.float32, y.shape
assert (i == np.arange(2000)).all()
assert np.allclose(y.sum(1), 1, atol=1e-4)
assert f.attrs["complete"] == 1
lab = h5py.File("test.h5", "r")["labels"][:]
acc = (y.argmax(1) == lab).mean()
assert acc >= 0.75, acc
print("predict accuracy", acc)
PY
fi

# ---- bad input: a one-line error naming the file, a non-zero exit, no output left behind
expect_fail() { # expect_fail WHAT PATTERN OUTFILE -- command...
  local what=$1 pat=$2 outf=$3; shift 4
  local err
  err=$("$@" 2>&1) && fail "$what: exited 0"
  grep -q -- "$pat" <<<"$err" || fail "$what: message lacks '$pat': $err"
  [ -z "$outf" ] || [ ! -e "$outf" ] || fail "$what: left $outf behind"
  [ -z "$outf" ] || [ ! -e "$outf.tmp" ] || fail "$what: left $outf.tmp behind"
  echo "ok: $what -> $(grep -m1 error <<<"$err")"
}
T="$CNNB_BIN train $J/lenet5.cfg --epochs 1 --limit 256"
expect_fail "missing data file" "nothere.h5" o1.h5 -- $T --data nothere.h5 -o o1.h5
echo "not hdf5" > text.h5
expect_fail "not an HDF5 file" "text.h5: not an HDF5 file" o2.h5 -- $T --data text.h5 -o o2.h5
expect_fail "missing dataset" "no dataset '/pixels'" o3.h5 -- $T --data train.h5 --images-name pixels -o o3.h5
if $PY -c "import h5py" 2>/dev/null; then
  $PY -c "
import h5py, numpy as np
with h5py.File('mismatch.h5', 'w') as f:
    f['images'] = np.zeros((10, 28, 28, 1), np.uint8); f['labels'] = np.zeros(9, np.int32)
with h5py.File('biglabel.h5', 'w') as f:
    f['images'] = np.zeros((10, 28, 28, 1), np.uint8); f['labels'] = np.array([0]*9 + [12], np.int32)
"
  expect_fail "image/label counts differ" "mismatch.h5.*10 images.*9 labels" o4.h5 -- $T --data mismatch.h5 -o o4.h5
  expect_fail "label outside the classes" "biglabel.h5: label 12 of image 9" o5.h5 -- $T --data biglabel.h5 -o o5.h5
fi
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[convolutional]\nfilters=4\nsize=31\nactivation=relu\n[softmax]\n' > big.cfg
expect_fail "filter larger than its input" "big.cfg:5: layer 0 \[convolutional\]" o6.h5 -- \
  "$CNNB_BIN" train big.cfg --data train.h5 -o o6.h5
printf '[net]\nheight=28\nwidth=28\nchannels=1\n[convolutional]\nfilters=4\nsize=3\nfliters=3\n[softmax]\n' > key.cfg
expect_fail "unknown cfg key" "key.cfg:8: unknown key 'fliters'" o7.h5 -- "$CNNB_BIN" train key.cfg --data train.h5 -o o7.h5
sed 's/^filters=6$/filters=8/' $J/lenet5.cfg > other.cfg
grep -q "filters=8" other.cfg || fail "could not make other.cfg"
expect_fail "checkpoint of a different model" "ck.h5: '/layers/000_convolutional/weights' is 6x1x5x5 in the checkpoint but 8x1x5x5" "" -- \
  "$CNNB_BIN" eval other.cfg --weights ck.h5 --data test.h5
expect_fail "predict with a missing checkpoint" "nockpt.h5: no such file" p1.h5 -- \
  "$CNNB_BIN" predict $J/lenet5.cfg --weights nockpt.h5 --data test.h5 -o p1.h5
expect_fail "wrong image size" "images are 28x28x1 but model" o8.h5 -- \
  "$CNNB_BIN" train $J/lenet5-notes.cfg --data train.h5 -o o8.h5
echo "all ok"
