/* Private: what the metric-learning loss layers ([triplet], [siamese]) share. They compare
 * samples with each other, so they work on the GLOBAL batch: every rank gathers all ranks'
 * embeddings and labels (net->gather_rows), computes the whole batch's loss and its gradient
 * w.r.t. every embedding identically, and keeps the rows it owns. The result does not depend
 * on how the batch is split over ranks. */
#ifndef CNNB_LAYERS_METRIC_H
#define CNNB_LAYERS_METRIC_H

#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct cnnb_metric_batch {
  int dim;      /* D, values per embedding */
  int cap;      /* global rows there is room for */
  float *pack;  /* max_batch x (D + 1): this rank's rows, each followed by its label */
  float *all;   /* cap x (D + 1): the global batch, gathered */
  float *grad;  /* cap x D: dL/d embedding of every global row (unscaled) */
  int *lab;     /* cap labels */
  int total;    /* global rows of the last gather */
  int first, n; /* this rank's rows: [first, first + n) */
  int nn_correct; /* this rank's rows whose nearest other row has their label */
} cnnb_metric_batch;

/* The batch of a [triplet] or [siamese] layer (the first member of their private state);
 * NULL for other kinds. */
cnnb_metric_batch *cnnb_metric_layer_batch(const cnnb_layer *l);

/* Room for this rank's rows (max_batch); the global buffers grow at the first gather. */
int cnnb_metric_init(cnnb_metric_batch *b, int dim, int max_batch);
void cnnb_metric_free(cnnb_metric_batch *b);
/* Gathers the global batch from this rank's n embeddings x (n x dim) and net->truth, and
 * zeroes grad. Collective when net->gather_rows is set. Returns 0 or a negative status (no
 * labels; a label a float cannot carry exactly). */
int cnnb_metric_gather(cnnb_metric_batch *b, cnnb_layer *l, cnnb_net *net, const float *x, int n);
static inline const float *cnnb_metric_row(const cnnb_metric_batch *b, int i)
{
  return b->all + (size_t)i * (b->dim + 1);
}
/* delta (n x dim) = scale * grad of this rank's rows. */
void cnnb_metric_scatter(const cnnb_metric_batch *b, float *delta, float scale);
/* Squared Euclidean distance of two rows of the global batch, in double. */
double cnnb_metric_dist2(const cnnb_metric_batch *b, int i, int j);

#endif
