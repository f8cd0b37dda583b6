/* [batchnorm]: standalone batch normalisation over the input channels (output shape = input
 * shape, no activation, as Darknet's batchnorm layer), and the shared BN code of
 * batchnorm_impl.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "layers/batchnorm_impl.h"

int cnnb_bn_setup(cnnb_bn *bn, cnnb_layer *l, int c, int spatial, int max_batch)
{
  memset(bn, 0, sizeof *bn);
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
  if (!bn->xhat || !bn->mean || !bn->inv_std) {
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
  bn->xhat = bn->mean = bn->inv_std = NULL;
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

void cnnb_bn_forward(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train)
{
  const int C = bn->c, S = bn->spatial;
  const float *scales = l->param[bn->p_scales].data, *biases = l->param[bn->p_biases].data;
  float *rmean = l->param[bn->p_mean].data, *rvar = l->param[bn->p_var].data;
  const size_t m = (size_t)batch * S;
  for (int f = 0; f < C; f++) {
    double mean, var;
    if (train) {
      /* double accumulators: m can be large and float sums drift */
      double sum = 0, sq = 0;
      for (int b = 0; b < batch; b++) {
        const float *p = x + ((size_t)b * C + f) * S;
        for (int k = 0; k < S; k++) sum += p[k];
      }
      const double mu = sum / (double)m;
      for (int b = 0; b < batch; b++) {
        const float *p = x + ((size_t)b * C + f) * S;
        for (int k = 0; k < S; k++) sq += (p[k] - mu) * (p[k] - mu);
      }
      mean = mu;
      /* unbiased like Darknet; a single value has variance 0, not 0/0 */
      var = sq / (double)(m > 1 ? m - 1 : 1);
      rmean[f] = (float)(CNNB_BN_MOMENTUM * rmean[f] + (1.0 - CNNB_BN_MOMENTUM) * mean);
      rvar[f] = (float)(CNNB_BN_MOMENTUM * rvar[f] + (1.0 - CNNB_BN_MOMENTUM) * var);
    } else {
      mean = rmean[f];
      var = rvar[f];
    }
    /* normalising in double keeps the statistics' rounding out of xhat (finite-difference checks
     * of deep stacks otherwise drown in it); the cost is small next to the convolution */
    const double inv = 1.0 / sqrt(var + CNNB_BN_EPS);
    bn->mean[f] = (float)mean;
    bn->inv_std[f] = (float)inv;
    for (int b = 0; b < batch; b++) {
      const size_t o = ((size_t)b * C + f) * S;
      float *p = x + o, *xh = bn->xhat + o;
      for (int k = 0; k < S; k++) {
        xh[k] = (float)((p[k] - mean) * inv);
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
  const size_t m = (size_t)batch * S;
  for (int f = 0; f < C; f++) {
    double sdy = 0, sdyx = 0;
    for (int b = 0; b < batch; b++) {
      const size_t o = ((size_t)b * C + f) * S;
      for (int k = 0; k < S; k++) {
        sdy += dy[o + k];
        sdyx += (double)dy[o + k] * bn->xhat[o + k];
      }
    }
    if (gscales) gscales[f] += (float)sdyx;
    if (gbiases) gbiases[f] += (float)sdy;
    if (!dx) continue;
    /* dx = g*inv*(dy - mean(dy) - xhat*sum(dy*xhat)/(m-1)) in training (the statistics depend
     * on x); just g*inv*dy in inference (they are constants). */
    const float g = scales[f] * bn->inv_std[f];
    const float a = train ? (float)(sdy / (double)m) : 0.f;
    const float c = train ? (float)(sdyx / (double)(m > 1 ? m - 1 : 1)) : 0.f;
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
  int rc = cnnb_bn_setup(bn, l, l->in.c, l->in.h * l->in.w, net->max_batch);
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
