/* The Winograd forwards F(2x2,3x3) and F(4x4,3x3) (src/core/winograd.c, docs/BENCHMARKS.md
 * items 16 and 17):
 *  - cnnb_wino_forward_tile with each tile size against six nested loops in double, on odd
 *    sizes, paddings 0-2, sizes not divisible by the 2x2 or 4x4 tile (remainders 1, 2, 3),
 *    batch > 1, channel and filter counts not multiples of 8, and enough tiles for several
 *    blocks; the worst error relative to the output's scale is printed and bounded per tile;
 *  - a [convolutional] layer (BN + leaky, and bias + linear) at inference against the im2col
 *    path of the same net (CNNB_WINOGRAD=0), with each tile size forced and with the chooser,
 *    checking that the Winograd path (and the tile asked for) really ran;
 *  - new weights after a first forward (a reload) are picked up, not the cached transforms;
 *  - training forwards keep the im2col path;
 *  - the size thresholds and the tile chooser on yolov3-tiny's and the face nets' shapes. */
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
static double wino_vs_direct(int m, int B, int C, int H, int W, int F, int P)
{
  const int oh = H + 2 * P - 2, ow = W + 2 * P - 2;
  const size_t nin = (size_t)B * C * H * W, nw = (size_t)F * C * 9, nout = (size_t)B * F * oh * ow;
  float *x = malloc(sizeof *x * nin), *wt = malloc(sizeof *wt * nw), *y = malloc(sizeof *y * nout);
  CU_ASSERT_FATAL(x && wt && y);
  for (size_t i = 0; i < nin; i++) x[i] = urand();
  for (size_t i = 0; i < nw; i++) wt[i] = urand() / sqrtf(9.f * C);
  for (size_t i = 0; i < nout; i++) y[i] = NAN; /* every output must be written */
  cnnb_wino *st = NULL;
  const unsigned long c4 = cnnb_wino_count4();
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward_tile(&st, m, wt, F, C, x, B, H, W, P, y), 0);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count4() - c4, m == 4);
  double scale;
  const double worst = cnnb_test_conv_diff(x, wt, NULL, B, C, H, W, F, 1, 3, 1, P, y, &scale);
  cnnb_wino_free(st);
  free(x);
  free(wt);
  free(y);
  const double rel = worst / (scale > 0 ? scale : 1);
  printf("\n  F(%dx%d,3x3) B%d C%d %dx%d F%d pad %d: max error %.3g of the output scale %.3g", m, m, B, C, H, W, F, P,
         rel, scale);
  return rel;
}

/* Bounds on the worst error relative to the largest output. F(2x2,3x3)'s transforms only add
 * and halve, so its error is about that of the direct sums over 9C products: measured 1-5e-7
 * here, bound 1e-5 (unchanged from item 16). F(4x4,3x3) multiplies by up to 5 in B^T and 8 in
 * A^T and divides by 6 and 24 in G, so every output is a difference of transformed products
 * up to ~100x larger than itself and its rounding error is an order larger: measured 1-5e-6
 * with 1-33 channels and 7.3e-6 with 512 (yolov3-tiny's deepest input; it grows slowly with
 * the channels), bound 3e-5: 4x what the largest layer reaches, and still three orders below
 * what a wrong index or coefficient gives (>= 1e-2). What it means for detections: yolov3-tiny
 * boxes within 0.002 pixel and scores within 1.1e-5 of Darknet's (tests/e2e/darknet_compat.sh). */
static double bound(int m) { return m == 4 ? 3e-5 : 1e-5; }

