#!/usr/bin/env node
// Reference for `cnn-batch faces` (tests and benchmarks only, never a runtime dependency):
// runs face-api.js (the npm package @vladmandic/face-api, CommonJS build for the tfjs wasm
// backend) on JPEG/PNG files with TinyFaceDetectorOptions + 68 landmarks + descriptors, the
// way its users call it, and writes per photo its faces as JSON:
//   {"backend", "input_size", "min_score", "photos": [{"file", "width", "height",
//    "faces": [{"box": [x, y, w, h], "score", "landmarks": [[x, y] x 68], "descriptor": [128],
//               "aligned": [x, y, w, h]}]}], "timing": {"photos", "seconds", "photos_per_s"}}
// Boxes and landmarks are in photo pixels (x, y: top-left corner). JPEGs are decoded with
// jpeg-js, PNGs (8-bit, non-interlaced, as PIL and libpng write them) by the small decoder
// below, both into an int32 H x W x 3 tensor. Timing covers detection to descriptors of every
// photo (decoding excluded), after --warmup photos (default 1: wasm compilation and weight upload
// happen there), over --repeat passes. "timing" also gives load_seconds (tfjs wasm init and the
// three models), decode_seconds (all files) and process_seconds (node's uptime when the JSON is
// written: the whole process less node's own start, which tools/bench_faces times from outside).
//
// usage: node tools/faceapi_ref.js [--models DIR] [--input-size 416] [--min-score 0.5]
//                                  [--repeat N] [--warmup N] [--threads N] -o OUT.json FILE...
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const { createRequire } = require('module');

function usage(msg) {
  if (msg) process.stderr.write(`faceapi_ref: ${msg}\n`);
  process.stderr.write('usage: node tools/faceapi_ref.js [--models DIR] [--input-size 416] [--min-score 0.5] '
    + '[--repeat N] [--warmup N] [--threads N] -o OUT.json FILE...\n');
  process.exit(2);
}

const cache = process.env.CNNB_CACHE || path.join(process.env.HOME || '/root', '.cache', 'cnnb');
const npmReq = createRequire(path.join(cache, 'npm', 'package.json'));
const pkgDir = path.join(cache, 'npm', 'node_modules', '@vladmandic', 'face-api');

const opt = { models: path.join(pkgDir, 'model'), inputSize: 416, minScore: 0.5, repeat: 1, warmup: 1, threads: 0,
  out: null };
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '--models') opt.models = val();
  else if (a === '--input-size') opt.inputSize = Number(val());
  else if (a === '--min-score') opt.minScore = Number(val());
  else if (a === '--repeat') opt.repeat = Number(val());
  else if (a === '--warmup') opt.warmup = Number(val());
  else if (a === '--threads') opt.threads = Number(val());
  else if (a === '-o' || a === '--output') opt.out = val();
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else files.push(a);
}
if (!opt.out || !files.length) usage('needs -o OUT.json and at least one file');
if (!(opt.warmup >= 0) || !(opt.repeat >= 1)) usage('--warmup needs N >= 0 and --repeat N >= 1');

// 8-bit PNG decoder (grey, grey+alpha, RGB, RGBA, palette; no interlace): PIL's output.
function decodePng(buf, file) {
  const sig = [137, 80, 78, 71, 13, 10, 26, 10];
  if (buf.length < 8 || sig.some((b, i) => buf[i] !== b)) throw new Error(`${file}: not a PNG`);
  let off = 8, w = 0, h = 0, depth = 0, ctype = 0, inter = 0, pal = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off), type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      w = data.readUInt32BE(0); h = data.readUInt32BE(4); depth = data[8]; ctype = data[9]; inter = data[12];
    } else if (type === 'PLTE') pal = data;
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  if (depth !== 8 || inter !== 0) throw new Error(`${file}: only 8-bit non-interlaced PNGs are supported`);
  const nc = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[ctype];
  if (!nc) throw new Error(`${file}: PNG colour type ${ctype}`);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = w * nc, px = Buffer.alloc(h * stride);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const cur = px.subarray(y * stride, (y + 1) * stride), prev = y ? px.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; x++) {
      const a = x >= nc ? cur[x - nc] : 0, b = prev ? prev[x] : 0, c = prev && x >= nc ? prev[x - nc] : 0;
      let p;
      if (f === 0) p = 0;
      else if (f === 1) p = a;
      else if (f === 2) p = b;
      else if (f === 3) p = (a + b) >> 1;
      else {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[x] = (src[x] + p) & 255;
    }
  }
  const rgb = new Int32Array(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    for (let k = 0; k < 3; k++) {
      let v;
      if (ctype === 3) v = pal[3 * px[i] + k];
      else if (nc <= 2) v = px[i * nc];
      else v = px[i * nc + k];
      rgb[3 * i + k] = v;
    }
  }
  return { width: w, height: h, rgb };
}

