#!/usr/bin/env bash
# Embeddings and matching: embed (1 rank == 4 ranks with N not divisible by the chunks or the
# ranks, /labels /ids /names copied, model_hash = SHA-256 of cfg and weights bytes, the same
# numbers as predict, resume after a failed output stage, wrong crop size); verify on a worked
# example whose 2-fold accuracy, thresholds and VAL at FAR are computed by hand below; identify
# (1 rank == 3 ranks == brute force in NumPy, top-K, open set); tools/make_pairs; bad inputs.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
PY=/usr/bin/python3
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"
expect_fail() { # WHAT PATTERN -- command...
  local what=$1 pat=$2; shift 3
  local err
  err=$("$@" 2>&1) && fail "$what: exited 0"
  grep -q -- "$pat" <<<"$err" || fail "$what: message lacks '$pat': $err"
  echo "ok: $what -> $(grep -m1 error <<<"$err")"
}

# ---- embed: a small descriptor net (12x12 grey crops -> 8-d), seeded Darknet weights
cat > emb.cfg <<'EOF'
[net]
height=12
width=12
channels=1
[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=8
activation=linear
EOF
"$CNNB_BIN" convert --init emb.cfg --seed 5 -o emb.weights >/dev/null 2>&1 || fail "convert --init"
"$CNNB_BIN" convert emb.cfg emb.weights -o emb.ckpt.h5 >/dev/null 2>&1 || fail "convert to checkpoint"
$PY - <<'PY' || fail "crops"
import h5py, numpy as np
r = np.random.RandomState(1)
def crops(path, n, h, w):
    x = r.randint(0, 256, size=(n, h, w, 1)).astype("uint8")
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=x, chunks=(min(5, n), h, w, 1), compression="gzip")
        f.create_dataset("labels", data=(np.arange(n) % 4).astype("int32"))
        f.create_dataset("ids", data=(1000 + 7 * np.arange(n)).astype("int64"))
        f.create_dataset("names", data=["person_%d" % (i % 4) * (1 + i % 3) for i in range(n)])
        f["images"].attrs["mean"] = np.float32([0.5]); f["images"].attrs["std"] = np.float32([0.25])
crops("crops.h5", 23, 12, 12)
crops("small.h5", 3, 10, 10)
PY
"$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 3 -o e1.h5 >log1 2>&1 || fail "embed 1 rank: $(cat log1)"
$MPIRUN -n 4 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 3 -o e4.h5 >log4 2>&1 ||
  fail "embed 4 ranks: $(cat log4)"
grep -q "wrote e4.h5: 23 x 8 embeddings (23 computed, 0 resumed)" log4 || fail "embed summary: $(cat log4)"
[ ! -e e4.h5.work ] || fail "work directory left after a complete run"
# one crop per gzip chunk (as import and the face benchmarks write): embed reads those chunks
# raw and inflates them itself; the embeddings must be the same bits as through HDF5's filter
$PY - <<'PY' || fail "one-crop-per-chunk copy"
import h5py
with h5py.File("crops.h5", "r") as a, h5py.File("crops1.h5", "w") as b:
    x = a["images"][:]
    b.create_dataset("images", data=x, chunks=(1,) + x.shape[1:], compression="gzip", compression_opts=4)
    b["images"].attrs["mean"] = a["images"].attrs["mean"]; b["images"].attrs["std"] = a["images"].attrs["std"]
PY
"$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops1.h5 --batch 3 -o e1c.h5 >logc 2>&1 || fail "embed chunk per crop: $(cat logc)"
"$CNNB_BIN" predict emb.cfg --weights emb.ckpt.h5 --data crops.h5 -o pred.h5 >/dev/null 2>&1 || fail "predict"
$PY - <<'PY' || fail "embed output"
import h5py, numpy as np, hashlib
a, b, p, c = (h5py.File(n, "r") for n in ("e1.h5", "e4.h5", "pred.h5", "crops.h5"))
assert a["embeddings"].shape == (23, 8) and a["embeddings"].dtype == np.float32
assert np.array_equal(a["embeddings"][:], b["embeddings"][:]), "1 rank != 4 ranks"
assert np.array_equal(a["embeddings"][:], h5py.File("e1c.h5", "r")["embeddings"][:]), "chunk per crop differs"
# the same forward as predict (batch 3 there vs 128 here: equal to rounding)
assert np.allclose(a["embeddings"][:], p["outputs"][:], rtol=1e-5, atol=1e-6), abs(a["embeddings"][:] - p["outputs"][:]).max()
assert np.abs(a["embeddings"][:]).max() > 0.1
for k in ("labels", "ids"):
    assert np.array_equal(a[k][:], c[k][:]) and np.array_equal(b[k][:], c[k][:]), k
