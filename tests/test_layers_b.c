/* Tests for the structural layers: maxpool, avgpool, shortcut, route, upsample, dropout,
 * crop and l2norm. Worked examples check values; finite differences check every backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"

/* Small layers keep the float noise of central differences (eps 1e-3) well below the 1e-2
 * tolerance: the objective sums every output, so its rounding grows with their number. */
#define CONV2 "[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=linear\n"
#define C1X3 "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
#define C1X4 "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
#define C1X5 "[convolutional]\nfilters=5\nsize=1\nactivation=linear\n"
#define CONV4 "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=linear\n"

/* Gradient check of cfg with both input and parameter gradients below 1e-2. */
static void check_grad(const char *cfg, int batch, unsigned seed, int train)
{
  cnnb_gradcheck_result r;
  int rc = cnnb_gradcheck(cfg, batch, seed, train, 60, &r);
  CNNB_ASSERT_EQ_INT(rc, 0);
  if (rc) return;
  CU_ASSERT(r.checked > 0);
  CNNB_ASSERT_NEAR(r.max_rel_input, 0, 1e-2);
  CNNB_ASSERT_NEAR(r.max_rel_param, 0, 1e-2);
}

/* Builds an inference net, runs one sample through it; returns NULL on a build error. */
static cnnb_net *run(const char *cfg, const float *x, const float **y)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, cfg, "test.cfg", &o) < 0) {
    fprintf(stderr, "\n  %s\n", cnnb_error_message());
    return NULL;
  }
  cnnb_net_init_params(net, 1);
  *y = cnnb_net_forward(net, x, 1);
  return net;
}

/* Expects the build of cfg to fail with code. */
static void expect_fail(const char *cfg, int code)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "bad.cfg", &o);
  CNNB_ASSERT_EQ_INT(rc, code);
  if (rc >= 0) cnnb_net_free(net);
}

static const float ex4[16] = {1, 3, 2, 1, 2, 9, 1, 1, 1, 3, 2, 3, 5, 6, 1, 2};

/* ---- maxpool ---- */

static void test_maxpool_example(void)
{
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[maxpool]\nsize=2\nstride=2\n", ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 2);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 2);
  const float want[4] = {9, 2, 6, 3};
  for (int i = 0; i < 4; i++) CNNB_ASSERT_NEAR(y[i], want[i], 0);
  cnnb_net_free(net);
}

static void test_maxpool_yolo_tiny_keeps_size(void)
{
  float x[13 * 13];
  for (int i = 0; i < 13 * 13; i++) x[i] = (float)((i * 37) % 101);
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=13\nwidth=13\nchannels=1\n[maxpool]\nsize=2\nstride=1\n", x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 13);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 13);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.c, 1);
  /* padding 1 goes after the data: output (i,j) is the max of x[i..i+1][j..j+1] clipped */
  for (int i = 0; i < 13; i++)
    for (int j = 0; j < 13; j++) {
      float m = x[i * 13 + j];
      if (i + 1 < 13 && x[(i + 1) * 13 + j] > m) m = x[(i + 1) * 13 + j];
      if (j + 1 < 13 && x[i * 13 + j + 1] > m) m = x[i * 13 + j + 1];
      if (i + 1 < 13 && j + 1 < 13 && x[(i + 1) * 13 + j + 1] > m) m = x[(i + 1) * 13 + j + 1];
      CNNB_ASSERT_NEAR(y[i * 13 + j], m, 0);
    }
  cnnb_net_free(net);
}

