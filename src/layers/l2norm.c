/* [l2norm]: L2 normalisation of each sample across channels at every spatial position, as
 * Darknet's l2norm layer: y = x / sqrt(sum_c x^2 + eps), eps = 1e-12 inside the sqrt so an
 * all-zero column gives zeros, not NaN. With 1x1 spatial size this is the usual normalised
 * embedding. Darknet's backward keeps only the diagonal of the Jacobian; ours is exact:
 * dx = (g - y * (y . g)) / norm. The norms of the last forward stay in priv (max batch). */
#include <math.h>
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

#define L2NORM_EPS 1e-12

typedef struct l2norm_priv {
  float *norm; /* max_batch x h*w */
} l2norm_priv;

static int l2norm_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  (void)s;
  l->out = l->in;
  l2norm_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[l2norm] out of memory");
  /* max_batch 0 means planning only (info): nothing will run */
  size_t nn = net->max_batch > 0 ? (size_t)net->max_batch * l->in.h * l->in.w : 0;
  p->norm = nn ? malloc(sizeof(float) * nn) : NULL;
  if (nn && !p->norm) {
    free(p);
    return cnnb_error(CNNB_ENOMEM, "[l2norm] out of memory for norms");
  }
  l->priv = p;
  l->madds = 2.0 * (double)cnnb_shape_size(l->out);
  return 0;
}

static void l2norm_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void l2norm_forward(cnnb_layer *l, cnnb_net *net)
{
  l2norm_priv *p = l->priv;
  const int C = l->in.c, hw = l->in.h * l->in.w;
  for (int b = 0; b < net->batch; b++) {
    const float *x = l->input + (size_t)b * C * hw;
    float *y = l->output + (size_t)b * C * hw;
    for (int s = 0; s < hw; s++) {
      double sum = 0;
      for (int c = 0; c < C; c++) sum += (double)x[c * hw + s] * x[c * hw + s];
      float n = (float)sqrt(sum + L2NORM_EPS);
      p->norm[(size_t)b * hw + s] = n;
      for (int c = 0; c < C; c++) y[c * hw + s] = x[c * hw + s] / n;
    }
  }
}

static void l2norm_backward(cnnb_layer *l, cnnb_net *net)
{
  const l2norm_priv *p = l->priv;
  if (!l->input_delta) return;
  const int C = l->in.c, hw = l->in.h * l->in.w;
  for (int b = 0; b < net->batch; b++) {
    const float *y = l->output + (size_t)b * C * hw;
    const float *g = l->delta + (size_t)b * C * hw;
    float *dx = l->input_delta + (size_t)b * C * hw;
    for (int s = 0; s < hw; s++) {
      double dot = 0;
      for (int c = 0; c < C; c++) dot += (double)y[c * hw + s] * g[c * hw + s];
      float n = p->norm[(size_t)b * hw + s];
      for (int c = 0; c < C; c++) dx[c * hw + s] += (g[c * hw + s] - y[c * hw + s] * (float)dot) / n;
    }
  }
}

static void l2norm_free(cnnb_layer *l)
{
  l2norm_priv *p = l->priv;
  if (p) free(p->norm);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_l2norm_ops = {
    .section = "l2norm",
    .setup = l2norm_setup,
    .init = l2norm_init,
    .forward = l2norm_forward,
    .backward = l2norm_backward,
    .free = l2norm_free,
    .loss = NULL,
};
