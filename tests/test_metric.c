/* Metric learning: the [triplet] and [siamese] losses (worked examples by hand, finite
 * differences of the loss itself through a connected layer and [l2norm], for every mining
 * mode and distance), the P x K sampler and its errors, class lists, and frozen layers. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/train_metric.h"
#include "cnnb/optim.h"
#include "cnnb/pk.h"
#include "cnnb_test.h"

static cnnb_net *build(const char *cfg, int batch)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = batch, o.train = 1, o.input_grad = 1, o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, cfg, "metric.cfg", &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  return net;
}

/* dL/d input and dL/d params of the loss against central differences of the loss. */
static void loss_gradcheck(const char *cfg, int n, const int *labels, unsigned seed)
{
  cnnb_net *net = build(cfg, n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_net_init_params(net, seed);
  cnnb_rng r;
  cnnb_rng_seed(&r, seed, 7, 0, 0);
  for (size_t i = 0; i < net->nparams; i++) net->params[i] += 0.1f * cnnb_rng_normal(&r);
  const size_t nin = (size_t)n * cnnb_shape_size(net->in);
  float *x = malloc(sizeof(float) * nin);
  for (size_t i = 0; i < nin; i++) x[i] = cnnb_rng_normal(&r);
  net->truth = labels;
  net->loss_scale = 1;
  double worst = cnnb_gradcheck_loss(net, x, n, 1e-3f, 0, 1e-2);
  double L = cnnb_net_loss(net), gmax = 0;
  CU_ASSERT(isfinite(L) && L > 0);
  for (size_t i = 0; i < nin; i++) gmax = fmax(gmax, fabs(net->input_delta[i]));
  CU_ASSERT(gmax > 1e-3); /* the check must see a gradient */
  CNNB_ASSERT_NEAR(worst, 0, 1e-2);
  /* and the layer itself passes values and gradients through (the shared checker) */
  cnnb_gradcheck_result res;
  CNNB_ASSERT_EQ_INT(cnnb_gradcheck(cfg, n, seed, 1, 40, &res), 0);
  CNNB_ASSERT_NEAR(res.max_rel_input, 0, 1e-2);
  free(x);
  cnnb_net_free(net);
}

#define EMB_NET "[net]\nheight=1\nwidth=1\nchannels=6\n[connected]\noutput=4\nactivation=linear\n[l2norm]\n"
static const int lab8[8] = {0, 0, 1, 1, 2, 2, 0, 1};

static void test_triplet_grad_hard(void) { loss_gradcheck(EMB_NET "[triplet]\nmargin=0.5\nmining=hard\n", 8, lab8, 3); }
/* Semi-hard selection is discontinuous where a negative's distance crosses the positive's (the
 * chosen negative switches, the loss jumps): with seed 4 one lies within the 1e-3 step and the
 * difference quotient is ~100; seed 13 has none near the boundary. */
static void test_triplet_grad_semihard(void)
{
  loss_gradcheck(EMB_NET "[triplet]\nmargin=0.5\nmining=semihard\n", 8, lab8, 13);
}
static void test_siamese_grad_l1(void) { loss_gradcheck(EMB_NET "[siamese]\ndistance=l1\n", 8, lab8, 5); }
static void test_siamese_grad_chi2(void) { loss_gradcheck(EMB_NET "[siamese]\ndistance=chi2\n", 8, lab8, 6); }

/* Four 2-d points, labels 0 0 1 1: a0 (0,0), a1 (1,0), b0 (0,1), b1 (3,0). Squared distances
 * a0a1 1, a0b0 1, a0b1 9, a1b0 2, a1b1 4, b0b1 10. Margin 0.2.
 * hard: a0: 1 - 1 + .2 = .2; a1: 1 - 2 + .2 < 0; b0: 10 - 1 + .2 = 9.2; b1: 10 - 4 + .2 = 6.2;
 *   sum 15.6.
 * semihard: a0: negatives farther than 1: b1 (9): < 0; a1: b0 (2): < 0; b0: none farther than
 *   10, the farthest a1 (2): 8.2; b1: none, the farthest a0 (9): 1.2; sum 9.4.
 * dL/d a0 with hard mining: only a0's own triplet (a0, a1, b0) and b0's (b0, b1, a0) and
 * b1's (b1, b0, a1) touch it: 2(b0 - a1) from the first, 2(b0 - a0) from b0's as its
 * negative: (-2, 2) + (0, 2) = (-2, 4). */
static void test_triplet_worked(void)
{
  static const float x[8] = {0, 0, 1, 0, 0, 1, 3, 0};
  static const int lab[4] = {0, 0, 1, 1};
  const char *modes[2] = {"hard", "semihard"};
  const double want[2] = {15.6, 9.4};
  for (int m = 0; m < 2; m++) {
    char cfg[256];
    snprintf(cfg, sizeof cfg, "[net]\nheight=1\nwidth=1\nchannels=2\n[triplet]\nmargin=0.2\nmining=%s\n", modes[m]);
    cnnb_net *net = build(cfg, 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    net->truth = lab;
    net->loss_scale = 1;
    double L = cnnb_net_train_step(net, x, 4);
    CNNB_ASSERT_NEAR(L, want[m], 1e-6);
    if (m == 0) {
      CNNB_ASSERT_NEAR(net->input_delta[0], -2, 1e-6);
      CNNB_ASSERT_NEAR(net->input_delta[1], 4, 1e-6);
    }
    /* a margin wide enough makes every anchor active, and a tiny one only the violators */
    cnnb_net_free(net);
  }
}

/* Two samples of different identities, 2-d: x0 (0, 0), x1 (1, .5); weights -1/sqrt(2), bias
 * 1: z = 1 - 1.5/sqrt(2) for both ordered pairs, only negatives (weight G/nneg = 1 each), so
 * L = 2 log(1 + e^z). chi2: phi = (1/1, .25/.5) = (1, .5): the same z here. */
static void test_siamese_worked(void)
{
  static const float x[4] = {0, 0, 1, 0.5f};
  static const int lab[2] = {0, 1};
  const char *dist[2] = {"l1", "chi2"};
  for (int m = 0; m < 2; m++) {
    char cfg[256];
    snprintf(cfg, sizeof cfg, "[net]\nheight=1\nwidth=1\nchannels=2\n[siamese]\ndistance=%s\n", dist[m]);
    cnnb_net *net = build(cfg, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(net);
    cnnb_net_init_params(net, 1);
    net->truth = lab;
    net->loss_scale = 1;
    cnnb_net_zero_grads(net);
    double L = cnnb_net_train_step(net, x, 2), z = 1 - 1.5 / sqrt(2.0);
    CNNB_ASSERT_NEAR(L, 2 * log1p(exp(z)), 1e-6);
    /* d/d bias = 2 sigmoid(z) */
    CNNB_ASSERT_NEAR(net->layers[0].param[1].grad[0], 2 / (1 + exp(-z)), 1e-6);
    cnnb_net_free(net);
  }
}

static void expect_cfg_error(const char *cfg, const char *needle)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "bad.cfg", &o);
  CU_ASSERT(rc < 0);
  if (rc >= 0) cnnb_net_free(net);
  if (!strstr(cnnb_error_message(), needle)) fprintf(stderr, "\n  message: %s\n", cnnb_error_message());
  CU_ASSERT(strstr(cnnb_error_message(), needle) != NULL);
}

static void test_bad_keys(void)
{
  expect_cfg_error("[net]\nheight=1\nwidth=1\nchannels=2\n[triplet]\nmargin=0\n", "bad.cfg:6: [triplet] key 'margin'");
  expect_cfg_error("[net]\nheight=1\nwidth=1\nchannels=2\n[triplet]\nmargin=-0.2\n", "must be positive");
  expect_cfg_error("[net]\nheight=1\nwidth=1\nchannels=2\n[triplet]\nmining=easy\n", "bad.cfg:6: [triplet] key 'mining'");
  expect_cfg_error("[net]\nheight=1\nwidth=1\nchannels=2\n[siamese]\ndistance=l2\n", "key 'distance'");
}

static void test_class_list(void)
{
  CNNB_ASSERT_EQ_INT(cnnb_class_list_has("0-6", 6), 1);
  CNNB_ASSERT_EQ_INT(cnnb_class_list_has("0-6", 7), 0);
  CNNB_ASSERT_EQ_INT(cnnb_class_list_has("7,9", 8), 0);
  CNNB_ASSERT_EQ_INT(cnnb_class_list_has("0-2,5,8-9", 9), 1);
  CNNB_ASSERT_EQ_INT(cnnb_class_list_has(NULL, 123), 1);
  CU_ASSERT(cnnb_class_list_has("3-1", 2) < 0);
  CU_ASSERT(cnnb_class_list_has("a", 2) < 0);
  CU_ASSERT(strstr(cnnb_error_message(), "--classes 'a'") != NULL);
}

/* 10 identities with 3..12 images each (labels interleaved in row order), classes 0-6,
 * P = 4, K = 3: every batch holds 4 distinct identities x 3 distinct rows of that identity,
 * all inside the selection; the same seed gives the same plan, another epoch another. */
static void test_pk_plan(void)
{
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_SELF);
  int labels[75];
  long n = 0;
  for (int round = 0; round < 12; round++)
    for (int c = 0; c < 10; c++)
      if (round < 3 + c && n < 75) labels[n++] = c;
  cnnb_pk pk;
  CNNB_ASSERT_EQ_INT(cnnb_pk_init(&pk, labels, n, 4, 3, 12, "0-6", "ids.h5", "m.cfg:3: [net]"), 0);
  long sel = 0;
  for (long i = 0; i < n; i++) sel += labels[i] <= 6;
  CNNB_ASSERT_EQ_INT(pk.nrows, sel);
  CNNB_ASSERT_EQ_INT(pk.steps, sel / 12);
  long *plan = malloc(sizeof(long) * (size_t)(pk.steps * 12)), *again = malloc(sizeof(long) * (size_t)(pk.steps * 12));
  CNNB_ASSERT_EQ_INT(cnnb_pk_epoch_plan(&pk, &d, 9, 0, plan), 0);
  int bad = 0;
  long used[75] = {0};
  for (long s = 0; s < pk.steps; s++) {
    const long *b = plan + s * 12;
    for (int i = 0; i < 4; i++) {
      int id = labels[b[i * 3]];
      bad += id > 6;
      for (int j = 0; j < 3; j++) bad += labels[b[i * 3 + j]] != id;
      for (int j = 0; j < i; j++) bad += labels[b[j * 3]] == id; /* distinct identities */
      bad += b[i * 3] == b[i * 3 + 1] || b[i * 3] == b[i * 3 + 2] || b[i * 3 + 1] == b[i * 3 + 2];
    }
    for (int i = 0; i < 12; i++) used[b[i]]++;
  }
  CNNB_ASSERT_EQ_INT(bad, 0);
  CNNB_ASSERT_EQ_INT(cnnb_pk_epoch_plan(&pk, &d, 9, 0, again), 0);
  CU_ASSERT(memcmp(plan, again, sizeof(long) * (size_t)(pk.steps * 12)) == 0);
  CNNB_ASSERT_EQ_INT(cnnb_pk_epoch_plan(&pk, &d, 9, 1, again), 0);
  CU_ASSERT(memcmp(plan, again, sizeof(long) * (size_t)(pk.steps * 12)) != 0);
  free(plan);
  free(again);
  cnnb_pk_free(&pk);
}

