/* What the face-api.js models added to the engine: the [zeropad] layer (TF's asymmetric 'same'
 * padding, zero-extended residual branches), [region] with classes=0 (objectness-only boxes),
 * and the block structures of jobs/face-*.cfg in miniature. Worked examples check values
 * against direct loops written here; finite differences check every backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/detect.h"
#include "cnnb_test.h"

static void check_grad(const char *cfg, int batch)
{
  cnnb_gradcheck_result r;
  int rc = cnnb_gradcheck(cfg, batch, 7, 0, 60, &r);
  CNNB_ASSERT_EQ_INT(rc, 0);
  if (rc) return;
  CU_ASSERT(r.checked > 0);
  CNNB_ASSERT_NEAR(r.max_rel_input, 0, 1e-2);
  CNNB_ASSERT_NEAR(r.max_rel_param, 0, 1e-2);
}

static cnnb_net *build(const char *cfg, int batch)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = batch;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, cfg, "facenets.cfg", &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  return net;
}

static void test_zeropad_values(void)
{
  cnnb_net *net = build("[net]\nheight=2\nwidth=3\nchannels=2\n[zeropad]\ntop=1\nleft=2\nbottom=0\nright=1\n", 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  const cnnb_layer *l = &net->layers[0];
  CNNB_ASSERT_EQ_INT(l->out.c, 2);
  CNNB_ASSERT_EQ_INT(l->out.h, 3);
  CNNB_ASSERT_EQ_INT(l->out.w, 6);
  float x[2 * 2 * 2 * 3];
  for (int i = 0; i < 24; i++) x[i] = (float)(i + 1);
  const float *y = cnnb_net_forward(net, x, 2);
  int bad = 0;
  for (int b = 0; b < 2; b++)
    for (int c = 0; c < 2; c++)
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++) {
          const int si = i - 1, sj = j - 2;
          const float want = si >= 0 && si < 2 && sj >= 0 && sj < 3 ? x[((b * 2 + c) * 2 + si) * 3 + sj] : 0.0f;
          bad += y[((b * 2 + c) * 3 + i) * 6 + j] != want;
        }
  CNNB_ASSERT_EQ_INT(bad, 0);
  cnnb_net_free(net);
}

static void test_zeropad_grad(void)
{
  check_grad("[net]\nheight=3\nwidth=4\nchannels=2\n[zeropad]\ntop=1\nbottom=2\nleft=0\nright=1\n"
             "[convolutional]\nfilters=2\nsize=3\nstride=2\nactivation=linear\n", 2);
  /* face-api.js's stride-2 'same': pad after, then a valid strided (depthwise) conv */
  check_grad("[net]\nheight=4\nwidth=4\nchannels=3\n[zeropad]\nbottom=1\nright=1\n"
             "[convolutional]\nfilters=3\ngroups=3\nsize=3\nstride=2\nactivation=linear\n"
             "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n", 2);
}

/* TF's conv2d(padding='same', stride 2) on an even input: out = in/2, the window of output i
 * starts at input 2i (pad_before = 0, one padded row/column after). */
static void test_tf_same_stride2(void)
{
  cnnb_net *net = build("[net]\nheight=6\nwidth=6\nchannels=1\n[zeropad]\nbottom=1\nright=1\n"
                        "[convolutional]\nfilters=1\nsize=3\nstride=2\nactivation=linear\n", 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[1].out.h, 3);
  float *w = cnnb_layer_find_param(&net->layers[1], "weights")->data;
  float k[9];
  for (int i = 0; i < 9; i++) w[i] = k[i] = (float)(i % 4) - 1.5f;
  cnnb_layer_find_param(&net->layers[1], "biases")->data[0] = 0.25f;
  float x[36];
  for (int i = 0; i < 36; i++) x[i] = cosf((float)i);
  const float *y = cnnb_net_forward(net, x, 1);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      double s = 0.25;
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
          const int r = 2 * i + a, c = 2 * j + b;
          if (r < 6 && c < 6) s += k[a * 3 + b] * x[r * 6 + c];
        }
      CNNB_ASSERT_NEAR(y[i * 3 + j], s, 1e-5);
    }
  cnnb_net_free(net);
}

#define REGION0 "[region]\nanchors=1,2,3,4\nclasses=0\ncoords=4\nnum=2\nsoftmax=0\n"

