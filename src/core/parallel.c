/* The fork-join pool of parallel.h. A training step of a small network runs a few dozen
 * regions of ~20-200 us each, so waking sleeping threads through the kernel for every region
 * (~10-50 us each way) would eat much of the gain: between regions the workers spin on a
 * generation counter for a while (as OpenMP runtimes do) and only then sleep on a condition
 * variable; the caller likewise spins before sleeping while it waits for the workers. */
#include "core/parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#include "cnnb/error.h"

/* Waiting, in three stages: SPIN_PAUSE busy iterations (tens of microseconds), then SPIN_YIELD
 * sched_yield calls, which hand the core to a thread of ours that another process pushed off
 * its own core (with more runnable threads than cores a pure busy wait can stall a region for
 * a whole scheduler time slice), then sleep. */
#define SPIN_PAUSE 2000
#define SPIN_YIELD 200

static inline void spin_step(int i)
{
  if (i < SPIN_PAUSE)
    CPU_RELAX();
  else
    sched_yield();
}

struct cnnb_pool {
  int n;
  pthread_t *th;
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  atomic_ulong gen;   /* bumped once per region */
  atomic_int pending; /* workers still running the current region */
  atomic_int stop;
  cnnb_pool_fn fn;    /* written before gen is bumped, read after it is seen */
  void *ctx;
};

typedef struct worker_arg {
  cnnb_pool *p;
  int t;
} worker_arg;

static void *worker(void *arg)
{
  worker_arg *a = arg;
  cnnb_pool *p = a->p;
  const int t = a->t;
  free(a);
  unsigned long seen = 0;
  for (;;) {
    unsigned long g = atomic_load_explicit(&p->gen, memory_order_acquire);
    for (int i = 0; g == seen && i < SPIN_PAUSE + SPIN_YIELD && !atomic_load_explicit(&p->stop, memory_order_relaxed);
         i++) {
      spin_step(i);
      g = atomic_load_explicit(&p->gen, memory_order_acquire);
    }
    if (g == seen) { /* idle for a while: sleep until the next region */
      pthread_mutex_lock(&p->mu);
      while (!atomic_load(&p->stop) && (g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->go, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->stop)) break;
    seen = g;
    p->fn(p->ctx, t, p->n);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&p->mu); /* the caller may be asleep in cnnb_pool_run */
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

int cnnb_threads_default(void)
{
  const char *s = getenv("CNNB_THREADS");
  if (s && *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == 0 && v >= 1 && v <= 256) return (int)v;
  }
  long n = openblas_get_num_threads();
  /* Several ranks on this node (Open MPI exports the count to every rank): no more threads
   * than their share of the cores, so that ranks x threads does not oversubscribe them. */
  const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const long local = ls ? strtol(ls, NULL, 10) : 1, cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (local > 1 && cores > 0) {
    const long share = cores / local;
    if (n > share) n = share;
  }
  return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

int cnnb_pool_new(cnnb_pool **out, int n)
{
  *out = NULL;
  if (n <= 1) return 0;
  cnnb_pool *p = calloc(1, sizeof *p);
  if (!p || !(p->th = calloc((size_t)n, sizeof *p->th))) {
    free(p);
    return cnnb_error(CNNB_ENOMEM, "out of memory for a pool of %d threads", n);
  }
  p->n = n;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->go, NULL);
  pthread_cond_init(&p->done, NULL);
  for (int t = 1; t < n; t++) {
    worker_arg *a = malloc(sizeof *a);
    if (a) *a = (worker_arg){p, t};
    if (!a || pthread_create(&p->th[t], NULL, worker, a) != 0) {
      free(a);
      p->n = t; /* join the ones started */
      cnnb_pool_free(p);
      return cnnb_error(CNNB_ENOMEM, "cannot start thread %d of %d", t, n);
    }
  }
  *out = p;
  return 0;
}

void cnnb_pool_free(cnnb_pool *p)
{
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->stop, 1);
  pthread_cond_broadcast(&p->go);
  pthread_mutex_unlock(&p->mu);
  for (int t = 1; t < p->n; t++) pthread_join(p->th[t], NULL);
  pthread_cond_destroy(&p->go);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  free(p->th);
  free(p);
}

