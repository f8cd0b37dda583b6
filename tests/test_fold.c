/* Inference's fused epilogues (docs/ARCHITECTURE.md "Inference memory and fused epilogues"):
 * a net that cannot backpropagate folds batch norm into one affine map per channel and applies
 * it, with the bias and the activation, as the convolution writes its output (Winograd's
 * output transform, the banded, per-sample and chunked im2col GEMMs), and max-pools 2x2/2
 * without recording winners. Each path against the same net built able to backpropagate
 * (input_grad: batch norm in double with xhat, separate passes), same parameters:
 *  - outputs within float rounding of the folded map (2e-6 of the output's scale), for every
 *    convolution path, activations leaky, relu, linear and logistic, a depthwise layer, a
 *    standalone [batchnorm] and a [connected] layer with batch norm;
 *  - the max pool bit for bit, NaNs and ties included (the first maximum in window order);
 *  - the Winograd path really ran in the folded net. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"
#include "core/winograd.h"

static cnnb_net *build(const char *cfg, int B, int backprop)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = B;
  o.quiet = 1;
  o.input_grad = backprop;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "fold.cfg", &o);
  if (rc) fprintf(stderr, "\n  build failed: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL(rc, 0);
  if (!net) return NULL;
  cnnb_net_init_params(net, 7);
  /* batch-norm statistics, scales and biases far from 0 and 1, so that folding them matters */
  for (int li = 0; li < net->n; li++)
    for (int i = 0; i < net->layers[li].nparam; i++) {
      cnnb_param *q = &net->layers[li].param[i];
      for (size_t j = 0; j < q->count && strcmp(q->name, "weights") != 0; j++) {
        const float u = sinf(1.7f * (float)j + (float)li + (float)i);
        q->data[j] = !strcmp(q->name, "rolling_variance") ? 0.3f + u * u
                     : !strcmp(q->name, "scales")         ? 1.f + 0.5f * u
                                                          : 0.4f * u;
      }
    }
  return net;
}

/* Largest |folded - reference| over the largest |reference| of the last outputs. */
static double fold_diff(const char *cfg, int B, unsigned long *wino_calls)
{
  cnnb_net *a = build(cfg, B, 0), *b = build(cfg, B, 1);
  CU_ASSERT_FATAL(a && b);
  CU_ASSERT(!a->backprop && b->backprop);
  const size_t n = (size_t)B * cnnb_shape_size(a->in), m = (size_t)B * cnnb_shape_size(a->layers[a->n - 1].out);
  float *x = malloc(sizeof *x * n), *ref = malloc(sizeof *ref * m);
  CU_ASSERT_FATAL(x && ref);
  for (size_t i = 0; i < n; i++) x[i] = sinf(0.31f * (float)i) + 0.2f * cosf(0.07f * (float)i);
  memcpy(ref, cnnb_net_forward(b, x, B), sizeof *ref * m);
  const unsigned long w0 = cnnb_wino_count();
  const float *y = cnnb_net_forward(a, x, B);
  if (wino_calls) *wino_calls = cnnb_wino_count() - w0;
  double worst = 0, scale = 0;
  for (size_t i = 0; i < m; i++) {
    const double d = fabs((double)y[i] - ref[i]);
    if (d > worst || isnan(y[i])) worst = isnan(y[i]) ? INFINITY : d;
    if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
  }
  CU_ASSERT(scale > 0);
  free(x);
  free(ref);
  cnnb_net_free(a);
  cnnb_net_free(b);
  return worst / (scale > 0 ? scale : 1);
}

static void check(const char *what, const char *cfg, int B, int want_wino)
{
  unsigned long w = 0;
  const double rel = fold_diff(cfg, B, &w);
  if (rel > 2e-6) fprintf(stderr, "\n  %s: folded vs unfolded %.3g of the output scale\n", what, rel);
  CU_ASSERT(rel <= 2e-6);
  if (want_wino) CU_ASSERT(w > 0);
}

