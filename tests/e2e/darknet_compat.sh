#!/usr/bin/env bash
# Darknet compatibility: Debian's yolov3-tiny.cfg and yolov2-tiny.cfg with a seeded weights file
# written by `cnn-batch convert --init`, run by cnn-batch detect and by Darknet itself
# (tools/darknet_ref.c on Debian's libdarknet) on Debian's sample photos: every box of one has
# a partner of the same class in the other within one pixel, scores within 1e-3. The gains and
# thresholds give a few hundred to a few thousand boxes with scores well spread.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
CFG=/usr/share/darknet/cfg DATA=/usr/share/darknet/data PY=/usr/bin/python3
REF=$(dirname "$CNNB_BIN")/darknet_ref
[ -x "$REF" ] || { echo "SKIP: darknet_ref not built (Debian package darknet missing)"; exit 0; }
[ -f $CFG/yolov3-tiny.cfg ] && [ -f $CFG/yolov2-tiny.cfg ] || { echo "SKIP: darknet cfgs missing"; exit 0; }
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK/photos" && cd "$CNNB_WORK" || fail "work dir"
cp $DATA/*.jpg photos/ || fail "no sample photos in $DATA"
"$CNNB_BIN" import images --dir photos -o photos.h5 >/dev/null || fail "import images"

compare() { # MODEL GAIN THRESH
  local m=$1 g=$2 t=$3
  "$CNNB_BIN" convert --init $CFG/$m.cfg --seed 2 --gain $g -o $m.weights >/dev/null 2>&1 || fail "$m: convert --init"
  "$CNNB_BIN" detect $CFG/$m.cfg --weights $m.weights --data photos.h5 --thresh $t --nms 0.45 -o $m.h5 \
    >/dev/null 2>detect.err || fail "$m: detect: $(grep -v warning detect.err)"
  "$REF" $CFG/$m.cfg $m.weights $t 0.45 photos/*.jpg 2>/dev/null >$m.ref || fail "$m: darknet_ref"
  local out
  out=$($PY "$CNNB_SOURCE_DIR/tests/e2e/darknet_compare.py" $m.h5 $m.ref $t 1.0 1e-3) || fail "$m: $out"
  echo "$m: $(tail -1 <<<"$out")"
}
compare yolov3-tiny 0.25 0.5
compare yolov2-tiny 2 0.45