static void test_region_no_classes(void)
{
  cnnb_net *net = build("[net]\nheight=2\nwidth=3\nchannels=10\n" REGION0, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  float x[60];
  for (int i = 0; i < 60; i++) x[i] = 0.3f * (float)(i % 11) - 1.2f;
  const float *y = cnnb_net_forward(net, x, 1);
  for (int a = 0; a < 2; a++)
    for (int k = 0; k < 5; k++)
      for (int i = 0; i < 6; i++) {
        const float v = x[(a * 5 + k) * 6 + i];
        const double want = (k == 0 || k == 1 || k == 4) ? 1.0 / (1.0 + exp(-v)) : v;
        CNNB_ASSERT_NEAR(y[(a * 5 + k) * 6 + i], want, 1e-6);
      }
  /* decoding: one box per anchor and cell with objectness above thresh, prob = objectness */
  cnnb_det d[16];
  const float thresh = 0.5f;
  size_t n = cnnb_region_decode(&net->layers[0], 0, thresh, d, 16);
  size_t want = 0;
  for (int a = 0; a < 2; a++)
    for (int i = 0; i < 6; i++) want += y[(a * 5 + 4) * 6 + i] > thresh;
  CU_ASSERT(want > 0 && want < 12);
  CNNB_ASSERT_EQ_INT(n, want);
  for (size_t i = 0; i < n && i < 16; i++) {
    CNNB_ASSERT_NEAR(d[i].score, d[i].objectness, 0);
    CNNB_ASSERT_EQ_INT(d[i].cls, 0);
  }
  /* the first box: cell 0 (row 0, col 0) of the first anchor that passes there, or later */
  const cnnb_det *f = &d[0];
  int cell = -1, anchor = -1;
  for (int i = 0; i < 6 && cell < 0; i++)
    for (int a = 0; a < 2; a++)
      if (y[(a * 5 + 4) * 6 + i] > thresh) {
        cell = i, anchor = a;
        break;
      }
  const float *e = y + anchor * 5 * 6 + cell;
  CNNB_ASSERT_NEAR(f->box.x, ((cell % 3) + e[0]) / 3.0, 1e-6);
  CNNB_ASSERT_NEAR(f->box.y, ((cell / 3) + e[6]) / 2.0, 1e-6);
  CNNB_ASSERT_NEAR(f->box.w, exp(e[12]) * (anchor ? 3 : 1) / 3.0, 1e-6);
  CNNB_ASSERT_NEAR(f->box.h, exp(e[18]) * (anchor ? 4 : 2) / 2.0, 1e-6);
  cnnb_net_free(net);
  check_grad("[net]\nheight=2\nwidth=3\nchannels=3\n[convolutional]\nfilters=10\nsize=1\nactivation=linear\n" REGION0, 2);
}

/* The landmark net's dense block and the ResNet's down-sampling block, in miniature. */
static void test_block_grads(void)
{
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n"
             "[zeropad]\nbottom=1\nright=1\n"
             "[convolutional]\nfilters=3\nsize=3\nstride=2\nactivation=relu\n"
             "[convolutional]\nfilters=3\ngroups=3\nsize=3\npad=1\nactivation=linear\n"
             "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
             "[shortcut]\nfrom=-3\nactivation=relu\n"
             "[convolutional]\nfilters=3\ngroups=3\nsize=3\npad=1\nactivation=linear\n"
             "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
             "[shortcut]\nfrom=-6,-4\nactivation=relu\n",
             2);
  check_grad("[net]\nheight=4\nwidth=4\nchannels=2\n"
             "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
             "[avgpool]\nsize=2\nstride=2\n"
             "[route]\nlayers=-2\n"
             "[convolutional]\nfilters=3\nsize=3\nstride=2\nactivation=relu\n"
             "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=linear\n"
             "[zeropad]\nbottom=1\nright=1\n"
             "[shortcut]\nfrom=-5\nactivation=relu\n",
             2);
}

/* jobs/face-*.cfg build, with face-api.js's output shapes and input normalisation. */
static void test_job_models(void)
{
  static const struct {
    const char *file;
    int size, oc, oh;
    float mean0;
  } m[] = {{"face-detector-tiny.cfg", 416, 25, 13, 117.001f},
           {"face-detector-tiny.cfg", 320, 25, 10, 117.001f},
           {"face-landmarks68.cfg", 112, 136, 1, 122.782f},
           {"face-descriptor-resnet34.cfg", 150, 128, 1, 122.782f}};
  for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/jobs/%s", cnnb_test_source_dir(), m[i].file);
    cnnb_net_opts o = cnnb_net_opts_default();
    o.max_batch = 0; /* plan only */
    o.h = o.w = m[i].size;
    cnnb_net *net = NULL;
    int rc = cnnb_net_load(&net, path, &o);
    if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
    CU_ASSERT_FATAL(rc == 0);
    const cnnb_layer *l = cnnb_net_output_layer(net);
    CNNB_ASSERT_EQ_INT(l->out.c, m[i].oc);
    CNNB_ASSERT_EQ_INT(l->out.h, m[i].oh);
    CNNB_ASSERT_EQ_INT(l->out.w, m[i].oh);
    float mean[3], scale = 0;
    CU_ASSERT(cnnb_net_input_norm(net, mean, &scale) == 1);
    CNNB_ASSERT_NEAR(mean[0], m[i].mean0, 1e-4);
    CNNB_ASSERT_NEAR(scale, 1.0 / 255, 1e-9);
    cnnb_net_free(net);
  }
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("facenets", NULL, NULL);
  CU_add_test(s, "zeropad values", test_zeropad_values);
  CU_add_test(s, "zeropad gradient", test_zeropad_grad);
  CU_add_test(s, "zeropad + conv = TF 'same' stride 2", test_tf_same_stride2);
  CU_add_test(s, "region classes=0: values, decoding, gradient", test_region_no_classes);
  CU_add_test(s, "dense block and residual-down block gradients", test_block_grads);
  CU_add_test(s, "jobs/face-*.cfg shapes and normalisation", test_job_models);
  return cnnb_test_run();
}
