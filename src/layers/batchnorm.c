/* [batchnorm]: standalone batch normalisation over the input channels (output shape = input
 * shape, no activation, as Darknet's batchnorm layer), and the shared BN code of
 * batchnorm_impl.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "layers/batchnorm_impl.h"

int cnnb_bn_setup(cnnb_bn *bn, cnnb_layer *l, int c, int spatial, cnnb_net *net)
{
  const int max_batch = net->max_batch;
  memset(bn, 0, sizeof *bn);
  bn->net = net;
  bn->c = c;
  bn->spatial = spatial;
  bn->max_batch = max_batch;
  int dims[1] = {c};
  if ((bn->p_scales = cnnb_layer_param(l, "scales", 1, 1, dims)) < 0) return bn->p_scales;
  if ((bn->p_biases = cnnb_layer_param(l, "biases", 1, 1, dims)) < 0) return bn->p_biases;
  if ((bn->p_mean = cnnb_layer_param(l, "rolling_mean", 0, 1, dims)) < 0) return bn->p_mean;
  if ((bn->p_var = cnnb_layer_param(l, "rolling_variance", 0, 1, dims)) < 0) return bn->p_var;
  if (max_batch <= 0) return 0; /* planning only (info): never runs forward */
  bn->xhat = malloc(sizeof(float) * (size_t)max_batch * c * spatial);
  bn->mean = malloc(sizeof(float) * (size_t)c);
  bn->inv_std = malloc(sizeof(float) * (size_t)c);
  bn->acc = malloc(sizeof(double) * (size_t)(4 * c + 1));
  if (!bn->xhat || !bn->mean || !bn->inv_std || !bn->acc) {
    cnnb_bn_free(bn);
    return cnnb_error(CNNB_ENOMEM, "out of memory for batch-norm buffers");
  }
  return 0;
}

void cnnb_bn_free(cnnb_bn *bn)
{
  free(bn->xhat);
  free(bn->mean);
  free(bn->inv_std);
  free(bn->acc);
  bn->xhat = bn->mean = bn->inv_std = NULL;
  bn->acc = NULL;
}

void cnnb_bn_init(cnnb_bn *bn, cnnb_layer *l)
{
  for (int f = 0; f < bn->c; f++) {
    l->param[bn->p_scales].data[f] = 1.f;
    l->param[bn->p_biases].data[f] = 0.f;
    l->param[bn->p_mean].data[f] = 0.f;
    l->param[bn->p_var].data[f] = 1.f;
  }
}

/* Batch statistics into mean[] and var[] (C each): per-channel sums over this rank's samples,
 * summed over all ranks when the network synchronises batch norm (net->stat_sum). Returns the
 * number of values the statistics cover. */
static double batch_stats(cnnb_bn *bn, const float *x, int batch, double *mean, double *var)
{
  const int C = bn->c, S = bn->spatial;
  double *acc = bn->acc; /* [0,C) sums, [C] count, [C+1, 2C+1) squared deviations */
  cnnb_net *net = bn->net;
  /* double accumulators: m can be large and float sums drift */
  for (int f = 0; f < C; f++) {
    double sum = 0;
    for (int b = 0; b < batch; b++) {
      const float *p = x + ((size_t)b * C + f) * S;
      for (int k = 0; k < S; k++) sum += p[k];
    }
    acc[f] = sum;
  }
  acc[C] = (double)batch * S;
  if (net->stat_sum) net->stat_sum(acc, C + 1, net->stat_sum_ctx);
  const double m = acc[C];
  for (int f = 0; f < C; f++) {
    const double mu = acc[f] / m;
    double sq = 0;
    for (int b = 0; b < batch; b++) {
      const float *p = x + ((size_t)b * C + f) * S;
      for (int k = 0; k < S; k++) sq += (p[k] - mu) * (p[k] - mu);
    }
    mean[f] = mu;
    acc[C + 1 + f] = sq;
  }
  if (net->stat_sum) net->stat_sum(acc + C + 1, C, net->stat_sum_ctx);
  /* unbiased like Darknet; a single value has variance 0, not 0/0 */
  for (int f = 0; f < C; f++) var[f] = acc[C + 1 + f] / (m > 1 ? m - 1 : 1);
  return m;
}

