/* `info`: parameter counts, shapes and multiply-adds of planned networks (max_batch = 0), the
 * Darknet model files it must load, and the errors malformed model files give. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cnnb_test.h"

static cnnb_net_opts plan_opts(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 0;
  o.quiet = 1;
  return o;
}

/* Loads a model file relative to the source tree; prints the error on failure. */
static cnnb_net *load_src(const char *rel)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", cnnb_test_source_dir(), rel);
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, path, &o) < 0) fprintf(stderr, "\n  %s: %s\n", path, cnnb_error_message());
  return net;
}

/* Builds text named "lenet" (as in messages); prints the error when one is not expected. */
static cnnb_net *build_str(const char *text, int expect_fail)
{
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, text, "lenet", &o) < 0 && !expect_fail)
    fprintf(stderr, "\n  %s\n", cnnb_error_message());
  return net;
}

static cnnb_net *load_str(const char *text) { return build_str(text, 0); }

static void test_lenet_notes_params(void)
{
  static const struct {
    const char *kind;
    long params;
    int h, w, c;
  } want[] = {
    {"convolutional", 608, 28, 28, 8}, {"maxpool", 0, 14, 14, 8}, {"convolutional", 3216, 10, 10, 16},
    {"maxpool", 0, 5, 5, 16},          {"connected", 48120, 1, 1, 120}, {"connected", 10164, 1, 1, 84},
    {"connected", 850, 1, 1, 10},      {"softmax", 0, 1, 1, 10},
  };
  cnnb_net *net = load_src("jobs/lenet5-notes.cfg");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->n, 8);
  for (int i = 0; i < net->n && i < 8; i++) {
    const cnnb_layer *l = &net->layers[i];
    CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(l), want[i].kind);
    CNNB_ASSERT_EQ_INT(cnnb_layer_num_trainable(l), want[i].params);
    CNNB_ASSERT_EQ_INT(l->out.h, want[i].h);
    CNNB_ASSERT_EQ_INT(l->out.w, want[i].w);
    CNNB_ASSERT_EQ_INT(l->out.c, want[i].c);
  }
  CNNB_ASSERT_EQ_INT(cnnb_net_num_trainable(net), 608 + 3216 + 48120 + 10164 + 850);
  /* A plan has no buffers. */
  CU_ASSERT_PTR_NULL(net->params);
  CU_ASSERT_PTR_NULL(net->layers[0].output);
  cnnb_net_free(net);
}

static void test_lenet5_job(void)
{
  cnnb_net *net = load_src("jobs/lenet5.cfg");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->in.h, 28);
  CNNB_ASSERT_EQ_INT(net->in.c, 1);
  const cnnb_layer *out = cnnb_net_output_layer(net);
  CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(out), "softmax");
  CNNB_ASSERT_EQ_INT(cnnb_shape_size(out->out), 10);
  CNNB_ASSERT_EQ_INT(net->hp.batch, 64);
  cnnb_net_free(net);
}