static void test_direct(void)
{
  /* {B, C, H, W, F, pad} */
  static const int cases[][6] = {
    {1, 1, 3, 3, 1, 0},    {2, 3, 5, 7, 5, 1},     {3, 7, 9, 4, 11, 1},   {1, 13, 6, 6, 9, 0},
    {2, 5, 11, 13, 3, 2},  {1, 17, 1, 1, 6, 1},    {4, 9, 3, 8, 17, 0},   {2, 19, 15, 9, 21, 1},
    {1, 33, 26, 26, 35, 1}, {3, 20, 49, 51, 20, 1}, /* 1950 tiles of 2x2: several blocks */
    {2, 6, 7, 8, 5, 2},    {1, 11, 10, 12, 7, 0},  /* output widths 4k+3, 4k+2, 4k+1, 4k */
    {4, 24, 64, 61, 24, 1}, /* 1024 tiles of 4x4: several blocks of F(4x4,3x3) */
    {2, 512, 13, 13, 16, 1}, /* yolov3-tiny's deepest input: sums over 4608 products */
  };
  for (int m = 2; m <= 4; m += 2) {
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      const int *k = cases[i];
      const double r = wino_vs_direct(m, k[0], k[1], k[2], k[3], k[4], k[5]);
      if (r > worst) worst = r;
    }
    printf("\n  F(%dx%d,3x3) worst over all layers: %.3g (bound %.0e)\n", m, m, worst, bound(m));
    CU_ASSERT(worst <= bound(m));
  }
}

/* Worst |winograd - im2col| / max |im2col| of the net's output on x (B samples), with
 * CNNB_WINOGRAD=mode ("2", "4": that tile; "1": the chooser's); *calls and *calls4: Winograd
 * forwards in all and with F(4x4,3x3) during it. */
static double net_ab(cnnb_net *net, const char *mode, const float *x, int B, size_t nout, unsigned long *calls,
                     unsigned long *calls4)
{
  float *ref = malloc(sizeof *ref * nout);
  CU_ASSERT_FATAL(ref != NULL);
  setenv("CNNB_WINOGRAD", "0", 1);
  const unsigned long c0 = cnnb_wino_count(), c4 = cnnb_wino_count4();
  memcpy(ref, cnnb_net_forward(net, x, B), sizeof *ref * nout);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count(), c0); /* disabled means disabled */
  setenv("CNNB_WINOGRAD", mode, 1);
  const float *y = cnnb_net_forward(net, x, B);
  *calls = cnnb_wino_count() - c0;
  *calls4 = cnnb_wino_count4() - c4;
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

/* New random weights in both conv layers (as a reload writes them); BN and biases kept. */
static void new_weights(cnnb_net *net)
{
  for (int li = 0; li < 2; li++)
    for (int i = 0; i < net->layers[li].nparam; i++) {
      cnnb_param *q = &net->layers[li].param[i];
      if (strcmp(q->name, "weights") != 0) continue;
      const float k = 1.f / sqrtf((float)q->count / (float)net->layers[li].out.c);
      for (size_t j = 0; j < q->count; j++) q->data[j] = k * urand();
    }
}

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
  /* each tile forced, then the chooser; each time after new weights (as a reload writes
   * them), so that a cached transform of the previous weights would show */
  static const char *const modes[] = {"2", "4", "1"};
  for (int i = 0; i < 3; i++) {
    unsigned long calls = 0, calls4 = 0;
    new_weights(net);
    double rel = net_ab(net, modes[i], x, B, nout, &calls, &calls4);
    printf("\n  two-layer net, CNNB_WINOGRAD=%s vs im2col: max error %.3g of the output scale", modes[i], rel);
    CNNB_ASSERT_EQ_INT(calls, 2);
    if (i < 2) CNNB_ASSERT_EQ_INT(calls4, i == 1 ? 2 : 0);
    CU_ASSERT(rel <= bound(i == 0 ? 2 : 4));
    new_weights(net); /* new weights after a first forward: not the cached transforms */
    rel = net_ab(net, modes[i], x, B, nout, &calls, &calls4);
    printf("\n  after new weights: max error %.3g", rel);
    CNNB_ASSERT_EQ_INT(calls, 2);
    CU_ASSERT(rel <= bound(i == 0 ? 2 : 4));
  }
  printf("\n");
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
  /* the tile (cnnb-bench-wino, docs/BENCHMARKS.md item 17): 4x4 on yolov3-tiny's 3x3 layers
   * at batch 8 and on the 7 sample photos of tests/e2e/darknet_compat.sh (so that test checks
   * F(4x4,3x3) against Darknet), and on the face descriptor's 35x35 maps; 2x2 where 4x4 lost:
   * 2 samples of 13x13, 3x3 to 12x12 maps */
  static const int four[][5] = {{8, 16, 32, 208, 208}, {8, 512, 1024, 13, 13}, {7, 512, 1024, 13, 13},
                                {7, 384, 256, 26, 26}, {1, 384, 256, 26, 26}, {3, 32, 32, 35, 35}};
  static const int two[][5] = {{2, 512, 1024, 13, 13}, {16, 256, 256, 3, 3}, {8, 128, 128, 8, 8},
                               {16, 128, 128, 12, 12}, {8, 128, 128, 10, 10}, {8, 256, 256, 5, 5}};
  unsetenv("CNNB_WINOGRAD");
  for (int i = 0; i < 6; i++) {
    CNNB_ASSERT_EQ_INT(cnnb_wino_tile(four[i][0], four[i][1], four[i][2], four[i][3], four[i][4]), 4);
    CNNB_ASSERT_EQ_INT(cnnb_wino_tile(two[i][0], two[i][1], two[i][2], two[i][3], two[i][4]), 2);
  }
  setenv("CNNB_WINOGRAD", "2", 1); /* forced */
  CNNB_ASSERT_EQ_INT(cnnb_wino_tile(8, 512, 1024, 13, 13), 2);
  setenv("CNNB_WINOGRAD", "4", 1);
  CNNB_ASSERT_EQ_INT(cnnb_wino_tile(16, 256, 256, 3, 3), 4);
  unsetenv("CNNB_WINOGRAD");
}