static void expect_pk_error(const int *labels, long n, int p, int k, long batch, const char *classes, const char *needle)
{
  cnnb_pk pk;
  int rc = cnnb_pk_init(&pk, labels, n, p, k, batch, classes, "ids.h5", "m.cfg:3: [net]");
  CU_ASSERT(rc < 0);
  if (!strstr(cnnb_error_message(), needle)) fprintf(stderr, "\n  message: %s\n", cnnb_error_message());
  CU_ASSERT(strstr(cnnb_error_message(), needle) != NULL);
  cnnb_pk_free(&pk);
}

static void test_pk_errors(void)
{
  int one[6] = {4, 4, 4, 4, 4, 4}, few[9] = {0, 0, 0, 1, 1, 2, 2, 2, 3};
  expect_pk_error(few, 9, 2, 3, 8, NULL, "m.cfg:3: [net]: pk_p=2 x pk_k=3 = 6 images cannot make the global batch of 8");
  expect_pk_error(one, 6, 2, 3, 6, NULL, "ids.h5: one identity (label 4)");
  expect_pk_error(few, 9, 3, 3, 9, NULL, "ids.h5: only 2 of its 4 identities have pk_k=3 images or more, but pk_p=3");
  expect_pk_error(few, 9, 1, 4, 4, NULL, "at least 2 identities");
  expect_pk_error(few, 9, 2, 2, 4, "7-9", "ids.h5: no images of the classes 7-9");
}

