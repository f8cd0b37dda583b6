#!/usr/bin/env node
// Tensor-level reference for the three face-api.js networks that cnn-batch imports (tests only,
// never a runtime dependency): runs face-api.js's own TinyFaceDetector, FaceLandmark68Net and
// FaceRecognitionNet (the npm package @vladmandic/face-api, CommonJS build on tfjs's wasm
// backend) on uint8 input tensors made from photos, and writes inputs and raw outputs so that
// `cnn-batch predict` can be run on exactly the same inputs:
//   DIR/detector.u8     N x S x S x 3 uint8: each photo resized (tf bilinear) to S = --input-size
//   DIR/detector.f32    N x S/32 x S/32 x 25 float32: conv8's raw output (NHWC, anchor-major
//                       groups of tx, ty, tw, th, objectness), before any sigmoid
//   DIR/landmarks.u8    M x 112 x 112 x 3: face crops (face-api.js's boxes on the photos)
//   DIR/landmarks.f32   M x 136: the landmark net's fc output (x0, y0, x1, ... relative to 112)
//   DIR/descriptor.u8   M x 150 x 150 x 3: the same faces cropped and resized to 150
//   DIR/descriptor.f32  M x 128: the recognition net's output
//   DIR/meta.json       {"photos", "input_size", "faces", "backend"}
// Values are little-endian. Crops are the detection box cut from the photo and resized with
// tf.image.resizeBilinear, rounded to uint8; they need not match `faces`' alignment, since the
// point is the networks themselves.
//
// usage: node tools/faceapi_nets.js -o DIR [--input-size 416] [--max-faces 2] PHOTO.jpg...
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function usage(msg) {
  if (msg) process.stderr.write(`faceapi_nets: ${msg}\n`);
  process.stderr.write('usage: node tools/faceapi_nets.js -o DIR [--input-size 416] [--max-faces 2] PHOTO.jpg...\n');
  process.exit(2);
}

const cache = process.env.CNNB_CACHE || path.join(process.env.HOME || '/root', '.cache', 'cnnb');
const npmReq = createRequire(path.join(cache, 'npm', 'package.json'));
const pkgDir = path.join(cache, 'npm', 'node_modules', '@vladmandic', 'face-api');

const opt = { out: null, inputSize: 416, maxFaces: 2 };
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
  if (a === '-o') opt.out = val();
  else if (a === '--input-size') opt.inputSize = Number(val());
  else if (a === '--max-faces') opt.maxFaces = Number(val());
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else files.push(a);
}
if (!opt.out || !files.length) usage('needs -o DIR and at least one photo');
if (!(opt.inputSize > 0 && opt.inputSize % 32 === 0)) usage('--input-size must be a positive multiple of 32');

async function main() {
  const tf = npmReq('@tensorflow/tfjs');
  const wasm = npmReq('@tensorflow/tfjs-backend-wasm');
  const jpeg = npmReq('jpeg-js');
  const faceapi = npmReq('@vladmandic/face-api/dist/face-api.node-wasm.js');
  wasm.setWasmPaths(path.dirname(npmReq.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep, false);
  await tf.setBackend('wasm');
  await tf.ready();
  const models = path.join(pkgDir, 'model');
  await faceapi.nets.tinyFaceDetector.loadFromDisk(models);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(models);
  await faceapi.nets.faceRecognitionNet.loadFromDisk(models);
  fs.mkdirSync(opt.out, { recursive: true });

  const S = opt.inputSize;
  // a uint8-valued int32 tensor of size s x s from an image tensor (rounded like a saved image)
  const toU8 = (img, s) => tf.tidy(() => tf.clipByValue(tf.round(
    tf.image.resizeBilinear(tf.cast(img, 'float32'), [s, s], false, false)), 0, 255).toInt());
  const bufs = { detector: [[], []], landmarks: [[], []], descriptor: [[], []] };
  const push = async (name, inp, out) => {
    bufs[name][0].push(Buffer.from(Uint8Array.from(await inp.data())));
    bufs[name][1].push(Buffer.from((await out.data()).buffer.slice(0)));
  };
  let faces = 0;
  for (const file of files) {
    const img = jpeg.decode(fs.readFileSync(file), { useTArray: true, formatAsRGBA: false });
    const photo = tf.tensor3d(Int32Array.from(img.data), [img.height, img.width, 3], 'int32');
    // detector: the net's own forward (normalisation and layers), raw conv8 output
    const din = toU8(photo, S);
    const dout = await faceapi.nets.tinyFaceDetector.forward(din, S);
    await push('detector', din, dout);
    // faces found the usual way give realistic crops for the other two nets
    const dets = await faceapi.detectAllFaces(photo, new faceapi.TinyFaceDetectorOptions({ inputSize: S, scoreThreshold: 0.5 }));
    for (const det of dets.slice(0, opt.maxFaces)) {
      const b = det.box;
      const x0 = Math.max(0, Math.floor(b.x)), y0 = Math.max(0, Math.floor(b.y));
      const x1 = Math.min(img.width, Math.ceil(b.x + b.width)), y1 = Math.min(img.height, Math.ceil(b.y + b.height));
      const crop = tf.slice(photo, [y0, x0, 0], [y1 - y0, x1 - x0, 3]);
      const lin = toU8(crop, 112);
      const ni = await faceapi.toNetInput(lin);
      const lout = faceapi.nets.faceLandmark68Net.runNet(ni);
      await push('landmarks', lin, lout);
      const rin = toU8(crop, 150);
      const rout = await faceapi.nets.faceRecognitionNet.forward(rin);
      await push('descriptor', rin, rout);
      tf.dispose([crop, lin, lout, rin, rout]);
      faces++;
    }
    tf.dispose([photo, din, dout]);
  }
  for (const [name, [ins, outs]] of Object.entries(bufs)) {
    fs.writeFileSync(path.join(opt.out, `${name}.u8`), Buffer.concat(ins));
    fs.writeFileSync(path.join(opt.out, `${name}.f32`), Buffer.concat(outs));
  }
  fs.writeFileSync(path.join(opt.out, 'meta.json'), JSON.stringify({
    photos: files.length, input_size: S, faces, backend: tf.getBackend(),
  }) + '\n');
  process.stdout.write(`faceapi_nets: ${files.length} photos, ${faces} faces (${tf.getBackend()}) -> ${opt.out}\n`);
}

main().catch((e) => { process.stderr.write(`faceapi_nets: ${e.stack || e}\n`); process.exit(1); });
