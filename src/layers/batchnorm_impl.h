/* Private: the batch-normalisation arithmetic shared by [batchnorm] and by [convolutional] and
 * [connected] with batch_normalize=1, so that all three train and infer identically.
 *
 * Per channel f over m = batch*spatial values (NCHW):
 *   training:  mean, var = batch statistics, var UNBIASED (sum/(m-1)) as Darknet's variance_cpu;
 *              with net->stat_sum set (synchronised batch norm), over the global batch of all
 *              ranks, and backward then uses the global sums of dy and dy*xhat too;
 *              rolling = 0.99*rolling + 0.01*batch (Darknet's momentum)
 *   inference: mean, var = rolling statistics
 *   xhat = (x - mean) / sqrt(var + 1e-5),  y = scales*xhat + biases
 * Backward is the exact derivative of this forward (Darknet's own backward divides by m where
 * its forward divided by m-1; we stay consistent so gradient checks hold). */
#ifndef CNNB_BATCHNORM_IMPL_H
#define CNNB_BATCHNORM_IMPL_H

#include <math.h>
#include <stddef.h>

#include "cnnb/layer.h"

#define CNNB_BN_EPS 1e-5f
#define CNNB_BN_MOMENTUM 0.99f

typedef struct cnnb_bn {
  int c, spatial, max_batch;
  cnnb_net *net;                         /* for net->stat_sum: statistics over all ranks */
  double *acc;                           /* 4c+1: per-channel sums, then mean and variance */
  double count;                          /* values the last training statistics covered */
  int p_scales, p_biases, p_mean, p_var; /* indices in l->param */
  float *xhat;                           /* max_batch*c*spatial, kept for backward */
  float *mean, *inv_std;                 /* c each: the statistics of the last forward */
} cnnb_bn;

/* Declares scales, biases (trainable) and rolling_mean, rolling_variance (state) on l, in that
 * order, and allocates the buffers. On failure frees what it allocated. */
int cnnb_bn_setup(cnnb_bn *bn, cnnb_layer *l, int c, int spatial, cnnb_net *net);
/* scales 1, biases 0, rolling mean 0, rolling variance 1. */
void cnnb_bn_init(cnnb_bn *bn, cnnb_layer *l);
/* Normalises x (batch samples of c*spatial) in place, then scales and shifts. */
void cnnb_bn_forward(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train);
/* The same, then the activation act applied to the result in the same pass (y = act(bn(x))). */
void cnnb_bn_forward_act(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train, cnnb_act act);
/* One channel's inference batch norm as y = a*x + b: a = g / sqrt(var + eps), b = s - mean * a,
 * in double (cnnb_bn_fold, and the fused stem of src/model/stem.c, round them to float). */
static inline void cnnb_bn_fold1(float g, float s, float mean, float var, double *a, double *b)
{
  const double inv = 1.0 / sqrt((double)var + CNNB_BN_EPS);
  *a = g * inv;
  *b = s - mean * *a;
}

/* Inference's batch norm as one affine map per channel, y = a*x + b with a = scales/sqrt(rolling
 * variance + eps) and b = biases - rolling mean * a (computed in double; a or b may be NULL).
 * Nets that cannot backpropagate normalise this way, and the convolution folds it into its
 * output transform. */
void cnnb_bn_fold(cnnb_bn *bn, const cnnb_layer *l, float *a, float *b);
/* From dy = dL/dy computes dL/dx: written into dx (which may alias dy) when accumulate is 0,
 * added into dx when 1; dx may be NULL (parameter gradients only). Adds dL/dscales and
 * dL/dbiases into their grads when those exist. */
void cnnb_bn_backward(cnnb_bn *bn, cnnb_layer *l, const float *dy, float *dx, int batch, int train,
                      int accumulate);
/* The backward of y = relu(bn(x)) (cnnb_bn_forward_act with CNNB_ACT_RELU): ReLU's derivative
 * from y applied to delta, then cnnb_bn_backward(bn, l, delta, delta, batch, train, 0), row by
 * row in one sweep. */
void cnnb_bn_backward_relu(cnnb_bn *bn, cnnb_layer *l, const float *y, float *delta, int batch, int train);
void cnnb_bn_free(cnnb_bn *bn);

#endif