/* Frozen layers: after SGD steps with momentum and weight decay, the parameters of the first
 * layer are bit-identical and the second layer's have moved. */
static void test_freeze(void)
{
  cnnb_net *net = build("[net]\nheight=1\nwidth=1\nchannels=6\nfreeze=1\ndecay=0.01\nmomentum=0.9\n"
                        "[connected]\noutput=5\nactivation=relu\n[connected]\noutput=4\nactivation=linear\n"
                        "[l2norm]\n[triplet]\nmining=hard\n",
                        8);
  CU_ASSERT_PTR_NOT_NULL_FATAL(net);
  cnnb_net_init_params(net, 2);
  size_t first;
  CNNB_ASSERT_EQ_INT(cnnb_train_frozen(net, -1, &first), 0);
  CNNB_ASSERT_EQ_INT(first, 6 * 5 + 5);
  CU_ASSERT(cnnb_train_frozen(net, 9, &first) < 0); /* more layers than the model has */
  CNNB_ASSERT_EQ_INT(cnnb_train_frozen(net, 1, &first), 0);
  cnnb_optim opt;
  CNNB_ASSERT_EQ_INT(cnnb_optim_init(&opt, CNNB_OPTIM_SGD, net), 0);
  float *p0 = malloc(sizeof(float) * net->nparams), x[48];
  memcpy(p0, net->params, sizeof(float) * net->nparams);
  cnnb_rng r;
  cnnb_rng_seed(&r, 1, 0, 0, 0);
  for (int i = 0; i < 48; i++) x[i] = cnnb_rng_normal(&r);
  net->truth = lab8;
  for (int s = 0; s < 5; s++) {
    cnnb_net_zero_grads(net);
    net->loss_scale = 1.0f / 8;
    cnnb_net_train_step(net, x, 8);
    cnnb_train_optim_step(&opt, net, first, 0.1f);
  }
  CU_ASSERT(memcmp(p0, net->params, sizeof(float) * first) == 0);
  int moved = 0;
  for (size_t i = first; i < net->nparams; i++) moved += p0[i] != net->params[i];
  CU_ASSERT(moved > (int)(net->nparams - first) / 2);
  CNNB_ASSERT_EQ_INT(opt.t, 5);
  free(p0);
  cnnb_optim_free(&opt);
  cnnb_net_free(net);
}