int cnnb_pool_size(const cnnb_pool *p) { return p ? p->n : 1; }

int cnnb_pool_blas_begin(const cnnb_pool *p, int items)
{
  if (!p || items < 2) return 0;
  const int saved = openblas_get_num_threads();
  if (saved > 1) openblas_set_num_threads(1);
  return saved;
}

void cnnb_pool_blas_end(int saved)
{
  if (saved > 1) openblas_set_num_threads(saved);
}

void cnnb_pool_run(cnnb_pool *p, cnnb_pool_fn fn, void *ctx)
{
  if (!p) {
    fn(ctx, 0, 1);
    return;
  }
  const int blas = cnnb_pool_blas_begin(p, p->n); /* one BLAS thread per pool thread */
  p->fn = fn;
  p->ctx = ctx;
  atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
  /* the mutex orders this against a worker that is about to sleep (it re-reads gen under it) */
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  pthread_cond_broadcast(&p->go);
  pthread_mutex_unlock(&p->mu);
  fn(ctx, 0, p->n);
  for (int i = 0; i < SPIN_PAUSE + SPIN_YIELD && atomic_load_explicit(&p->pending, memory_order_acquire); i++)
    spin_step(i);
  if (atomic_load_explicit(&p->pending, memory_order_acquire)) {
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending)) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
  }
  cnnb_pool_blas_end(blas);
}

typedef struct for_job {
  int n;
  cnnb_range_fn fn;
  void *ctx;
} for_job;

static void for_task(void *ctx, int t, int nt)
{
  const for_job *j = ctx;
  int lo, hi;
  cnnb_pool_range(j->n, t, nt, &lo, &hi);
  if (lo < hi) j->fn(j->ctx, lo, hi);
}

void cnnb_pool_for(cnnb_pool *p, int n, cnnb_range_fn fn, void *ctx)
{
  if (!p || n < 2) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
  for_job j = {n, fn, ctx};
  cnnb_pool_run(p, for_task, &j);
}

typedef struct gemm_job {
  int ta, tb, M, N, K, by_rows, lda, ldb, ldc;
  float alpha, beta;
  const float *A, *B;
  float *C;
} gemm_job;

static void gemm_task(void *ctx, int t, int n)
{
  const gemm_job *g = ctx;
  int lo, hi;
  cnnb_pool_range(g->by_rows ? g->M : g->N, t, n, &lo, &hi);
  if (lo >= hi) return;
  const enum CBLAS_TRANSPOSE ta = g->ta ? CblasTrans : CblasNoTrans, tb = g->tb ? CblasTrans : CblasNoTrans;
  if (g->by_rows) /* rows lo..hi-1 of op(A) and C */
    cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, g->N, g->K, g->alpha, g->ta ? g->A + lo : g->A + (size_t)lo * g->lda,
                g->lda, g->B, g->ldb, g->beta, g->C + (size_t)lo * g->ldc, g->ldc);
  else /* columns lo..hi-1 of op(B) and C */
    cblas_sgemm(CblasRowMajor, ta, tb, g->M, hi - lo, g->K, g->alpha, g->A, g->lda,
                g->tb ? g->B + (size_t)lo * g->ldb : g->B + lo, g->ldb, g->beta, g->C + lo, g->ldc);
}

void cnnb_pool_sgemm(cnnb_pool *p, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  gemm_job g = {trans_a, trans_b, M, N, K, M * 4 >= N, lda, ldb, ldc, alpha, beta, A, B, C};
  const int n = cnnb_pool_size(p), split = g.by_rows ? M : N;
  /* below ~64k multiply-adds per thread, waking the threads costs more than it saves */
  if (n == 1 || split < 2 * n || (double)M * N * K < 65536.0 * n) {
    gemm_task(&g, 0, 1);
    return;
  }
  cnnb_pool_run(p, gemm_task, &g);
}