function decode(file, jpeg) {
  const buf = fs.readFileSync(file);
  if (buf.length >= 8 && buf[0] === 137 && buf[1] === 80) return decodePng(buf, file);
  const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true });
  const rgb = new Int32Array(img.width * img.height * 3);
  for (let i = 0; i < img.width * img.height; i++) {
    rgb[3 * i] = img.data[4 * i]; rgb[3 * i + 1] = img.data[4 * i + 1]; rgb[3 * i + 2] = img.data[4 * i + 2];
  }
  return { width: img.width, height: img.height, rgb };
}

async function main() {
  const tLoad = process.hrtime.bigint();
  const tf = npmReq('@tensorflow/tfjs');
  const wasm = npmReq('@tensorflow/tfjs-backend-wasm');
  const jpeg = npmReq('jpeg-js');
  const faceapi = npmReq('@vladmandic/face-api/dist/face-api.node-wasm.js');
  // false: emscripten's own loader, which reads the .wasm files from disk (fetch needs a URL)
  wasm.setWasmPaths(path.dirname(npmReq.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep, false);
  if (opt.threads > 0 && wasm.setThreadsCount) wasm.setThreadsCount(opt.threads);
  await tf.setBackend('wasm');
  await tf.ready();
  await faceapi.nets.tinyFaceDetector.loadFromDisk(opt.models);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(opt.models);
  await faceapi.nets.faceRecognitionNet.loadFromDisk(opt.models);
  const loadSeconds = Number(process.hrtime.bigint() - tLoad) / 1e9;
  const options = new faceapi.TinyFaceDetectorOptions({ inputSize: opt.inputSize, scoreThreshold: opt.minScore });

  // the dlib-aligned box the descriptor saw (before clipping), as face-api.js computes it
  const alignedBox = (lm) => { const b = lm.align(null, { useDlibAlignment: true }); return [b.x, b.y, b.width, b.height]; };
  const tDecode = process.hrtime.bigint();
  const photos = files.map((f) => ({ file: f, img: decode(f, jpeg) }));
  const decodeSeconds = Number(process.hrtime.bigint() - tDecode) / 1e9;
  const run = async (img) => {
    const t = tf.tensor3d(img.rgb, [img.height, img.width, 3], 'int32');
    const res = await faceapi.detectAllFaces(t, options).withFaceLandmarks().withFaceDescriptors();
    t.dispose();
    return res;
  };
  for (let i = 0; i < opt.warmup; i++) await run(photos[i % photos.length].img); // wasm compilation, weight upload
  let results = null;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < opt.repeat; r++) {
    results = [];
    for (const p of photos) results.push(await run(p.img));
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const out = {
    backend: tf.getBackend(),
    input_size: opt.inputSize,
    min_score: opt.minScore,
    photos: photos.map((p, i) => ({
      file: p.file,
      width: p.img.width,
      height: p.img.height,
      faces: results[i].map((f) => ({
        box: [f.detection.box.x, f.detection.box.y, f.detection.box.width, f.detection.box.height],
        score: f.detection.score,
        landmarks: f.landmarks.positions.map((pt) => [pt.x, pt.y]),
        aligned: alignedBox(f.landmarks),
        descriptor: Array.from(f.descriptor),
      })),
    })),
    timing: { photos: photos.length * opt.repeat, seconds, photos_per_s: (photos.length * opt.repeat) / seconds,
      warmup: opt.warmup, load_seconds: loadSeconds, decode_seconds: decodeSeconds },
  };
  out.timing.process_seconds = process.uptime(); // the JSON below is written after this: a few ms
  fs.writeFileSync(opt.out, JSON.stringify(out));
  const nf = out.photos.reduce((s, p) => s + p.faces.length, 0);
  process.stdout.write(`faceapi_ref: ${photos.length} photos, ${nf} faces, ${out.timing.photos_per_s.toFixed(3)} photos/s `
    + `(${out.backend})\n`);
}

main().catch((e) => { process.stderr.write(`faceapi_ref: ${e && e.message ? e.message : e}\n`); process.exit(1); });
