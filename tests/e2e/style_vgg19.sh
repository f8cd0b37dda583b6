#!/usr/bin/env bash
# VGG-19 from torchvision: tools/vgg19_from_torch.py converts a seeded, randomly initialised
# torchvision.models.vgg19() (trained weights cannot be downloaded here) into a checkpoint for
# jobs/vgg19.cfg; `cnn-batch predict --layer conv4_2` on 2 ranks must agree with torch's
# features[:23] (conv4_2 after its ReLU) within 1e-4 relative to the largest activation. Then a
# few steps of `cnn-batch style` with that model, which must lower the cost.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3 # Debian's torch and h5py are built for the system interpreter only
$PY -c 'import torch, torchvision, h5py' 2>/dev/null || { echo "SKIP: torchvision (python3-torchvision) not importable by $PY"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun -n 2 --oversubscribe"

$PY - <<'PY' || fail "torch reference"
import h5py, numpy as np, torch, torchvision
torch.manual_seed(0)
m = torchvision.models.vgg19().eval()
torch.save(m.state_dict(), "vgg19.pth")
rs = np.random.RandomState(1)
x = rs.randint(0, 256, (3, 64, 64, 3)).astype(np.uint8)
with h5py.File("content.h5", "w") as f:
    f.create_dataset("images", data=x)
mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)
t = torch.from_numpy(((x / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2).copy())
with torch.no_grad():
    ref = m.features[:23](t).numpy()  # features[21] is conv4_2, [22] its ReLU
np.save("ref.npy", ref)
try:
    from PIL import Image
    Image.fromarray(rs.randint(0, 256, (48, 80, 3)).astype(np.uint8)).save("style.jpg", quality=90)
except ImportError:
    pass
PY

out=$($PY "$CNNB_SOURCE_DIR/tools/vgg19_from_torch.py" vgg19.pth -o vgg19.h5 --cfg "$CNNB_SOURCE_DIR/jobs/vgg19.cfg" 2>&1) \
  || fail "converter: $out"
echo "$out"
[ -f vgg19.h5 ] && [ ! -e vgg19.h5.tmp ] || fail "converter left no complete file"
"$CNNB_BIN" info "$CNNB_SOURCE_DIR/jobs/vgg19.cfg" | grep -q "total trainable parameters: 20,024,384" \
  || fail "jobs/vgg19.cfg does not have VGG-19's 20,024,384 convolution parameters"

out=$($MPIRUN "$CNNB_BIN" predict "$CNNB_SOURCE_DIR/jobs/vgg19.cfg" --weights vgg19.h5 --data content.h5 \
  --layer conv4_2 --height 64 --width 64 -o act.h5 2>&1) || fail "predict --layer: $out"
echo "$out"
$PY - <<'PY' || fail "conv4_2 activations differ from torch's"
import h5py, numpy as np
ref = np.load("ref.npy")
with h5py.File("act.h5", "r") as f:
    assert f.attrs["complete"] == 1
    a = f["activations"][:]
    assert f["activations"].attrs["layer"] == 12, f["activations"].attrs["layer"]
assert a.shape == ref.shape == (3, 512, 8, 8), (a.shape, ref.shape)
rel = np.abs(a - ref).max() / np.abs(ref).max()
print(f"conv4_2: max |cnn-batch - torch| / max |torch| = {rel:.2e} (max activation {np.abs(ref).max():.3g})")
assert rel <= 1e-4, rel
PY

if [ -f style.jpg ]; then
  out=$($MPIRUN "$CNNB_BIN" style "$CNNB_SOURCE_DIR/jobs/vgg19.cfg" --weights vgg19.h5 --content content.h5 \
    --style style.jpg --steps 4 --limit 2 -o styled.h5 --png png 2>&1) || fail "style: $out"
  echo "$out"
  $PY - <<'PY' || fail "style output"
import h5py, numpy as np
with h5py.File("styled.h5", "r") as f:
    assert f.attrs["complete"] == 1 and f.attrs["content_layer"] == "conv4_2", dict(f.attrs)
    assert f["images"].shape == (2, 64, 64, 3) and f["images"].dtype == np.uint8
    c = f["cost"][:]
    assert (c[:, 1] < c[:, 0]).all(), c
PY
  [ -f png/000000.png ] && [ -f png/000001.png ] || fail "no PNG files"
else
  echo "note: PIL not importable, the VGG-19 style run is skipped"
fi
echo "PASS"