/* The shipped embedding models: one training step at a small batch (2 identities x 2 images)
 * gives a finite loss, unit-length embeddings (a unit vector at each spatial position: [l2norm]
 * normalises across channels, so embed-fmnist's 16 x 7 x 7 grid has squared length 49), and a
 * non-zero gradient in every layer with parameters, the Inception blocks' every branch
 * included. */
static void check_model(const char *file)
{
  char path[1024];
  snprintf(path, sizeof path, "%s/jobs/%s", cnnb_test_source_dir(), file);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 4, o.train = 1, o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_load(&net, path, &o);
  if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT(cnnb_train_is_metric(net));
  cnnb_net_init_params(net, 1);
  const size_t in = cnnb_shape_size(net->in);
  float *x = malloc(sizeof(float) * 4 * in);
  cnnb_rng r;
  cnnb_rng_seed(&r, 2, 0, 0, 0);
  for (size_t i = 0; i < 4 * in; i++) x[i] = cnnb_rng_normal(&r);
  static const int lab[4] = {0, 0, 1, 1};
  net->truth = lab;
  net->loss_scale = 0.25f;
  cnnb_net_zero_grads(net);
  double L = cnnb_net_train_step(net, x, 4);
  CU_ASSERT(isfinite(L) && L >= 0);
  const cnnb_layer *last = cnnb_net_output_layer(net);
  const int D = (int)cnnb_shape_size(last->out);
  for (int b = 0; b < 4; b++) {
    double n2 = 0;
    for (int k = 0; k < D; k++) n2 += (double)last->output[b * D + k] * last->output[b * D + k];
    CNNB_ASSERT_NEAR(n2, (double)last->out.h * last->out.w, 1e-4 * last->out.h * last->out.w);
  }
  int dead = 0;
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    for (int j = 0; j < l->nparam; j++) {
      if (!l->param[j].trainable) continue;
      double s = 0;
      for (size_t k = 0; k < l->param[j].count; k++) s += fabs(l->param[j].grad[k]);
      if (!(s > 0) || !isfinite(s)) {
        fprintf(stderr, "\n  %s: layer %d [%s] %s has gradient %g", file, i, cnnb_layer_kind(l), l->param[j].name, s);
        dead++;
      }
    }
  }
  CNNB_ASSERT_EQ_INT(dead, 0);
  free(x);
  cnnb_net_free(net);
}

