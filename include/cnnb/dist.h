/* Data parallelism over MPI: the rank-0 epoch plan, each rank's slice of a global batch,
 * agreement on errors, and gradient averaging in buckets that start their allreduce during
 * backward as soon as all of their gradients are final. */
#ifndef CNNB_DIST_H
#define CNNB_DIST_H

#include <mpi.h>

#include "cnnb/net.h"

typedef struct cnnb_dist {
  MPI_Comm comm;
  int rank, size;
} cnnb_dist;

void cnnb_dist_init(cnnb_dist *d, MPI_Comm comm);
/* Rank 0 draws the epoch's order of n rows from (seed, epoch) and broadcasts it to perm. */
int cnnb_dist_epoch_plan(const cnnb_dist *d, unsigned long long seed, long epoch, long n, long *perm);
/* Rows [lo, hi) of a global batch of b samples that this rank computes: the first b % size
 * ranks take one more, so that any b >= size works. */
void cnnb_dist_slice(const cnnb_dist *d, long b, long *lo, long *hi);
/* Collective: every rank passes its status; returns 0 when all are 0, else the first failing
 * rank's code, with its message (prefixed "rank R: ") copied to every rank. */
int cnnb_dist_agree(const cnnb_dist *d, int rc);

/* For net->stat_sum (synchronised batch norm): sums v over the ranks of ctx, a cnnb_dist. */
void cnnb_dist_stat_sum(double *v, int n, void *ctx);
/* For net->gather_rows (loss layers that mine the global batch): concatenates every rank's
 * n x k floats in rank order over ctx, a cnnb_dist (src/dist/gather.c). */
int cnnb_dist_gather_rows(const float *mine, int n, int k, float *all, int cap, int *first, void *ctx);

typedef enum cnnb_allreduce_mode { CNNB_ALLREDUCE_OVERLAP = 0, CNNB_ALLREDUCE_BLOCKING = 1 } cnnb_allreduce_mode;

typedef struct cnnb_bucket {
  size_t off, count;  /* slice of net->grads */
  int first_layer;    /* ready once this layer's backward is done */
  MPI_Request req;
  int started;
} cnnb_bucket;

typedef struct cnnb_grad_sync {
  const cnnb_dist *dist;
  cnnb_net *net;
  cnnb_allreduce_mode mode;
  cnnb_bucket *b;
  int nb;
  double wait_seconds; /* time spent waiting for communication, for the benchmark */
} cnnb_grad_sync;

/* Buckets of about bucket_bytes each, laid from the end of the arena (the layers whose
 * gradients are final first). Installs net->backward_hook in overlap mode. */
int cnnb_grad_sync_init(cnnb_grad_sync *g, cnnb_net *net, const cnnb_dist *d, cnnb_allreduce_mode mode,
                        size_t bucket_bytes);
void cnnb_grad_sync_free(cnnb_grad_sync *g);
/* After backward: completes (or in blocking mode performs) the sum over ranks. The caller has
 * already scaled the loss by 1/global batch, so the sum is the global average. */
int cnnb_grad_sync_finish(cnnb_grad_sync *g);

#endif
