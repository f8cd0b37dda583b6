/* cnnb-bench-conv: forward GFLOP/s of every [convolutional] layer of a model against a bare
 * cblas_sgemm of the same GEMM shape (M = filters/groups, N = out_h*out_w, K = c/groups*size*size),
 * on the same OpenBLAS thread count. Used by tools/bench (see docs/BENCHMARKS.md).
 *
 *   cnnb-bench-conv MODEL.cfg [--h H] [--w W] [--batch B] [--min-ms MS] [--train 0|1]
 *
 * The network is built with cnnb_net_load (input size overridden by --h/--w), one full forward
 * sets every layer's input, then each conv layer's ops->forward is repeated for at least MS ms.
 * A conv forward over B samples does B x groups GEMMs of the shape above plus im2col, batch
 * norm and activation; the reference times B x groups bare cblas_sgemm calls of that shape on
 * buffers of the same sizes, so the ratio is "conv layer throughput / what the BLAS gives for
 * its GEMMs". The im2col column shows how much of the layer time im2col alone takes, and
 * batchGF/s what ONE GEMM of M x (B*N) x K per group gives for the same flops (the headroom of
 * an im2col over the whole batch instead of one sample at a time).
 *
 * One line per conv layer, then summary lines "SUMMARY3x3 ..." read by tools/bench. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "core/im2col.h"

/* OpenBLAS's own entry point (cblas.h of OpenBLAS declares it; declared here for other BLAS). */
int openblas_get_num_threads(void);

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Cfg keys of a conv layer are not public; read them back from its section. */
static int sec_int(const cnnb_net *net, const cnnb_layer *l, const char *key, int dflt)
{
  const cnnb_cfg_section *s = &net->cfg.sec[l->cfg_section];
  for (int i = 0; i < s->nkv; i++)
    if (!strcmp(s->kv[i].key, key)) return atoi(s->kv[i].value);
  return dflt;
}

typedef struct timing {
  double per_call_s; /* seconds per call */
} timing;

