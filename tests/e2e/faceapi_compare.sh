#!/usr/bin/env bash
# faces against face-api.js: the six sample photos of @vladmandic/face-api and transformed
# copies made here (scaled, flipped, cropped wide and tall) go through `cnn-batch faces` and
# through face-api.js itself (tools/faceapi_ref.js, tfjs wasm backend); the same faces must be
# found, boxes within 1 pixel, scores within 1e-3, landmarks within 0.5 pixel, descriptors
# within 1e-3 (L2). The photos are decoded once (PIL/libjpeg) and stored as PNG, so that both
# sides see the same pixels: jpeg-js and libjpeg decode the same JPEG differently (up to 34 grey
# levels on sample1), which is not what this test is about. Then: 4 ranks give the bytes of
# 1 rank (5 photos in chunks of 2: not divisible, one rank idle), an interrupted run resumes
# without recomputing, and the bad inputs: an empty folder, a corrupt JPEG (a counted warning
# naming the file), a missing models directory, a model of the wrong kind.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3
CACHE=${CNNB_CACHE:-$HOME/.cache/cnnb}
PKG=$CACHE/npm/node_modules/@vladmandic/face-api
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK/photos" "$CNNB_WORK/empty" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"

expect_fail() { # WHAT PATTERN -- command...
  local what=$1 pat=$2; shift 3
  local err
  err=$("$@" 2>&1) && fail "$what: exited 0"
  grep -q -- "$pat" <<<"$err" || fail "$what: message lacks '$pat': $err"
  echo "ok: $what -> $(grep -m1 error <<<"$err")"
}