static void test_model_embed_fmnist(void) { check_model("embed-fmnist.cfg"); }
/* NN4-small2's size: OpenFace's nn4.small2 has 3,733,968 parameters, of which 4,656 are the
 * biases of its convolutions, each followed by batch norm (whose shift makes them redundant;
 * cnn-batch's batch-normalised convolutions have none): 3,729,312. */
static void test_model_facenet(void)
{
  check_model("facenet-nn4-small2.cfg");
  char path[1024];
  snprintf(path, sizeof path, "%s/jobs/facenet-nn4-small2.cfg", cnnb_test_source_dir());
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 0, o.quiet = 1;
  cnnb_net *net = NULL;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_load(&net, path, &o), 0);
  CNNB_ASSERT_EQ_INT(cnnb_net_num_trainable(net), 3733968 - 4656);
  const cnnb_layer *last = cnnb_net_output_layer(net);
  CNNB_ASSERT_EQ_INT(cnnb_shape_size(last->out), 128);
  cnnb_net_free(net);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("metric", NULL, NULL);
  CU_add_test(s, "[triplet] worked example: hard and semi-hard", test_triplet_worked);
  CU_add_test(s, "[triplet] hard mining: loss gradient check", test_triplet_grad_hard);
  CU_add_test(s, "[triplet] semi-hard mining: loss gradient check", test_triplet_grad_semihard);
  CU_add_test(s, "[siamese] worked example: l1 and chi2", test_siamese_worked);
  CU_add_test(s, "[siamese] l1: loss gradient check", test_siamese_grad_l1);
  CU_add_test(s, "[siamese] chi2: loss gradient check", test_siamese_grad_chi2);
  CU_add_test(s, "bad margin, mining, distance", test_bad_keys);
  CU_add_test(s, "class lists", test_class_list);
  CU_add_test(s, "P x K plan", test_pk_plan);
  CU_add_test(s, "P x K errors", test_pk_errors);
  CU_add_test(s, "frozen layers stay bit-identical", test_freeze);
  CU_add_test(s, "jobs/embed-fmnist.cfg: a training step", test_model_embed_fmnist);
  CU_add_test(s, "jobs/facenet-nn4-small2.cfg: a training step", test_model_facenet);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
