/* The shipped model files (the jobs directory): published parameter counts of the ImageNet networks,
 * the Inception notes' multiply-adds, one training step of every model at a small input size
 * (loss near ln(classes) at initialisation, finite and non-zero gradients in every parameter
 * tensor), and gradient checks of a residual block with projection shortcut and of an
 * Inception block (route of four branches). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"

/* Loads jobs/<name> from the source tree with the given opts; prints the error on failure. */
static cnnb_net *load_job(const char *name, const cnnb_net_opts *o)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/jobs/%s", cnnb_test_source_dir(), name);
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, path, o) < 0) {
    fprintf(stderr, "\n  %s: %s\n", path, cnnb_error_message());
    return NULL;
  }
  return net;
}

static cnnb_net_opts plan_opts(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 0;
  o.quiet = 1;
  return o;
}

static long planned_params(const char *name, int *out_classes)
{
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = load_job(name, &o);
  if (!net) return -1;
  long n = (long)cnnb_net_num_trainable(net);
  if (out_classes) *out_classes = (int)cnnb_shape_size(cnnb_net_output_layer(net)->out);
  cnnb_net_free(net);
  return n;
}

/* torchvision's counts: resnet18, resnet34, alexnet, vgg16. */
static void test_imagenet_param_counts(void)
{
  static const struct {
    const char *file;
    long params;
  } want[] = {
    {"resnet18.cfg", 11689512L},
    {"resnet34.cfg", 21797672L},
    {"alexnet.cfg", 61100840L},
    {"vgg16.cfg", 138357544L},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    int classes = 0;
    long n = planned_params(want[i].file, &classes);
    if (n != want[i].params) fprintf(stderr, "\n  %s: ", want[i].file);
    CNNB_ASSERT_EQ_INT(n, want[i].params);
    CNNB_ASSERT_EQ_INT(classes, 1000);
  }
}

/* The ImageNet ResNets' stem and stage sizes: 224 -> 112 (7x7/2) -> 56 (3x3/2 max pool) and the
 * last stage at 7x7x512 before the global average pool. */
static void test_resnet_shapes(void)
{
  const char *files[] = {"resnet18.cfg", "resnet34.cfg"};
  for (int f = 0; f < 2; f++) {
    cnnb_net_opts o = plan_opts();
    cnnb_net *net = load_job(files[f], &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(&net->layers[0]), "convolutional");
    CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 112);
    CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(&net->layers[1]), "maxpool");
    CNNB_ASSERT_EQ_INT(net->layers[1].out.h, 56);
    CNNB_ASSERT_EQ_INT(net->layers[1].out.w, 56);
    const cnnb_layer *pool = &net->layers[net->n - 3];
    CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(pool), "avgpool");
    CNNB_ASSERT_EQ_INT(pool->in.h, 7);
    CNNB_ASSERT_EQ_INT(pool->in.c, 512);
    /* 16 or 32 block-output shortcuts (basic blocks: 2+2+2+2 or 3+4+6+3) */
    int shortcuts = 0, routes = 0;
    for (int i = 0; i < net->n; i++) {
      shortcuts += !strcmp(cnnb_layer_kind(&net->layers[i]), "shortcut");
      routes += !strcmp(cnnb_layer_kind(&net->layers[i]), "route");
    }
    CNNB_ASSERT_EQ_INT(shortcuts, f == 0 ? 8 : 16);
    CNNB_ASSERT_EQ_INT(routes, 3); /* projections at stages 2-4 */
    cnnb_net_free(net);
  }
}

/* The notes' example: 28x28x192 -> 5x5 conv 32 directly (120.4M multiply-adds) against a 1x1
 * reduction to 16 first (12.4M). */
