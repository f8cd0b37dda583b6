/* The convolution's special paths and the max pool's general path, against direct loops and
 * finite differences (docs/BENCHMARKS.md, items 10-12):
 *  - the window path (the input has no more pixels than the kernel taps: 3x3 on 1x1, 2x2 and
 *    3x3 maps, strided and grouped), where the layer is one dense GEMM per batch;
 *  - the banded forward (one sample's column matrix over the workspace budget: built and
 *    multiplied a band of output rows at a time);
 *  - the direct depthwise path (groups = channels = filters);
 *  - max pooling with padding and stride 1 or 2 (the stem of ResNet, yolov3-tiny's 2x2/1):
 *    outputs and the input that receives each gradient (the first maximum in window order). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"


/* Forward of one conv layer (linear, with bias) against six nested loops, in double. */
static void conv_vs_direct(int B, int C, int H, int W, int F, int G, int K, int S, int P)
{
  char cfg[256];
  snprintf(cfg, sizeof cfg,
           "[net]\nheight=%d\nwidth=%d\nchannels=%d\n[convolutional]\nfilters=%d\nsize=%d\nstride=%d\n"
           "padding=%d\ngroups=%d\nactivation=linear\n",
           H, W, C, F, K, S, P, G);
  cnnb_net *net = cnnb_test_net(cfg, B, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_net_init_params(net, 11);
  cnnb_layer *l = &net->layers[0];
  const float *wt = cnnb_layer_find_param(l, "weights")->data;
  float *bias = cnnb_layer_find_param(l, "biases")->data;
  for (int f = 0; f < F; f++) bias[f] = 0.05f * (float)f;
  const size_t n = (size_t)B * C * H * W;
  float *x = malloc(sizeof *x * n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  for (size_t i = 0; i < n; i++) x[i] = sinf(0.37f * (float)i + 0.1f);
  const float *y = cnnb_net_forward(net, x, B);
  const double worst = cnnb_test_conv_diff(x, wt, bias, B, C, H, W, F, G, K, S, P, y, NULL);
  if (worst > 1e-4)
    fprintf(stderr, "\n  conv %dx%dx%d k%d s%d p%d g%d: worst %g\n", C, H, W, K, S, P, G, worst);
  CNNB_ASSERT_NEAR(worst, 0.0, 1e-4);
  free(x);
  cnnb_net_free(net);
}

static void test_window_forward(void)
{
  conv_vs_direct(3, 8, 1, 1, 6, 1, 3, 1, 1);  /* 1x1 map, 3x3 pad 1 */
  conv_vs_direct(3, 8, 2, 2, 6, 1, 3, 1, 1);  /* 2x2 map, 3x3 pad 1 */
  conv_vs_direct(2, 6, 2, 2, 4, 2, 3, 2, 1);  /* 2x2 -> 1x1, stride 2, grouped */
  conv_vs_direct(2, 4, 3, 3, 6, 2, 3, 1, 1);  /* 3x3 map (9 pixels = 9 taps), grouped */
  conv_vs_direct(2, 4, 3, 3, 4, 4, 3, 1, 0);  /* 3x3 -> 1x1, no padding, depthwise */
  conv_vs_direct(2, 3, 2, 3, 5, 1, 3, 1, 2);  /* padding 2: more outputs than inputs */
  conv_vs_direct(2, 4, 1, 1, 3, 1, 1, 3, 1);  /* 1x1 kernel whose only window lies in the padding */
}

/* 3 x 200 x 64 with a 3x3 kernel: 27 x 12800 columns, over the 1 MiB budget, so the forward
 * runs in bands of output rows; the last band is shorter. Stride 2 too. */
static void test_banded_forward(void)
{
  conv_vs_direct(2, 3, 200, 64, 4, 1, 3, 1, 1);
  conv_vs_direct(1, 3, 401, 161, 5, 1, 3, 2, 1);
}

static void gradcheck(const char *what, const char *cfg, int batch, unsigned seed, int train)
{
  cnnb_gradcheck_result r;
  int rc = cnnb_gradcheck(cfg, batch, seed, train, 60, &r);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) return;
  if (r.max_rel_input >= 1e-2 || r.max_rel_param >= 1e-2)
    fprintf(stderr, "\n  %s: max_rel_input %.3g max_rel_param %.3g\n", what, r.max_rel_input, r.max_rel_param);
  CU_ASSERT(r.max_rel_input < 1e-2);
  CU_ASSERT(r.max_rel_param < 1e-2);
  CU_ASSERT(r.checked > 0);
}

static void test_window_grad(void)
{
  gradcheck("window 2x2 3x3 pad 1",
            "[net]\nheight=2\nwidth=2\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
            "activation=linear\n",
            2, 3, 1);
  gradcheck("window 2x2 3x3/2 grouped",
            "[net]\nheight=2\nwidth=2\nchannels=4\n[convolutional]\nfilters=6\nsize=3\nstride=2\npad=1\n"
            "groups=2\nactivation=linear\n",
            2, 5, 1);
  gradcheck("window 1x1 3x3 pad 1 then 2x2 chain",
            "[net]\nheight=2\nwidth=2\nchannels=2\n[convolutional]\nfilters=3\nsize=3\npad=1\n"
            "activation=tanh\n[convolutional]\nfilters=3\nsize=3\nstride=2\npad=1\nactivation=linear\n"
            "[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=linear\n",
            2, 7, 1);
  gradcheck("window 3x3 map grouped, padding 2",
            "[net]\nheight=3\nwidth=3\nchannels=2\n[convolutional]\nfilters=4\nsize=3\npadding=2\n"
            "groups=2\nactivation=linear\n",
            2, 9, 1);
}

static void test_depthwise(void)
{
  conv_vs_direct(2, 5, 9, 7, 5, 5, 3, 1, 1);   /* 3x3 pad 1 */
  conv_vs_direct(2, 4, 11, 8, 4, 4, 3, 2, 1);  /* stride 2, uneven */
  conv_vs_direct(1, 3, 10, 10, 3, 3, 5, 2, 2); /* 5x5/2 */
  conv_vs_direct(2, 3, 6, 5, 3, 3, 3, 1, 0);   /* no padding */
  conv_vs_direct(1, 3, 4, 4, 3, 3, 3, 3, 3);   /* padding 3: rows wholly outside the image */
  gradcheck("depthwise 3x3/2 pad 1 + bn + relu",
            "[net]\nheight=7\nwidth=6\nchannels=3\n[convolutional]\nfilters=3\nsize=3\nstride=2\npad=1\n"
            "groups=3\nbatch_normalize=1\nactivation=leaky\n[convolutional]\nfilters=2\nsize=1\nactivation=linear\n",
            2, 4, 1);
  gradcheck("depthwise 5x5 pad 2",
            "[net]\nheight=6\nwidth=6\nchannels=2\n[convolutional]\nfilters=2\nsize=5\npad=1\ngroups=2\n"
            "activation=linear\n",
            2, 6, 1);
}

/* The general max pool against the compare-and-branch loop it replaced, on data with ties
 * (values from a set of 5) so that "first maximum in window order" matters. */
static void pool_vs_loop(int C, int H, int W, int size, int stride, int padding)
{
  char cfg[256];
  snprintf(cfg, sizeof cfg, "[net]\nheight=%d\nwidth=%d\nchannels=%d\n[maxpool]\nsize=%d\nstride=%d\npadding=%d\n",
           H, W, C, size, stride, padding);
  enum { B = 2 };
  cnnb_net *net = cnnb_test_net(cfg, B, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_layer *l = &net->layers[0];
  const int OH = l->out.h, OW = l->out.w, off = -padding / 2;
  const size_t insz = (size_t)C * H * W, outsz = (size_t)C * OH * OW;
  float *x = malloc(sizeof *x * B * insz), *din = calloc(B * insz, sizeof *din);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  CU_ASSERT_PTR_NOT_NULL_FATAL(din);
  for (size_t i = 0; i < B * insz; i++) x[i] = (float)((i * 7919u) % 5) - 2.f;
  cnnb_net_forward(net, x, B);
  /* gradient d(out_o) = o + 1, routed to the winner */
  for (size_t o = 0; o < B * outsz; o++) l->delta[o] = (float)(o + 1);
  float *got = calloc(B * insz, sizeof *got);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  l->input_delta = got;
  l->ops->backward(l, net);
  l->input_delta = NULL;
  int bad = 0;
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++) {
          float best = -FLT_MAX;
          int bi = -1;
          for (int u = 0; u < size; u++)
            for (int v = 0; v < size; v++) {
              const int y = off + i * stride + u, xx = off + j * stride + v;
              if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
              const int idx = (c * H + y) * W + xx;
              if (bi < 0 || x[b * insz + idx] > best) best = x[b * insz + idx], bi = idx;
            }
          const size_t o = b * outsz + ((size_t)c * OH + i) * OW + j;
          if (l->output[o] != best) bad++;
          din[b * insz + bi] += (float)(o + 1);
        }
  CNNB_ASSERT_EQ_INT(bad, 0);
  CU_ASSERT_EQUAL(memcmp(din, got, sizeof *din * B * insz), 0);
  free(x);
  free(din);
  free(got);
  cnnb_net_free(net);
}

static void test_maxpool_general(void)
{
  pool_vs_loop(3, 16, 16, 3, 2, 2); /* ResNet stem: 3x3/2, window from -1 */
  pool_vs_loop(2, 13, 13, 2, 1, 1); /* yolov3-tiny: 2x2/1 keeps 13x13 */
  pool_vs_loop(2, 7, 9, 3, 1, 2);   /* 3x3/1 same size */
  pool_vs_loop(2, 9, 7, 5, 3, 4);   /* a 5x5 window (no unrolled copy) */
  pool_vs_loop(1, 6, 6, 3, 2, 0);   /* no padding */
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("conv_paths", NULL, NULL);
  CU_add_test(s, "window conv forward matches direct loops", test_window_forward);
  CU_add_test(s, "banded conv forward matches direct loops", test_banded_forward);
  CU_add_test(s, "window conv gradients", test_window_grad);
  CU_add_test(s, "depthwise conv: direct loops and gradients", test_depthwise);
  CU_add_test(s, "max pool general path: outputs and gradient routing", test_maxpool_general);
  return cnnb_test_run();
}
