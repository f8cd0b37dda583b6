/* Convolutional sliding windows: every position of the score map equals the classifier run on
 * that crop alone, and classifiers that cannot run convolutionally are refused clearly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/rng.h"
#include "cnnb/sliding.h"
#include "cnnb_test.h"

static cnnb_net *build(const char *cfg, int max_batch)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = max_batch;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "cls.cfg", &o);
  if (rc) fprintf(stderr, "\n  build failed: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return net;
}

/* Random weights, and random biases and batch-norm statistics too (init leaves them 0/1), so
 * that every parameter's copy is exercised. */
static void randomise(cnnb_net *net, unsigned seed)
{
  cnnb_net_init_params(net, seed);
  cnnb_rng r;
  cnnb_rng_seed(&r, seed, 1, 2, 3);
  for (int i = 0; i < net->n; i++)
    for (int j = 0; j < net->layers[i].nparam; j++) {
      cnnb_param *p = &net->layers[i].param[j];
      if (!strcmp(p->name, "weights")) continue;
      for (size_t k = 0; k < p->count; k++)
        p->data[k] = !strcmp(p->name, "rolling_variance") || !strcmp(p->name, "scales")
                         ? 0.5f + cnnb_rng_uniform(&r)
                         : 0.3f * cnnb_rng_normal(&r);
    }
}

static void check_equivalence(const char *cfg, int H, int W, int want_oh, int want_ow, int want_stride)
{
  const int n = 2;
  cnnb_net *cls = build(cfg, 1);
  randomise(cls, 7);
  cnnb_sliding sw;
  int rc = cnnb_sliding_init(&sw, cls, H, W, n);
  if (rc) fprintf(stderr, "\n  sliding init: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CNNB_ASSERT_EQ_INT(sw.oh, want_oh);
  CNNB_ASSERT_EQ_INT(sw.ow, want_ow);
  CNNB_ASSERT_EQ_INT(sw.stride, want_stride);
  CNNB_ASSERT_EQ_INT(sw.k, cnnb_shape_size(cnnb_net_output_layer(cls)->out));
  CU_ASSERT_FALSE(sw.padded);
  const int C = cls->in.c, wh = cls->in.h, ww = cls->in.w, K = sw.k;
  float *x = malloc(sizeof(float) * n * C * H * W), *scores = malloc(sizeof(float) * n * sw.oh * sw.ow * K);
  float *crop = malloc(sizeof(float) * C * wh * ww);
  cnnb_rng r;
  cnnb_rng_seed(&r, 11, 0, 0, 0);
  for (int i = 0; i < n * C * H * W; i++) x[i] = cnnb_rng_normal(&r);
  cnnb_sliding_forward(&sw, x, n, scores);
  double worst = 0, total = 0;
  for (int b = 0; b < n; b++)
    for (int i = 0; i < sw.oh; i++)
      for (int j = 0; j < sw.ow; j++) {
        for (int c = 0; c < C; c++)
          for (int y = 0; y < wh; y++)
            for (int xx = 0; xx < ww; xx++)
              crop[(c * wh + y) * ww + xx] = x[((b * C + c) * H + i * sw.stride + y) * W + j * sw.stride + xx];
        const float *p = cnnb_net_forward(cls, crop, 1);
        const float *s = scores + ((b * sw.oh + i) * sw.ow + j) * K;
        for (int k = 0; k < K; k++) {
          double e = fabs((double)p[k] - s[k]);
          worst = e > worst ? e : worst;
          total += fabs(p[k]);
        }
      }
  if (worst > 1e-5) fprintf(stderr, "\n  worst difference %g\n", worst);
  CU_ASSERT(worst <= 1e-5);
  CU_ASSERT(total > 0.1); /* not trivially zero */
  /* the library's own crop-by-crop reference agrees too */
  float *ref = malloc(sizeof(float) * n * sw.oh * sw.ow * K);
  cnnb_sliding_crops(cls, &sw, x, n, crop, ref);
  for (int i = 0; i < n * sw.oh * sw.ow * K; i++) CNNB_ASSERT_NEAR(ref[i], scores[i], 1e-5);
  free(ref);
  free(x);
  free(scores);
  free(crop);
  cnnb_sliding_free(&sw);
  cnnb_net_free(cls);
}

/* conv (batch norm) -> maxpool -> dropout -> connected -> connected -> softmax over an 8x8x2
 * window; 14x12 images: 6x5 after conv+pool, 4x3 windows at stride 2. */
static void test_conv_pool_fc_fc_softmax(void)
{
  check_equivalence("[net]\nheight=8\nwidth=8\nchannels=2\n"
                    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=0\nactivation=leaky\n"
                    "[maxpool]\nsize=2\nstride=2\n"
                    "[dropout]\nprobability=0.5\n"
                    "[connected]\noutput=6\nactivation=relu\n"
                    "[connected]\noutput=3\nactivation=linear\n"
                    "[softmax]\n",
                    14, 12, 4, 3, 2);
}

/* Strided convolution, no softmax, connected with batch norm: stride 2 x 2 = 4. */
static void test_strided_no_softmax(void)
{
  check_equivalence("[net]\nheight=10\nwidth=10\nchannels=1\n"
                    "[convolutional]\nfilters=3\nsize=2\nstride=2\nactivation=relu\n"
                    "[convolutional]\nfilters=5\nsize=2\nstride=2\nactivation=tanh\n"
                    "[connected]\noutput=4\nbatch_normalize=1\nactivation=leaky\n"
                    "[connected]\noutput=2\nactivation=linear\n",
                    18, 22, 3, 4, 4);
}

static void expect_refused(const char *cfg, const char *what)
{
  cnnb_net *cls = build(cfg, 1);
  cnnb_sliding sw;
  int rc = cnnb_sliding_init(&sw, cls, 16, 16, 1);
  CU_ASSERT(rc < 0);
  if (!strstr(cnnb_error_message(), what)) fprintf(stderr, "\n  message: %s\n", cnnb_error_message());
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), what));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "cls.cfg"));
  CU_ASSERT_PTR_NULL(sw.net);
  cnnb_net_free(cls);
}

