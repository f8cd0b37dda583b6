#!/usr/bin/env bash
# The slurm/ templates on a real one-node Slurm (tools/slurm-local: Debian's slurm-wlm and munge,
# started here and stopped at the end, whatever happens):
#  - train.sbatch with 2 tasks (srun --mpi=pmix) gives the same parameters and accuracy as the
#    same run under plain mpirun;
#  - a train job signalled mid-run (scancel --signal=USR1 --batch, what --signal=B:USR1@T does at
#    a time limit) checkpoints, requeues itself, resumes, and ends with the parameters of the
#    uninterrupted job; the same through LAUNCHER=mpirun inside the allocation, signalled with
#    scancel --full;
#  - array.sbatch over three files completes all three (predict as the bulk command), and its
#    --summary mode tells complete from missing outputs;
#  - an interrupted bulk task requeues and completes every row exactly once (predict has no
#    partial resume: the rerun computes everything again);
#  - detect.sbatch gives mpirun's boxes; embed.sbatch signalled mid-run stops with its finished
#    chunks saved, requeues, and the rerun computes exactly the rest (equal to mpirun's output);
#    faces.sbatch gives mpirun's faces (models converted here from the npm package, where it is
#    installed) and fails fast on a
#    missing models directory;
#  - a missing model or data path fails fast naming it, before any rank starts; a resumed run
#    whose checkpoint is missing or corrupt says so and does not start over; a rank that dies
#    ends the job at once with the rank named in the log;
#  - every template carries the same machinery block.
# Skipped (exit 0) where slurm-wlm is not installed or not root.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
S=$CNNB_SOURCE_DIR
F=/usr/share/datasets/fashion-mnist
PY=/usr/bin/python3
if ! command -v sbatch >/dev/null 2>&1 || ! [ -x /usr/sbin/slurmctld ] || ! [ -x /usr/sbin/munged ]; then
  echo "SKIP: slurm-wlm and munge not installed (tools/setup installs them)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "SKIP: starting a local Slurm needs root"; exit 0; }
[ -f $F/train-images-idx3-ubyte.gz ] || { echo "SKIP: dataset-fashion-mnist not installed"; exit 0; }
$PY -c "import h5py" 2>/dev/null || { echo "SKIP: python3-h5py not installed"; exit 0; }
command -v h5dump >/dev/null 2>&1 || { echo "SKIP: hdf5-tools not installed"; exit 0; }

# The test's own cluster, one per work directory (the plain and the ASan build, or two checkouts,
# may run this test at the same time): its own state directory and a free pair of ports, so that
# a cluster started by hand with tools/slurm-local (/tmp/cnnb-slurm-$UID, port 6817) is left alone.
key=$(printf '%s' "$CNNB_WORK" | cksum | cut -d' ' -f1)
export CNNB_SLURM_DIR=/tmp/cnnb-slurm-e2e-$key
port_used() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
CNNB_SLURM_PORT=$((20000 + key % 20000 * 2 % 20000))
while port_used $CNNB_SLURM_PORT || port_used $((CNNB_SLURM_PORT + 1)); do CNNB_SLURM_PORT=$((CNNB_SLURM_PORT + 2)); done
export CNNB_SLURM_PORT
export SLURM_CONF=$CNNB_SLURM_DIR/slurm.conf
LOCAL=$S/tools/slurm-local
$LOCAL stop >/dev/null 2>&1 # leftovers of an earlier, killed run
cleanup() {
  $LOCAL stop >/dev/null 2>&1
  for f in "$CNNB_SLURM_DIR"/slurmctld.pid "$CNNB_SLURM_DIR"/slurmd.pid "$CNNB_SLURM_DIR"/munge/munged.pid; do
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && echo "FAIL: $f: daemon still running" >&2
  done
}
trap cleanup EXIT
# A CPU-starved machine still runs 2-task jobs (the node is declared with 2 CPUs).
[ "$(nproc)" -lt 2 ] && export CNNB_SLURM_CPUS=2

rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
T0=$SECONDS
$LOCAL start || fail "tools/slurm-local start"
$LOCAL start | grep -q "already running" || fail "a second start is not idempotent"
$LOCAL status >/dev/null || fail "tools/slurm-local status"
echo "cluster up in $((SECONDS - T0)) s"

"$CNNB_BIN" import idx --images $F/train-images-idx3-ubyte.gz --labels $F/train-labels-idx1-ubyte.gz \
  --limit 6000 -o train.h5 >/dev/null || fail "import train"
for n in 500 700 900; do
  "$CNNB_BIN" import idx --images $F/t10k-images-idx3-ubyte.gz --labels $F/t10k-labels-idx1-ubyte.gz \
    --limit $n -o part$n.h5 >/dev/null || fail "import part$n"
done
"$CNNB_BIN" import idx --images $F/t10k-images-idx3-ubyte.gz --labels $F/t10k-labels-idx1-ubyte.gz \
  -o test.h5 >/dev/null || fail "import test"
"$CNNB_BIN" import idx --images $F/t10k-images-idx3-ubyte.gz --labels $F/t10k-labels-idx1-ubyte.gz \
  --limit 5000 -o bulk.h5 >/dev/null || fail "import bulk"
export OMPI_MCA_rmaps_base_oversubscribe=1
# A small network with batch norm (exact resume covers its running statistics), the test's own
# so that it does not change with the tuning of jobs/.
M=$CNNB_WORK/small.cfg
cat >"$M" <<'CFG'
[net]
height=28
width=28
channels=1
batch=64
learning_rate=0.02
momentum=0.9
decay=0.0005
policy=cosine
[convolutional]
batch_normalize=1
filters=8
size=5
stride=1
pad=0
activation=relu
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=16
size=5
stride=1
pad=0
activation=relu
[maxpool]
size=2
stride=2
[connected]
output=64
activation=relu
[connected]
output=10
activation=linear
[softmax]
CFG