static void test_vgg16_total(void)
{
  const char *path = "/usr/share/darknet/cfg/vgg-16.cfg";
  if (access(path, R_OK)) {
    printf("\n  note: %s absent, VGG-16 count skipped\n", path);
    return;
  }
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = NULL;
  int rc = cnnb_net_load(&net, path, &o);
  if (rc < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(cnnb_net_num_trainable(net), 138357544);
  cnnb_net_free(net);
}

static void test_resnet50_total(void)
{
  cnnb_net *net = load_src("jobs/resnet50.cfg");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(cnnb_net_num_trainable(net), 25557032);
  const cnnb_layer *out = cnnb_net_output_layer(net);
  CNNB_ASSERT_EQ_INT(out->out.c, 1000);
  CNNB_ASSERT_EQ_INT(out->out.h * out->out.w, 1);
  /* 53 convolutions (49 on the main path, 4 projections) and 16 shortcuts. */
  int conv = 0, sc = 0;
  for (int i = 0; i < net->n; i++) {
    conv += !strcmp(cnnb_layer_kind(&net->layers[i]), "convolutional");
    sc += !strcmp(cnnb_layer_kind(&net->layers[i]), "shortcut");
  }
  CNNB_ASSERT_EQ_INT(conv, 53);
  CNNB_ASSERT_EQ_INT(sc, 16);
  /* ~4.1 G multiply-adds per 224x224 image (He et al. report 3.8 G for the v1 strides). */
  double madds = 0;
  for (int i = 0; i < net->n; i++) madds += net->layers[i].madds;
  CU_ASSERT(madds > 3.8e9 && madds < 4.2e9);
  cnnb_net_free(net);
}

/* Every Darknet cfg of the issue loads, and its output layers have the expected shapes. */
static void test_darknet_cfgs(void)
{
  static const struct {
    const char *file, *kind;
    int h, w, c; /* of the last layer of that kind (the network's output) */
  } cases[] = {
    {"alexnet.cfg", "softmax", 1, 1, 1000},   {"vgg-16.cfg", "softmax", 1, 1, 1000},
    {"resnet50.cfg", "softmax", 1, 1, 1000},  {"darknet19.cfg", "softmax", 1, 1, 1000},
    {"yolov3-tiny.cfg", "yolo", 26, 26, 255}, {"yolov2-tiny.cfg", "region", 13, 13, 425},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    char path[256];
    snprintf(path, sizeof path, "/usr/share/darknet/cfg/%s", cases[k].file);
    if (access(path, R_OK)) {
      printf("\n  note: %s absent, skipped\n", path);
      continue;
    }
    cnnb_net_opts o = plan_opts();
    cnnb_net *net = NULL;
    if (cnnb_net_load(&net, path, &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
    CU_ASSERT_PTR_NOT_NULL(net);
    if (!net) continue;
    const cnnb_layer *out = cnnb_net_output_layer(net);
    if (strcmp(cnnb_layer_kind(out), cases[k].kind) || out->out.h != cases[k].h || out->out.w != cases[k].w ||
        out->out.c != cases[k].c)
      fprintf(stderr, "\n  %s: output [%s] %dx%dx%d, expected [%s] %dx%dx%d\n", cases[k].file,
              cnnb_layer_kind(out), out->out.h, out->out.w, out->out.c, cases[k].kind, cases[k].h, cases[k].w,
              cases[k].c);
    CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(out), cases[k].kind);
    CNNB_ASSERT_EQ_INT(out->out.h, cases[k].h);
    CNNB_ASSERT_EQ_INT(out->out.w, cases[k].w);
    CNNB_ASSERT_EQ_INT(out->out.c, cases[k].c);
    if (!strcmp(cases[k].file, "yolov3-tiny.cfg")) {
      /* Two heads at 416: 13x13 and 26x26, each 3 anchors x (80 classes + 5). */
      int heads = 0;
      for (int i = 0; i < net->n; i++) {
        const cnnb_layer *l = &net->layers[i];
        if (strcmp(cnnb_layer_kind(l), "yolo")) continue;
        CNNB_ASSERT_EQ_INT(l->out.h, heads ? 26 : 13);
        CNNB_ASSERT_EQ_INT(l->out.c, 255);
        heads++;
      }
      CNNB_ASSERT_EQ_INT(heads, 2);
    }
    cnnb_net_free(net);
  }
}

/* yolo and region check the channels their input must have, naming the layer. */
static void test_detection_head_channels(void)
{
  cnnb_net *net = build_str("[net]\nheight=13\nwidth=13\nchannels=3\n[convolutional]\nfilters=254\nsize=1\n"
                            "activation=linear\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nclasses=80\nnum=3\n",
                            1);
  CU_ASSERT_PTR_NULL(net);
  const char *m = cnnb_error_message();
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "lenet:9:"));
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "[yolo]"));
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "255"));
  cnnb_net_free(net);
  net = build_str("[net]\nheight=13\nwidth=13\nchannels=3\n[convolutional]\nfilters=24\nsize=1\n"
                  "activation=linear\n[region]\nclasses=3\ncoords=4\nnum=2\nsoftmax=1\n",
                  1);
  CU_ASSERT_PTR_NULL(net);
  m = cnnb_error_message();
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "[region]"));
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "16"));
  cnnb_net_free(net);
}