static void test_maxpool_grad(void)
{
  /* pools on the input: exact copies, so the input check is exact; ties cannot occur */
  check_grad("[net]\nheight=6\nwidth=6\nchannels=2\n[maxpool]\nsize=2\nstride=2\n", 2, 1, 0);
  check_grad("[net]\nheight=7\nwidth=7\nchannels=2\n[maxpool]\nsize=3\nstride=2\n", 2, 1, 0);
  check_grad("[net]\nheight=5\nwidth=5\nchannels=2\n[maxpool]\nsize=2\nstride=1\n" C1X3, 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" CONV2 "[maxpool]\nsize=2\nstride=2\n", 2, 1, 0);
}

static void test_maxpool_bad(void)
{
  expect_fail("[net]\nheight=2\nwidth=2\nchannels=1\n[maxpool]\nsize=5\nstride=1\npadding=0\n", CNNB_ESHAPE);
  expect_fail("[net]\nheight=4\nwidth=4\nchannels=1\n[maxpool]\nsize=2\nmaxpool_depth=1\n", CNNB_ECFG);
}

/* ---- avgpool ---- */

static void test_avgpool_local_example(void)
{
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[avgpool]\nsize=2\nstride=2\n", ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 2);
  const float want[4] = {3.75f, 1.25f, 3.75f, 2};
  for (int i = 0; i < 4; i++) CNNB_ASSERT_NEAR(y[i], want[i], 1e-6);
  cnnb_net_free(net);
}

static void test_avgpool_global_example(void)
{
  float x[2 * 3 * 3];
  for (int i = 0; i < 18; i++) x[i] = (float)i; /* channel 0: 0..8, channel 1: 9..17 */
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=3\nwidth=3\nchannels=2\n[avgpool]\n", x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_shape o = net->layers[0].out;
  CNNB_ASSERT_EQ_INT(o.c, 2);
  CNNB_ASSERT_EQ_INT(o.h, 1);
  CNNB_ASSERT_EQ_INT(o.w, 1);
  CNNB_ASSERT_NEAR(y[0], 4, 1e-6);
  CNNB_ASSERT_NEAR(y[1], 13, 1e-6);
  cnnb_net_free(net);
}

static void test_avgpool_padded_example(void)
{
  /* size 3, stride 1, padding 2: windows start at -1 and always divide by 9 */
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[avgpool]\nsize=3\nstride=1\npadding=2\n", ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 4);
  CNNB_ASSERT_NEAR(y[0], (1 + 3 + 2 + 9) / 9.0, 1e-6);
  CNNB_ASSERT_NEAR(y[5], (1 + 3 + 2 + 2 + 9 + 1 + 1 + 3 + 2) / 9.0, 1e-6);
  cnnb_net_free(net);
}

static void test_avgpool_grad(void)
{
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" CONV2 "[avgpool]\n", 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" CONV2 "[avgpool]\nsize=2\nstride=2\n", 2, 1, 0);
  check_grad("[net]\nheight=5\nwidth=5\nchannels=2\n[avgpool]\nsize=3\nstride=2\npadding=2\n" C1X3, 2, 1, 0);
}

/* ---- shortcut ---- */

static void test_shortcut_values(void)
{
  /* conv layers are random: check shortcut = prev + from directly on the layer buffers */
  float x[3 * 4 * 4];
  for (int i = 0; i < 48; i++) x[i] = sinf((float)i);
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4 CONV4 "[shortcut]\nfrom=-2\nalpha=0.5\nbeta=2\n",
                      x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  for (int i = 0; i < 64; i++)
    CNNB_ASSERT_NEAR(y[i], 0.5f * net->layers[1].output[i] + 2 * net->layers[0].output[i], 1e-5);
  cnnb_net_free(net);
}

static void test_shortcut_grad(void)
{
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 C1X3 "[shortcut]\nfrom=-2\n", 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 C1X3
             "[shortcut]\nfrom=0\nactivation=tanh\nalpha=0.7\nbeta=1.5\n", 2, 1, 0);
  /* from with fewer channels than the previous layer, then with more */
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 C1X5 "[shortcut]\nfrom=-2\n", 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X5 C1X3 "[shortcut]\nfrom=-2\n", 2, 1, 0);
  /* from larger spatially (stride 2), then smaller (sample 2) */
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 "[maxpool]\nsize=2\nstride=2\n" C1X3
             "[shortcut]\nfrom=-3\n", 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n[maxpool]\nsize=2\nstride=2\n" C1X3 "[upsample]\n"
             "[shortcut]\nfrom=-2\n", 2, 1, 0);
}