void cnnb_bn_forward(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train)
{
  const int C = bn->c, S = bn->spatial;
  const float *scales = l->param[bn->p_scales].data, *biases = l->param[bn->p_biases].data;
  float *rmean = l->param[bn->p_mean].data, *rvar = l->param[bn->p_var].data;
  double *mean = bn->acc + 2 * C + 1, *var = bn->acc + 3 * C + 1;
  if (train) {
    bn->count = batch_stats(bn, x, batch, mean, var);
    for (int f = 0; f < C; f++) {
      rmean[f] = (float)(CNNB_BN_MOMENTUM * rmean[f] + (1.0 - CNNB_BN_MOMENTUM) * mean[f]);
      rvar[f] = (float)(CNNB_BN_MOMENTUM * rvar[f] + (1.0 - CNNB_BN_MOMENTUM) * var[f]);
    }
  } else {
    for (int f = 0; f < C; f++) mean[f] = rmean[f], var[f] = rvar[f];
  }
  for (int f = 0; f < C; f++) {
    /* normalising in double keeps the statistics' rounding out of xhat (finite-difference checks
     * of deep stacks otherwise drown in it); the cost is small next to the convolution */
    const double inv = 1.0 / sqrt(var[f] + CNNB_BN_EPS), mu = mean[f];
    bn->mean[f] = (float)mu;
    bn->inv_std[f] = (float)inv;
    for (int b = 0; b < batch; b++) {
      const size_t o = ((size_t)b * C + f) * S;
      float *p = x + o, *xh = bn->xhat + o;
      for (int k = 0; k < S; k++) {
        xh[k] = (float)((p[k] - mu) * inv);
        p[k] = scales[f] * xh[k] + biases[f];
      }
    }
  }
}

void cnnb_bn_backward(cnnb_bn *bn, cnnb_layer *l, const float *dy, float *dx, int batch, int train,
                      int accumulate)
{
  const int C = bn->c, S = bn->spatial;
  const float *scales = l->param[bn->p_scales].data;
  float *gscales = l->param[bn->p_scales].grad, *gbiases = l->param[bn->p_biases].grad;
  double *acc = bn->acc; /* [0,C) sum dy, [C, 2C) sum dy*xhat */
  for (int f = 0; f < C; f++) {
    double sdy = 0, sdyx = 0;
    for (int b = 0; b < batch; b++) {
      const size_t o = ((size_t)b * C + f) * S;
      for (int k = 0; k < S; k++) {
        sdy += dy[o + k];
        sdyx += (double)dy[o + k] * bn->xhat[o + k];
      }
    }
    /* Parameter gradients from this rank's share: the allreduce of gradients sums them. */
    if (gscales) gscales[f] += (float)sdyx;
    if (gbiases) gbiases[f] += (float)sdy;
    acc[f] = sdy;
    acc[C + f] = sdyx;
  }
  if (!dx) return;
  /* The statistics depend on every sample they cover: with synchronised batch norm the input
   * gradient needs the global sums. */
  const double m = train ? bn->count : (double)batch * S;
  if (train && bn->net->stat_sum) bn->net->stat_sum(acc, 2 * C, bn->net->stat_sum_ctx);
  for (int f = 0; f < C; f++) {
    /* dx = g*inv*(dy - mean(dy) - xhat*sum(dy*xhat)/(m-1)) in training (the statistics depend
     * on x); just g*inv*dy in inference (they are constants). */
    const float g = scales[f] * bn->inv_std[f];
    const float a = train ? (float)(acc[f] / m) : 0.f;
    const float c = train ? (float)(acc[C + f] / (m > 1 ? m - 1 : 1)) : 0.f;
    for (int b = 0; b < batch; b++) {
      const size_t o = ((size_t)b * C + f) * S;
      for (int k = 0; k < S; k++) {
        const float v = g * (dy[o + k] - a - bn->xhat[o + k] * c);
        if (accumulate)
          dx[o + k] += v;
        else
          dx[o + k] = v;
      }
    }
  }
}

/* ---- the [batchnorm] layer ---- */

static int bn_layer_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  (void)s;
  if (l->in.c < 1 || l->in.h < 1 || l->in.w < 1)
    return cnnb_error(CNNB_ESHAPE, "empty input %dx%dx%d", l->in.c,
                      l->in.h, l->in.w);
  l->out = l->in;
  l->act = CNNB_ACT_LINEAR;
  cnnb_bn *bn = calloc(1, sizeof *bn);
  if (!bn) return cnnb_error(CNNB_ENOMEM, "out of memory");
  int rc = cnnb_bn_setup(bn, l, l->in.c, l->in.h * l->in.w, net);
  if (rc < 0) {
    free(bn);
    return rc;
  }
  l->priv = bn;
  l->madds = 2.0 * (double)cnnb_shape_size(l->out);
  l->workspace = 0;
  return 0;
}

static void bn_layer_init(cnnb_layer *l, cnnb_rng *rng)
{
  (void)rng;
  cnnb_bn_init(l->priv, l);
}

static void bn_layer_forward(cnnb_layer *l, cnnb_net *net)
{
  const size_t n = (size_t)net->batch * cnnb_shape_size(l->out);
  memcpy(l->output, l->input, sizeof(float) * n);
  cnnb_bn_forward(l->priv, l, l->output, net->batch, net->train);
}

static void bn_layer_backward(cnnb_layer *l, cnnb_net *net)
{
  cnnb_bn_backward(l->priv, l, l->delta, l->input_delta, net->batch, net->train, 1);
}

static void bn_layer_free(cnnb_layer *l)
{
  if (!l->priv) return;
  cnnb_bn_free(l->priv);
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_batchnorm_ops = {
  .section = "batchnorm",
  .setup = bn_layer_setup,
  .init = bn_layer_init,
  .forward = bn_layer_forward,
  .backward = bn_layer_backward,
  .free = bn_layer_free,
  .loss = NULL,
};