names = [s.decode() if isinstance(s, bytes) else s for s in b["names"][:]]
assert names == [s.decode() if isinstance(s, bytes) else s for s in c["names"][:]], names[:5]
h = hashlib.sha256(open("emb.cfg", "rb").read() + open("emb.weights", "rb").read()).hexdigest()
for f in (a, b):
    attr = lambda k: f.attrs[k].decode() if isinstance(f.attrs[k], bytes) else f.attrs[k]
    assert attr("model_hash") == h, (attr("model_hash"), h)
    assert attr("schema") == "cnnb-embeddings" and int(f.attrs["dim"]) == 8 and int(f.attrs["complete"]) == 1
    assert attr("source") == "crops.h5" and attr("model") == "emb.cfg"
PY
# --max-rows, and 2 ranks over 3 chunks of 4 (rank 1 gets one chunk of 3 rows)
$MPIRUN -n 2 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 4 --max-rows 11 -o e11.h5 >/dev/null 2>&1 ||
  fail "embed --max-rows"
$PY -c "
import h5py, numpy as np
a, b = h5py.File('e1.h5', 'r'), h5py.File('e11.h5', 'r')
assert b['embeddings'].shape == (11, 8) and np.allclose(a['embeddings'][:11], b['embeddings'][:], rtol=1e-5, atol=1e-5)
assert np.array_equal(b['ids'][:], a['ids'][:11])
" || fail "--max-rows output"

# resume: the output stage fails (PATH.tmp is a directory); the chunks stay in e.h5.work and the
# rerun computes nothing again
mkdir e.h5.tmp
$MPIRUN -n 2 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 3 -o e.h5 >/dev/null 2>&1 &&
  fail "embed with an unwritable output succeeded"
[ "$(ls e.h5.work | wc -l)" = 8 ] || fail "finished chunks not kept for resuming: $(ls e.h5.work)"
rmdir e.h5.tmp
rm e.h5.work/chunk-000000005 # one chunk lost: only its 3 rows are computed again
out=$($MPIRUN -n 3 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 3 -o e.h5 2>&1) || fail "resume: $out"
grep -q "(3 computed, 20 resumed)" <<<"$out" || fail "resume recomputed: $out"
cmp <($PY -c "import h5py; print(h5py.File('e.h5','r')['embeddings'][:].tobytes().hex())") \
  <($PY -c "import h5py; print(h5py.File('e1.h5','r')['embeddings'][:].tobytes().hex())") || fail "resumed result differs"
# another model's chunks do not apply
"$CNNB_BIN" convert --init emb.cfg --seed 6 -o other.weights >/dev/null 2>&1 || fail "convert --init 6"
mkdir o.h5.tmp
"$CNNB_BIN" embed emb.cfg --weights emb.weights --data crops.h5 --batch 3 -o o.h5 >/dev/null 2>&1
rmdir o.h5.tmp
out=$("$CNNB_BIN" embed emb.cfg --weights other.weights --data crops.h5 --batch 3 -o o.h5 2>&1) || fail "$out"
grep -q "(23 computed, 0 resumed)" <<<"$out" || fail "chunks of another model reused: $out"

expect_fail "crops of the wrong size" "small.h5: images are 10x10x1 but model emb.cfg expects 12x12x1" -- \
  $MPIRUN -n 2 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data small.h5 -o x.h5
expect_fail "missing weights" "nope.h5" -- "$CNNB_BIN" embed emb.cfg --weights nope.h5 --data crops.h5 -o x.h5
[ ! -e x.h5 ] && [ ! -e x.h5.tmp ] || fail "a failed embed left x.h5"

