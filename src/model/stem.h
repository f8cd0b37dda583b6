/* The fused stem (src/model/stem.c): a 3x3 convolution of the 3-channel input to 16 channels
 * with leaky ReLU, followed by a 2x2 stride-2 max pool, as in face-api.js's tiny face detector
 * ('valid', bias) and Darknet's yolov3-tiny and yolov2-tiny ('same' padding, batch norm). As
 * two layers that is an im2col of 27 columns per pixel, a GEMM of only 16 x 27 per pixel, and
 * a 16-channel full-size map written, activated and read back by the pool (yolov3-tiny at 416:
 * 11 MB each way). Fused, the convolution runs in AVX2/FMA registers two rows at a time and
 * only the pooled map is written: the bias, or batch norm folded to a per-channel scale and
 * shift, on both conv rows, then the max, then leaky (monotonic, so it commutes with the max).
 * Installed by swapping the two layers' forward functions, so that cnnb_net_forward still runs
 * the network. */
#ifndef CNNB_MODEL_STEM_H
#define CNNB_MODEL_STEM_H

#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct cnnb_stem {
  cnnb_layer_ops ops[2];         /* copies of layers 0 and 1's ops with forward replaced */
  const cnnb_layer_ops *orig[2]; /* the originals, put back by cnnb_stem_remove */
  int on;
  int pad;      /* 0 ('valid') or 1 ('same') */
  int bn;       /* batch norm (folded at each forward) rather than a bias */
  int nrows;    /* threads that each have a padded row buffer */
  float *rows;  /* pad 1: per thread, 3 channels x 4 input rows x (width + 2) */
  float fold[32]; /* scale and shift of the 16 filters, refreshed each forward */
} cnnb_stem;

/* Installs the fused stem on net when the net cannot backpropagate and its layers 0 and 1 are
 * exactly that convolution and pool (checked from shapes, parameters and cfg keys; square even
 * input), no later layer reads layer 0's output, the CPU has AVX2 and FMA, and CNNB_STEM is not
 * 0. Returns 1 when installed, 0 when the net runs as before. st must outlive the net's
 * forwards (the layers point into it) or be removed first. */
int cnnb_stem_install(cnnb_stem *st, cnnb_net *net);
/* Puts the original forwards back and frees the buffers (a no-op when not installed). */
void cnnb_stem_remove(cnnb_stem *st, cnnb_net *net);

#endif
