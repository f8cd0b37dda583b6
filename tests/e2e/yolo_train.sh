#!/usr/bin/env bash
# Detection training end to end on tiny generated scenes (tools/make_scenes, 48x48): a short
# training whose loss falls and whose mAP on its own images rises above an untrained network's,
# for a [yolo] and (loss only) a [region] head; 1 and 2 ranks giving the same parameters (no
# batch norm; flips and crops on); stop and --resume bit-identical to an uninterrupted run;
# eval --map equal on 1 and 2 ranks; and the bad inputs of detection training, each a
# one-line error naming the file and row.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"
"$CNNB_SOURCE_DIR/tools/make_scenes" -n 64 --size 48 --seed 3 -o scenes.h5 >/dev/null || fail "make_scenes"

cat > tiny.cfg <<'CFG'
[net]
height=48
width=48
channels=3
batch=16
learning_rate=0.01
burn_in=10
power=1
[convolutional]
filters=8
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=16
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=32
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=16
size=1
activation=linear
[yolo]
mask=0,1
anchors=10,10, 18,18
classes=3
num=2
CFG
T="$CNNB_BIN train tiny.cfg --optimizer adam"
D="--data scenes.h5"

# An untrained network's mAP (seeded initialisation, no step), then 40 epochs (160 steps):
# the loss per image falls to under a quarter of the first step's.
$T $D --max-steps 1 --lr 0 --quiet -o init.h5 >/dev/null 2>&1 || fail "train 0 steps"
m0=$("$CNNB_BIN" eval tiny.cfg --weights init.h5 --data scenes.h5 --map | sed -n 's/^mAP@0.5: //p')
out=$($MPIRUN -n 2 $T $D --epochs 40 --log-every 1 --metrics m.csv -o ck.h5 2>&1) || fail "train: $out"
$PY - <<'PY' || fail "the loss did not fall"
import csv
l = [float(r["loss"]) for r in csv.DictReader(open("m.csv"))]
first, last = l[0], sum(l[-10:]) / 10
print(f"loss per image: first step {first:.2f}, last 10 steps {last:.2f}")
assert len(l) == 160 and last < 0.25 * first, (len(l), first, last)
PY
m1=$("$CNNB_BIN" eval tiny.cfg --weights ck.h5 --data scenes.h5 --map | sed -n 's/^mAP@0.5: //p')
m2=$($MPIRUN -n 2 "$CNNB_BIN" eval tiny.cfg --weights ck.h5 --data scenes.h5 --map | sed -n 's/^mAP@0.5: //p')
echo "mAP@0.5 on the training scenes: untrained $m0, trained $m1 (2 ranks: $m2)"
[ -n "$m1" ] && [ "$m1" = "$m2" ] || fail "eval --map on 1 and 2 ranks: '$m1' vs '$m2'"
awk -v a="$m0" -v b="$m1" 'BEGIN { exit !(b > 5 * a) }' || fail "mAP $m1 (untrained $m0)"
# eval --map is detect (at its threshold) followed by map
"$CNNB_BIN" detect tiny.cfg --weights ck.h5 --data scenes.h5 --thresh 0.005 -o dets.h5 >/dev/null || fail "detect"
m3=$("$CNNB_BIN" map dets.h5 --data scenes.h5 | sed -n 's/^mAP@0.5: //p')
[ "$m3" = "$m1" ] || fail "detect + map gives $m3, eval --map $m1"

# The same network with a [region] (YOLOv2) head, anchors in 8-pixel grid cells: its loss falls too.
sed 's/^\[yolo\]$/[region]/; s/^mask=0,1$/softmax=1/; s/^anchors=10,10, 18,18$/anchors=1.25,1.25, 2.25,2.25/' \
  tiny.cfg > region.cfg
grep -q '^\[region\]' region.cfg || fail "region.cfg"
$MPIRUN -n 2 "$CNNB_BIN" train region.cfg $D --optimizer adam --epochs 15 --log-every 1 --metrics mr.csv --quiet \
  -o region.h5 >logr.txt 2>&1 || fail "train [region]: $(cat logr.txt)"
