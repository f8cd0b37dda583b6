#!/usr/bin/env bash
# A rank that dies (SIGKILL, as an out-of-memory kill or a node failure would) ends the whole
# job within seconds with a message naming the rank, and the last complete checkpoint stays
# loadable.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}" "${CNNB_WORK:?}"
F=/usr/share/datasets/fashion-mnist
[ -f $F/train-images-idx3-ubyte.gz ] || { echo "SKIP: dataset-fashion-mnist not installed"; exit 0; }
rm -rf "$CNNB_WORK" && mkdir -p "$CNNB_WORK" && cd "$CNNB_WORK" || fail "work dir"
J=$CNNB_SOURCE_DIR/jobs
"$CNNB_BIN" import idx --images $F/train-images-idx3-ubyte.gz --labels $F/train-labels-idx1-ubyte.gz \
  --limit 4000 -o train.h5 >/dev/null || fail "import"

mpirun -n 2 --oversubscribe "$CNNB_BIN" train $J/lenet5.cfg --data train.h5 --epochs 1000 --batch 32 \
  --checkpoint-every 10 --log-every 10 -o ck.h5 > run.log 2>&1 &
mp=$!
for _ in $(seq 300); do [ -f ck.h5 ] && break; sleep 0.1; done
[ -f ck.h5 ] || { kill $mp; fail "no checkpoint appeared: $(cat run.log)"; }
# The process of rank 1: Open MPI puts the rank in each process's environment.
victim=
for pid in $(pgrep -f "cnn-batch train $J/lenet5.cfg --data train.h5 --epochs 1000"); do
  tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$pid
done
[ -n "$victim" ] || { kill $mp; fail "rank 1 not found"; }
t0=$(date +%s)
kill -9 "$victim"
for _ in $(seq 300); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
if kill -0 $mp 2>/dev/null; then kill -9 $mp; fail "the job still runs 30 s after rank 1 died"; fi
wait $mp
rc=$?
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] || fail "mpirun exited 0 after a rank died"
grep -qi "rank 1" run.log || fail "the log does not name rank 1: $(tail -5 run.log)"
echo "job ended ${dt}s after rank 1 was killed, exit $rc: $(grep -i -m1 'rank 1' run.log)"
# The checkpoint on disk is the last complete one: it loads and evaluates.
[ ! -e ck.h5.tmp ] || echo "note: a partial ck.h5.tmp was left (the complete ck.h5 is untouched)"
out=$("$CNNB_BIN" eval $J/lenet5.cfg --weights ck.h5 --data train.h5 --limit 500 2>&1) || fail "checkpoint not loadable: $out"
grep -q "^accuracy: " <<<"$out" || fail "eval output: $out"
echo "last checkpoint loads: $(grep accuracy <<<"$out")"