/* Forward of the heads on a 1x1 grid: logistic where Darknet puts it, softmax over classes. */
static void test_detection_head_forward(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  /* One anchor, 2 classes: channels x y w h obj c0 c1 */
  int rc = cnnb_net_from_string(
    &net, "[net]\nheight=1\nwidth=1\nchannels=7\n[yolo]\nmask=0\nanchors=1,1\nclasses=2\nnum=1\n", "yolo", &o);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  const float x[7] = {0, 1, 2, -3, 0.5f, -1, 4};
  const float *y = cnnb_net_forward(net, x, 1);
  for (int i = 0; i < 7; i++) {
    double want = (i == 2 || i == 3) ? x[i] : 1.0 / (1.0 + exp(-x[i]));
    CNNB_ASSERT_NEAR(y[i], want, 1e-6);
  }
  cnnb_net_free(net);
  rc = cnnb_net_from_string(
    &net, "[net]\nheight=1\nwidth=1\nchannels=7\n[region]\nanchors=1,1\nclasses=2\ncoords=4\nnum=1\nsoftmax=1\n",
    "region", &o);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  y = cnnb_net_forward(net, x, 1);
  double z = exp(-1.0) + exp(4.0);
  const double want[7] = {0.5, 1 / (1 + exp(-1.0)), 2, -3, 1 / (1 + exp(-0.5)), exp(-1.0) / z, exp(4.0) / z};
  for (int i = 0; i < 7; i++) CNNB_ASSERT_NEAR(y[i], want[i], 1e-6);
  cnnb_net_free(net);
}

/* Multiply-adds of a small case by hand: conv 3x3, 2 filters, same padding on 8x8x1:
 * 8*8*2 outputs x 9 = 1152; connected 128 -> 10: 1280; softmax none. */
static void test_madds_small(void)
{
  cnnb_net *net = load_str("[net]\nheight=8\nwidth=8\nchannels=1\n[convolutional]\nfilters=2\nsize=3\npad=1\n"
                           "activation=relu\n[connected]\noutput=10\nactivation=linear\n[softmax]\n");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_NEAR(net->layers[0].madds, 1152, 0);
  CNNB_ASSERT_NEAR(net->layers[1].madds, 1280, 0);
  double total = 0;
  for (int i = 0; i < net->n; i++) total += net->layers[i].madds;
  CNNB_ASSERT_NEAR(total, 2432, 0);
  cnnb_net_free(net);
}

/* out = (in + 2*padding - size) / stride + 1, with Darknet's pad=1 meaning padding = size/2. */
static void test_conv_output_shape(void)
{
  static const struct {
    int h, w, size, stride;
    const char *padkey; /* "pad=1", "padding=2", "" */
    int oh, ow;
  } cases[] = {
    {32, 32, 5, 1, "", 28, 28},          {32, 32, 5, 1, "pad=1", 32, 32},    {224, 224, 7, 2, "pad=1", 112, 112},
    {13, 13, 3, 2, "padding=1", 7, 7},  {10, 10, 3, 3, "", 3, 3},           {28, 28, 5, 1, "padding=2", 28, 28},
    {20, 10, 3, 1, "", 18, 8},          {7, 7, 1, 1, "", 7, 7},             {6, 6, 3, 2, "pad=1", 3, 3},
    {5, 5, 5, 1, "", 1, 1},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    char text[512];
    snprintf(text, sizeof text,
             "[net]\nheight=%d\nwidth=%d\nchannels=2\n[convolutional]\nfilters=4\nsize=%d\nstride=%d\n%s\n"
             "activation=linear\n",
             cases[k].h, cases[k].w, cases[k].size, cases[k].stride, cases[k].padkey);
    cnnb_net *net = load_str(text);
    CU_ASSERT_PTR_NOT_NULL(net);
    if (!net) continue;
    if (net->layers[0].out.h != cases[k].oh || net->layers[0].out.w != cases[k].ow)
      fprintf(stderr, "\n  case %zu: %dx%d size %d stride %d %s -> %dx%d, expected %dx%d\n", k, cases[k].h,
              cases[k].w, cases[k].size, cases[k].stride, cases[k].padkey, net->layers[0].out.h,
              net->layers[0].out.w, cases[k].oh, cases[k].ow);
    CNNB_ASSERT_EQ_INT(net->layers[0].out.h, cases[k].oh);
    CNNB_ASSERT_EQ_INT(net->layers[0].out.w, cases[k].ow);
    CNNB_ASSERT_EQ_INT(net->layers[0].out.c, 4);
    cnnb_net_free(net);
  }
}