/* The last, smaller batch of a run keeps the tile whose filters are already transformed (here
 * 4x4 from a batch of 8) instead of transforming them all again for 2x2; a larger batch than
 * the one they were made for takes its own choice. Results stay within the bound either way. */
static void test_keep_tile(void)
{
  const int C = 24, F = 20, H = 13, W = 13;
  const size_t nw = (size_t)F * C * 9, nx = (size_t)8 * C * H * W, ny = (size_t)8 * F * H * W;
  float *w = malloc(sizeof *w * nw), *x = malloc(sizeof *x * nx), *y = malloc(sizeof *y * ny);
  CU_ASSERT_FATAL(w && x && y);
  for (size_t i = 0; i < nw; i++) w[i] = urand() / sqrtf(9.f * C);
  for (size_t i = 0; i < nx; i++) x[i] = urand();
  cnnb_wino *st = NULL;
  unsigned long c4 = cnnb_wino_count4();
  CNNB_ASSERT_EQ_INT(cnnb_wino_tile(8, C, F, H, W), 4);
  CNNB_ASSERT_EQ_INT(cnnb_wino_tile(2, C, F, H, W), 2);
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward(&st, w, F, C, x, 8, H, W, 1, y), 0);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count4() - c4, 1);
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward(&st, w, F, C, x, 2, H, W, 1, y), 0); /* keeps 4x4 */
  CNNB_ASSERT_EQ_INT(cnnb_wino_count4() - c4, 2);
  double scale, e = cnnb_test_conv_diff(x, w, NULL, 2, C, H, W, F, 1, 3, 1, 1, y, &scale);
  CU_ASSERT(e <= bound(4) * scale);
  cnnb_wino_free(st);
  st = NULL; /* a fresh cache that starts with 2 samples takes 2x2, and 8 samples later 4x4 */
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward(&st, w, F, C, x, 2, H, W, 1, y), 0);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count4() - c4, 2);
  CNNB_ASSERT_EQ_INT(cnnb_wino_forward(&st, w, F, C, x, 8, H, W, 1, y), 0);
  CNNB_ASSERT_EQ_INT(cnnb_wino_count4() - c4, 3);
  e = cnnb_test_conv_diff(x, w, NULL, 8, C, H, W, F, 1, 3, 1, 1, y, &scale);
  CU_ASSERT(e <= bound(4) * scale);
  cnnb_wino_free(st);
  free(w);
  free(x);
  free(y);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("winograd", NULL, NULL);
  CU_add_test(s, "F(2x2,3x3) and F(4x4,3x3) match direct loops", test_direct);
  CU_add_test(s, "conv layer: Winograd vs im2col, weights reloaded", test_layer);
  CU_add_test(s, "training forwards keep im2col", test_train_keeps_im2col);
  CU_add_test(s, "size thresholds and tile choice", test_worth);
  CU_add_test(s, "a smaller last batch keeps the transformed tile", test_keep_tile);
  return cnnb_test_run();
}
