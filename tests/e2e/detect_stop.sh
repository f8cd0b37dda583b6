#!/usr/bin/env bash
# Stop after the current chunk (src/cmd/chunks.c) for detect and faces: a run on photos in
# chunks of 1 gets SIGUSR1 (or SIGTERM) once its first chunk file exists; it must exit 3 with
# its finished chunks saved and no output, and a rerun must compute only the missing chunks and
# write what an uninterrupted run writes. Under mpirun the signal goes to one rank only: the
# other must stop with it (the collective check between chunks), not run its chunks to the end.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
CFG=/usr/share/darknet/cfg/yolov3-tiny.cfg DATA=/usr/share/darknet/data PY=/usr/bin/python3
[ -f $CFG ] && ls $DATA/*.jpg >/dev/null 2>&1 || { echo "SKIP: darknet cfgs or sample photos missing"; exit 0; }
$PY -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: python3-h5py missing"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK/photos" && cd "$CNNB_WORK" || fail "work dir"
MPIRUN="mpirun --oversubscribe"

same() { # A.h5 B.h5: every dataset equal
  $PY - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert sorted(a) == sorted(b), (list(a), list(b))
for k in a:
    assert np.array_equal(a[k][:], b[k][:]), k
PY
}
chunks() { ls "$1" 2>/dev/null | grep -c '^chunk-[0-9]*$'; }
first_chunk() { # OUT: waits until OUT.work holds a finished chunk
  local t=0
  until [ "$(chunks "$1.work")" -ge 1 ]; do
    sleep 0.01; t=$((t + 1))
    [ $t -lt 12000 ] || fail "no chunk file in $1.work after 120 s"
  done
}
stop_run() { # SIG OUT -- command...: runs command -o OUT (log OUT.log) in the background, sends SIG
  # once OUT.work holds a chunk; it must exit 3, early, with no output. Sets n: chunks saved.
  local sig=$1 out=$2 rc
  shift 3
  "$@" -o "$out" >"$out.log" 2>&1 &
  local pid=$!
  first_chunk "$out"
  kill -"$sig" $pid
  wait $pid
  rc=$?
  [ $rc = 3 ] || fail "$out after $sig: exit $rc, not 3: $(grep -v warning "$out.log")"
  n=$(chunks "$out.work")
  [ "$n" -lt "$N" ] || fail "$out did not stop early: $n of $N chunks"
  [ ! -e "$out" ] && [ ! -e "$out.tmp" ] || fail "a stopped run left $out"
}

# ---- detect: 14 photos, chunks of one photo
for i in 1 2; do for f in $DATA/*.jpg; do cp "$f" "photos/$i-${f##*/}"; done; done
N=$(ls photos | wc -l)
"$CNNB_BIN" import images --dir photos -o imgs.h5 >/dev/null 2>&1 || fail "import images"
"$CNNB_BIN" convert --init $CFG --seed 3 --gain 0.25 -o w.weights >/dev/null 2>&1 || fail "convert --init"
# arrays, not functions: a background function is a subshell, and the signal must reach cnn-batch
DET=("$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1)
"${DET[@]}" -o ref.h5 >ref.log 2>&1 || fail "detect: $(grep -v warning ref.log)"

stop_run USR1 s.h5 -- "${DET[@]}"
grep -q "detect: stopped by a signal: $n images computed in this run, $n of $N saved in s.h5.work" s.h5.log ||
  fail "stop message: $(grep -v warning s.h5.log)"
out=$($MPIRUN -n 2 "$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1 -o s.h5 2>&1) ||
  fail "rerun after the stop: $out"
grep -q "($((N - n)) computed, $n resumed)" <<<"$out" || fail "rerun did not compute only the missing chunks ($n saved): $out"
[ ! -e s.h5.work ] || fail "work directory left after the rerun"
same ref.h5 s.h5 || fail "stopped and resumed output differs from an uninterrupted run"
echo "ok: detect stopped by USR1 after $n of $N chunks, exit 3; the rerun computed the other $((N - n))"

# two ranks, USR1 to rank 0 only (mpirun's first child): rank 1 (chunks 7..13) stops as well
$MPIRUN -n 2 "$CNNB_BIN" detect $CFG --weights w.weights --data imgs.h5 --thresh 0.45 --batch 1 -o m.h5 >m.log 2>&1 &
mpid=$!
first_chunk m.h5
rank=$(pgrep -P $mpid | head -1)
[ -n "$rank" ] || fail "no rank process under mpirun $mpid"
kill -USR1 "$rank"
wait $mpid
rc=$?
[ $rc = 3 ] || fail "2 ranks, one signalled: exit $rc, not 3: $(grep -v warning m.log)"
late=$(ls m.h5.work | grep -c '^chunk-0000000\(0[7-9]\|1[0-3]\)$')
[ "$late" -lt $((N / 2)) ] || fail "the rank without the signal ran all its $late chunks"
out=$("${DET[@]}" -o m.h5 2>&1) || fail "rerun after the 2-rank stop: $out"
saved=$(sed -n 's/.*(\([0-9]*\) computed, \([0-9]*\) resumed).*/\1 \2/p' <<<"$out")
[ "${saved#* }" -ge 1 ] && [ $(( ${saved% *} + ${saved#* } )) = "$N" ] || fail "2-rank rerun counts: $out"
same ref.h5 m.h5 || fail "2-rank stopped and resumed output differs"
echo "ok: detect on 2 ranks, USR1 to one: both stopped (exit 3, $late chunks of the other rank); the rerun resumed ${saved#* }"

# ---- faces: 12 photos (face-api.js samples), SIGTERM
PKG=${CNNB_CACHE:-$HOME/.cache/cnnb}/npm/node_modules/@vladmandic/face-api
if ! [ -f "$PKG/demo/sample1.jpg" ]; then
  echo "note: faces not checked (face-api.js package missing: tools/setup)"
  echo "detect_stop e2e: ok"
  exit 0
fi
mkdir -p models fphotos
conv() { "$CNNB_BIN" convert --from tfjs "$PKG/model/$2-weights_manifest.json" --model "$CNNB_SOURCE_DIR/jobs/$1.cfg" \
           -o "models/$1.h5" >/dev/null 2>&1 || fail "convert $2"; }
conv face-detector-tiny tiny_face_detector_model
conv face-landmarks68 face_landmark_68_model
conv face-descriptor-resnet34 face_recognition_model
for i in 1 2; do for f in "$PKG"/demo/sample[1-6].jpg; do cp "$f" "fphotos/$i-${f##*/}"; done; done
N=$(ls fphotos | wc -l)
"$CNNB_BIN" import images --dir fphotos -o fp.h5 >/dev/null 2>&1 || fail "import face photos"
FCS=("$CNNB_BIN" faces --data fp.h5 --models models --batch 1)
"${FCS[@]}" -o fref.h5 >fref.log 2>&1 || fail "faces: $(cat fref.log)"
stop_run TERM f.h5 -- "${FCS[@]}"
grep -q "faces: stopped by a signal: $n photos computed in this run, $n of $N saved" f.h5.log ||
  fail "stop message: $(cat f.h5.log)"
out=$("${FCS[@]}" -o f.h5 2>&1) || fail "faces rerun: $out"
grep -q "($((N - n)) computed, $n resumed" <<<"$out" || fail "faces rerun did not compute only the missing chunks: $out"
same fref.h5 f.h5 || fail "faces stopped and resumed output differs"
echo "ok: faces stopped by TERM after $n of $N chunks, exit 3; the rerun computed the other $((N - n))"
echo "detect_stop e2e: ok"