static void test_inception_notes_madds(void)
{
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = load_job("inception-notes.cfg", &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->n, 5);
  CNNB_ASSERT_EQ_INT(net->in.c, 192);
  const cnnb_layer *a = &net->layers[1], *r = &net->layers[3], *b = &net->layers[4];
  CNNB_ASSERT_EQ_INT((long long)a->madds, 28LL * 28 * 32 * 5 * 5 * 192);
  CNNB_ASSERT_EQ_INT((long long)a->madds, 120422400LL);
  CNNB_ASSERT_EQ_INT((long long)r->madds, 2408448LL);
  CNNB_ASSERT_EQ_INT((long long)b->madds, 10035200LL);
  CNNB_ASSERT_EQ_INT((long long)(r->madds + b->madds), 12443648LL);
  /* both paths end at 28x28x32 */
  CNNB_ASSERT_EQ_INT(a->out.c, 32);
  CNNB_ASSERT_EQ_INT(b->out.c, 32);
  CNNB_ASSERT_EQ_INT(a->out.h, 28);
  CNNB_ASSERT_EQ_INT(b->out.h, 28);
  cnnb_net_free(net);
}

/* The small models: 10 classes, the [net] sizes they document. */
static void test_small_models_plan(void)
{
  static const struct {
    const char *file;
    int h, c;
  } want[] = {{"resnet-small.cfg", 28, 1}, {"inception-small.cfg", 28, 1}, {"lenet5.cfg", 28, 1}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    for (int size = 0; size < 2; size++) {
      cnnb_net_opts o = plan_opts();
      if (size) o.h = o.w = 32, o.c = 3; /* CIFAR-sized overrides */
      if (size && !strcmp(want[i].file, "lenet5.cfg")) continue;
      cnnb_net *net = load_job(want[i].file, &o);
      CU_ASSERT_PTR_NOT_NULL_FATAL(net);
      CNNB_ASSERT_EQ_INT(net->in.h, size ? 32 : want[i].h);
      CNNB_ASSERT_EQ_INT(net->in.c, size ? 3 : want[i].c);
      const cnnb_layer *out = cnnb_net_output_layer(net);
      CU_ASSERT_STRING_EQUAL(cnnb_layer_kind(out), "softmax");
      CNNB_ASSERT_EQ_INT(cnnb_shape_size(out->out), 10);
      cnnb_net_free(net);
    }
  }
  /* inception-small: every Inception block concatenates 4 branches */
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = load_job("inception-small.cfg", &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  int concats = 0;
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    if (i < 10 || strcmp(cnnb_layer_kind(l), "route")) continue;
    int c1 = net->layers[i - 10].out.c, c2 = net->layers[i - 7].out.c, c3 = net->layers[i - 4].out.c,
        c4 = net->layers[i - 1].out.c;
    if (l->out.c == c1 + c2 + c3 + c4 && l->out.c != net->layers[i - 1].out.c) concats++;
  }
  CNNB_ASSERT_EQ_INT(concats, 3);
  cnnb_net_free(net);
}

/* One train step at a small input: loss near ln(classes), gradients finite, every trainable
 * parameter tensor reached by the backward. Input: xscale * N(0,1) per value. */