static void test_shortcut_bad(void)
{
  expect_fail("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4 "[shortcut]\nfrom=-3\n", CNNB_ECFG);
  expect_fail("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4 "[shortcut]\nfrom=-1\nweights_type=per_channel\n", CNNB_ECFG);
}

/* ---- route ---- */

static void test_route_shape(void)
{
  float x[3 * 4 * 4] = {0};
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4
                      "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n[route]\nlayers=-1,0\n"
                      "[route]\nlayers=2\ngroups=2\ngroup_id=1\n",
                      x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_shape o = net->layers[2].out;
  CNNB_ASSERT_EQ_INT(o.c, 10);
  CNNB_ASSERT_EQ_INT(o.h, 4);
  CNNB_ASSERT_EQ_INT(o.w, 4);
  CNNB_ASSERT_EQ_INT(net->layers[3].out.c, 5);
  /* order: layer 1's channels, then layer 0's; the group takes the second half */
  CNNB_ASSERT_NEAR(net->layers[2].output[0], net->layers[1].output[0], 0);
  CNNB_ASSERT_NEAR(net->layers[2].output[6 * 16], net->layers[0].output[0], 0);
  CNNB_ASSERT_NEAR(y[0], net->layers[2].output[5 * 16], 0);
  cnnb_net_free(net);
}

static void test_route_grad(void)
{
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 CONV2 "[route]\nlayers=-1,-2\n" C1X3, 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X4 CONV2 "[route]\nlayers=-1,-2\ngroups=2\ngroup_id=1\n",
             2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" CONV2 "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n" C1X3
             "[route]\nlayers=-1,-3\n", 2, 1, 0);
}

static void test_route_bad(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net,
                                "[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4
                                "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n",
                                "bad.cfg", &o);
  CNNB_ASSERT_EQ_INT(rc, CNNB_ESHAPE);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "layer 0"));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "layer 1"));
  if (rc >= 0) cnnb_net_free(net);
  expect_fail("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4 "[route]\nlayers=-1\ngroups=3\n", CNNB_ESHAPE);
  expect_fail("[net]\nheight=4\nwidth=4\nchannels=3\n" CONV4 "[route]\nlayers=1\n", CNNB_ECFG);
}

/* ---- upsample ---- */

static void test_upsample_example(void)
{
  const float x[4] = {1, 2, 3, 4};
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=2\nwidth=2\nchannels=1\n[upsample]\nscale=0.5\n", x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 4);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 4);
  const float want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
  for (int i = 0; i < 16; i++) CNNB_ASSERT_NEAR(y[i], 0.5f * want[i], 0);
  cnnb_net_free(net);
}

static void test_upsample_grad(void)
{
  check_grad("[net]\nheight=3\nwidth=3\nchannels=2\n" CONV2 "[upsample]\n", 2, 1, 0);
  check_grad("[net]\nheight=2\nwidth=2\nchannels=2\n" C1X3 "[upsample]\nstride=3\nscale=1.5\n", 2, 1, 0);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 "[upsample]\nstride=-2\n", 2, 1, 0);
}

/* ---- dropout ---- */

static void test_dropout_inference_identity(void)
{
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[dropout]\nprobability=0.3\n", ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  for (int i = 0; i < 16; i++) CNNB_ASSERT_NEAR(y[i], ex4[i], 0);
  cnnb_net_free(net);
}

static void test_dropout_train(void)
{
  enum { N = 4000 };
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.train = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, "[net]\nheight=40\nwidth=100\nchannels=1\n[dropout]\nprobability=0.25\n",
                                "t.cfg", &o);
  CNNB_ASSERT_EQ_INT(rc, 0);
  if (rc) return;
  float *x = malloc(N * sizeof *x);
  for (int i = 0; i < N; i++) x[i] = 1;
  cnnb_rng_seed(&net->rng, 5, 0, 0, 0);
  const float *y = cnnb_net_forward(net, x, 1);
  int zeros = 0;
  for (int i = 0; i < N; i++) {
    if (y[i] == 0) zeros++;
    else CNNB_ASSERT_NEAR(y[i], 1 / 0.75, 1e-6);
  }
  CNNB_ASSERT_NEAR(zeros / (double)N, 0.25, 0.03);
  free(x);
  cnnb_net_free(net);
}

static void test_dropout_grad(void)
{
  /* train mode: the checker reseeds net->rng before each forward, so the mask repeats */
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 "[dropout]\nprobability=0.4\n" C1X3, 2, 1, 1);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n" C1X3 "[dropout]\n", 2, 1, 0);
}

/* ---- crop ---- */

