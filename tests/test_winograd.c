/* The Winograd F(2x2,3x3) forward (src/core/winograd.c, docs/BENCHMARKS.md item 16):
 *  - cnnb_wino_forward against six nested loops in double, on odd sizes, paddings 0-2, sizes
 *    not divisible by the 2x2 tile, batch > 1, channel and filter counts not multiples of 8,
 *    and enough tiles for several blocks; the worst error relative to the output's scale is
 *    printed and bounded;
 *  - a [convolutional] layer (BN + leaky, and bias + linear) at inference against the im2col
 *    path of the same net (CNNB_WINOGRAD=0), checking that the Winograd path really ran;
 *  - new weights after a first forward (a reload) are picked up, not the cached transform;
 *  - training forwards keep the im2col path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"
#include "core/winograd.h"

static unsigned long long rng_state = 88172645463325252ULL;
static float urand(void) /* uniform in [-1, 1) */
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (float)((rng_state >> 40) * (1.0 / (1ULL << 23))) - 1.f;
}

/* Worst |wino - direct| / max |direct| for one random layer. */
static double wino_vs_direct(int B, int C, int H, int W, int F, int P)
{
  const int oh = H + 2 * P - 2, ow = W + 2 * P - 2;
  const size_t nin = (size_t)B * C * H * W, nw = (size_t)F * C * 9, nout = (size_t)B * F * oh * ow;
  float *x = malloc(sizeof *x * nin), *wt = malloc(sizeof *wt * nw), *y = malloc(sizeof *y * nout);
  CU_ASSERT_FATAL(x && wt && y);
  for (size_t i = 0; i < nin; i++) x[i] = urand();
  for (size_t i = 0; i < nw; i++) wt[i] = urand() / sqrtf(9.f * C);
  for (size_t i = 0; i < nout; i++) y[i] = NAN; /* every output must be written */
  cnnb_wino *st = NULL;
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward(&st, wt, F, C, x, B, H, W, P, y), 0);
  double scale;
  const double worst = cnnb_test_conv_diff(x, wt, NULL, B, C, H, W, F, 1, 3, 1, P, y, &scale);
  cnnb_wino_free(st);
  free(x);
  free(wt);
  free(y);
  const double rel = worst / (scale > 0 ? scale : 1);
  printf("\n  B%d C%d %dx%d F%d pad %d: max error %.3g of the output scale %.3g", B, C, H, W, F, P, rel, scale);
  return rel;
}

static void test_direct(void)
{
  /* {B, C, H, W, F, pad} */
  static const int cases[][6] = {
    {1, 1, 3, 3, 1, 0},    {2, 3, 5, 7, 5, 1},    {3, 7, 9, 4, 11, 1},  {1, 13, 6, 6, 9, 0},
    {2, 5, 11, 13, 3, 2},  {1, 17, 1, 1, 6, 1},   {4, 9, 3, 8, 17, 0},  {2, 19, 15, 9, 21, 1},
    {1, 33, 26, 26, 35, 1}, {3, 20, 49, 51, 20, 1}, /* the last: 1950 tiles, several blocks */
  };
  double worst = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const int *k = cases[i];
    const double r = wino_vs_direct(k[0], k[1], k[2], k[3], k[4], k[5]);
    if (r > worst) worst = r;
  }
  printf("\n  worst over all layers: %.3g (bound 1e-5)\n", worst);
  CU_ASSERT(worst <= 1e-5);
}


/* Worst |winograd - im2col| / max |im2col| of the net's output on x (B samples). */
static double net_ab(cnnb_net *net, const float *x, int B, size_t nout, unsigned long *calls)
{
  float *ref = malloc(sizeof *ref * nout);
  CU_ASSERT_FATAL(ref != NULL);
  setenv("CNNB_WINOGRAD", "0", 1);
  const unsigned long c0 = cnnb_wino_count();
  memcpy(ref, cnnb_net_forward(net, x, B), sizeof *ref * nout);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count(), c0); /* disabled means disabled */
  setenv("CNNB_WINOGRAD", "1", 1);
  const float *y = cnnb_net_forward(net, x, B);
  *calls = cnnb_wino_count() - c0;
  unsetenv("CNNB_WINOGRAD");
  double worst = 0, scale = 0;
  for (size_t i = 0; i < nout; i++) {
    if (fabs(y[i] - ref[i]) > worst || isnan(y[i])) worst = isnan(y[i]) ? INFINITY : fabs(y[i] - ref[i]);
    if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
  }
  free(ref);
  return worst / (scale > 0 ? scale : 1);
}