# wait_job ID SECONDS: until no task of job ID is pending or running
wait_job() {
  local i
  for i in $(seq $(($2 * 2))); do
    [ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  scancel "$1"
  fail "job $1 still queued or running after $2 s: $(squeue -j "$1"; cat ./*"$1"*.log 2>/dev/null)"
}
job_field() { scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# wait_log FILE PATTERN SECONDS
wait_log() {
  local i
  for i in $(seq $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# A train job: settings as the template's variables.
TRAIN="CNNB=$CNNB_BIN,MODEL=$M,DATA=train.h5,VAL=test.h5,EPOCHS=2,BATCH=64"
sub_train() { # name extra-exports
  sbatch --parsable -J "$1" --export="ALL,$TRAIN,OUT=$1.h5,TRAIN_ARGS=--seed 5 --log-every 5${2:+,$2}" \
    "$S/slurm/train.sbatch" || fail "sbatch $1"
}

# ---- 1. train.sbatch == plain mpirun ----
t=$SECONDS
ja=$(sub_train plain)
mpirun -n 2 "$CNNB_BIN" train "$M" --data train.h5 --val test.h5 --epochs 2 --batch 64 --seed 5 \
  --log-every 5 -o mpirun.h5 >mpirun.log 2>&1 || fail "plain mpirun: $(cat mpirun.log)"
wait_job "$ja" 180
[ "$(job_field "$ja" JobState)" = COMPLETED ] || fail "train job $ja: $(job_field "$ja" JobState): $(cat plain-"$ja".log)"
acc_slurm=$(grep "epoch 2 validation" plain-"$ja".log | sed 's/.*accuracy: //')
acc_mpirun=$(grep "epoch 2 validation" mpirun.log | sed 's/.*accuracy: //')
[ -n "$acc_slurm" ] && [ "$acc_slurm" = "$acc_mpirun" ] ||
  fail "accuracy under sbatch '$acc_slurm' != under mpirun '$acc_mpirun'"
grep -q "starting 2 ranks on .* with srun" plain-"$ja".log || fail "not 2 ranks with srun: $(cat plain-"$ja".log)"
echo "train.sbatch: accuracy $acc_slurm, as under mpirun ($((SECONDS - t)) s for both)"

# ---- 2. signal, checkpoint, requeue, resume (srun + scancel --batch; mpirun + scancel --full) ----
sig_test() { # name scancel-option extra-exports
  local j t=$SECONDS
  j=$(sub_train "$1" "$3")
  wait_log "$1-$j.log" "step 10/" 60 || fail "$1: no progress: $(cat "$1-$j.log")"
  scancel --signal=USR1 "$2" "$j" || fail "scancel $2"
  wait_job "$j" 240
  [ "$(job_field "$j" JobState)" = COMPLETED ] || fail "$1 job $j: $(job_field "$j" JobState): $(cat "$1-$j.log")"
  if ! grep -q "received SIGUSR1" "$1-$j.log"; then
    echo "note: $1 finished before the signal arrived"
    return
  fi
  grep -q "stopped by signal: checkpoint" "$1-$j.log" || fail "$1: no checkpoint on the signal: $(cat "$1-$j.log")"
  grep -q "requeueing" "$1-$j.log" || fail "$1: not requeued: $(cat "$1-$j.log")"
  grep -q "run 2: resuming from checkpoint $1.h5" "$1-$j.log" || fail "$1: no resume: $(cat "$1-$j.log")"
  [ "$(job_field "$j" Restarts)" = 1 ] || fail "$1: Restarts=$(job_field "$j" Restarts)"
  echo "$1: signalled, checkpointed, requeued and resumed in $((SECONDS - t)) s"
}
sig_test sigsrun --batch ""
sig_test sigmpirun --full "LAUNCHER=mpirun"
$PY - <<'PY' || fail "an interrupted and resumed job differs from the uninterrupted one"
import h5py, numpy as np
def load(p):
    out = {}
    with h5py.File(p, "r") as f:
        f["layers"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        meta = {k: int(f.attrs[k]) for k in ("epoch", "step", "epoch_step")}
    return out, meta
a, ma = load("plain.h5")
for other in ("mpirun.h5", "sigsrun.h5", "sigmpirun.h5"):
    b, mb = load(other)
    assert ma == mb, (other, ma, mb)
    for k in a:
        assert np.array_equal(a[k], b[k]), (other, k, np.abs(a[k] - b[k]).max())
    print(other, "has the parameters of the uninterrupted sbatch run", mb)
PY

# ---- 3. an array job over three files, and its summary ----
t=$SECONDS
printf '%s\n' part500.h5 part700.h5 "# a comment" "" part900.h5 >files.txt
ARR="CNNB=$CNNB_BIN,MODEL=$M,WEIGHTS=plain.h5,FILE_LIST=files.txt,OUT_DIR=results"
jr=$(sbatch --parsable --array=1-3%2 --export="ALL,$ARR" "$S/slurm/array.sbatch") || fail "sbatch array"
wait_job "$jr" 180
for k in 1 2 3; do
  [ "$(job_field "${jr}_$k" JobState)" = COMPLETED ] ||
    fail "array task $k: $(job_field "${jr}_$k" JobState): $(cat cnnb-array-"${jr}_$k".log)"
done
export FILE_LIST=files.txt OUT_DIR=results
bash "$S/slurm/array.sbatch" --summary >summary.txt || fail "summary: $(cat summary.txt)"
grep -q "3 of 3 complete" summary.txt || fail "summary: $(cat summary.txt)"
mv results/part700.predict.h5 part700.saved.h5
bash "$S/slurm/array.sbatch" --summary >summary2.txt && fail "summary with a missing output exits 0"
grep -q "missing   part700.h5" summary2.txt && grep -q "sbatch --array=2 " summary2.txt || fail "summary2: $(cat summary2.txt)"
mv part700.saved.h5 results/part700.predict.h5
# A resubmitted array skips complete outputs.
jr2=$(sbatch --parsable --array=1 --export="ALL,$ARR" "$S/slurm/array.sbatch") || fail "sbatch array again"
wait_job "$jr2" 60
grep -q "complete already" cnnb-array-"${jr2}"_1.log || fail "a complete output was computed again"
unset FILE_LIST OUT_DIR
for n in 500 700 900; do
  mpirun -n 2 "$CNNB_BIN" predict "$M" --weights plain.h5 --data part$n.h5 -o ref$n.h5 >/dev/null ||
    fail "reference predict"
done
$PY - <<'PY' || fail "array outputs"
import h5py, numpy as np
for n in (500, 700, 900):
    with h5py.File(f"results/part{n}.predict.h5", "r") as f, h5py.File(f"ref{n}.h5", "r") as r:
        assert int(f.attrs["complete"]) == 1
        assert np.array_equal(f["indices"][()], np.arange(n))
        assert np.array_equal(f["outputs"][()], r["outputs"][()]), n
print("array: three outputs complete, equal to direct predict runs")
PY
echo "array of 3 files done in $((SECONDS - t)) s"

# ---- 4. an interrupted bulk task requeues and completes every row once ----
t=$SECONDS
printf 'bulk.h5\n' >big.txt
jb=$(sbatch --parsable --array=1 -J bulk --export="ALL,$ARR,FILE_LIST=big.txt,OUT_DIR=bulk,CMD_ARGS=--batch 8" \
  "$S/slurm/array.sbatch") || fail "sbatch bulk"
wait_log "bulk-${jb}_1.log" "starting 2 ranks" 60 || fail "bulk task did not start: $(cat bulk-"${jb}"_1.log)"
sleep 0.2
scancel --signal=USR1 --batch "${jb}_1"
wait_job "$jb" 240
[ "$(job_field "${jb}_1" JobState)" = COMPLETED ] || fail "bulk: $(job_field "${jb}_1" JobState): $(cat bulk-"${jb}"_1.log)"
# The signal can land after predict has written everything (then run 1 is done, no requeue).
if grep -q "received SIGUSR1" bulk-"${jb}"_1.log && ! grep -q "run 1: done" bulk-"${jb}"_1.log; then
  grep -q "run 2: starting 2 ranks" bulk-"${jb}"_1.log || fail "bulk: not run again: $(cat bulk-"${jb}"_1.log)"
  echo "bulk task interrupted, requeued and completed in $((SECONDS - t)) s"
else
  echo "note: the bulk task finished before the signal arrived"
fi
mpirun -n 2 "$CNNB_BIN" predict "$M" --weights plain.h5 --data bulk.h5 --batch 8 -o refbulk.h5 >/dev/null ||
  fail "reference predict"
$PY - <<'PY' || fail "interrupted bulk output"
import h5py, numpy as np
with h5py.File("bulk/bulk.predict.h5", "r") as f, h5py.File("refbulk.h5", "r") as r:
    assert int(f.attrs["complete"]) == 1
    idx = f["indices"][()]
    assert np.array_equal(np.sort(idx), np.arange(5000)) and len(np.unique(idx)) == 5000
    assert np.array_equal(f["outputs"][()], r["outputs"][()])
print("bulk: 5000 rows, each exactly once, equal to an uninterrupted run")
PY

# ---- 4b. detect.sbatch == mpirun; embed.sbatch interrupted: requeued, each chunk computed once ----
t=$SECONDS
"$S/tools/make_scenes" -n 8 --size 96 --seed 2 -o scenes.h5 >/dev/null || fail "make_scenes"
cat >yolo.cfg <<'CFG'
[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=3
num=3
CFG
"$CNNB_BIN" convert --init yolo.cfg --seed 2 --gain 0.25 -o yolo.weights >/dev/null || fail "convert --init yolo"
jdet=$(sbatch --parsable -J det --export="ALL,CNNB=$CNNB_BIN,MODEL=yolo.cfg,WEIGHTS=yolo.weights,DATA=scenes.h5,OUT=det.h5,DETECT_ARGS=--thresh 0.3 --batch 2" \
  "$S/slurm/detect.sbatch") || fail "sbatch detect"
mpirun -n 2 "$CNNB_BIN" detect yolo.cfg --weights yolo.weights --data scenes.h5 --thresh 0.3 --batch 2 -o detref.h5 \
  >detref.log 2>&1 || fail "detect under mpirun: $(cat detref.log)"
# an embedding net heavy enough (22 MFLOP a crop) to be signalled while it runs
cat >emb.cfg <<'CFG'
[net]
height=28
width=28
channels=1
[convolutional]
filters=32
size=3
stride=1
pad=1
activation=relu
[convolutional]
filters=32
size=3
stride=1
pad=1
activation=relu
[maxpool]
size=2
stride=2
[convolutional]
filters=64
size=3
stride=1
pad=1
activation=relu
[connected]
output=16
activation=linear
CFG
"$CNNB_BIN" convert --init emb.cfg --seed 1 -o emb.weights >/dev/null || fail "convert --init emb"
wait_job "$jdet" 60
[ "$(job_field "$jdet" JobState)" = COMPLETED ] || fail "detect job: $(job_field "$jdet" JobState): $(cat det-"$jdet".log)"
$PY - <<'PY' || fail "detect.sbatch output differs from mpirun's"
import h5py, numpy as np
a, b = h5py.File("det.h5", "r"), h5py.File("detref.h5", "r")
for k in ("image", "class", "score", "box", "offsets", "image_size"):
    assert np.array_equal(a[k][()], b[k][()]), k
assert len(a["score"]) > 0
print("detect.sbatch: %d boxes in 8 images, equal to mpirun's" % len(a["score"]))
PY
jemb=$(sbatch --parsable -J emb --export="ALL,CNNB=$CNNB_BIN,MODEL=emb.cfg,WEIGHTS=emb.weights,DATA=bulk.h5,OUT=emb.h5,EMBED_BATCH=8,EMBED_ARGS=--max-rows 3000" \
  "$S/slurm/embed.sbatch") || fail "sbatch embed"
for _ in $(seq 600); do # signal once the first chunks are saved
  [ -n "$(ls emb.h5.work 2>/dev/null)" ] && break
  sleep 0.05
done
scancel --signal=USR1 --batch "$jemb"
mpirun -n 2 "$CNNB_BIN" embed emb.cfg --weights emb.weights --data bulk.h5 --batch 8 --max-rows 3000 -o embref.h5 >embref.log 2>&1 ||
  fail "embed under mpirun: $(cat embref.log)"
wait_job "$jemb" 120
[ "$(job_field "$jemb" JobState)" = COMPLETED ] || fail "embed job: $(job_field "$jemb" JobState): $(cat emb-"$jemb".log)"
if grep -q "received SIGUSR1" emb-"$jemb".log; then
  saved=$(sed -n 's/.*embed: stopped by a signal: .* computed in this run, \([0-9]*\) of 3000 saved.*/\1/p' emb-"$jemb".log)
  [ -n "$saved" ] && [ "$saved" -gt 0 ] || fail "embed: no chunks saved on the signal: $(cat emb-"$jemb".log)"
  grep -q "run 2: $((saved / 8)) finished chunks in emb.h5.work/" emb-"$jemb".log || fail "embed: run 2 did not find the chunks: $(cat emb-"$jemb".log)"
  grep -q "wrote emb.h5: 3000 x 16 embeddings ($((3000 - saved)) computed, $saved resumed)" emb-"$jemb".log ||
    fail "embed: the rerun did not compute exactly the rest: $(cat emb-"$jemb".log)"
  echo "embed.sbatch: stopped with $saved of 3000 crops saved, requeued, the rest computed"
else
  echo "note: the embed job finished before the signal arrived"
fi
$PY - <<'PY' || fail "embed.sbatch output differs from mpirun's"
import h5py, numpy as np
a, b = h5py.File("emb.h5", "r"), h5py.File("embref.h5", "r")
assert int(a.attrs["complete"]) == 1 and a["embeddings"].shape == (3000, 16)
assert np.array_equal(a["embeddings"][()], b["embeddings"][()]) and np.array_equal(a["labels"][()], b["labels"][()])
print("embed.sbatch: 3000 rows, equal to an uninterrupted mpirun")
PY
[ ! -e emb.h5.work ] || fail "embed: emb.h5.work left after completion"
echo "detect and embed templates done in $((SECONDS - t)) s"

# ---- 4c. faces.sbatch == mpirun on two sample photos (models converted from the npm package) ----
t=$SECONDS
PKG=${CNNB_CACHE:-$HOME/.cache/cnnb}/npm/node_modules/@vladmandic/face-api
jfb=$(sbatch --parsable -J facesbad --export="ALL,CNNB=$CNNB_BIN,DATA=scenes.h5,OUT=fbad.h5,MODELS=$CNNB_WORK/nomodels" \
  "$S/slurm/faces.sbatch") || fail "sbatch faces (bad models)"
# the models converted here from the npm package (the cache's may be missing or being rewritten)
FM=$CNNB_WORK/face-models
mkdir -p "$FM"
fm_ok=0
if [ -f "$PKG/demo/sample1.jpg" ] && "$CNNB_BIN" faces --help >/dev/null 2>&1; then
  fm_ok=1
  for m in face-detector-tiny:tiny_face_detector_model face-landmarks68:face_landmark_68_model \
    face-descriptor-resnet34:face_recognition_model; do
    "$CNNB_BIN" convert --from tfjs "$PKG/model/${m#*:}-weights_manifest.json" --model "$S/jobs/${m%%:*}.cfg" \
      -o "$FM/${m%%:*}.h5" >/dev/null 2>&1 || fm_ok=0
  done
fi
DEMO=$PKG/demo
if [ $fm_ok = 1 ]; then
  mkdir -p fphotos && cp "$DEMO/sample1.jpg" "$DEMO/sample2.jpg" fphotos/
  "$CNNB_BIN" import images --dir fphotos -o fphotos.h5 >/dev/null || fail "import sample photos"
  jf=$(sbatch --parsable -J faces --export="ALL,CNNB=$CNNB_BIN,DATA=fphotos.h5,OUT=faces.h5,MODELS=$FM" \
    "$S/slurm/faces.sbatch") || fail "sbatch faces"
  mpirun -n 2 "$CNNB_BIN" faces --data fphotos.h5 --models "$FM" --min-score 0.5 --input-size 416 -o facesref.h5 \
    >facesref.log 2>&1 || fail "faces under mpirun: $(cat facesref.log)"
  wait_job "$jf" 120
  [ "$(job_field "$jf" JobState)" = COMPLETED ] || fail "faces job: $(job_field "$jf" JobState): $(cat faces-"$jf".log)"
  $PY - <<'PY' || fail "faces.sbatch output differs from mpirun's"
import h5py, numpy as np
a, b = h5py.File("faces.h5", "r"), h5py.File("facesref.h5", "r")
assert sorted(a.keys()) == sorted(b.keys()) and len(a["offsets"]) == 3
for k in a.keys():
    assert np.array_equal(a[k][()], b[k][()]), k
print("faces.sbatch: %d faces in 2 photos, equal to mpirun's" % (a["offsets"][-1]))
PY
else
  echo "note: faces.sbatch checked for its arguments only (the npm package face-api.js, its models or the faces command missing)"
fi
wait_job "$jfb" 60
[ "$(job_field "$jfb" JobState)" = FAILED ] && grep -q "error: face models $CNNB_WORK/nomodels: no such directory" facesbad-"$jfb".log &&
  ! grep -q "starting .* ranks" facesbad-"$jfb".log || fail "faces with a missing models directory: $(cat facesbad-"$jfb".log)"
echo "faces template done in $((SECONDS - t)) s"

# ---- 5. bad paths, missing or corrupt checkpoints, a rank that dies ----
t=$SECONDS
echo "not HDF5" >corrupt.h5
j1=$(sub_train nomodel "MODEL=$CNNB_WORK/nothere.cfg")
j2=$(sub_train nodata "DATA=missing-train.h5")
j4=$(sub_train nockpt "RESUME=1")
j5=$(sbatch --parsable -J corrupt --export="ALL,$TRAIN,OUT=corrupt.h5,RESUME=1" "$S/slurm/train.sbatch")
j6=$(sbatch --parsable -J noweights --export="ALL,$ARR,WEIGHTS=gone.h5" "$S/slurm/array.sbatch")
for j in $j1 $j2 $j4 $j5 $j6; do wait_job "$j" 60; done
check_fail() { # job log pattern
  local st
  st=$(job_field "$1" JobState)
  [ "$st" = FAILED ] || fail "job $1 ($2): state $st, expected FAILED: $(cat "$2")"
  grep -q -- "$3" "$2" || fail "job $1: no '$3' in $2: $(cat "$2")"
  ! grep -q "starting .* ranks" "$2" || fail "job $1: ranks started: $(cat "$2")"
}
check_fail "$j1" nomodel-"$j1".log "error: model file $CNNB_WORK/nothere.cfg: no such file"
check_fail "$j2" nodata-"$j2".log "error: training data missing-train.h5: no such file"
check_fail "$j4" nockpt-"$j4".log "checkpoint nockpt.h5: no such file; not starting over"
check_fail "$j5" corrupt-"$j5".log "checkpoint corrupt.h5 is corrupt"
check_fail "${j6}_1" noweights-"${j6}"_1.log "error: weights gone.h5: no such file"
echo "bad paths and checkpoints fail fast ($((SECONDS - t)) s)"

t=$SECONDS
jd=$(sub_train die "EPOCHS=50,RANK_GRACE=5")
wait_log die-"$jd".log "step 10/" 60 || fail "die: no progress: $(cat die-"$jd".log)"
victim=""
for p in $(scontrol listpids "$jd" 2>/dev/null | awk 'NR > 1 {print $1}'); do
  tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx SLURM_PROCID=1 && grep -q cnn-batch "/proc/$p/cmdline" 2>/dev/null &&
    victim=$p
done
[ -n "$victim" ] || fail "no rank 1 process of job $jd found"
kill -KILL "$victim"
wait_job "$jd" 60
[ "$(job_field "$jd" JobState)" = FAILED ] || fail "die: $(job_field "$jd" JobState)"
grep -q "First to fail: rank 1 on" die-"$jd".log || fail "the dead rank is not named: $(cat die-"$jd".log)"
echo "a killed rank ends the job in $((SECONDS - t)) s, named in the log"

# ---- 6. one machinery block in every template ----
ref=$(sed -n '/^# ==== machinery/,/^# ==== end of machinery/p' "$S/slurm/train.sbatch")
[ -n "$ref" ] || fail "no machinery block in train.sbatch"
for f in "$S"/slurm/*.sbatch; do
  bash -n "$f" || fail "$f: syntax"
  [ "$(sed -n '/^# ==== machinery/,/^# ==== end of machinery/p' "$f")" = "$ref" ] ||
    fail "$f: its machinery block differs from train.sbatch's"
done

# stop fails when a daemon, slurmstepd or job process of this cluster is left running.
$LOCAL stop >stop.txt || fail "tools/slurm-local stop: $(cat stop.txt)"
echo "all ok in $((SECONDS - T0)) s"
