#!/usr/bin/env bash
# Data parallelism that does not change the result: the same seed and global batch give the
# same parameters and loss curve on 1, 2 and 4 ranks (a network without batch norm, whose
# statistics are per rank by design); training E epochs in one go equals training k epochs,
# stopping and resuming; SIGUSR1 makes every rank checkpoint and exit with code 3.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
F=/usr/share/datasets/fashion-mnist
PY=/usr/bin/python3
[ -f $F/train-images-idx3-ubyte.gz ] || { echo "SKIP: dataset-fashion-mnist not installed"; exit 0; }
$PY -c "import h5py" 2>/dev/null || { echo "SKIP: python3-h5py not installed"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"

"$CNNB_BIN" import idx --images $F/train-images-idx3-ubyte.gz --labels $F/train-labels-idx1-ubyte.gz \
  --limit 1200 -o train.h5 >/dev/null || fail "import"

cat > nobn.cfg <<'CFG'
[net]
height=28
width=28
channels=1
batch=24
learning_rate=0.02
momentum=0.9
decay=0.0005
[convolutional]
filters=6
size=5
stride=2
pad=1
activation=relu
[maxpool]
size=2
stride=2
[connected]
output=32
activation=tanh
[connected]
output=10
activation=linear
[softmax]
CFG

# 30 steps of a global batch of 24 (uneven over 4 ranks: 6 each; the last batch of the
# epoch, 1200 = 50 x 24, is whole) with one BLAS thread per rank.
for n in 1 2 4; do
  $MPIRUN -n $n "$CNNB_BIN" train nobn.cfg --data train.h5 --max-steps 30 --seed 7 --log-every 1 \
    --metrics m$n.csv -o ck$n.h5 >log$n.txt 2>&1 || fail "train on $n ranks: $(cat log$n.txt)"
done
$PY - <<'PY' || fail "1/2/4-rank results differ"
import h5py, numpy as np, csv
def params(p):
    out = []
    with h5py.File(p, "r") as f:
        f["layers"].visititems(lambda n, o: out.append(o[()].ravel()) if isinstance(o, h5py.Dataset) else None)
    return np.concatenate(out)
def losses(p):
    return np.array([float(r["loss"]) for r in csv.DictReader(open(p))])
p1 = params("ck1.h5")
l1 = losses("m1.csv")
assert len(l1) == 30, len(l1)
for n in (2, 4):
    pn, ln = params(f"ck{n}.h5"), losses(f"m{n}.csv")
    rel = np.abs(pn - p1).max() / np.abs(p1).max()
    dl = np.abs(ln - l1).max()
    print(f"{n} ranks: max relative parameter difference {rel:.2e}, max loss difference {dl:.2e}")
    assert rel < 1e-4, rel
    assert dl < 1e-4, dl
assert l1[-5:].mean() < l1[:5].mean(), "loss did not fall"
PY

# Augmentation (flip, crop with padding) is drawn per global batch position: still the same
# parameters on 1 and 2 ranks.
for n in 1 2; do
  $MPIRUN -n $n "$CNNB_BIN" train nobn.cfg --data train.h5 --max-steps 10 --seed 7 --flip --crop-pad 2 \
    --quiet -o aug$n.h5 >logaug$n.txt 2>&1 || fail "augmented train on $n ranks: $(cat logaug$n.txt)"
done
$PY -c "
import h5py, numpy as np
a = h5py.File('aug1.h5')['layers/000_convolutional/weights'][()]
b = h5py.File('aug2.h5')['layers/000_convolutional/weights'][()]
c = h5py.File('ck1.h5')['layers/000_convolutional/weights'][()]
rel = np.abs(a - b).max() / np.abs(a).max()
print(f'augmented 1 vs 2 ranks: {rel:.2e}')
assert rel < 1e-4, rel
" || fail "augmented runs differ between 1 and 2 ranks"

# Synchronised batch norm: with --sync-bn, LeNet-5 (batch norm in both convolutions) gives the
# same parameters, running statistics included, on 1 and 2 ranks.
for n in 1 2; do
  $MPIRUN -n $n "$CNNB_BIN" train $CNNB_SOURCE_DIR/jobs/lenet5.cfg --data train.h5 --max-steps 15 --seed 5 \
    --sync-bn --batch 32 --quiet -o bn$n.h5 >logbn$n.txt 2>&1 || fail "sync-bn train on $n ranks: $(cat logbn$n.txt)"
done
$PY - <<'PY' || fail "sync-bn results differ between 1 and 2 ranks"
import h5py, numpy as np
def load(p):
    out = {}
    with h5py.File(p, "r") as f:
        f["layers"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out
a, b = load("bn1.h5"), load("bn2.h5")
worst = max(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-6) for k in a)
print(f"sync-bn 1 vs 2 ranks: max relative difference {worst:.2e} over {len(a)} tensors")
assert worst < 1e-4, worst
assert any("rolling_mean" in k for k in a)
PY

# Exact resume: 2 epochs in one go == stopping after the first epoch's 19 steps (1200 / 64),
# then --resume to 2 (2 ranks, with BN: jobs/lenet5). The stop uses --max-steps, not
# --epochs 1, because the cosine schedule spans the requested epochs.
J=$CNNB_SOURCE_DIR/jobs
T="$MPIRUN -n 2 $CNNB_BIN train $J/lenet5.cfg --data train.h5 --batch 64 --seed 3 --quiet"
$T --epochs 2 -o full.h5 || fail "2 epochs"
$T --epochs 2 --max-steps 19 -o part.h5 || fail "1 epoch"
$T --epochs 2 --resume part.h5 -o part.h5 || fail "resume"
# Stopped by a signal mid-epoch, then resumed.
$MPIRUN -n 2 "$CNNB_BIN" train $J/lenet5.cfg --data train.h5 --batch 64 --seed 3 --epochs 2 \
  --log-every 1 -o sig.h5 > sig.log 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "step 5/" sig.log 2>/dev/null && break; sleep 0.1; done
pkill -USR1 -f "cnn-batch train $J/lenet5.cfg --data train.h5 --batch 64 --seed 3 --epochs 2 --log-every 1"
wait $pid
rc=$?
if [ $rc -eq 3 ]; then
  grep -q "stopped by signal" sig.log || fail "no stop message: $(cat sig.log)"
  $T --epochs 2 --resume sig.h5 -o sig.h5 || fail "resume after signal"
elif [ $rc -eq 0 ]; then
  echo "note: the run finished before the signal arrived"
else
  fail "signalled run exited $rc: $(cat sig.log)"
fi
$PY - <<'PY' || fail "resumed run differs"
import h5py, numpy as np
def load(p):
    out = {}
    with h5py.File(p, "r") as f:
        f["layers"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        meta = {k: int(f.attrs[k]) for k in ("epoch", "step", "epoch_step")}
    return out, meta
a, ma = load("full.h5")
for other in ("part.h5", "sig.h5"):
    b, mb = load(other)
    assert ma == mb, (ma, mb)
    for k in a:
        assert np.array_equal(a[k], b[k]), (other, k, np.abs(a[k] - b[k]).max())
    print(other, "identical to the uninterrupted run:", mb)
PY
echo "all ok"
