/* [softmax]: p = softmax(x / temperature) over each of `groups` equal slices of a sample's
 * c*h*w values (Darknet keys groups=1, temperature=1; spatial softmax is not supported).
 * As the last layer it is also the classifier loss: cross-entropy against one integer class per
 * sample, whose gradient w.r.t. the softmax INPUT, (p - onehot)/T, is simple; loss() therefore
 * stores that gradient in l->delta and marks delta_is_input_grad so backward passes it through.
 * Otherwise backward applies the full softmax Jacobian to l->delta. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "layers/softmax.h"

typedef struct softmax_priv {
  int groups, gsize;
  float temperature;
  long skipped; /* labels outside [0, outputs) seen by loss() */
} softmax_priv;

static int softmax_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int groups, spatial, rc;
  float temp;
  if ((rc = cnnb_cfg_int(cfg, s, "groups", 1, 1, 1 << 24, &groups)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "temperature", 1.f, 1e-6f, 1e6f, &temp)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "spatial", 0, 0, 1, &spatial)) < 0) return rc;
  if (spatial)
    return cnnb_error(CNNB_ECFG, "spatial=1 is not supported");
  const size_t n = cnnb_shape_size(l->in);
  if (n < 1 || n % (size_t)groups)
    return cnnb_error(CNNB_ESHAPE, "groups=%d must divide the input size %zu", groups, n);
  softmax_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  p->groups = groups;
  p->gsize = (int)(n / (size_t)groups);
  p->temperature = temp;
  l->priv = p;
  l->out = l->in;
  l->act = CNNB_ACT_LINEAR;
  l->workspace = 0;
  l->madds = 0;
  return 0;
}

static void softmax_forward(cnnb_layer *l, cnnb_net *net)
{
  softmax_priv *p = l->priv;
  const float invt = 1.f / p->temperature;
  const size_t slices = (size_t)net->batch * p->groups;
  for (size_t i = 0; i < slices; i++) {
    const float *x = l->input + i * p->gsize;
    float *y = l->output + i * p->gsize;
    float mx = -FLT_MAX;
    for (int k = 0; k < p->gsize; k++) mx = x[k] > mx ? x[k] : mx;
    /* subtracting the max keeps exp() from overflowing; the result is unchanged */
    double sum = 0;
    for (int k = 0; k < p->gsize; k++) {
      y[k] = expf((x[k] - mx) * invt);
      sum += y[k];
    }
    const float inv = (float)(1.0 / sum);
    for (int k = 0; k < p->gsize; k++) y[k] *= inv;
  }
}

static void softmax_backward(cnnb_layer *l, cnnb_net *net)
{
  softmax_priv *p = l->priv;
  if (!l->input_delta) return;
  const size_t n = (size_t)net->batch * p->groups * p->gsize;
  if (l->delta_is_input_grad) {
    for (size_t i = 0; i < n; i++) l->input_delta[i] += l->delta[i];
    return;
  }
  const float invt = 1.f / p->temperature;
  const size_t slices = (size_t)net->batch * p->groups;
  for (size_t i = 0; i < slices; i++) {
    const float *y = l->output + i * p->gsize, *d = l->delta + i * p->gsize;
    float *dx = l->input_delta + i * p->gsize;
    double dot = 0;
    for (int k = 0; k < p->gsize; k++) dot += (double)y[k] * d[k];
    for (int k = 0; k < p->gsize; k++) dx[k] += y[k] * (d[k] - (float)dot) * invt;
  }
}

/* Cross-entropy -log p[label], computed from the logits (log-sum-exp) so that a probability
 * that underflowed to 0 still gives a finite loss. With groups > 1 the label indexes the whole
 * vector and only its slice contributes. */
static double softmax_loss(cnnb_layer *l, cnnb_net *net)
{
  softmax_priv *p = l->priv;
  const int outputs = p->groups * p->gsize;
  const float invt = 1.f / p->temperature;
  const float scale = net->loss_scale * invt;
  double total = 0;
  long skipped = 0;
  l->delta_is_input_grad = 1;
  if (l->delta) memset(l->delta, 0, sizeof(float) * (size_t)net->batch * outputs);
  if (!net->truth) {
    cnnb_log(CNNB_LOG_ERROR, "layer %d [softmax]: loss without labels", l->index);
    return NAN;
  }
  for (int b = 0; b < net->batch; b++) {
    const int label = net->truth[b];
    if (label < 0 || label >= outputs) {
      skipped++;
      continue;
    }
    const int g = label / p->gsize;
    const size_t off = (size_t)b * outputs + (size_t)g * p->gsize;
    const float *x = l->input + off;
    float mx = -FLT_MAX;
    for (int k = 0; k < p->gsize; k++) mx = x[k] > mx ? x[k] : mx;
    double sum = 0;
    for (int k = 0; k < p->gsize; k++) sum += exp((double)(x[k] - mx) * invt);
    total += log(sum) - (double)(x[label - g * p->gsize] - mx) * invt;
    if (l->delta) {
      const float *y = l->output + off;
      float *d = l->delta + off;
      for (int k = 0; k < p->gsize; k++) d[k] = y[k] * scale;
      d[label - g * p->gsize] -= scale;
    }
  }
  if (skipped) {
    p->skipped += skipped;
    cnnb_log(CNNB_LOG_WARN, "layer %d [softmax]: skipped %ld label(s) outside [0, %d)", l->index,
             skipped, outputs);
  }
  return total;
}

long cnnb_softmax_skipped_labels(const cnnb_layer *l)
{
  if (!l || !l->ops || !l->ops->section || strcmp(l->ops->section, "softmax") || !l->priv) return 0;
  return ((const softmax_priv *)l->priv)->skipped;
}

static void softmax_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_softmax_ops = {
  .section = "softmax",
  .setup = softmax_setup,
  .init = NULL,
  .forward = softmax_forward,
  .backward = softmax_backward,
  .free = softmax_free,
  .loss = softmax_loss,
};