# ---- verify: worked example. 2-D points on the x axis, distances exact in binary:
#   alice 0, 0.25   bob 1.0, 1.5   carol -0.5, -0.875   dave 2.25, 3.25
# fold 1: matched alice(1,2) 0.25, bob(1,2) 0.5; mismatched alice1-bob1 1.0, alice2-carol1 0.75
# fold 2: matched carol(1,2) 0.375, dave(1,2) 1.0; mismatched bob2-dave1 0.75, carol2-dave2 4.125
# Fold 1 held out: fold 2 sorted 0.375 S, 0.75 D, 1.0 S, 4.125 D; cuts give 2, 3, 2, 3, 2 right:
#   first best at the midpoint (0.375+0.75)/2 = 0.5625; on fold 1 all 4 right: accuracy 1.
# Fold 2 held out: fold 1 sorted 0.25 S, 0.5 S, 0.75 D, 1.0 D: best cut 4 right at 0.625; on
#   fold 2 dave(1,2) 1.0 is missed: accuracy 0.75. Mean 0.875, std 0.125.
# At --threshold 0.8: matched 3 of 4 (1.0 missed), mismatched 2 of 4 (both 0.75 missed): 0.625.
# VAL at FAR 0.5: mismatched sorted 0.75 0.75 1.0 4.125, k = 2: threshold 1.0, below it 2 of 4
#   mismatched (far 0.5) and 3 of 4 matched (val 0.75). At FAR 0.001: k = 0, threshold 0.75:
#   far 0, val 0.75 (0.25, 0.5, 0.375).
$PY - <<'PY' || fail "verify data"
import h5py, numpy as np
x = [0, 1.0, 0.25, -0.5, 1.5, 2.25, -0.875, 3.25]
n = ["alice", "bob", "alice", "carol", "bob", "dave", "carol", "dave"]
with h5py.File("v.h5", "w") as f:
    f["embeddings"] = np.float32([[v, 0] for v in x])
    f["names"] = n
    f.attrs["dim"] = 2; f.attrs["complete"] = np.int32(1); f.attrs["model_hash"] = "h"
with h5py.File("vl.h5", "w") as f:  # identities from labels instead of names
    f["embeddings"] = np.float32([[v, 0] for v in x])
    f["labels"] = np.int32(["alice bob carol dave".split().index(s) for s in n])
    f.attrs["dim"] = 2; f.attrs["complete"] = np.int32(1)
PY
cat > pairs.txt <<'EOF'
2	2
alice	1	2
bob	1	2
alice	1	bob	1
alice	2	carol	1
carol	1	2
dave	1	2
bob	2	dave	1
carol	2	dave	2
EOF
sed 's/alice/0/g; s/bob/1/g; s/carol/2/g; s/dave/3/g' pairs.txt > pairs_lab.txt
out=$("$CNNB_BIN" verify --emb v.h5 --pairs pairs.txt --threshold 0.8 --far 0.5 -o vr.h5 2>&1) || fail "verify: $out"
echo "$out" | sed 's/^/  /'
[ "$(tail -1 <<<"$out")" = "verify: accuracy 0.8750 std 0.1250 val 0.7500 far 0.5000" ] || fail "verify last line: $out"
grep -q "accuracy at threshold 0.8: 0.6250" <<<"$out" || fail "accuracy at threshold: $out"
grep -Eq "^ +1 +0.5625 +1.0000$" <<<"$out" && grep -Eq "^ +2 +0.6250 +0.7500$" <<<"$out" || fail "fold thresholds: $out"
$PY - <<'PY' || fail "verify result file"
import h5py, numpy as np
f = h5py.File("vr.h5", "r")
assert np.allclose(f["distances"][:], [0.25, 0.5, 1.0, 0.75, 0.375, 1.0, 0.75, 4.125])
assert f["rows"][:].tolist() == [[0, 2], [1, 4], [0, 1], [2, 3], [3, 6], [5, 7], [4, 5], [6, 7]]
assert f["same"][:].tolist() == [1, 1, 0, 0, 1, 1, 0, 0] and f["fold"][:].tolist() == [0] * 4 + [1] * 4
assert np.allclose(f["fold_threshold"][:], [0.5625, 0.625]) and abs(f.attrs["accuracy"] - 0.875) < 1e-12
assert abs(f.attrs["val_threshold"] - 1.0) < 1e-12
PY
out=$("$CNNB_BIN" verify --emb vl.h5 --pairs pairs_lab.txt 2>&1) || fail "verify by labels: $out"
[ "$(tail -1 <<<"$out")" = "verify: accuracy 0.8750 std 0.1250 val 0.7500 far 0.0000" ] || fail "verify by labels: $out"
grep -q "accuracy at threshold 0.6: 0.8750" <<<"$out" || fail "default threshold: $out"
out=$($MPIRUN -n 2 "$CNNB_BIN" verify --emb v.h5 --pair 1 7 2>&1) || fail "verify --pair: $out"
grep -q "verify: rows 1 and 7: distance 2.2500: different (threshold 0.6)" <<<"$out" || fail "verify --pair: $out"
# bad pairs files
sed '4s/.*/alice 1 bob/' pairs.txt > bad1.txt
expect_fail "malformed mismatched line" "bad1.txt:4: expected a mismatched pair" -- "$CNNB_BIN" verify --emb v.h5 --pairs bad1.txt
sed '1s/.*/2 x/' pairs.txt > bad2.txt
expect_fail "malformed first line" "bad2.txt:1: expected 'FOLDS PAIRS_PER_FOLD'" -- "$CNNB_BIN" verify --emb v.h5 --pairs bad2.txt
head -7 pairs.txt > bad3.txt
expect_fail "truncated pairs file" "bad3.txt:8: file ends after 6 of 8 pairs" -- "$CNNB_BIN" verify --emb v.h5 --pairs bad3.txt
sed '6s/carol/erin/' pairs.txt > bad4.txt
expect_fail "unknown name" "bad4.txt:6: name 'erin' is not in v.h5" -- $MPIRUN -n 2 "$CNNB_BIN" verify --emb v.h5 --pairs bad4.txt
sed '3s/bob	1	2/bob	1	3/' pairs.txt > bad5.txt
expect_fail "image number beyond the identity" "bad5.txt:3: image 3 of 'bob' but v.h5 has 2 images of 'bob'" -- \
  "$CNNB_BIN" verify --emb v.h5 --pairs bad5.txt