/* Fails to build text and checks that the message holds every needle. */
static void expect_error(const char *text, const char *const *needles)
{
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, text, "lenet", &o);
  CU_ASSERT(rc < 0);
  CU_ASSERT_PTR_NULL(net);
  cnnb_net_free(net);
  const char *m = cnnb_error_message();
  for (; *needles; needles++) {
    if (!strstr(m, *needles)) fprintf(stderr, "\n  message '%s' lacks '%s'\n", m, *needles);
    CU_ASSERT_PTR_NOT_NULL(strstr(m, *needles));
  }
}

static void test_malformed(void)
{
  /* line 3: a key no one knows */
  expect_error("[net]\nheight=8\nfrobnicate=1\nwidth=8\nchannels=1\n[softmax]\n",
               (const char *const[]){"lenet:3:", "frobnicate", NULL});
  expect_error("[net]\nheight=8\nwidth=8\nchannels=1\n[convolutional]\nfilters=2\nsize=3\nsizee=3\n",
               (const char *const[]){"lenet:8:", "sizee", NULL});
  /* unknown section: the message lists the known ones */
  expect_error("[net]\nheight=8\nwidth=8\nchannels=1\n[convolution]\nfilters=2\n",
               (const char *const[]){"lenet:5:", "convolution", "convolutional", "maxpool", NULL});
  /* out of range */
  expect_error("[net]\nheight=8\nwidth=8\nchannels=1\n[convolutional]\nfilters=0\nsize=3\n",
               (const char *const[]){"lenet:6:", "filters", "range", NULL});
  /* not an integer */
  expect_error("[net]\nheight=8\nwidth=8\nchannels=1\n[convolutional]\nfilters=2\nsize=3x\n",
               (const char *const[]){"lenet:7:", "size", "integer", NULL});
  expect_error("[net]\nheight=eight\nwidth=8\nchannels=1\n[softmax]\n",
               (const char *const[]){"lenet:2:", "height", NULL});
  /* a filter larger than its input: the message names the layer */
  expect_error("[net]\nheight=4\nwidth=4\nchannels=1\n[convolutional]\nfilters=2\nsize=5\n",
               (const char *const[]){"lenet:5:", "layer 0", "convolutional", NULL});
  expect_error("[net]\nheight=8\nwidth=8\nchannels=1\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=2\n"
               "size=7\n",
               (const char *const[]){"lenet:8:", "layer 1", "convolutional", NULL});
}

/* Darknet keys cnn-batch does not act on (augmentation, schedules) are warnings, not errors. */
static void test_darknet_keys_tolerated(void)
{
  cnnb_net *net = load_str("[net]\nheight=8\nwidth=8\nchannels=1\nhue=.1\nsaturation=1.5\nsubdivisions=2\n"
                           "[connected]\noutput=3\nactivation=linear\n[softmax]\n");
  CU_ASSERT_PTR_NOT_NULL(net);
  cnnb_net_free(net);
}

/* The printed table carries the totals with separators. */
static void test_print_summary(void)
{
  cnnb_net *net = load_src("jobs/lenet5-notes.cfg");
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  const char *path = cnnb_test_path("summary.txt");
  FILE *f = fopen(path, "w+");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  cnnb_net_print_summary(net, f);
  rewind(f);
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "48,120"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "total trainable parameters: 62,958"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "28 x 28 x 8"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "multiply-adds"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "activation memory"));
  cnnb_net_free(net);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("info", NULL, NULL);
  CU_add_test(s, "lenet5-notes per-layer parameters", test_lenet_notes_params);
  CU_add_test(s, "jobs/lenet5.cfg loads", test_lenet5_job);
  CU_add_test(s, "vgg-16 total parameters", test_vgg16_total);
  CU_add_test(s, "resnet50 total parameters", test_resnet50_total);
  CU_add_test(s, "Darknet cfgs load with expected outputs", test_darknet_cfgs);
  CU_add_test(s, "yolo/region input channels", test_detection_head_channels);
  CU_add_test(s, "yolo/region forward", test_detection_head_forward);
  CU_add_test(s, "multiply-adds of a small case", test_madds_small);
  CU_add_test(s, "convolution output shapes", test_conv_output_shape);
  CU_add_test(s, "malformed model files", test_malformed);
  CU_add_test(s, "Darknet keys tolerated", test_darknet_keys_tolerated);
  CU_add_test(s, "summary table", test_print_summary);
  return cnnb_test_run();
}