static void test_refused(void)
{
  expect_refused("[net]\nheight=8\nwidth=8\nchannels=2\n[convolutional]\nfilters=4\nsize=3\n[avgpool]\n"
                 "[connected]\noutput=3\n[softmax]\n",
                 "layer 1 [avgpool] is a global average pooling");
  expect_refused("[net]\nheight=8\nwidth=8\nchannels=2\n[convolutional]\nfilters=4\nsize=3\n[route]\nlayers=-1\n"
                 "[connected]\noutput=3\n",
                 "layer 1 [route] cannot run convolutionally");
  expect_refused("[net]\nheight=8\nwidth=6\nchannels=1\n[convolutional]\nfilters=2\nsize=3\n[connected]\noutput=3\n",
                 "6x4 (not square)");
  expect_refused("[net]\nheight=8\nwidth=8\nchannels=1\n[convolutional]\nfilters=2\nsize=3\n",
                 "already convolutional");
  /* images smaller than the window */
  cnnb_net *cls = build("[net]\nheight=8\nwidth=8\nchannels=1\n[connected]\noutput=3\n", 1);
  cnnb_sliding sw;
  CU_ASSERT(cnnb_sliding_init(&sw, cls, 6, 10, 1) < 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "smaller than the classifier's 8x8 window"));
  cnnb_net_free(cls);
}

/* The generated model text: the first connected layer as an f x f convolution, later ones 1x1. */
static void test_cfg_text(void)
{
  cnnb_net *cls = build("[net]\nheight=8\nwidth=8\nchannels=2\nmean=0.5\n[convolutional]\nfilters=4\nsize=3\n"
                        "[maxpool]\nsize=2\n[connected]\noutput=6\n[connected]\noutput=3\n[softmax]\ntemperature=2\n",
                        1);
  char *text;
  int sm;
  float t;
  CU_ASSERT_EQUAL_FATAL(cnnb_convolutionalize_cfg(cls, 20, 16, &text, &sm, &t), 0);
  CU_ASSERT(sm == 1 && t == 2.f);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "height=20\nwidth=16\nchannels=2\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "mean=0.5"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "[convolutional]\nfilters=6\nsize=3\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "[convolutional]\nfilters=3\nsize=1\n"));
  CU_ASSERT_PTR_NULL(strstr(text, "\n[connected]"));
  CU_ASSERT_PTR_NULL(strstr(text, "\n[softmax]"));
  free(text);
  cnnb_net_free(cls);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("sliding", NULL, NULL);
  CU_add_test(s, "score map = classifier on each crop (conv, maxpool, fc, fc, softmax)", test_conv_pool_fc_fc_softmax);
  CU_add_test(s, "score map = classifier on each crop (strided, BN connected)", test_strided_no_softmax);
  CU_add_test(s, "layers that cannot run convolutionally are refused", test_refused);
  CU_add_test(s, "generated model text", test_cfg_text);
  return cnnb_test_run();
}