expect_fail "not an embedding file" "crops.h5: not a complete embedding file" -- "$CNNB_BIN" verify --emb crops.h5 --pairs pairs.txt

# ---- identify: 1 rank == 3 ranks == NumPy brute force; top 3; open set
$PY - <<'PY' || fail "identify data"
import h5py, numpy as np
r = np.random.RandomState(2)
centres = r.normal(size=(6, 16)).astype("float32") * 2
def write(path, n, classes, hash_="abc", dim=16, noise=0.3):
    lab = r.choice(classes, size=n).astype("int32")
    e = (centres[lab][:, :dim] + noise * r.normal(size=(n, dim))).astype("float32")
    with h5py.File(path, "w") as f:
        f["embeddings"] = e; f["labels"] = lab
        f.attrs["dim"] = dim; f.attrs["complete"] = np.int32(1); f.attrs["model_hash"] = hash_
write("gal.h5", 50, [0, 1, 2, 3, 4])
write("probe.h5", 37, [0, 1, 2, 3, 4, 5])  # class 5 is not in the gallery
write("probe8.h5", 5, [0], dim=8)
write("probex.h5", 5, [0], hash_="abd")
PY
"$CNNB_BIN" identify --gallery gal.h5 --probes probe.h5 --top 3 --block 7 -o m1.h5 >il1 2>&1 || fail "identify 1 rank: $(cat il1)"
$MPIRUN -n 3 "$CNNB_BIN" identify --gallery gal.h5 --probes probe.h5 --top 3 --block 10 -o m3.h5 >il3 2>&1 ||
  fail "identify 3 ranks: $(cat il3)"
$MPIRUN -n 3 "$CNNB_BIN" identify --gallery gal.h5 --probes probe.h5 --top 2 --max-dist 2.5 -o mo.h5 >ilo 2>&1 ||
  fail "identify open set: $(cat ilo)"
top1=$(grep "identify: top-1" ilo) || fail "no top-1 line: $(cat ilo)"
$PY - "$top1" <<'PY' || fail "identify results"
import sys, h5py, numpy as np
g, p = h5py.File("gal.h5", "r"), h5py.File("probe.h5", "r")
G, P, gl, pl = g["embeddings"][:].astype(np.float64), p["embeddings"][:].astype(np.float64), g["labels"][:], p["labels"][:]
d = np.sqrt(((P[:, None, :] - G[None, :, :]) ** 2).sum(-1))
order = np.argsort(d, axis=1, kind="stable")
a, b, o = (h5py.File(n, "r") for n in ("m1.h5", "m3.h5", "mo.h5"))
for f in (a, b):
    assert np.array_equal(f["indices"][:], order[:, :3]), "indices differ from brute force"
    assert np.allclose(f["distances"][:], np.take_along_axis(d, order[:, :3], 1), atol=2e-5)
    assert np.array_equal(f["labels"][:], gl[order[:, :3]])
assert np.array_equal(a["distances"][:], b["distances"][:]), "1 rank != 3 ranks"
near = np.take_along_axis(d, order[:, :2], 1)
want = np.where(near > 2.5, -1, order[:, :2])
assert np.array_equal(o["indices"][:], want)
assert np.array_equal(o["labels"][:], np.where(want < 0, -1, gl[order[:, :2]]))
unknown = (want[:, 0] < 0).sum()
assert 0 < unknown < len(pl), unknown  # the example exercises both answers
ok = sum((gl[w] == l) if w >= 0 else (l not in set(gl)) for w, l in zip(want[:, 0], pl))
assert sys.argv[1] == "identify: top-1 %.4f (%d/%d)" % (ok / len(pl), ok, len(pl)), (sys.argv[1], ok)
print("identify: brute force agrees;", sys.argv[1], "with", unknown, "unknown")
PY
expect_fail "dimension mismatch" "gal.h5 has 16-d embeddings but probe8.h5 has 8-d" -- \
  "$CNNB_BIN" identify --gallery gal.h5 --probes probe8.h5 -o x.h5