static void train_step_case(const char *file, int h, int w, int c, float xscale)
{
  enum { N = 2 };
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = N;
  o.train = 1;
  o.quiet = 1;
  o.h = h, o.w = w, o.c = c;
  cnnb_net *net = load_job(file, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  const int classes = (int)cnnb_shape_size(cnnb_net_output_layer(net)->out);
  cnnb_net_init_params(net, 7);
  const size_t insz = cnnb_shape_size(net->in);
  float *x = malloc(sizeof(float) * insz * N);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  cnnb_rng rng;
  cnnb_rng_seed(&rng, 11, 0, 0, 0);
  for (size_t i = 0; i < insz * N; i++) x[i] = xscale * cnnb_rng_normal(&rng);
  int labels[N] = {1, classes - 1};
  net->truth = labels;
  cnnb_net_zero_grads(net);
  double loss = cnnb_net_train_step(net, x, N) / N;
  const double lnk = log((double)classes);
  if (!(isfinite(loss) && fabs(loss - lnk) < 0.5 * lnk))
    fprintf(stderr, "\n  %s at %dx%d: loss per sample %g, ln(%d) = %g\n", file, net->in.h, net->in.w, loss,
            classes, lnk);
  CU_ASSERT(isfinite(loss));
  CU_ASSERT(fabs(loss - lnk) < 0.5 * lnk);

  size_t nonfinite = 0;
  for (size_t i = 0; i < net->nparams; i++) nonfinite += !isfinite(net->grads[i]);
  if (nonfinite) fprintf(stderr, "\n  %s: %zu non-finite gradients\n", file, nonfinite);
  CNNB_ASSERT_EQ_INT(nonfinite, 0);
  int zero_tensors = 0;
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    for (int p = 0; p < l->nparam; p++) {
      const cnnb_param *pr = &l->param[p];
      if (!pr->trainable) continue;
      double ss = 0;
      for (size_t k = 0; k < pr->count; k++) ss += (double)pr->grad[k] * pr->grad[k];
      if (!(ss > 0)) {
        fprintf(stderr, "\n  %s: layer %d (%s) %s has an all-zero gradient\n", file, i, cnnb_layer_kind(l),
                pr->name);
        zero_tensors++;
      }
    }
  }
  CNNB_ASSERT_EQ_INT(zero_tensors, 0);
  free(x);
  cnnb_net_free(net);
}

static void test_step_resnet18(void) { train_step_case("resnet18.cfg", 32, 32, 3, 1.0f); }
static void test_step_resnet34(void) { train_step_case("resnet34.cfg", 32, 32, 3, 1.0f); }
static void test_step_resnet_small(void)
{
  train_step_case("resnet-small.cfg", 0, 0, 0, 1.0f);
  train_step_case("resnet-small.cfg", 32, 32, 3, 1.0f);
}
static void test_step_inception_small(void)
{
  train_step_case("inception-small.cfg", 0, 0, 0, 1.0f);
  train_step_case("inception-small.cfg", 32, 32, 3, 1.0f);
}
/* AlexNet and VGG-16 have no batch norm, and at He-normal initialisation their logits come out
 * large on N(0,1) input (max pools and the training-mode inverted dropout raise the second
 * moment layer after layer: loss ~38 and ~12 per sample instead of ln(1000) = 6.9; torchvision
 * initialises their classifiers with N(0, 0.01) instead). With zero biases, relu, max pool and
 * dropout the logits are positively homogeneous in the input, so a 0.1 input scale gives the
 * logits of a unit-scale-friendly initialisation without touching the library's init.
 * 64x64: 11x11/4 conv -> 15, pools -> 7 -> 3 -> 1; fc6 then has 256 inputs. */
static void test_step_alexnet(void) { train_step_case("alexnet.cfg", 64, 64, 3, 0.1f); }
/* 32x32: five 2x2 pools -> 1x1x512. */
static void test_step_vgg16(void) { train_step_case("vgg16.cfg", 32, 32, 3, 0.1f); }
static void test_step_lenet5(void) { train_step_case("lenet5.cfg", 0, 0, 0, 1.0f); }

static void check_grad(const char *what, const char *cfg, unsigned seed, int train)
{
  cnnb_gradcheck_result r;
  int rc = cnnb_gradcheck(cfg, 2, seed, train, 60, &r);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  %s: %s\n", what, cnnb_error_message());
    return;
  }
  if (r.max_rel_input >= 2e-2 || r.max_rel_param >= 2e-2)
    fprintf(stderr, "\n  %s: max rel error input %g params %g (%d values)\n", what, r.max_rel_input,
            r.max_rel_param, r.checked);
  CU_ASSERT(r.checked > 0);
  CU_ASSERT(r.max_rel_input < 2e-2);
  CU_ASSERT(r.max_rel_param < 2e-2);
}

