#!/usr/bin/env bash
# `cnn-batch info`: the notes' LeNet prints its per-layer parameters and totals; a missing
# model file fails with its path in the message.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${CNNB_BIN:?}" "${CNNB_SOURCE_DIR:?}"
cd "$CNNB_SOURCE_DIR" || fail "cd $CNNB_SOURCE_DIR"

out=$("$CNNB_BIN" info jobs/lenet5-notes.cfg 2>&1) || fail "info exited $?: $out"
for n in 608 3,216 48,120 10,164 850 "28 x 28 x 8" "5 x 5 x 16" \
    "total trainable parameters: 62,958" "total multiply-adds: 0.86 M" "activation memory"; do
  grep -qF -- "$n" <<<"$out" || fail "missing '$n' in:
$out"
done
# One row per layer: 8 layers, indices 0..7.
[ "$(grep -cE '^ +[0-9]+  [a-z]' <<<"$out")" -eq 8 ] || fail "expected 8 layer rows:
$out"

"$CNNB_BIN" info --help | grep -q "usage: cnn-batch info" || fail "--help"

missing=no-such-dir/missing-model.cfg
err=$("$CNNB_BIN" info "$missing" 2>&1) && fail "info on a missing file exited 0"
grep -q "^cnn-batch: error: .*$missing" <<<"$err" || fail "message lacks the path: $err"
echo "ok"