static void test_crop_example(void)
{
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[crop]\ncrop_height=2\ncrop_width=3\nnoadjust=1\nflip=1\n",
                      ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 2);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 3);
  /* inference: centre (offset (1,0)), no flip */
  const float want[6] = {2, 9, 1, 1, 3, 2};
  for (int i = 0; i < 6; i++) CNNB_ASSERT_NEAR(y[i], want[i], 0);
  cnnb_net_free(net);
  /* without noadjust Darknet maps x -> 2x-1 */
  net = run("[net]\nheight=4\nwidth=4\nchannels=1\n[crop]\ncrop_height=2\ncrop_width=2\n", ex4, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  const float want2[4] = {17, 1, 5, 3};
  for (int i = 0; i < 4; i++) CNNB_ASSERT_NEAR(y[i], want2[i], 0);
  cnnb_net_free(net);
}

static void test_crop_train_in_bounds(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.train = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, "[net]\nheight=4\nwidth=4\nchannels=1\n[crop]\ncrop_height=2\ncrop_width=2\n"
                                "noadjust=1\nflip=1\n", "t.cfg", &o);
  CNNB_ASSERT_EQ_INT(rc, 0);
  if (rc) return;
  for (int t = 0; t < 50; t++) {
    const float *y = cnnb_net_forward(net, ex4, 1);
    /* every output value is one of the input's, and the crop is 2x2 contiguous */
    for (int i = 0; i < 4; i++) {
      int found = 0;
      for (int k = 0; k < 16; k++) found |= y[i] == ex4[k];
      CU_ASSERT(found);
    }
  }
  cnnb_net_free(net);
}

static void test_crop_grad(void)
{
  check_grad("[net]\nheight=5\nwidth=5\nchannels=2\n" C1X3 "[crop]\ncrop_height=3\ncrop_width=2\n", 2, 1, 0);
  check_grad("[net]\nheight=5\nwidth=5\nchannels=2\n" C1X3 "[crop]\ncrop_height=3\ncrop_width=2\nflip=1\n", 2, 1, 1);
}

/* ---- l2norm ---- */

static void test_l2norm_unit(void)
{
  float x[5 * 3 * 2];
  for (int i = 0; i < 30; i++) x[i] = cosf(1.7f * i) * (1 + i % 4);
  const float *y = NULL;
  cnnb_net *net = run("[net]\nheight=3\nwidth=2\nchannels=5\n[l2norm]\n", x, &y);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  for (int s = 0; s < 6; s++) {
    double n = 0;
    for (int c = 0; c < 5; c++) n += (double)y[c * 6 + s] * y[c * 6 + s];
    CNNB_ASSERT_NEAR(sqrt(n), 1, 1e-5);
    CU_ASSERT(y[s] * x[s] > 0); /* same direction */
  }
  cnnb_net_free(net);
}

static void test_l2norm_grad(void)
{
  check_grad("[net]\nheight=3\nwidth=3\nchannels=2\n" C1X3 "[l2norm]\n", 2, 1, 0);
  check_grad("[net]\nheight=1\nwidth=1\nchannels=6\n[connected]\noutput=5\nactivation=linear\n[l2norm]\n", 3, 1, 0);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("layers_b", NULL, NULL);
  if (!s) return 1;
  struct {
    const char *name;
    void (*fn)(void);
  } t[] = {
      {"maxpool example", test_maxpool_example},
      {"maxpool size=2 stride=1 keeps 13x13", test_maxpool_yolo_tiny_keeps_size},
      {"maxpool gradients", test_maxpool_grad},
      {"maxpool bad cfg", test_maxpool_bad},
      {"avgpool local example", test_avgpool_local_example},
      {"avgpool global example", test_avgpool_global_example},
      {"avgpool padded example", test_avgpool_padded_example},
      {"avgpool gradients", test_avgpool_grad},
      {"shortcut values", test_shortcut_values},
      {"shortcut gradients", test_shortcut_grad},
      {"shortcut bad cfg", test_shortcut_bad},
      {"route shape", test_route_shape},
      {"route gradients", test_route_grad},
      {"route bad cfg", test_route_bad},
      {"upsample example", test_upsample_example},
      {"upsample gradients", test_upsample_grad},
      {"dropout inference identity", test_dropout_inference_identity},
      {"dropout train mask", test_dropout_train},
      {"dropout gradients", test_dropout_grad},
      {"crop example", test_crop_example},
      {"crop train in bounds", test_crop_train_in_bounds},
      {"crop gradients", test_crop_grad},
      {"l2norm unit norm", test_l2norm_unit},
      {"l2norm gradients", test_l2norm_grad},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++)
    if (!CU_add_test(s, t[i].name, t[i].fn)) return 1;
  return cnnb_test_run();
}