/* A basic block with projection shortcut, as in jobs/resnet18.cfg (stride 2, 4 -> 6 channels),
 * on a 6x6x3 input through a stem conv; inference-mode batch norm (running statistics). */
static const char residual_block_cfg[] =
  "[net]\nheight=6\nwidth=6\nchannels=3\n"
  "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=relu\n"
  "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\nstride=2\npad=1\nactivation=relu\n"
  "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\nstride=1\npad=1\nactivation=linear\n"
  "[route]\nlayers=-3\n"
  "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nstride=2\npad=0\nactivation=linear\n"
  "[shortcut]\nfrom=-3\nactivation=relu\n"
  /* then an identity block */
  "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\nstride=1\npad=1\nactivation=relu\n"
  "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\nstride=1\npad=1\nactivation=linear\n"
  "[shortcut]\nfrom=-3\nactivation=relu\n"
  "[avgpool]\n[connected]\noutput=3\nactivation=linear\n";

static void test_gradcheck_residual_block(void) { check_grad("residual block", residual_block_cfg, 3, 0); }

/* An Inception block as in jobs/inception-small.cfg (1x1; 1x1-3x3; 1x1-5x5; pool-1x1), without
 * batch norm, on a 5x5x3 input through a stem conv. */
static const char inception_block_cfg[] =
  "[net]\nheight=5\nwidth=5\nchannels=3\n"
  "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
  "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=0\nactivation=leaky\n"
  "[route]\nlayers=-2\n"
  "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=0\nactivation=leaky\n"
  "[convolutional]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
  "[route]\nlayers=-5\n"
  "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=0\nactivation=leaky\n"
  "[convolutional]\nfilters=2\nsize=5\nstride=1\npad=1\nactivation=leaky\n"
  "[route]\nlayers=-8\n"
  "[maxpool]\nsize=3\nstride=1\npadding=2\n"
  "[convolutional]\nfilters=2\nsize=1\nstride=1\npad=0\nactivation=leaky\n"
  "[route]\nlayers=-10,-7,-4,-1\n"
  "[avgpool]\n[connected]\noutput=3\nactivation=linear\n";

static void test_gradcheck_inception_block(void)
{
  /* shape first: 2 + 3 + 2 + 2 channels at 5x5 */
  cnnb_net_opts o = plan_opts();
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, inception_block_cfg, "inception-block", &o) < 0)
    fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  CNNB_ASSERT_EQ_INT(net->layers[11].out.c, 9);
  CNNB_ASSERT_EQ_INT(net->layers[11].out.h, 5);
  CNNB_ASSERT_EQ_INT(net->layers[9].out.h, 5);
  cnnb_net_free(net);
  check_grad("inception block", inception_block_cfg, 5, 0);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("models", NULL, NULL);
  CU_add_test(s, "ImageNet parameter counts (resnet18/34, alexnet, vgg16)", test_imagenet_param_counts);
  CU_add_test(s, "ResNet-18/34 shapes", test_resnet_shapes);
  CU_add_test(s, "inception-notes multiply-adds", test_inception_notes_madds);
  CU_add_test(s, "small models plan at 28x28x1 and 32x32x3", test_small_models_plan);
  CU_add_test(s, "train step: resnet18 at 32x32", test_step_resnet18);
  CU_add_test(s, "train step: resnet34 at 32x32", test_step_resnet34);
  CU_add_test(s, "train step: resnet-small", test_step_resnet_small);
  CU_add_test(s, "train step: inception-small", test_step_inception_small);
  CU_add_test(s, "train step: alexnet at 64x64", test_step_alexnet);
  CU_add_test(s, "train step: vgg16 at 32x32", test_step_vgg16);
  CU_add_test(s, "train step: lenet5", test_step_lenet5);
  CU_add_test(s, "gradient check: residual block with projection", test_gradcheck_residual_block);
  CU_add_test(s, "gradient check: inception block", test_gradcheck_inception_block);
  return cnnb_test_run();
}
