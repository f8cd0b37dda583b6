/* Global-batch gathering shared by [triplet] and [siamese] (layers/metric.h). */
#include "layers/metric.h"

#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

int cnnb_metric_init(cnnb_metric_batch *b, int dim, int max_batch)
{
  memset(b, 0, sizeof *b);
  b->dim = dim;
  if (max_batch <= 0) return 0; /* planning only */
  b->pack = malloc(sizeof(float) * (size_t)max_batch * (dim + 1));
  if (!b->pack) return cnnb_error(CNNB_ENOMEM, "out of memory for %d embeddings", max_batch);
  return 0;
}

void cnnb_metric_free(cnnb_metric_batch *b)
{
  free(b->pack);
  free(b->all);
  free(b->grad);
  free(b->lab);
  memset(b, 0, sizeof *b);
}

/* The global batch is only known at the first gather (the layer sees its rank's share);
 * buffers grow then, once, and are reused for every later step. */
static int grow(cnnb_metric_batch *b, int rows)
{
  const size_t D = (size_t)b->dim;
  float *all = realloc(b->all, sizeof(float) * rows * (D + 1));
  if (all) b->all = all;
  float *grad = realloc(b->grad, sizeof(float) * rows * D);
  if (grad) b->grad = grad;
  int *lab = realloc(b->lab, sizeof(int) * rows);
  if (lab) b->lab = lab;
  if (!all || !grad || !lab) return cnnb_error(CNNB_ENOMEM, "out of memory for a global batch of %d", rows);
  b->cap = rows;
  return 0;
}

int cnnb_metric_gather(cnnb_metric_batch *b, cnnb_layer *l, cnnb_net *net, const float *x, int n)
{
  const int D = b->dim;
  int bad = 0;
  for (int i = 0; i < n; i++) {
    float *r = b->pack + (size_t)i * (D + 1);
    memcpy(r, x + (size_t)i * D, sizeof(float) * D);
    int y = net->truth ? net->truth[i] : 0;
    /* labels travel as floats beside their rows: exact up to 2^24 */
    if (y < 0 || y > (1 << 24)) bad = 1;
    r[D] = (float)y;
  }
  int total, first = 0;
  if (!net->gather_rows) {
    total = n;
    if (total > b->cap && grow(b, total) < 0) return CNNB_ENOMEM;
    memcpy(b->all, b->pack, sizeof(float) * (size_t)n * (D + 1));
  } else {
    total = net->gather_rows(b->pack, n, D + 1, b->all, b->cap, &first, net->gather_ctx);
    if (total < 0) return total;
    if (total > b->cap) {
      /* every rank sees the same total, so every rank grows and gathers again */
      int rc = grow(b, total);
      if (rc < 0) return rc;
      net->gather_rows(b->pack, n, D + 1, b->all, b->cap, &first, net->gather_ctx);
    }
  }
  b->total = total;
  b->first = first;
  b->n = n;
  for (int i = 0; i < total; i++) b->lab[i] = (int)cnnb_metric_row(b, i)[D];
  memset(b->grad, 0, sizeof(float) * (size_t)total * D);
  /* Nearest-neighbour agreement inside the batch: the "accuracy" train reports for
   * embeddings. */
  b->nn_correct = 0;
  for (int i = first; i < first + n; i++) {
    int best = -1;
    double bd = 0;
    for (int j = 0; j < total; j++) {
      if (j == i) continue;
      double d = cnnb_metric_dist2(b, i, j);
      if (best < 0 || d < bd) best = j, bd = d;
    }
    b->nn_correct += best >= 0 && b->lab[best] == b->lab[i];
  }
  if (!net->truth)
    return cnnb_error(CNNB_EINVAL, "layer %d [%s]: the loss needs labels (identities)", l->index, l->ops->section);
  if (bad)
    return cnnb_error(CNNB_EINVAL, "layer %d [%s]: identity labels must be in [0, 2^24]", l->index, l->ops->section);
  return 0;
}

cnnb_metric_batch *cnnb_metric_layer_batch(const cnnb_layer *l)
{
  if (!l || !l->ops || !l->ops->section || !l->priv) return NULL;
  if (strcmp(l->ops->section, "triplet") && strcmp(l->ops->section, "siamese")) return NULL;
  return l->priv;
}

void cnnb_metric_scatter(const cnnb_metric_batch *b, float *delta, float scale)
{
  const size_t D = (size_t)b->dim;
  const float *g = b->grad + (size_t)b->first * D;
  for (size_t i = 0; i < (size_t)b->n * D; i++) delta[i] = scale * g[i];
}

double cnnb_metric_dist2(const cnnb_metric_batch *b, int i, int j)
{
  const float *x = cnnb_metric_row(b, i), *y = cnnb_metric_row(b, j);
  double s = 0;
  for (int k = 0; k < b->dim; k++) {
    double d = (double)x[k] - y[k];
    s += d * d;
  }
  return s;
}
