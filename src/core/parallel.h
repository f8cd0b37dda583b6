/* Private: a small fork-join thread pool for splitting a layer's samples across threads inside
 * one rank (docs/ARCHITECTURE.md, "Threads inside a rank").
 *
 * Why: OpenBLAS parallelises one GEMM at a time, and the GEMMs of small networks (LeNet's 6 and
 * 16 filters) are too small to gain from a second thread, while the work around them (im2col,
 * col2im, the NCHW scatter) is not threaded at all. Splitting the batch instead gives every
 * thread whole samples: large, independent pieces, as data parallelism across ranks does.
 *
 * Threads are started once per net (cnnb_pool_new) and sleep between regions. Inside a region
 * OpenBLAS is set to one thread, so that the pool's threads and OpenBLAS's do not fight over
 * the cores; the caller's setting is restored afterwards. The split is static (thread t always
 * takes the same samples), so results are reproducible for a given thread count. */
#ifndef CNNB_PARALLEL_H
#define CNNB_PARALLEL_H

typedef struct cnnb_pool cnnb_pool;

/* Threads a net uses when its options do not say: CNNB_THREADS from the environment if set
 * (1..256), else OpenBLAS's own thread count (OPENBLAS_NUM_THREADS, or the cores), at most the
 * cores divided by the ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE). */
int cnnb_threads_default(void);

/* A pool of n threads in all: the caller counts as thread 0, n-1 workers are started. With
 * n <= 1 *out is NULL and nothing is started. Returns 0, or a negative status (error set). */
int cnnb_pool_new(cnnb_pool **out, int n);
void cnnb_pool_free(cnnb_pool *p);
/* Threads of the pool (1 for NULL). */
int cnnb_pool_size(const cnnb_pool *p);

/* With a pool and at least 2 items (samples) to split, OpenBLAS runs single-threaded from here
 * to cnnb_pool_blas_end (a net's whole forward or backward): the pool's threads are then the
 * parallelism, OpenBLAS's workers would otherwise spin for a while after each threaded call
 * and take the cores from the pool's, and a GEMM split over threads may round differently
 * (inference with a pool gives the same bits on any thread count). Without a pool, or for a
 * single sample (style transfer, one large image), OpenBLAS keeps its own threads. Returns
 * what cnnb_pool_blas_end restores. */
int cnnb_pool_blas_begin(const cnnb_pool *p, int items);
void cnnb_pool_blas_end(int saved);

typedef void (*cnnb_pool_fn)(void *ctx, int t, int n);
/* Runs fn(ctx, t, n) for t = 0..n-1 concurrently, t = 0 on the calling thread, and returns when
 * all have finished; n = cnnb_pool_size(p). A NULL pool runs fn(ctx, 0, 1). Not reentrant. */
void cnnb_pool_run(cnnb_pool *p, cnnb_pool_fn fn, void *ctx);

/* fn(ctx, lo, hi) over [0, n) split into one contiguous part per thread (cnnb_pool_range);
 * one call fn(ctx, 0, n) without a pool or when n < 2. */
typedef void (*cnnb_range_fn)(void *ctx, int lo, int hi);
void cnnb_pool_for(cnnb_pool *p, int n, cnnb_range_fn fn, void *ctx);

/* Row-major C (M x N) = alpha op(A) op(B) + beta C, as cblas_sgemm, with the pool's threads
 * each computing a block of C's rows (or of its columns when N is much larger than M), each
 * block one single-threaded cblas_sgemm: no reduction, so the result does not depend on the
 * thread count. Small products run as one call. */
void cnnb_pool_sgemm(cnnb_pool *p, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Thread t's share [*lo, *hi) of n items split into nt contiguous, near-equal parts. */
static inline void cnnb_pool_range(int n, int t, int nt, int *lo, int *hi)
{
  *lo = (int)((long long)n * t / nt);
  *hi = (int)((long long)n * (t + 1) / nt);
}

#endif
