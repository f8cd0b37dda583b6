#!/usr/bin/env node
// Reference for `cnn-batch embed` with the ResNet-34 face descriptor (benchmarks and checks only,
// never a runtime dependency): face-api.js's computeFaceDescriptor (npm @vladmandic/face-api,
// CommonJS build for the tfjs wasm backend) on ready 150x150 RGB crops, one call per crop, the
// way its users compute descriptors of aligned faces.
//   node tools/faceapi_embed.js [--models DIR] [--first I] [--count N] -o OUT.json CROPS.u8
// CROPS.u8: raw uint8 crops end to end, N x 150 x 150 x 3 (rows top to bottom, RGB), as
// tools/bench_embed writes them from the dataset file it gives `embed`. Crops [I, I + N) are
// computed (default: all). OUT.json: {"backend", "first", "descriptors": [[128] ...],
// "timing": {"crops", "seconds", "crops_per_s"}}; timing covers every crop after one warm-up
// crop (model loading and wasm compilation excluded).
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function usage(msg) {
  if (msg) process.stderr.write(`faceapi_embed: ${msg}\n`);
  process.stderr.write('usage: node tools/faceapi_embed.js [--models DIR] [--first I] [--count N] -o OUT.json CROPS.u8\n');
  process.exit(2);
}

const cache = process.env.CNNB_CACHE || path.join(process.env.HOME || '/root', '.cache', 'cnnb');
const npmReq = createRequire(path.join(cache, 'npm', 'package.json'));
const pkgDir = path.join(cache, 'npm', 'node_modules', '@vladmandic', 'face-api');
const S = 150, CROP = S * S * 3;

const opt = { models: path.join(pkgDir, 'model'), first: 0, count: -1, out: null, file: null };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--models') opt.models = val();
  else if (a === '--first') opt.first = Number(val());
  else if (a === '--count') opt.count = Number(val());
  else if (a === '-o' || a === '--output') opt.out = val();
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else if (opt.file) usage('one crops file only');
  else opt.file = a;
}
if (!opt.out || !opt.file) usage('needs -o OUT.json and CROPS.u8');

async function main() {
  const buf = fs.readFileSync(opt.file);
  if (buf.length % CROP) throw new Error(`${opt.file}: ${buf.length} bytes is not a whole number of 150x150x3 crops`);
  const total = buf.length / CROP;
  const n = opt.count < 0 ? total - opt.first : opt.count;
  if (opt.first < 0 || n < 1 || opt.first + n > total) throw new Error(`${opt.file}: crops ${opt.first}..${opt.first + n - 1} of ${total}`);
  const tf = npmReq('@tensorflow/tfjs');
  const wasm = npmReq('@tensorflow/tfjs-backend-wasm');
  const faceapi = npmReq('@vladmandic/face-api/dist/face-api.node-wasm.js');
  wasm.setWasmPaths(path.dirname(npmReq.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep, false);
  await tf.setBackend('wasm');
  await tf.ready();
  await faceapi.nets.faceRecognitionNet.loadFromDisk(opt.models);
  const crop = (i) => tf.tensor3d(Int32Array.from(buf.subarray(i * CROP, (i + 1) * CROP)), [S, S, 3], 'int32');
  const embed = async (i) => {
    const t = crop(i);
    const d = await faceapi.computeFaceDescriptor(t);
    t.dispose();
    return Array.from(d);
  };
  await embed(opt.first); // warm-up
  const out = [];
  const t0 = process.hrtime.bigint();
  for (let i = opt.first; i < opt.first + n; i++) out.push(await embed(i));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  fs.writeFileSync(opt.out, JSON.stringify({ backend: tf.getBackend(), first: opt.first, descriptors: out,
    timing: { crops: n, seconds, crops_per_s: n / seconds } }));
  process.stdout.write(`faceapi_embed: ${n} crops, ${(n / seconds).toFixed(2)} crops/s (${tf.getBackend()})\n`);
}

main().catch((e) => { process.stderr.write(`faceapi_embed: ${e && e.message ? e.message : e}\n`); process.exit(1); });
