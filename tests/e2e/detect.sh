#!/usr/bin/env bash
# Bulk detection: import images (JPEG, PNG, an undecodable file reported and skipped), convert
# (.weights -> checkpoint -> .weights gives the same bytes), detect on 1 and 4 ranks (same
# result), resuming after a failure at the output stage, and the bad inputs of the issue: a
# weights file of the wrong size (both sizes named), a cfg whose yolo mask does not fit its
# anchors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
CFG=/usr/share/darknet/cfg/yolov3-tiny.cfg DATA=/usr/share/darknet/data PY=/usr/bin/python3
[ -f $CFG ] && ls $DATA/*.jpg >/dev/null 2>&1 || { echo "SKIP: darknet cfgs or sample photos missing"; exit 0; }
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK/photos" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"
cp $DATA/dog.jpg $DATA/eagle.jpg $DATA/person.jpg photos/
echo "not a photo" > photos/broken.jpg
# an RGB PNG of 40 x 30 written with zlib only
$PY - <<'PY' || fail "png"
import struct, zlib
w, h = 40, 30
raw = b"".join(b"\0" + b"".join(bytes((x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256)) for x in range(w)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open("photos/grad.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                                    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
out=$("$CNNB_BIN" import images --dir photos -o imgs.h5 2>&1) || fail "import images: $out"
grep -q "image 0 (photos/broken.jpg) skipped" <<<"$out" || fail "undecodable photo not reported by index and path: $out"
grep -q "4 images, 1 skipped" <<<"$out" || fail "import counts: $out"
$PY - <<'PY' || fail "image set layout"
import h5py
f = h5py.File("imgs.h5", "r")
s, o = f["shapes"][:], f["offsets"][:]
assert [p.decode() if isinstance(p, bytes) else p for p in f["paths"][:]] == \
    ["photos/dog.jpg", "photos/eagle.jpg", "photos/grad.png", "photos/person.jpg"]
assert s[2].tolist() == [30, 40, 3], s
px = f["pixels"][o[2]:o[2] + 30 * 40 * 3].reshape(30, 40, 3)
assert px[1, 2].tolist() == [12, 8, 9], px[1, 2]
assert f.attrs["skipped"] == 1
PY

# convert: seeded weights -> checkpoint -> weights gives back the same bytes
"$CNNB_BIN" convert --init $CFG --seed 3 --gain 0.25 -o w.weights >/dev/null 2>&1 || fail "convert --init"
"$CNNB_BIN" convert $CFG w.weights -o w.h5 >/dev/null 2>&1 || fail "convert weights -> checkpoint"
"$CNNB_BIN" convert $CFG w.h5 -o back.weights >/dev/null 2>&1 || fail "convert checkpoint -> weights"
cmp -s w.weights back.weights || fail "weights -> checkpoint -> weights changed the bytes"

# detect on 1 and 4 ranks (batch 1: four chunks over four ranks), Darknet weights and checkpoint
"$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1 \
  --names $DATA/coco.names -o d1.h5 >log1 2>&1 || fail "detect 1 rank: $(grep -v warning log1)"
$MPIRUN -n 4 "$CNNB_BIN" detect $CFG --weights w.h5 --data imgs.h5 --thresh 0.45 --batch 1 \
  --names $DATA/coco.names -o d4.h5 >log4 2>&1 || fail "detect 4 ranks: $(grep -v warning log4)"
[ ! -e d4.h5.work ] || fail "work directory left after a complete run"
$PY - <<'PY' || fail "1 rank vs 4 ranks"
import h5py, numpy as np
a, b = h5py.File("d1.h5", "r"), h5py.File("d4.h5", "r")
for k in ["image", "class", "score", "box", "offsets", "image_size"]:
    assert np.array_equal(a[k][:], b[k][:]), k
o = a["offsets"][:]
assert len(o) == 5 and o[-1] == len(a["score"]) > 0, o
assert (a["image"][:] == np.repeat(np.arange(4), np.diff(o))).all()
names = a.attrs["class_names"]
names = names.decode() if isinstance(names, bytes) else names
assert names.split(",")[:3] == ["person", "bicycle", "car"], names[:40]
assert a["image_size"][2].tolist() == [30, 40]
print("boxes", len(a["score"]), "per image", np.diff(o).tolist())
PY

# resume: the output stage fails (PATH.tmp is a directory), the chunks stay in d.h5.work and a
# rerun computes nothing again, with the same result
mkdir d.h5.tmp
$MPIRUN -n 2 "$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1 \
  --names $DATA/coco.names -o d.h5 >/dev/null 2>&1 && fail "detect with an unwritable output succeeded"
[ "$(ls d.h5.work | wc -l)" = 4 ] || fail "finished chunks not kept for resuming: $(ls d.h5.work)"
rmdir d.h5.tmp
out=$("$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1 \
  --names $DATA/coco.names -o d.h5 2>&1) || fail "resume: $out"
grep -q "(0 computed, 4 resumed)" <<<"$out" || fail "resume recomputed: $out"
$PY -c "
import h5py, numpy as np
a, b = h5py.File('d1.h5', 'r'), h5py.File('d.h5', 'r')
assert all(np.array_equal(a[k][:], b[k][:]) for k in ['image', 'class', 'score', 'box', 'offsets'])
" || fail "resumed result differs"
# other thresholds: the saved chunks do not apply
out=$("$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.5 --batch 1 -o e.h5 2>&1) || fail "$out"
grep -q "(4 computed, 0 resumed)" <<<"$out" || fail "chunks of another run reused: $out"

# ---- bad input
expect_fail() { # WHAT PATTERN -- command...
  local what=$1 pat=$2; shift 3
  local err
  err=$("$@" 2>&1) && fail "$what: exited 0"
  grep -q -- "$pat" <<<"$err" || fail "$what: message lacks '$pat': $err"
  echo "ok: $what -> $(grep -m1 error <<<"$err")"
}
size=$(stat -c %s w.weights)
head -c $((size - 8)) w.weights > short.weights
expect_fail "weights file too short" "$((size - 8)) bytes, but .* needs $size" -- \
  "$CNNB_BIN" detect $CFG --weights short.weights --data imgs.h5 -o x.h5
cat w.weights w.weights > long.weights
expect_fail "weights file too long" "$((2 * size)) bytes, but .* needs $size" -- \
  "$CNNB_BIN" convert $CFG long.weights -o x.h5
[ ! -e x.h5 ] || fail "a failed convert left x.h5"
sed 's/^mask = 3,4,5/mask = 3,4,6/' $CFG > badmask.cfg
expect_fail "yolo mask outside the anchors" "badmask.cfg:.*mask entry 6 outside \[0, num=6)" -- \
  "$CNNB_BIN" detect badmask.cfg --weights w.weights --data imgs.h5 -o x.h5
sed 's/^anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319/anchors = 10,14,  23,27,  37,58/' $CFG > badanch.cfg
expect_fail "yolo anchors fewer than num" "badanch.cfg:.*6 anchor values, expected 2 x num = 12" -- \
  "$CNNB_BIN" detect badanch.cfg --weights w.weights --data imgs.h5 -o x.h5
expect_fail "not a detection model" "not a detection model" -- \
  "$CNNB_BIN" detect "$CNNB_SOURCE_DIR/jobs/lenet5.cfg" --weights w.weights --data imgs.h5 -o x.h5
mkdir -p empty && echo "x" > empty/a.png
expect_fail "no decodable photo" "no decodable JPEG or PNG" -- "$CNNB_BIN" import images --dir empty -o y.h5
[ ! -e y.h5 ] && [ ! -e y.h5.tmp ] || fail "failed import left a file"
echo "detect e2e: ok"