$PY - <<'PY' || fail "the [region] loss did not fall"
import csv
l = [float(r["loss"]) for r in csv.DictReader(open("mr.csv"))]
print(f"[region] loss per image: first step {l[0]:.2f}, last 10 steps {sum(l[-10:]) / 10:.2f}")
assert len(l) == 60 and sum(l[-10:]) / 10 < 0.4 * l[0]
PY
"$CNNB_BIN" eval region.cfg --weights region.h5 --data scenes.h5 --map | grep -q "^mAP@0.5: " || fail "eval --map [region]"

# 1 and 2 ranks: same parameters after 6 steps with flips and crops (drawn per global position).
for n in 1 2; do
  $MPIRUN -n $n $T $D --max-steps 6 --seed 7 --flip --crop-pad 3 --quiet -o r$n.h5 >log$n.txt 2>&1 ||
    fail "train on $n ranks: $(cat log$n.txt)"
done
# Stop after 5 steps of 2 epochs and resume (2 ranks): identical to the uninterrupted run.
R="$MPIRUN -n 2 $T $D --epochs 2 --seed 5 --flip --quiet"
$R -o full.h5 && $R --max-steps 5 -o part.h5 && $R --resume part.h5 -o part.h5 || fail "resume runs"
$PY - <<'PY' || fail "rank counts or resume differ"
import h5py, numpy as np
def params(p):
    out = []
    with h5py.File(p, "r") as f:
        f["layers"].visititems(lambda n, o: out.append(o[()].ravel()) if isinstance(o, h5py.Dataset) else None)
    return np.concatenate(out)
a, b = params("r1.h5"), params("r2.h5")
rel = np.abs(a - b).max() / np.abs(a).max()
print(f"1 vs 2 ranks: max relative parameter difference {rel:.2e}")
assert rel < 1e-4 and np.abs(a - params("init.h5")).max() > 0, rel
assert np.array_equal(params("full.h5"), params("part.h5")), "resumed run differs"
PY

# Bad inputs: no truths, a box outside its image, a class the model lacks; eval --map too.
$PY - <<'PY' || fail "writing bad sets"
import h5py, numpy as np, shutil
for name in ("notruth", "outside", "badclass"):
    shutil.copy("scenes.h5", name + ".h5")
with h5py.File("notruth.h5", "a") as f:
    del f["truth"], f["truth_offsets"]
with h5py.File("outside.h5", "a") as f:
    t = f["truth"]; t[3, 0] = 46; t[3, 2] = 10
with h5py.File("badclass.h5", "a") as f:
    f["truth"][5, 4] = 3
with h5py.File("classify.h5", "w") as f:  # a classification dataset file, not an image set
    f["images"] = np.zeros((4, 48, 48, 3), np.uint8); f["labels"] = np.zeros(4, np.int32)
PY
check() { # expected exit code, pattern, command...
  local want=$1 pat=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  [ $rc -eq "$want" ] || fail "$* exited $rc, not $want: $out"
  grep -q -- "$pat" <<<"$out" || fail "$*: message lacks '$pat': $out"
}
check 1 "notruth.h5: no dataset /truth" $T --data notruth.h5 --epochs 1 -o x.h5
check 1 "notruth.h5: no dataset /truth" $MPIRUN -n 2 $T --data notruth.h5 --epochs 1 -o x.h5
check 1 "outside.h5: /truth row 3 (image [0-9]*): box .* outside the 48 x 48 image" $T --data outside.h5 -o x.h5
check 1 "badclass.h5: /truth row 5 (image [0-9]*): class 3 is not one of the 3 classes of tiny.cfg" \
  $T --data badclass.h5 -o x.h5
check 1 "notruth.h5: no dataset /truth" "$CNNB_BIN" eval tiny.cfg --weights ck.h5 --data notruth.h5 --map
check 1 "classify.h5: not an image set .* tiny.cfg trains on boxes" $T --data classify.h5 -o x.h5
check 2 "needs MODEL.cfg, --weights and --data" "$CNNB_BIN" eval tiny.cfg --map --data scenes.h5
[ ! -e x.h5 ] && [ ! -e x.h5.tmp ] || fail "a failed run left x.h5"
echo "yolo_train e2e: ok"
