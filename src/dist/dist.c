/* MPI data parallelism (include/cnnb/dist.h). */
#include "cnnb/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnnb/error.h"
#include "cnnb/rng.h"

void cnnb_dist_init(cnnb_dist *d, MPI_Comm comm)
{
  int up = 0;
  MPI_Initialized(&up);
  if (!up) { /* a serial command run without MPI (src/main.c): one rank, no communicator */
    d->comm = MPI_COMM_NULL;
    d->rank = 0;
    d->size = 1;
    return;
  }
  d->comm = comm;
  MPI_Comm_rank(comm, &d->rank);
  MPI_Comm_size(comm, &d->size);
}

int cnnb_dist_epoch_plan(const cnnb_dist *d, unsigned long long seed, long epoch, long n, long *perm)
{
  if (d->rank == 0) {
    cnnb_rng r;
    cnnb_rng_seed(&r, seed, 0x91a4, (uint64_t)epoch, 0);
    for (long i = 0; i < n; i++) perm[i] = i;
    cnnb_rng_shuffle_long(&r, perm, n);
  }
  /* Broadcast in pieces: MPI counts are int. */
  for (long off = 0; off < n; off += 1L << 28) {
    long k = n - off < (1L << 28) ? n - off : (1L << 28);
    if (MPI_Bcast(perm + off, (int)k, MPI_LONG, 0, d->comm) != MPI_SUCCESS)
      return cnnb_error(CNNB_EMPI, "broadcast of the epoch plan failed");
  }
  return 0;
}

void cnnb_dist_slice(const cnnb_dist *d, long b, long *lo, long *hi)
{
  long q = b / d->size, r = b % d->size;
  *lo = d->rank * q + (d->rank < r ? d->rank : r);
  *hi = *lo + q + (d->rank < r ? 1 : 0);
}

int cnnb_dist_agree(const cnnb_dist *d, int rc)
{
  if (d->comm == MPI_COMM_NULL) return rc; /* without MPI: the one rank's word stands */
  /* The lowest failing rank speaks for all; size means "nobody failed". */
  int key = rc ? d->rank : d->size, low;
  MPI_Allreduce(&key, &low, 1, MPI_INT, MPI_MIN, d->comm);
  if (low == d->size) return 0;
  int code = rc;
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", cnnb_error_message());
  MPI_Bcast(&code, 1, MPI_INT, low, d->comm);
  MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, low, d->comm);
  if (d->size > 1)
    cnnb_error(code, "rank %d: %s", low, msg);
  else
    cnnb_error(code, "%s", msg);
  return code;
}

void cnnb_dist_stat_sum(double *v, int n, void *ctx)
{
  const cnnb_dist *d = ctx;
  MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
}

static void start_bucket(cnnb_grad_sync *g, cnnb_bucket *b)
{
  MPI_Iallreduce(MPI_IN_PLACE, g->net->grads + b->off, (int)b->count, MPI_FLOAT, MPI_SUM, g->dist->comm, &b->req);
  b->started = 1;
}

static void hook(cnnb_net *net, int layer, void *ctx)
{
  cnnb_grad_sync *g = ctx;
  for (int i = 0; i < g->nb; i++) {
    cnnb_bucket *b = &g->b[i];
    if (!b->started && layer <= b->first_layer) start_bucket(g, b);
  }
  /* Give the MPI library a chance to progress the reductions already posted. */
  int flag;
  for (int i = 0; i < g->nb; i++)
    if (g->b[i].started && g->b[i].req != MPI_REQUEST_NULL) MPI_Test(&g->b[i].req, &flag, MPI_STATUS_IGNORE);
  (void)net;
}

int cnnb_grad_sync_init(cnnb_grad_sync *g, cnnb_net *net, const cnnb_dist *d, cnnb_allreduce_mode mode,
                        size_t bucket_bytes)
{
  memset(g, 0, sizeof *g);
  g->dist = d;
  g->net = net;
  g->mode = mode;
  size_t cap = bucket_bytes / sizeof(float);
  if (cap < 1024) cap = 1024;
  g->b = calloc((size_t)net->n + 1, sizeof *g->b);
  if (!g->b) return cnnb_error(CNNB_ENOMEM, "out of memory for gradient buckets");
  /* Walk layers from the last; a bucket closes when it reaches cap. Layer i's trainable
   * parameters occupy [start_i, end_i) with start increasing with i. */
  size_t end = net->nparams;
  cnnb_bucket *cur = NULL;
  for (int i = net->n - 1; i >= 0; i--) {
    const cnnb_layer *l = &net->layers[i];
    size_t lo = end, cnt = cnnb_layer_num_trainable(l);
    if (!cnt) continue;
    for (int j = 0; j < l->nparam; j++)
      if (l->param[j].trainable && l->param[j].offset < lo) lo = l->param[j].offset;
    if (!cur || cur->count >= cap) cur = &g->b[g->nb++], cur->off = end, cur->count = 0;
    cur->off = lo;
    cur->count = end - lo + cur->count;
    cur->first_layer = i;
    end = lo;
  }
  if (mode == CNNB_ALLREDUCE_OVERLAP && d->size > 1) {
    net->backward_hook = hook;
    net->backward_hook_ctx = g;
  }
  return 0;
}

void cnnb_grad_sync_free(cnnb_grad_sync *g)
{
  if (g->net && g->net->backward_hook == hook) g->net->backward_hook = NULL;
  free(g->b);
  memset(g, 0, sizeof *g);
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int cnnb_grad_sync_finish(cnnb_grad_sync *g)
{
  if (g->dist->size == 1) return 0;
  double t0 = now();
  int rc = MPI_SUCCESS;
  if (g->mode == CNNB_ALLREDUCE_BLOCKING) {
    rc = MPI_Allreduce(MPI_IN_PLACE, g->net->grads, (int)g->net->nparams, MPI_FLOAT, MPI_SUM, g->dist->comm);
  } else {
    for (int i = 0; i < g->nb; i++) {
      if (!g->b[i].started) start_bucket(g, &g->b[i]);
      if (MPI_Wait(&g->b[i].req, MPI_STATUS_IGNORE) != MPI_SUCCESS) rc = MPI_ERR_OTHER;
      g->b[i].started = 0;
    }
  }
  g->wait_seconds += now() - t0;
  return rc == MPI_SUCCESS ? 0 : cnnb_error(CNNB_EMPI, "gradient allreduce failed");
}
