/* Threads inside a rank (src/core/parallel.c, docs/ARCHITECTURE.md "Threads inside a rank"):
 * a net built with 3 threads gives the outputs, loss, parameter gradients and input gradient of
 * the same net with 1 thread, on a batch of 7 (not a multiple of 3, and smaller than some
 * conv chunks), for every path that splits work: the batched, one-sample, banded, direct 1x1,
 * grouped and window convolutions, batch norm (statistics by channel, the rest by sample), max
 * pooling, connected layers (the GEMM split by rows or columns), in training and inference.
 * Gradients are sums in a different order (per-thread weight gradients added after the
 * region) and a GEMM split into blocks may round differently, so results agree to float
 * rounding, not bit for bit; inference (no backward) gives the same bits on any thread count.
 * Also: the same 3-thread run twice gives identical bits (the split is static), and
 * cnnb_pool_sgemm against cblas_sgemm for every transpose and split direction. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"
#include "core/parallel.h"

static cnnb_net *net_with(const char *cfg, int B, int train, int threads)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = B;
  o.train = train;
  o.input_grad = train;
  o.quiet = 1;
  o.threads = threads;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "threads.cfg", &o);
  if (rc) fprintf(stderr, "\n  build failed: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL(rc, 0);
  return net;
}

/* max |a - b| / max(max |b|, tiny) */
static double rel_diff(const float *a, const float *b, size_t n)
{
  double d = 0, s = 1e-30;
  for (size_t i = 0; i < n; i++) {
    const double e = fabs((double)a[i] - b[i]);
    if (!(e <= d)) d = e; /* NaN counts */
    if (fabs(b[i]) > s) s = fabs(b[i]);
  }
  return d / s;
}

/* One train step (or forward only) of cfg on B samples with 1 and with 3 threads (nets made
 * for max_batch samples). Gradients are compared relative to their largest entry: 1e-4 leaves
 * room for float rounding, which batch norm over 2 samples amplifies to ~1e-5; a wrong split
 * or a lost thread's share is off by O(1). */
static void one_vs_three(const char *name, const char *cfg, int train, int B, int max_batch)
{
  cnnb_net *a = net_with(cfg, max_batch, train, 1), *b = net_with(cfg, max_batch, train, 3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CNNB_ASSERT_EQ_INT(a->nthreads, 1);
  CNNB_ASSERT_EQ_INT(b->nthreads, 3);
  cnnb_net_init_params(a, 5);
  cnnb_net_init_params(b, 5);
  /* running statistics away from 0 and 1, so inference normalises with something */
  for (size_t i = 0; i < a->nstate; i++) a->state[i] = b->state[i] = 0.5f + 0.01f * (float)(i % 7);
  const size_t in = cnnb_shape_size(a->in) * (size_t)max_batch;
  float *x = malloc(sizeof *x * in);
  int truth[16];
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  for (size_t i = 0; i < in; i++) x[i] = sinf(0.61f * (float)i) + 0.1f * cosf(0.07f * (float)i);
  const cnnb_shape os = cnnb_net_output_layer(a)->out;
  for (int i = 0; i < B; i++) truth[i] = (3 * i) % (int)cnnb_shape_size(os);
  a->truth = b->truth = truth;
  const size_t on = cnnb_shape_size(os) * (size_t)B;
  const float *ya = cnnb_net_forward(a, x, B), *yb = cnnb_net_forward(b, x, B);
  const double dy = rel_diff(yb, ya, on);
  if (dy > 1e-6) fprintf(stderr, "\n  %s: outputs differ by %.3g (relative)\n", name, dy);
  CU_ASSERT(dy <= 1e-6);
  /* inference: the same bits whatever the thread count (bulk outputs do not depend on it) */
  if (!train) CU_ASSERT(memcmp(ya, yb, on * sizeof *ya) == 0);
  if (train) {
    cnnb_net_zero_grads(a);
    cnnb_net_zero_grads(b);
    const double la = cnnb_net_loss(a), lb = cnnb_net_loss(b);
    CNNB_ASSERT_NEAR(lb, la, 1e-6 * fabs(la));
    cnnb_net_backward(a);
    cnnb_net_backward(b);
    const double dg = rel_diff(b->grads, a->grads, a->nparams), dx = rel_diff(b->input_delta, a->input_delta, in);
    if (dg > 1e-4 || dx > 1e-4) fprintf(stderr, "\n  %s: grads differ by %.3g, input grads by %.3g\n", name, dg, dx);
    CU_ASSERT(dg <= 1e-4);
    CU_ASSERT(dx <= 1e-4);
    /* the same thread count again: the same bits */
    float *g1 = malloc(sizeof *g1 * b->nparams);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g1);
    memcpy(g1, b->grads, sizeof *g1 * b->nparams);
    cnnb_net_zero_grads(b);
    cnnb_net_forward(b, x, B);
    cnnb_net_loss(b);
    cnnb_net_backward(b);
    CU_ASSERT(memcmp(g1, b->grads, sizeof *g1 * b->nparams) == 0);
    free(g1);
  }
  free(x);
  cnnb_net_free(a);
  cnnb_net_free(b);
}