expect_fail "model hash mismatch" "gal.h5 (model_hash abc...) and probex.h5 (model_hash abd...) come from different models" -- \
  $MPIRUN -n 2 "$CNNB_BIN" identify --gallery gal.h5 --probes probex.h5 -o x.h5
[ ! -e x.h5 ] && [ ! -e x.h5.tmp ] || fail "a failed identify left x.h5"

# ---- tools/make_pairs: LFW pairs from a labelled file, seeded, restricted to some classes
MP="$PY $CNNB_SOURCE_DIR/tools/make_pairs"
$PY -c "
import h5py, numpy as np
r = np.random.RandomState(3)
with h5py.File('lab.h5', 'w') as f:
    f['labels'] = np.int32(r.randint(0, 5, size=60)); f['embeddings'] = np.float32(r.normal(size=(60, 4)))
    f.attrs['dim'] = 4; f.attrs['complete'] = np.int32(1)
" || fail "make_pairs input"
$MP lab.h5 --folds 3 --pairs 4 --seed 7 -o mp1.txt >/dev/null || fail "make_pairs"
$MP lab.h5 --folds 3 --pairs 4 --seed 7 -o mp2.txt >/dev/null || fail "make_pairs again"
cmp -s mp1.txt mp2.txt || fail "make_pairs is not reproducible with the same seed"
$MP lab.h5 --folds 3 --pairs 4 --seed 8 -o mp3.txt >/dev/null && ! cmp -s mp1.txt mp3.txt || fail "make_pairs ignores the seed"
$MP lab.h5 --folds 2 --pairs 5 --seed 1 --classes 1,3 -o mp4.txt >/dev/null || fail "make_pairs --classes"
$MP v.h5 --folds 2 --pairs 2 --seed 1 -o mp5.txt >/dev/null || fail "make_pairs by names"
$PY - <<'PY' || fail "make_pairs output"
import h5py
def rows_of(ids):
    rows = {}
    for i, s in enumerate(ids): rows.setdefault(s, []).append(i)
    return rows
lab = rows_of([str(v) for v in h5py.File("lab.h5", "r")["labels"][:]])
nam = rows_of([s.decode() if isinstance(s, bytes) else s for s in h5py.File("v.h5", "r")["names"][:]])
for path, F, N, rows, allowed in (("mp1.txt", 3, 4, lab, None), ("mp4.txt", 2, 5, lab, {"1", "3"}), ("mp5.txt", 2, 2, nam, None)):
    lines = [l.split("\t") for l in open(path).read().splitlines()]
    assert lines[0] == [str(F), str(N)] and len(lines) == 1 + 2 * F * N, (path, lines[0], len(lines))
    seen = set()
    for k, t in enumerate(lines[1:]):
        same = k % (2 * N) < N
        assert len(t) == (3 if same else 4), (path, t)
        names = [t[0]] if same else [t[0], t[2]]
        assert all(n in rows for n in names) and (allowed is None or set(names) <= allowed), (path, t)
        nums = [int(t[1]), int(t[2])] if same else [int(t[1]), int(t[3])]
        assert all(1 <= v <= len(rows[n]) for v, n in zip(nums, names * (2 if same else 1))), (path, t)
        if same: assert nums[0] < nums[1], t
        else: assert t[0] != t[2], t
        key = tuple(sorted([(names[0], nums[0]), (names[-1], nums[1])]))
        assert key not in seen, ("duplicate pair", path, t); seen.add(key)
PY
for f in mp1 mp4; do
  out=$("$CNNB_BIN" verify --emb lab.h5 --pairs $f.txt 2>&1) || fail "verify on make_pairs output: $out"
  grep -q "^verify: accuracy" <<<"$out" || fail "verify on make_pairs output: $out"
done
"$CNNB_BIN" verify --emb v.h5 --pairs mp5.txt >/dev/null 2>&1 || fail "verify on make_pairs output by names"
out=$($MP lab.h5 --folds 10 --pairs 300 --classes 1 -o x.txt 2>&1) && fail "make_pairs: impossible request succeeded"
grep -q "lab.h5: fewer than two identities among --classes" <<<"$out" || fail "make_pairs message: $out"
echo "match e2e: ok"
