#!/usr/bin/env bash
# face-api.js's three pretrained networks imported with `convert --from tfjs` (jobs/face-*.cfg)
# agree with face-api.js itself at tensor level: tools/faceapi_nets.js runs the detector,
# landmark and descriptor nets of the npm package (tfjs, wasm backend) on uint8 inputs made
# from the package's sample photos and face crops, and `cnn-batch predict` (detector on 2
# ranks) runs the converted models on the same uint8 inputs; the detector also at 320x320.
# Raw outputs must agree within 1e-4 of the largest reference value (measured: about 1e-6),
# the detector's [region] output with face-api.js's sigmoid within 1e-5. Then the converter's
# bad inputs: a truncated shard (named, with both sizes), a model that does not fit the
# manifest (tensor and both shapes), a missing --model or unknown --from (usage, exit 2).
# Needs node and the npm package (tools/setup installs both).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3
CACHE=${CNNB_CACHE:-$HOME/.cache/cnnb}
PKG="$CACHE/npm/node_modules/@vladmandic/face-api"
command -v node >/dev/null || { echo "SKIP: node missing (tools/setup installs nodejs)"; exit 0; }
[ -f "$PKG/model/tiny_face_detector_model-weights_manifest.json" ] && [ -d "$CACHE/npm/node_modules/@tensorflow/tfjs-backend-wasm" ] ||
  { echo "SKIP: face-api.js npm package missing in $CACHE/npm (tools/setup installs it)"; exit 0; }
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
J="$CNNB_SOURCE_DIR/jobs" M="$PKG/model"
MPIRUN="mpirun --oversubscribe"

conv() { "$CNNB_BIN" convert --from tfjs "$M/$2-weights_manifest.json" --model "$J/$1.cfg" -o "$1.h5"; }
conv face-detector-tiny tiny_face_detector_model >/dev/null || fail "convert detector"
conv face-landmarks68 face_landmark_68_model >/dev/null || fail "convert landmarks"
conv face-descriptor-resnet34 face_recognition_model >/dev/null || fail "convert descriptor"

out=$(node "$CNNB_SOURCE_DIR/tools/faceapi_nets.js" -o ref --input-size 416 --max-faces 2 \
  "$PKG/demo/sample1.jpg" "$PKG/demo/sample2.jpg" "$PKG/demo/sample3.jpg" 2>&1) || fail "face-api.js reference: $out"
echo "$out"
$PY - <<'PY' || fail "input sets"
import h5py, json, numpy as np
S = json.load(open("ref/meta.json"))["input_size"]
for name, s in (("detector", S), ("landmarks", 112), ("descriptor", 150)):
    x = np.fromfile("ref/%s.u8" % name, np.uint8).reshape(-1, s, s, 3)
    assert len(x) > 0, name
    with h5py.File("%s_in.h5" % name, "w") as f:
        f.create_dataset("images", data=x)
PY
run() { out=$("$@" 2>&1) || fail "$*: $out"; }
run $MPIRUN -n 2 "$CNNB_BIN" predict "$J/face-detector-tiny.cfg" --weights face-detector-tiny.h5 --data detector_in.h5 -o det.h5
run $MPIRUN -n 2 "$CNNB_BIN" predict "$J/face-detector-tiny.cfg" --weights face-detector-tiny.h5 --data detector_in.h5 \
  --layer 17 -o det_raw.h5
run "$CNNB_BIN" predict "$J/face-landmarks68.cfg" --weights face-landmarks68.h5 --data landmarks_in.h5 -o lm.h5
run "$CNNB_BIN" predict "$J/face-descriptor-resnet34.cfg" --weights face-descriptor-resnet34.h5 --data descriptor_in.h5 -o desc.h5

$PY - <<'PY' || fail "agreement with face-api.js"
import h5py, numpy as np
ok = True
def check(name, ours, ref, tol_rel):
    global ok
    d = np.abs(ours.astype(np.float64) - ref)
    rel = d.max() / np.abs(ref).max()
    print("%-28s max |diff| %.3g, %.3g of max |ref| %.3g (%d values)" % (name, d.max(), rel, np.abs(ref).max(), ref.size))
    if not rel <= tol_rel:
        print("  FAILED: over %g" % tol_rel); ok = False