int main(int argc, char **argv)
{
  const char *model = NULL;
  int H = 0, W = 0, B = 32, train = 1;
  double min_ms = 300;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--h") && i + 1 < argc)
      H = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--w") && i + 1 < argc)
      W = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      B = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--min-ms") && i + 1 < argc)
      min_ms = atof(argv[++i]);
    else if (!strcmp(argv[i], "--train") && i + 1 < argc)
      train = atoi(argv[++i]);
    else if (argv[i][0] != '-' && !model)
      model = argv[i];
    else {
      fprintf(stderr, "usage: cnnb-bench-conv MODEL.cfg [--h H] [--w W] [--batch B] [--min-ms MS] [--train 0|1]\n");
      return 2;
    }
  }
  if (!model || B < 1) {
    fprintf(stderr, "usage: cnnb-bench-conv MODEL.cfg [--h H] [--w W] [--batch B] [--min-ms MS] [--train 0|1]\n");
    return 2;
  }

  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = B;
  o.train = train;
  o.h = H;
  o.w = W;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, model, &o) < 0) {
    fprintf(stderr, "cnnb-bench-conv: %s\n", cnnb_error_message());
    return 1;
  }
  cnnb_net_init_params(net, 1);
  size_t nin = (size_t)B * cnnb_shape_size(net->in);
  float *x = malloc(nin * sizeof *x);
  if (!x) return 1;
  srand(1);
  for (size_t i = 0; i < nin; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  net->train = train;
  cnnb_net_forward(net, x, B); /* sets every layer's input and net->batch */

  printf("# model %s input %dx%dx%d batch %d openblas threads %d\n", model, net->in.c, net->in.h, net->in.w, B,
         openblas_get_num_threads());
  printf("%-5s %-18s %5s %6s %6s %6s %9s %9s %9s %9s %6s %7s %10s\n", "layer", "shape", "k/s", "M", "N", "K",
         "conv_ms", "conv_GF/s", "gemm_ms", "gemm_GF/s", "ratio", "im2col%", "batchGF/s");
  double sum_flops3 = 0, sum_conv3 = 0, sum_gemm3 = 0, min_ratio3 = 1e9, sum_im2col3 = 0, sum_gemmb3 = 0;
  double sum_conv_all = 0;
  int n3 = 0;
  for (int li = 0; li < net->n; li++) {
    cnnb_layer *l = &net->layers[li];
    if (strcmp(l->ops->section, "convolutional")) continue;
    int size = sec_int(net, l, "size", 1), stride = sec_int(net, l, "stride", 1);
    int groups = sec_int(net, l, "groups", 1), pad = sec_int(net, l, "pad", 0);
    int padding = pad ? size / 2 : sec_int(net, l, "padding", 0);
    int M = l->out.c / groups, N = l->out.h * l->out.w, K = l->in.c / groups * size * size;
    double flops = 2.0 * M * N * K * groups * B;

    /* conv layer forward, repeated */
    l->ops->forward(l, net);
    int reps = 0;
    double t0 = now_s(), t1;
    do {
      l->ops->forward(l, net);
      reps++;
      t1 = now_s();
    } while ((t1 - t0) * 1e3 < min_ms || reps < 3);
    double conv_s = (t1 - t0) / reps;

    /* bare sgemm of the same shape, B*groups calls on distinct output blocks as the layer does */
    float *A = malloc((size_t)M * K * groups * sizeof *A), *Bm = malloc((size_t)K * N * sizeof *Bm);
    float *C = malloc((size_t)M * N * groups * B * sizeof *C);
    if (!A || !Bm || !C) return 1;
    for (size_t i = 0; i < (size_t)M * K * groups; i++) A[i] = 0.01f * (float)(i % 97);
    for (size_t i = 0; i < (size_t)K * N; i++) Bm[i] = 0.01f * (float)(i % 89);
    reps = 0;
    t0 = now_s();
    do {
      for (int b = 0; b < B; b++)
        for (int g = 0; g < groups; g++)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, A + (size_t)g * M * K, K, Bm, N, 0.f,
                      C + ((size_t)b * groups + g) * M * N, N);
      reps++;
      t1 = now_s();
    } while ((t1 - t0) * 1e3 < min_ms || reps < 3);
    double gemm_s = (t1 - t0) / reps;

    /* im2col alone, B*groups times (0 for the direct 1x1 path) */
    /* the same work as ONE GEMM of M x (B*N) x K per group (what a batched im2col would call) */
    double gemmb_s;
    {
      float *Bb = malloc((size_t)K * N * B * sizeof *Bb);
      if (!Bb) return 1;
      for (size_t i = 0; i < (size_t)K * N * B; i++) Bb[i] = 0.01f * (float)(i % 89);
      reps = 0;
      t0 = now_s();
      do {
        for (int g = 0; g < groups; g++)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N * B, K, 1.f, A + (size_t)g * M * K, K, Bb,
                      N * B, 0.f, C, N * B);
        reps++;
        t1 = now_s();
      } while ((t1 - t0) * 1e3 < min_ms / 3 || reps < 3);
      gemmb_s = (t1 - t0) / reps;
      free(Bb);
    }

    double im2col_s = 0;
    int direct = size == 1 && stride == 1 && padding == 0;
    if (!direct) {
      reps = 0;
      t0 = now_s();
      do {
        for (int b = 0; b < B; b++)
          for (int g = 0; g < groups; g++)
            cnnb_im2col(l->input + ((size_t)b * l->in.c + (size_t)g * (l->in.c / groups)) * l->in.h * l->in.w,
                        l->in.c / groups, l->in.h, l->in.w, size, stride, padding, net->workspace);
        reps++;
        t1 = now_s();
      } while ((t1 - t0) * 1e3 < min_ms / 3 || reps < 3);
      im2col_s = (t1 - t0) / reps;
    }
    free(A);
    free(Bm);
    free(C);

    double ratio = gemm_s / conv_s;
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%d>%dx%dx%d", l->in.c, l->in.h, l->in.w, l->out.c, l->out.h, l->out.w);
    printf("%-5d %-18s %2d/%-2d %6d %6d %6d %9.3f %9.2f %9.3f %9.2f %5.0f%% %6.0f%% %10.2f\n", li, shape, size,
           stride, M, N, K, conv_s * 1e3, flops / conv_s * 1e-9, gemm_s * 1e3, flops / gemm_s * 1e-9, 100 * ratio,
           100 * im2col_s / conv_s, flops / gemmb_s * 1e-9);
    sum_conv_all += conv_s;
    if (size == 3) {
      n3++;
      sum_flops3 += flops;
      sum_conv3 += conv_s;
      sum_gemm3 += gemm_s;
      sum_im2col3 += im2col_s;
      sum_gemmb3 += gemmb_s;
      if (ratio < min_ratio3) min_ratio3 = ratio;
    }
    fflush(stdout);
  }
  if (n3)
    printf("SUMMARY3x3 layers %d conv_GFLOPs %.3f gemm_GFLOPs %.3f ratio %.4f min_ratio %.4f im2col_frac %.4f "
           "conv_ms_total %.3f all_conv_ms_total %.3f batched_gemm_GFLOPs %.3f\n",
           n3, sum_flops3 / sum_conv3 * 1e-9, sum_flops3 / sum_gemm3 * 1e-9, sum_gemm3 / sum_conv3, min_ratio3,
           sum_im2col3 / sum_conv3, sum_conv3 * 1e3, sum_conv_all * 1e3, sum_flops3 / sum_gemmb3 * 1e-9);
  free(x);
  cnnb_net_free(net);
  return 0;
}