# ---- bad input that needs neither node nor the models
expect_fail "empty folder" "empty: no decodable JPEG or PNG" -- "$CNNB_BIN" import images --dir empty -o e.h5
[ ! -e e.h5 ] || fail "failed import left e.h5"
mkdir -p one && $PY - <<'PY' || fail "png"
import struct, zlib  # a grey 40 x 30 RGB PNG written with zlib only
w, h = 40, 30
raw = b"".join(b"\0" + bytes((128,)) * (3 * w) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open("one/grey.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                                 + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
"$CNNB_BIN" import images --dir one -o one.h5 >/dev/null 2>&1 || fail "import of one PNG"
expect_fail "missing models directory" "/no/such/models/face-detector-tiny.h5" -- \
  "$CNNB_BIN" faces --data one.h5 --models /no/such/models -o x.h5
expect_fail "input size not a multiple of 32" "multiple of 32" -- \
  "$CNNB_BIN" faces --data one.h5 --input-size 100 -o x.h5
[ ! -e x.h5 ] && [ ! -e x.h5.tmp ] || fail "a failed faces run left x.h5"

command -v node >/dev/null && [ -f "$PKG/demo/sample1.jpg" ] ||
  { echo "SKIP: node or face-api.js missing (tools/setup)"; exit 0; }
# the models converted here (tools/face-models does the same into the cache), so that the test
# neither depends on the cache nor races with another test writing it
mkdir -p models
conv() { "$CNNB_BIN" convert --from tfjs "$PKG/model/$2-weights_manifest.json" --model "$CNNB_SOURCE_DIR/jobs/$1.cfg" \
           -o "models/$1.h5" >/dev/null 2>&1 || fail "convert $2"; }
conv face-detector-tiny tiny_face_detector_model
conv face-landmarks68 face_landmark_68_model
conv face-descriptor-resnet34 face_recognition_model
MODELS=$PWD/models
$PY -c "import PIL, h5py, numpy" 2>/dev/null || { echo "SKIP: python3 PIL/h5py missing"; exit 0; }

# ---- the photos: six samples and four transformed copies, as PNG; one corrupt JPEG
$PY - "$PKG/demo" <<'PY' || fail "making the photos"
import sys
from PIL import Image
d = sys.argv[1]
s = [Image.open(f"{d}/sample{i}.jpg").convert("RGB") for i in range(1, 7)]
for i, im in enumerate(s):
    im.save(f"photos/s{i + 1}.png")
w, h = s[0].size
s[0].resize((int(w * 0.6), int(h * 0.6)), Image.BILINEAR).save("photos/t1-scaled.png")
s[1].transpose(Image.FLIP_LEFT_RIGHT).save("photos/t2-flipped.png")
w, h = s[2].size
s[2].crop((w // 5, h // 8, w - w // 10, h - h // 5)).save("photos/t3-cropped.png")
w, h = s[3].size
s[3].crop((100, 0, 1300, h)).save("photos/t4-tall.png")  # taller than wide: padding on x
PY
printf '\xff\xd8\xff\xe0garbage, not a JPEG stream' > photos/zz-corrupt.jpg
out=$("$CNNB_BIN" import images --dir photos -o photos.h5 --compress 0 2>&1) || fail "import: $out"
grep -q "image 10 (photos/zz-corrupt.jpg) skipped" <<<"$out" || fail "corrupt JPEG not reported by index and path: $out"
grep -q "10 images, 1 skipped" <<<"$out" || fail "import counts: $out"

# ---- face-api.js and faces
ls photos/*.png > list.txt
node "$CNNB_SOURCE_DIR/tools/faceapi_ref.js" -o ref.json $(cat list.txt) || fail "faceapi_ref.js"
out=$("$CNNB_BIN" faces --data photos.h5 --models models -o f1.h5 --batch 3 2>&1) || fail "faces: $out"
echo "$out"
$PY - <<'PY' || fail "faces and face-api.js disagree"
import json, h5py, numpy as np
ref = json.load(open("ref.json"))
f = h5py.File("f1.h5", "r")
paths = [p.decode() if isinstance(p, bytes) else p for p in h5py.File("photos.h5", "r")["paths"][:]]
off, box, score = f["offsets"][:], f["box"][:], f["score"][:]
lm, desc = f["landmarks"][:], f["descriptor"][:]
assert f.attrs["complete"] == 1 and f.attrs["schema"] in ("cnnb-faces", b"cnnb-faces")
def iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)
mx = dict(box=0.0, score=0.0, lm=0.0, desc=0.0)
nfaces, bad = 0, []
for p in ref["photos"]:
    i = paths.index(p["file"])
    ours = list(range(off[i], off[i + 1]))
    if len(ours) != len(p["faces"]):
        bad.append(f"{p['file']}: {len(ours)} faces, face-api.js {len(p['faces'])}")
        continue
    for r in p["faces"]:
        j = max(ours, key=lambda k: iou(box[k], r["box"]))
        ours.remove(j)
        nfaces += 1
        mx["box"] = max(mx["box"], float(np.abs(box[j] - np.array(r["box"])).max()))
        mx["score"] = max(mx["score"], abs(float(score[j]) - r["score"]))
        mx["lm"] = max(mx["lm"], float(np.abs(lm[j] - np.array(r["landmarks"])).max()))
        mx["desc"] = max(mx["desc"], float(np.linalg.norm(desc[j] - np.array(r["descriptor"]))))
print(f"faceapi_compare: {len(ref['photos'])} photos, {nfaces} faces; max |box| {mx['box']:.2e} px, "
      f"|score| {mx['score']:.2e}, |landmark| {mx['lm']:.2e} px, descriptor L2 {mx['desc']:.2e}")
assert not bad, bad
assert nfaces >= 20, nfaces
assert mx["box"] <= 1 and mx["score"] <= 1e-3 and mx["lm"] <= 0.5 and mx["desc"] <= 1e-3, mx
PY

# ---- a photo without a face (40 x 30 grey): a complete file with empty face datasets
out=$("$CNNB_BIN" faces --data one.h5 --models models -o none.h5 2>&1) || fail "faces on a faceless photo: $out"
grep -q "wrote none.h5: 0 faces in 1 photos" <<<"$out" || fail "faceless photo: $out"
$PY -c "
import h5py
f = h5py.File('none.h5', 'r')
assert f['descriptor'].shape == (0, 128) and f['landmarks'].shape == (0, 68, 2), f['descriptor'].shape
assert f['offsets'][:].tolist() == [0, 0] and f['image_size'][:].tolist() == [[30, 40]]
" || fail "faceless photo: layout"

# ---- a models directory whose landmark model is another net: an error naming the file
mkdir -p swapped
ln -s "$MODELS/face-detector-tiny.h5" swapped/face-detector-tiny.h5
ln -s "$MODELS/face-detector-tiny.h5" swapped/face-landmarks68.h5
ln -s "$MODELS/face-descriptor-resnet34.h5" swapped/face-descriptor-resnet34.h5
expect_fail "landmark model of the wrong kind" "swapped/face-landmarks68.h5: .* not 136 landmark coordinates" -- \
  "$CNNB_BIN" faces --data photos.h5 --models swapped -o x.h5
[ ! -e x.h5 ] || fail "a failed faces run left x.h5"

# ---- 4 ranks == 1 rank on five of the photos in chunks of 2 (3 chunks: one rank gets none);
# resuming after a failure at the output stage
mkdir -p sub && for p in s2 t1-scaled t2-flipped t3-cropped t4-tall; do ln -s "../photos/$p.png" sub/; done
"$CNNB_BIN" import images --dir sub -o sub.h5 --compress 0 >/dev/null 2>&1 || fail "import sub"
"$CNNB_BIN" faces --data sub.h5 --models models -o g1.h5 --batch 2 >log1 2>&1 || fail "faces 1 rank: $(cat log1)"
$MPIRUN -n 4 "$CNNB_BIN" faces --data sub.h5 --models models -o g4.h5 --batch 2 >log4 2>&1 ||
  fail "faces 4 ranks: $(cat log4)"
[ ! -e g4.h5.work ] || fail "work directory left after a complete run"
cmp_h5() {
  $PY - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert len(a["score"]) >= 10, len(a["score"])
for k in ["photo", "score", "box", "landmarks", "descriptor", "aligned", "offsets", "image_size"]:
    assert np.array_equal(a[k][:], b[k][:]), k
for k in ["detector_hash", "landmarks_hash", "descriptor_hash", "min_score", "input_size"]:
    assert a.attrs[k] == b.attrs[k], k
PY
}
cmp_h5 g1.h5 g4.h5 || fail "4 ranks differ from 1 rank"
mkdir r.h5.tmp
$MPIRUN -n 2 "$CNNB_BIN" faces --data sub.h5 --models models -o r.h5 --batch 2 >/dev/null 2>&1 &&
  fail "faces with an unwritable output succeeded"
[ "$(ls r.h5.work | wc -l)" = 3 ] || fail "finished chunks not kept for resuming: $(ls r.h5.work)"
rmdir r.h5.tmp
cp -r r.h5.work s.h5.work
out=$("$CNNB_BIN" faces --data sub.h5 --models models -o r.h5 --batch 2 2>&1) || fail "resume: $out"
grep -q "(0 computed, 5 resumed" <<<"$out" || fail "resume recomputed: $out"
cmp_h5 g1.h5 r.h5 || fail "resumed result differs"
# another threshold: the saved chunks of the first run do not apply
out=$("$CNNB_BIN" faces --data sub.h5 --models models -o s.h5 --batch 2 --min-score 0.99 2>&1) || fail "$out"
grep -q "(5 computed, 0 resumed" <<<"$out" || fail "chunks of another run reused: $out"
echo "faceapi_compare e2e: ok"