static const char *const NET_CFG =
  "[net]\nheight=%d\nwidth=%d\nchannels=%d\n"
  "[convolutional]\nbatch_normalize=1\nfilters=%d\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
  "[convolutional]\nfilters=%d\nsize=3\nstride=1\npadding=0\nactivation=linear\n";

static void test_layer(void)
{
  const int B = 3, C = 19, H = 35, W = 37, F1 = 21, F2 = 18; /* both layers over the size threshold */
  char cfg[512];
  snprintf(cfg, sizeof cfg, NET_CFG, H, W, C, F1, F2);
  cnnb_net *net = cnnb_test_net(cfg, B, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_net_init_params(net, 5);
  /* non-trivial BN statistics and biases */
  for (int li = 0; li < 2; li++)
    for (int i = 0; i < net->layers[li].nparam; i++) {
      cnnb_param *q = &net->layers[li].param[i];
      if (strcmp(q->name, "weights") == 0) continue;
      for (size_t j = 0; j < q->count; j++)
        q->data[j] = strcmp(q->name, "rolling_variance") == 0 ? 0.5f + 0.5f * fabsf(urand()) : 0.3f * urand();
    }
  const size_t nin = (size_t)B * C * H * W, nout = (size_t)B * F2 * (H - 2) * (W - 2);
  float *x = malloc(sizeof *x * nin);
  CU_ASSERT_FATAL(x != NULL);
  for (size_t i = 0; i < nin; i++) x[i] = urand();
  unsigned long calls = 0;
  double rel = net_ab(net, x, B, nout, &calls);
  printf("\n  two-layer net, Winograd vs im2col: max error %.3g of the output scale", rel);
  CNNB_ASSERT_EQ_INT(calls, 2);
  CU_ASSERT(rel <= 1e-5);

  /* new weights (as a reload writes them): the cached transform must not be reused */
  cnnb_net_init_params(net, 77);
  rel = net_ab(net, x, B, nout, &calls);
  printf("\n  after new weights: max error %.3g\n", rel);
  CNNB_ASSERT_EQ_INT(calls, 2);
  CU_ASSERT(rel <= 1e-5);
  free(x);
  cnnb_net_free(net);
}

static void test_train_keeps_im2col(void)
{
  const int B = 2, C = 24, H = 34, W = 34;
  char cfg[512];
  snprintf(cfg, sizeof cfg, NET_CFG, H, W, C, 24, 24);
  cnnb_net *net = cnnb_test_net(cfg, B, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_net_init_params(net, 3);
  const size_t nin = (size_t)B * C * H * W;
  float *x = malloc(sizeof *x * nin);
  CU_ASSERT_FATAL(x != NULL);
  for (size_t i = 0; i < nin; i++) x[i] = urand();
  const unsigned long c0 = cnnb_wino_count();
  net->train = 1;
  cnnb_net_forward(net, x, B);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count(), c0);
  net->train = 0; /* the same net evaluated: Winograd */
  cnnb_net_forward(net, x, B);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count(), c0 + 2);
  free(x);
  cnnb_net_free(net);
}

static void test_worth(void)
{
  /* the first layers of yolov3-tiny and of the face nets (3 channels) keep im2col */
  CU_ASSERT_FALSE(cnnb_wino_worth(8, 3, 16, 416, 416));
  CU_ASSERT_TRUE(cnnb_wino_worth(8, 256, 512, 13, 13));
  /* one sample of 4x4 maps (4 tiles) keeps im2col, 16 samples (64 tiles) take Winograd */
  CU_ASSERT_FALSE(cnnb_wino_worth(1, 256, 256, 4, 4));
  CU_ASSERT_TRUE(cnnb_wino_worth(16, 256, 256, 4, 4));
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("winograd", NULL, NULL);
  CU_add_test(s, "F(2x2,3x3) matches direct loops", test_direct);
  CU_add_test(s, "conv layer: Winograd vs im2col, weights reloaded", test_layer);
  CU_add_test(s, "training forwards keep im2col", test_train_keeps_im2col);
  CU_add_test(s, "size thresholds", test_worth);
  return cnnb_test_run();
}