/* LeNet-5's shape: 5x5 convs with batch norm and ReLU, 2x2 max pools, connected layers. */
static const char *LENET = "[net]\nheight=28\nwidth=28\nchannels=1\n"
                           "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=5\npad=1\nactivation=relu\n"
                           "[maxpool]\nsize=2\nstride=2\n"
                           "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=5\nactivation=relu\n"
                           "[maxpool]\nsize=2\nstride=2\n"
                           "[connected]\noutput=120\nbatch_normalize=1\nactivation=relu\n"
                           "[connected]\noutput=84\nactivation=leaky\n"
                           "[connected]\noutput=10\nactivation=linear\n[softmax]\n";

/* No batch norm: the convolutions add bias and activate per sample inside the region; a
 * grouped conv, a depthwise conv, a direct 1x1 conv, a strided 3x3 with padding, and the window path (3x3 on a
 * 2x2 map). */
static const char *MIXED = "[net]\nheight=12\nwidth=10\nchannels=4\n"
                           "[convolutional]\nfilters=8\nsize=3\npad=1\ngroups=2\nactivation=leaky\n"
                           "[convolutional]\nfilters=8\nsize=3\npad=1\ngroups=8\nactivation=relu\n"
                           "[convolutional]\nfilters=6\nsize=1\nactivation=logistic\n"
                           "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=tanh\n"
                           "[maxpool]\nsize=3\nstride=2\n"
                           "[convolutional]\nfilters=5\nsize=3\npad=1\nactivation=relu\n"
                           "[connected]\noutput=6\nactivation=linear\n[softmax]\n";

/* One sample's column matrix over the workspace budget: the banded forward and the
 * one-sample backward. */
static const char *BANDED = "[net]\nheight=200\nwidth=64\nchannels=3\n"
                            "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
                            "[maxpool]\nsize=8\nstride=8\n"
                            "[connected]\noutput=3\nactivation=linear\n[softmax]\n";

static void test_lenet_train(void) { one_vs_three("lenet", LENET, 1, 7, 7); }
static void test_lenet_infer(void) { one_vs_three("lenet inference", LENET, 0, 7, 7); }
static void test_mixed_train(void) { one_vs_three("mixed", MIXED, 1, 7, 7); }
static void test_mixed_infer(void) { one_vs_three("mixed inference", MIXED, 0, 5, 5); }
static void test_banded_train(void) { one_vs_three("banded", BANDED, 1, 4, 4); }
/* fewer samples than threads (a last partial batch): some threads get none */
static void test_small_batch(void) { one_vs_three("batch 2", LENET, 1, 2, 7); }

static void test_pool_sgemm(void)
{
  cnnb_pool *p = NULL;
  CU_ASSERT_EQUAL_FATAL(cnnb_pool_new(&p, 3), 0);
  CNNB_ASSERT_EQ_INT(cnnb_pool_size(p), 3);
  /* (M, N, K): tall (split by rows), wide (split by columns), and one too small to split */
  const int shapes[][3] = {{97, 13, 41}, {7, 301, 53}, {3, 5, 4}};
  for (int s = 0; s < 3; s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        const int lda = ta ? M + 2 : K + 1, ldb = tb ? K + 3 : N + 1, ldc = N + 2;
        float *A = malloc(sizeof *A * (size_t)(ta ? K : M) * lda), *B = malloc(sizeof *B * (size_t)(tb ? N : K) * ldb);
        float *C1 = malloc(sizeof *C1 * (size_t)M * ldc), *C2 = malloc(sizeof *C2 * (size_t)M * ldc);
        CU_ASSERT_PTR_NOT_NULL_FATAL(A && B && C1 && C2);
        for (int i = 0; i < (ta ? K : M) * lda; i++) A[i] = sinf(0.3f * (float)i);
        for (int i = 0; i < (tb ? N : K) * ldb; i++) B[i] = cosf(0.17f * (float)i);
        for (int i = 0; i < M * ldc; i++) C1[i] = C2[i] = 0.01f * (float)(i % 13);
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 0.5f,
                    A, lda, B, ldb, 0.75f, C1, ldc);
        cnnb_pool_sgemm(p, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.75f, C2, ldc);
        const double d = rel_diff(C2, C1, (size_t)M * ldc);
        if (d > 1e-6) fprintf(stderr, "\n  sgemm %dx%dx%d ta %d tb %d: %.3g\n", M, N, K, ta, tb, d);
        CU_ASSERT(d <= 1e-6);
        free(A);
        free(B);
        free(C1);
        free(C2);
      }
  cnnb_pool_free(p);
}

int main(void)
{
  /* "1 thread" means one thread in all: OpenBLAS must not split the single-thread net's GEMMs */
  openblas_set_num_threads(1);
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("threads", NULL, NULL);
  CU_add_test(s, "LeNet-5 shape, train: 3 threads == 1", test_lenet_train);
  CU_add_test(s, "LeNet-5 shape, inference: 3 threads == 1", test_lenet_infer);
  CU_add_test(s, "grouped, 1x1, strided, window convs, train", test_mixed_train);
  CU_add_test(s, "grouped, 1x1, strided, window convs, inference", test_mixed_infer);
  CU_add_test(s, "banded forward, one-sample backward", test_banded_train);
  CU_add_test(s, "batch smaller than the thread count", test_small_batch);
  CU_add_test(s, "cnnb_pool_sgemm == cblas_sgemm", test_pool_sgemm);
  return cnnb_test_run();
}