static void test_conv_paths(void)
{
  static const char *acts[] = {"leaky", "relu", "linear", "logistic"};
  char cfg[512];
  for (int i = 0; i < 4; i++) {
    /* Winograd: 3x3, 32 channels on 24x24, 3 samples (above the size threshold) */
    snprintf(cfg, sizeof cfg,
             "[net]\nheight=24\nwidth=24\nchannels=32\n"
             "[convolutional]\nbatch_normalize=1\nfilters=32\nsize=3\npad=1\nactivation=%s\n", acts[i]);
    check("winograd", cfg, 3, 1);
    /* the banded im2col path: 3 x 200 x 64 with 3x3 (27 x 12800 columns, over the budget) */
    snprintf(cfg, sizeof cfg,
             "[net]\nheight=200\nwidth=64\nchannels=3\n"
             "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=%s\n", acts[i]);
    check("banded", cfg, 1, 0);
    /* chunks of several samples in one GEMM (1x1 on small maps), and one sample at a time */
    snprintf(cfg, sizeof cfg,
             "[net]\nheight=6\nwidth=5\nchannels=7\n"
             "[convolutional]\nbatch_normalize=1\nfilters=9\nsize=1\nactivation=%s\n"
             "[convolutional]\nbatch_normalize=1\nfilters=5\nsize=3\nstride=2\npad=1\nactivation=%s\n", acts[i],
             acts[i]);
    check("chunked", cfg, 4, 0);
    check("one sample", cfg, 1, 0);
  }
}

static void test_other_layers(void)
{
  /* depthwise and window convolutions (batch norm after the conv, as an affine pass), a
   * standalone [batchnorm], a [connected] layer with batch norm */
  check("depthwise", "[net]\nheight=9\nwidth=11\nchannels=6\n"
                     "[convolutional]\nbatch_normalize=1\nfilters=6\ngroups=6\nsize=3\npad=1\nactivation=relu\n", 2, 0);
  check("window", "[net]\nheight=2\nwidth=2\nchannels=5\n"
                  "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n", 3, 0);
  check("batchnorm", "[net]\nheight=5\nwidth=4\nchannels=3\n[batchnorm]\n", 2, 0);
  check("connected", "[net]\nheight=3\nwidth=3\nchannels=2\n"
                     "[connected]\noutput=7\nbatch_normalize=1\nactivation=leaky\n", 3, 0);
}

/* The 2x2/2 max pool without winners (inference) against the one that records them: the same
 * bits, with NaNs (a NaN first in its window wins, a later one never does) and ties. */
static void test_maxpool(void)
{
  const char *cfg = "[net]\nheight=6\nwidth=9\nchannels=2\n[maxpool]\nsize=2\nstride=2\n";
  cnnb_net *a = build(cfg, 2, 0), *b = build(cfg, 2, 1);
  CU_ASSERT_FATAL(a && b);
  float x[2 * 2 * 6 * 9];
  for (int i = 0; i < 2 * 2 * 6 * 9; i++) x[i] = (float)((i * 7) % 5) - 2.f; /* many ties */
  x[0] = NAN;          /* first in window (0,0) of plane 0: wins */
  x[3] = NAN;          /* second in window (0,1): loses */
  x[9 + 4] = NAN;      /* third in window (0,2) */
  x[54 + 9 + 8] = NAN; /* past the last full window column (9 is odd): never read */
  const size_t m = 2 * cnnb_shape_size(a->layers[a->n - 1].out);
  float *ya = malloc(sizeof *ya * m);
  CU_ASSERT_FATAL(ya != NULL);
  memcpy(ya, cnnb_net_forward(a, x, 2), sizeof *ya * m);
  const float *yb = cnnb_net_forward(b, x, 2);
  CU_ASSERT(memcmp(ya, yb, sizeof *ya * m) == 0);
  CU_ASSERT(isnan(ya[0]) && !isnan(ya[1]) && !isnan(ya[2]));
  CNNB_ASSERT_NEAR(ya[1], fmaxf(x[2], fmaxf(x[11], x[12])), 0); /* max of the window's numbers */
  free(ya);
  cnnb_net_free(a);
  cnnb_net_free(b);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("fold", NULL, NULL);
  CU_add_test(s, "folded batch norm in every convolution path", test_conv_paths);
  CU_add_test(s, "depthwise, window, batchnorm and connected layers", test_other_layers);
  CU_add_test(s, "max pool without winners: same bits", test_maxpool);
  return cnnb_test_run();
}