raw = np.fromfile("ref/detector.f32", np.float32).astype(np.float64)
n = h5py.File("detector_in.h5")["images"].shape[0]
g = int(round((raw.size / n / 25) ** 0.5))
ref = raw.reshape(n, g, g, 25)
check("detector conv8 (raw)", h5py.File("det_raw.h5")["activations"][:].transpose(0, 2, 3, 1), ref, 1e-4)
r = ref.reshape(n, g, g, 5, 5).copy()
for k in (0, 1, 4):
    r[..., k] = 1 / (1 + np.exp(-r[..., k]))
ours = h5py.File("det.h5")["outputs"][:].reshape(n, 5, 5, g, g).transpose(0, 3, 4, 1, 2)
d = np.abs(ours - r).max()
print("%-28s max |diff| %.3g" % ("detector region (sigmoid)", d))
ok = ok and d <= 1e-5
check("landmarks fc (136)", h5py.File("lm.h5")["outputs"][:], np.fromfile("ref/landmarks.f32", np.float32).reshape(-1, 136), 1e-4)
desc = np.fromfile("ref/descriptor.f32", np.float32).reshape(-1, 128)
ours = h5py.File("desc.h5")["outputs"][:]
check("descriptor (128)", ours, desc, 1e-4)
print("%-28s max L2 distance %.3g" % ("descriptor", np.linalg.norm(ours - desc, axis=1).max()))
raise SystemExit(0 if ok else 1)
PY

# another input size (face-api.js's inputSize 320: odd sizes inside, 159 -> 80 by the 'same' pool)
out=$(node "$CNNB_SOURCE_DIR/tools/faceapi_nets.js" -o ref320 --input-size 320 --max-faces 0 "$PKG/demo/sample4.jpg" 2>&1) \
  || fail "face-api.js reference at 320: $out"
$PY -c "import h5py, numpy as np; h5py.File('d320.h5', 'w').create_dataset('images', \
  data=np.fromfile('ref320/detector.u8', np.uint8).reshape(-1, 320, 320, 3))" || fail "320 input set"
run "$CNNB_BIN" predict "$J/face-detector-tiny.cfg" --weights face-detector-tiny.h5 --data d320.h5 --layer 17 \
  --height 320 --width 320 -o d320.out.h5
$PY - <<'PY' || fail "agreement at 320"
import h5py, numpy as np
ref = np.fromfile("ref320/detector.f32", np.float32).reshape(-1, 10, 10, 25)
d = np.abs(h5py.File("d320.out.h5")["activations"][:].transpose(0, 2, 3, 1) - ref).max()
print("%-28s max |diff| %.3g, %.3g of max |ref| %.3g" % ("detector conv8 at 320", d, d / np.abs(ref).max(), np.abs(ref).max()))
raise SystemExit(0 if d <= 1e-4 * np.abs(ref).max() else 1)
PY

# bad inputs: a truncated shard, a model that does not fit, a missing --model
mkdir bad && cp "$M/tiny_face_detector_model-weights_manifest.json" bad/ || fail "copy"
head -c 1000 "$M/tiny_face_detector_model.bin" > bad/tiny_face_detector_model.bin
out=$("$CNNB_BIN" convert --from tfjs bad/tiny_face_detector_model-weights_manifest.json --model "$J/face-detector-tiny.cfg" \
  -o bad.h5 2>&1); rc=$?
[ $rc -eq 1 ] || fail "truncated shard: exit $rc: $out"
grep -q "bad/tiny_face_detector_model.bin: weight shard is truncated: 1000 bytes" <<<"$out" || fail "truncated shard message: $out"
[ ! -e bad.h5 ] && [ ! -e bad.h5.tmp ] || fail "output written despite the error"
out=$("$CNNB_BIN" convert --from tfjs "$M/tiny_face_detector_model-weights_manifest.json" --model "$J/face-landmarks68.cfg" \
  -o bad.h5 2>&1); rc=$?
[ $rc -eq 1 ] || fail "wrong model: exit $rc: $out"
grep -q "tiny_face_detector_model-weights_manifest.json: tensor 'conv0/filters' has shape \[3,3,3,16\] but layer 1 \[convolutional\] of .*face-landmarks68.cfg needs \[3,3,3,32\]" <<<"$out" \
  || fail "wrong model message: $out"
out=$("$CNNB_BIN" convert --from tfjs "$M/tiny_face_detector_model-weights_manifest.json" -o bad.h5 2>&1); rc=$?
[ $rc -eq 2 ] || fail "missing --model: exit $rc: $out"
out=$("$CNNB_BIN" convert --from onnx x.json --model "$J/face-landmarks68.cfg" -o bad.h5 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q "only format is tfjs" <<<"$out" || fail "unknown --from: exit $rc: $out"
echo "PASS"
