/* [siamese]: the notes' verification head, trained as binary classification on the pairs of
 * the global batch (every ordered pair (i, j), i != j; "same" when the labels are equal):
 *   y_ij = sigmoid(sum_k w_k phi(f_ik, f_jk) + b)
 *   phi = |a - b|                        distance=l1 (default)
 *   phi = (a - b)^2 / (|a| + |b| + eps)  distance=chi2: the notes' chi-square form; |.| in the
 *                                        denominator extends it to the signed entries of an
 *                                        L2-normalised embedding (equal for features >= 0)
 * with binary cross-entropy. Positive and negative pairs each weigh half, so a batch with few
 * same-identity pairs still learns both; an anchor's loss is its pairs' weighted sum, scaled
 * so that the mean over anchors is the balanced mean cross-entropy. Parameters: weights (k)
 * and bias, initialised to -1/sqrt(k) and 1 (closer pairs score higher from the start).
 * Pairs are formed across the whole global batch (layers/metric.h); the head's parameter
 * gradients are added for the pairs whose first sample this rank owns, so their sum over
 * ranks is the whole batch's. Like [triplet] the layer passes its input through. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "layers/metric.h"

#define CHI2_EPS 1e-12

typedef struct siamese_priv {
  cnnb_metric_batch mb; /* first: cnnb_metric_layer_batch() */
  int chi2;
} siamese_priv;

static int siamese_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  const char *dist = cnnb_cfg_str(s, "distance", "l1");
  int chi2;
  if (!strcmp(dist, "l1"))
    chi2 = 0;
  else if (!strcmp(dist, "chi2"))
    chi2 = 1;
  else
    return cnnb_error(CNNB_ECFG, "%s:%d: [siamese] key 'distance' = '%s': use l1 or chi2", cfg->path,
                      cnnb_cfg_find(s, "distance")->line, dist);
  siamese_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  l->priv = p;
  p->chi2 = chi2;
  const int D = (int)cnnb_shape_size(l->in), one = 1;
  int rc = cnnb_metric_init(&p->mb, D, net->max_batch);
  if (rc < 0) return rc;
  if ((rc = cnnb_layer_param(l, "weights", 1, 1, &D)) < 0) return rc;
  if ((rc = cnnb_layer_param(l, "biases", 1, 1, &one)) < 0) return rc;
  l->out = l->in;
  l->act = CNNB_ACT_LINEAR;
  return 0;
}

static void siamese_init(cnnb_layer *l, cnnb_rng *rng)
{
  (void)rng;
  cnnb_param *w = &l->param[0], *b = &l->param[1];
  for (size_t k = 0; k < w->count; k++) w->data[k] = -1.0f / sqrtf((float)w->count);
  b->data[0] = 1.0f;
}

static void siamese_forward(cnnb_layer *l, cnnb_net *net)
{
  memcpy(l->output, l->input, sizeof(float) * (size_t)net->batch * cnnb_shape_size(l->in));
}

static void siamese_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta) return;
  const size_t n = (size_t)net->batch * cnnb_shape_size(l->in);
  for (size_t i = 0; i < n; i++) l->input_delta[i] += l->delta[i];
}

/* phi(a, b) and its partial derivatives. */
static inline double phi(int chi2, double a, double b, double *da, double *db)
{
  double d = a - b;
  if (!chi2) {
    double s = d > 0 ? 1 : d < 0 ? -1 : 0;
    *da = s, *db = -s;
    return fabs(d);
  }
  double den = fabs(a) + fabs(b) + CHI2_EPS, q = d * d / (den * den);
  double sa = a > 0 ? 1 : a < 0 ? -1 : 0, sb = b > 0 ? 1 : b < 0 ? -1 : 0;
  *da = 2 * d / den - q * sa;
  *db = -2 * d / den - q * sb;
  return d * d / den;
}

static double siamese_loss(cnnb_layer *l, cnnb_net *net)
{
  siamese_priv *p = l->priv;
  cnnb_metric_batch *b = &p->mb;
  l->delta_is_input_grad = 1;
  if (cnnb_metric_gather(b, l, net, l->input, net->batch) < 0) {
    cnnb_log(CNNB_LOG_ERROR, "%s", cnnb_error_message());
    return NAN;
  }
  const int G = b->total, D = b->dim;
  const float *w = l->param[0].data, bias = l->param[1].data[0];
  float *gw = l->param[0].grad, *gb = l->param[1].grad;
  long npos = 0, nneg = 0;
  for (int i = 0; i < G; i++)
    for (int j = 0; j < G; j++)
      if (i != j) {
        if (b->lab[i] == b->lab[j])
          npos++;
        else
          nneg++;
      }
  /* balanced weights: the positives' and the negatives' mean cross-entropies weigh half each
   * (all of it when the batch has only one kind) */
  const double wpos = npos ? (double)G / ((nneg ? 2.0 : 1.0) * npos) : 0;
  const double wneg = nneg ? (double)G / ((npos ? 2.0 : 1.0) * nneg) : 0;
  const double scale = net->loss_scale;
  double own = 0;
  for (int i = 0; i < G; i++) {
    const float *xi = cnnb_metric_row(b, i);
    const int mine = i >= b->first && i < b->first + b->n;
    for (int j = 0; j < G; j++) {
      if (j == i) continue;
      const float *xj = cnnb_metric_row(b, j);
      const int same = b->lab[i] == b->lab[j];
      const double wij = same ? wpos : wneg;
      double z = bias, da, db;
      for (int k = 0; k < D; k++) z += w[k] * phi(p->chi2, xi[k], xj[k], &da, &db);
      /* cross-entropy from the logit: softplus(z) - y z, stable for large |z| */
      double ce = (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - (same ? z : 0);
      double g = wij * (1.0 / (1.0 + exp(-z)) - same); /* d(wij ce)/dz */
      if (mine) {
        own += wij * ce;
        if (gw) {
          for (int k = 0; k < D; k++) gw[k] += (float)(scale * g * phi(p->chi2, xi[k], xj[k], &da, &db));
          gb[0] += (float)(scale * g);
        }
      }
      float *gi = b->grad + (size_t)i * D, *gj = b->grad + (size_t)j * D;
      for (int k = 0; k < D; k++) {
        phi(p->chi2, xi[k], xj[k], &da, &db);
        gi[k] += (float)(g * w[k] * da);
        gj[k] += (float)(g * w[k] * db);
      }
    }
  }
  if (l->delta) cnnb_metric_scatter(b, l->delta, net->loss_scale);
  return own;
}

static void siamese_free(cnnb_layer *l)
{
  siamese_priv *p = l->priv;
  if (p) cnnb_metric_free(&p->mb);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_siamese_ops = {
    .section = "siamese",
    .setup = siamese_setup,
    .init = siamese_init,
    .forward = siamese_forward,
    .backward = siamese_backward,
    .free = siamese_free,
    .loss = siamese_loss,
};
