#!/usr/bin/env bash
# tools/make_scenes writes an image set with truth boxes that detect reads; cnn-batch map gives
# AP 1 to detections equal to the truths, and AP = kept fraction to a class with half of its
# truths dropped (all scores 1, so precision stays 1).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
"$CNNB_SOURCE_DIR/tools/make_scenes" -n 20 --size 96 --seed 4 -o scenes.h5 >/dev/null || fail "make_scenes"
$PY - <<'PY' || fail "fake detections"
import h5py, numpy as np
f = h5py.File("scenes.h5", "r"); t = f["truth"][:]; o = f["truth_offsets"][:]
assert len(o) == 21 and o[-1] == len(t) > 20 and set(t[:, 4].astype(int)) == {0, 1, 2}
def write(name, keep):
    rows = [(i, r) for i in range(len(o) - 1) for r in range(o[i], o[i + 1]) if keep(r)]
    with h5py.File(name, "w") as g:
        cnt = np.bincount([i for i, _ in rows], minlength=len(o) - 1)
        g["offsets"] = np.concatenate([[0], np.cumsum(cnt)]).astype(np.int64)
        g["class"] = np.array([int(t[r, 4]) for _, r in rows], np.int64)
        g["score"] = np.ones(len(rows), np.float32)
        g["box"] = np.array([t[r, :4] for _, r in rows], np.float32).reshape(-1, 4)
c0 = set(np.flatnonzero(t[:, 4] == 0)[::2])
write("perfect.h5", lambda r: True)
write("half0.h5", lambda r: r not in c0)
n0 = int((t[:, 4] == 0).sum())
open("want", "w").write("%.4f\n" % ((n0 - len(c0)) / n0))
PY
out=$("$CNNB_BIN" map perfect.h5 --data scenes.h5 2>&1) || fail "map: $out"
grep -q "^mAP@0.5: 1.0000" <<<"$out" || fail "perfect detections: $out"
out=$("$CNNB_BIN" map half0.h5 --data scenes.h5 2>&1) || fail "map: $out"
grep -q "^class 0 AP: $(cat want)" <<<"$out" || fail "half of class 0: want $(cat want): $out"
# detect runs on the generated set (its layout is the importer's)
"$CNNB_BIN" convert --init /usr/share/darknet/cfg/yolov3-tiny.cfg --seed 1 --gain 0.25 -o w.weights >/dev/null 2>&1 &&
  { "$CNNB_BIN" detect /usr/share/darknet/cfg/yolov3-tiny.cfg --weights w.weights --data scenes.h5 --thresh 0.45 \
      -o d.h5 >/dev/null 2>&1 || fail "detect on scenes"; "$CNNB_BIN" map d.h5 --data scenes.h5 >/dev/null || fail "map of detect"; }
out=$("$CNNB_BIN" map perfect.h5 --data perfect.h5 2>&1) && fail "map without truths exited 0"
grep -q "no dataset /truth_offsets" <<<"$out" || fail "message: $out"
echo "map e2e: ok"
