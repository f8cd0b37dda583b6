/* [triplet]: the triplet loss of FaceNet (Schroff et al. 2015) with online mining inside the
 * global batch, for embeddings (usually after [l2norm]):
 *   L(A, P, N) = max(||f(A) - f(P)||^2 - ||f(A) - f(N)||^2 + margin, 0)
 * Keys: margin (alpha, default 0.2, must be > 0) and mining:
 *   hard      every sample is an anchor once, with its farthest positive and its nearest
 *             negative ("batch hard", Hermans et al. 2017);
 *   semihard  (default) every anchor-positive pair (A, P) with the nearest negative that is
 *             still farther than P (d(A,N) > d(A,P)); when none is, the farthest negative
 *             (FaceNet's semi-hard triplets, as TensorFlow's triplet_semihard_loss).
 * An anchor's loss is its triplets' mean (one triplet with hard mining), so the loss the
 * trainer reports is the mean over anchors. Anchors without a positive or a negative in the
 * batch add nothing. The layer passes its input through (its output is the embedding), so a
 * trained model file embeds as it is. Mining decisions are piecewise constant: the gradient is
 * that of the chosen triplets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "layers/metric.h"

enum { MINE_HARD = 0, MINE_SEMIHARD = 1 };

typedef struct triplet_priv {
  cnnb_metric_batch mb; /* first: cnnb_metric_layer_batch() */
  float margin;
  int mining;
  double *dist; /* cap x cap squared distances */
  int dcap;
} triplet_priv;

static int triplet_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  float margin;
  int rc = cnnb_cfg_float(cfg, s, "margin", 0.2f, -1e9f, 1e9f, &margin);
  if (rc) return rc;
  if (!(margin > 0))
    return cnnb_error(CNNB_ECFG, "%s:%d: [triplet] key 'margin' = %g: the margin must be positive", cfg->path,
                      cnnb_cfg_find(s, "margin")->line, margin);
  const char *mining = cnnb_cfg_str(s, "mining", "semihard");
  int mode;
  if (!strcmp(mining, "hard"))
    mode = MINE_HARD;
  else if (!strcmp(mining, "semihard"))
    mode = MINE_SEMIHARD;
  else
    return cnnb_error(CNNB_ECFG, "%s:%d: [triplet] key 'mining' = '%s': use hard or semihard", cfg->path,
                      cnnb_cfg_find(s, "mining")->line, mining);
  triplet_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  l->priv = p;
  p->margin = margin;
  p->mining = mode;
  rc = cnnb_metric_init(&p->mb, (int)cnnb_shape_size(l->in), net->max_batch);
  l->out = l->in;
  l->act = CNNB_ACT_LINEAR;
  return rc;
}

static void triplet_forward(cnnb_layer *l, cnnb_net *net)
{
  memcpy(l->output, l->input, sizeof(float) * (size_t)net->batch * cnnb_shape_size(l->in));
}

static void triplet_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta) return;
  const size_t n = (size_t)net->batch * cnnb_shape_size(l->in);
  for (size_t i = 0; i < n; i++) l->input_delta[i] += l->delta[i];
}

/* Adds w * d/dx of (d(a,p) - d(a,n)) to the gradient rows of a, p and n. */
static void add_triplet_grad(cnnb_metric_batch *b, int a, int pos, int neg, float w)
{
  const int D = b->dim;
  const float *xa = cnnb_metric_row(b, a), *xp = cnnb_metric_row(b, pos), *xn = cnnb_metric_row(b, neg);
  float *ga = b->grad + (size_t)a * D, *gp = b->grad + (size_t)pos * D, *gn = b->grad + (size_t)neg * D;
  for (int k = 0; k < D; k++) {
    ga[k] += 2 * w * (xn[k] - xp[k]);
    gp[k] += -2 * w * (xa[k] - xp[k]);
    gn[k] += 2 * w * (xa[k] - xn[k]);
  }
}

/* Returns the loss summed over this rank's anchors; dL/d(own embeddings) x loss_scale goes
 * to l->delta. NAN with a logged message on error. */
static double triplet_loss(cnnb_layer *l, cnnb_net *net)
{
  triplet_priv *p = l->priv;
  cnnb_metric_batch *b = &p->mb;
  l->delta_is_input_grad = 1;
  if (cnnb_metric_gather(b, l, net, l->input, net->batch) < 0) {
    cnnb_log(CNNB_LOG_ERROR, "%s", cnnb_error_message());
    return NAN;
  }
  const int G = b->total;
  if (G > p->dcap) { /* once: the global batch is known at the first step */
    double *d = realloc(p->dist, sizeof(double) * (size_t)G * G);
    if (!d) {
      cnnb_log(CNNB_LOG_ERROR, "layer %d [triplet]: out of memory for %d x %d distances", l->index, G, G);
      return NAN;
    }
    p->dist = d;
    p->dcap = G;
  }
  double *dist = p->dist;
  for (int i = 0; i < G; i++) {
    dist[(size_t)i * G + i] = 0;
    for (int j = i + 1; j < G; j++) dist[(size_t)i * G + j] = dist[(size_t)j * G + i] = cnnb_metric_dist2(b, i, j);
  }
  const int *lab = b->lab;
  const double m = p->margin;
  double own = 0;
  for (int a = 0; a < G; a++) {
    const double *da = dist + (size_t)a * G;
    double la = 0;
    if (p->mining == MINE_HARD) {
      int hp = -1, hn = -1;
      for (int j = 0; j < G; j++) {
        if (j == a) continue;
        if (lab[j] == lab[a]) {
          if (hp < 0 || da[j] > da[hp]) hp = j;
        } else if (hn < 0 || da[j] < da[hn]) {
          hn = j;
        }
      }
      if (hp < 0 || hn < 0) continue;
      double t = da[hp] - da[hn] + m;
      if (t > 0) {
        la = t;
        add_triplet_grad(b, a, hp, hn, 1.0f);
      }
    } else {
      int npos = 0;
      for (int j = 0; j < G; j++) npos += j != a && lab[j] == lab[a];
      if (!npos) continue;
      for (int pos = 0; pos < G; pos++) {
        if (pos == a || lab[pos] != lab[a]) continue;
        int outside = -1, inside = -1;
        for (int j = 0; j < G; j++) {
          if (lab[j] == lab[a]) continue;
          if (da[j] > da[pos] && (outside < 0 || da[j] < da[outside])) outside = j;
          if (inside < 0 || da[j] > da[inside]) inside = j;
        }
        int neg = outside >= 0 ? outside : inside;
        if (neg < 0) break; /* no negative at all */
        double t = da[pos] - da[neg] + m;
        if (t > 0) {
          la += t / npos;
          add_triplet_grad(b, a, pos, neg, 1.0f / (float)npos);
        }
      }
    }
    if (a >= b->first && a < b->first + b->n) own += la;
  }
  if (l->delta) cnnb_metric_scatter(b, l->delta, net->loss_scale);
  return own;
}

static void triplet_free(cnnb_layer *l)
{
  triplet_priv *p = l->priv;
  if (p) {
    cnnb_metric_free(&p->mb);
    free(p->dist);
  }
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_triplet_ops = {
    .section = "triplet",
    .setup = triplet_setup,
    .init = NULL,
    .forward = triplet_forward,
    .backward = triplet_backward,
    .free = triplet_free,
    .loss = triplet_loss,
};
