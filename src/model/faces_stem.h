/* The face detector's stem, fused (src/model/faces_stem.c): face-api.js's tiny face detector
 * starts with a 3x3 convolution of the 3-channel input to 16 channels ('valid', bias, leaky)
 * and a 2x2 stride-2 max pool. As two layers that is an im2col of 27 x 414^2 floats, a GEMM of
 * only 16 x 27 per pixel, a 16 x 414^2 output written, activated and read back by the pool: a
 * third of the detector's time. Fused, the convolution runs on AVX2/FMA registers two rows at a time
 * and only the pooled 16 x 207^2 map is written (bias and leaky after the max: both are
 * monotonic, so the result is the same). Installed by swapping the two layers' forward
 * functions, so that cnnb_net_forward still runs the network. */
#ifndef CNNB_FACES_STEM_H
#define CNNB_FACES_STEM_H

#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct cnnb_faces_stem {
  cnnb_layer_ops ops[2];           /* copies of layers 0 and 1's ops with forward replaced */
  const cnnb_layer_ops *orig[2];   /* the originals, put back by cnnb_faces_stem_remove */
  int on;
} cnnb_faces_stem;

/* Installs the fused stem on net when its layers 0 and 1 are exactly that convolution and pool
 * (checked from shapes, parameters and cfg keys), the CPU has AVX2 and FMA, and CNNB_FACES_STEM
 * is not 0. Returns 1 when installed, 0 when the net runs as before. st must outlive the net's
 * forwards (the layers point into it) or be removed first. */
int cnnb_faces_stem_install(cnnb_faces_stem *st, cnnb_net *net);
/* Puts the original forwards back (a no-op when not installed). */
void cnnb_faces_stem_remove(cnnb_faces_stem *st, cnnb_net *net);

#endif
