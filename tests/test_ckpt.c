/* Checkpoints (src/io/checkpoint.c): bit-exact round trips of parameters, running statistics,
 * optimizer moments and meta data; atomic replacement; the errors of wrong files and models.
 * Runs as one MPI process because the HDF5 library linked in is the MPI flavour. */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnnb/ckpt.h"
#include "cnnb/optim.h"
#include "cnnb/rng.h"
#include "cnnb_test.h"

#define BATCH 4

static const char *lenet_path(void)
{
  static char path[1024];
  snprintf(path, sizeof path, "%s/jobs/lenet5.cfg", cnnb_test_source_dir());
  return path;
}

static cnnb_net *build_lenet(void)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = BATCH;
  o.train = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, lenet_path(), &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  return net;
}

/* The whole model file as text, for the model_cfg checks and the changed-model variant. */
static char *read_text(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

static int file_exists(const char *p)
{
  struct stat st;
  return stat(p, &st) == 0;
}

/* One SGD/Adam step on random images so that moments are non-zero and BN rolling stats move. */
static void train_one_step(cnnb_net *net, cnnb_optim *opt, unsigned long long seed)
{
  cnnb_rng rng;
  cnnb_rng_seed(&rng, seed, 7, 0, 0);
  size_t n = (size_t)BATCH * cnnb_shape_size(net->in);
  float *x = malloc(n * sizeof *x);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  for (size_t i = 0; i < n; i++) x[i] = cnnb_rng_normal(&rng);
  int lab[BATCH] = {1, 3, 5, 7};
  cnnb_net_zero_grads(net);
  net->truth = lab;
  net->loss_scale = 1.0f / BATCH;
  double loss = cnnb_net_train_step(net, x, BATCH);
  CU_ASSERT(isfinite(loss) && loss > 0);
  cnnb_optim_step(opt, net->params, net->grads, 0.01f);
  free(x);
}

static int any_nonzero(const float *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (v[i] != 0.0f) return 1;
  return 0;
}

static cnnb_ckpt_meta sample_meta(void)
{
  cnnb_ckpt_meta m = {0};
  m.epoch = 3;
  m.step = 1234567890123LL; /* beyond 32 bits: the attributes are int64 */
  m.epoch_step = 17;
  m.images_seen = 79012345678LL;
  m.seed = 0x7ffffffeULL;
  m.world_size = 4;
  m.global_batch = 64;
  return m;
}

static void round_trip(cnnb_optim_kind kind)
{
  const char *path = cnnb_test_path(kind == CNNB_OPTIM_ADAM ? "adam.h5" : "sgd.h5");
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);

  cnnb_net *a = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  cnnb_net_init_params(a, 42);
  cnnb_optim oa;
  CU_ASSERT_EQUAL_FATAL(cnnb_optim_init(&oa, kind, a), 0);
  /* Rolling stats start at mean 0 / variance 1: after a training step they must differ. */
  cnnb_param *rm = cnnb_layer_find_param(&a->layers[0], "rolling_mean");
  CU_ASSERT_PTR_NOT_NULL_FATAL(rm);
  CU_ASSERT(!any_nonzero(rm->data, rm->count));
  train_one_step(a, &oa, 42);
  train_one_step(a, &oa, 43);
  CU_ASSERT(any_nonzero(rm->data, rm->count));
  CU_ASSERT(any_nonzero(oa.m, oa.n));
  if (kind == CNNB_OPTIM_ADAM) CU_ASSERT(any_nonzero(oa.v, oa.n));
  CNNB_ASSERT_EQ_INT(oa.t, 2);

  cnnb_ckpt_meta ma = sample_meta();
  if (cnnb_ckpt_save(path, a, &oa, &ma) != 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_TRUE(file_exists(path));
  CU_ASSERT_FALSE(file_exists(tmp));

  /* A fresh net with other parameters and a fresh optimizer become identical to the saved ones. */
  cnnb_net *b = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  cnnb_net_init_params(b, 7);
  cnnb_optim ob;
  CU_ASSERT_EQUAL_FATAL(cnnb_optim_init(&ob, kind, b), 0);
  cnnb_ckpt_meta mb;
  memset(&mb, 0xab, sizeof mb);
  int rc = cnnb_ckpt_load(path, b, &ob, &mb);
  if (rc) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL_FATAL(b->nparams, a->nparams);
  CU_ASSERT_EQUAL_FATAL(b->nstate, a->nstate);
  CU_ASSERT(memcmp(a->params, b->params, a->nparams * sizeof(float)) == 0);
  CU_ASSERT(memcmp(a->state, b->state, a->nstate * sizeof(float)) == 0);
  CU_ASSERT(memcmp(oa.m, ob.m, oa.n * sizeof(float)) == 0);
  if (kind == CNNB_OPTIM_ADAM) CU_ASSERT(memcmp(oa.v, ob.v, oa.n * sizeof(float)) == 0);
  CNNB_ASSERT_EQ_INT(ob.t, oa.t);
  CNNB_ASSERT_EQ_INT(mb.epoch, ma.epoch);
  CNNB_ASSERT_EQ_INT(mb.step, ma.step);
  CNNB_ASSERT_EQ_INT(mb.epoch_step, ma.epoch_step);
  CNNB_ASSERT_EQ_INT(mb.images_seen, ma.images_seen);
  CU_ASSERT_EQUAL(mb.seed, ma.seed);
  CNNB_ASSERT_EQ_INT(mb.world_size, ma.world_size);
  CNNB_ASSERT_EQ_INT(mb.global_batch, ma.global_batch);

  /* The same forward in inference mode (rolling stats) gives the same output bit for bit. */
  a->train = b->train = 0;
  size_t n = cnnb_shape_size(a->in);
  float *x = calloc(n, sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = (float)(i % 29) / 29.0f;
  const float *ya = cnnb_net_forward(a, x, 1);
  float yac[10];
  memcpy(yac, ya, sizeof yac);
  const float *yb = cnnb_net_forward(b, x, 1);
  CU_ASSERT(memcmp(yac, yb, sizeof yac) == 0);
  free(x);

  cnnb_optim_free(&ob);
  cnnb_optim_free(&oa);
  cnnb_net_free(a);
  cnnb_net_free(b);
}

static void test_round_trip_sgd(void) { round_trip(CNNB_OPTIM_SGD); }
static void test_round_trip_adam(void) { round_trip(CNNB_OPTIM_ADAM); }

static void test_model_text(void)
{
  const char *path = cnnb_test_path("text.h5");
  cnnb_net *a = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  cnnb_net_init_params(a, 1);
  CU_ASSERT_EQUAL(cnnb_ckpt_save(path, a, NULL, NULL), 0);
  char *want = read_text(lenet_path());
  char *got = cnnb_ckpt_model_text(path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(want);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_STRING_EQUAL(got, want);
  /* The stored text builds the same network, so the checkpoint loads into it. */
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *b = NULL;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&b, got, path, &o), 0);
  /* Weights-only checkpoint: loading with an optimizer leaves its fresh state as it is and
   * meta comes back zero. */
  cnnb_optim ob;
  CU_ASSERT_EQUAL_FATAL(cnnb_optim_init(&ob, CNNB_OPTIM_SGD, b), 0);
  cnnb_ckpt_meta m;
  memset(&m, 0xff, sizeof m);
  CU_ASSERT_EQUAL(cnnb_ckpt_load(path, b, &ob, &m), 0);
  CNNB_ASSERT_EQ_INT(m.step, 0);
  CNNB_ASSERT_EQ_INT(m.epoch, 0);
  CNNB_ASSERT_EQ_INT(ob.t, 0);
  CU_ASSERT(!any_nonzero(ob.m, ob.n));
  cnnb_optim_free(&ob);
  CU_ASSERT(memcmp(a->params, b->params, a->nparams * sizeof(float)) == 0);
  cnnb_net_free(b);
  free(got);
  free(want);
  cnnb_net_free(a);
}

static void test_atomic_replace(void)
{
  const char *p = cnnb_test_path("atomic.h5");
  char path[1024], tmp[1100];
  snprintf(path, sizeof path, "%s", p);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  cnnb_net *a = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  cnnb_net_init_params(a, 1);
  cnnb_ckpt_meta m = sample_meta();
  m.step = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(path, a, NULL, &m), 0);
  float first = a->params[0];

  /* Saving over an existing checkpoint replaces it. */
  cnnb_net_init_params(a, 2);
  CU_ASSERT(a->params[0] != first);
  m.step = 2;
  CU_ASSERT_EQUAL(cnnb_ckpt_save(path, a, NULL, &m), 0);
  CU_ASSERT_FALSE(file_exists(tmp));
  cnnb_net *b = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  cnnb_ckpt_meta r;
  CU_ASSERT_EQUAL(cnnb_ckpt_load(path, b, NULL, &r), 0);
  CNNB_ASSERT_EQ_INT(r.step, 2);
  CU_ASSERT(memcmp(a->params, b->params, a->nparams * sizeof(float)) == 0);

  /* A failed write leaves the old checkpoint as it was: PATH.tmp cannot be created because a
   * directory of that name is in the way. */
  CU_ASSERT_EQUAL_FATAL(mkdir(tmp, 0700), 0);
  cnnb_net_init_params(a, 3);
  m.step = 3;
  int rc = cnnb_ckpt_save(path, a, NULL, &m);
  CNNB_ASSERT_EQ_INT(rc, CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), path));
  rmdir(tmp);
  CU_ASSERT_EQUAL(cnnb_ckpt_load(path, b, NULL, &r), 0);
  CNNB_ASSERT_EQ_INT(r.step, 2);

  /* A path in a directory that does not exist: CNNB_EIO naming the path, nothing created. */
  char bad[1100];
  snprintf(bad, sizeof bad, "%s/no-such-dir/ck.h5", cnnb_test_tmpdir());
  rc = cnnb_ckpt_save(bad, a, NULL, &m);
  CNNB_ASSERT_EQ_INT(rc, CNNB_EIO);
  if (!strstr(cnnb_error_message(), bad)) fprintf(stderr, "\n  message: %s\n", cnnb_error_message());
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), bad));
  CU_ASSERT_FALSE(file_exists(bad));
  CU_ASSERT_EQUAL(cnnb_ckpt_load(path, b, NULL, &r), 0);
  CNNB_ASSERT_EQ_INT(r.step, 2);
  cnnb_net_free(b);
  cnnb_net_free(a);
}

/* Replaces the first "filters=6" of the lenet5 text, giving a model whose first convolution
 * differs in shape. */
static char *lenet_with_filters(int filters)
{
  char *t = read_text(lenet_path());
  if (!t) return NULL;
  char *at = strstr(t, "filters=6\n");
  if (!at) {
    free(t);
    return NULL;
  }
  size_t n = strlen(t) + 16;
  char *out = malloc(n);
  snprintf(out, n, "%.*sfilters=%d\n%s", (int)(at - t), t, filters, at + strlen("filters=6\n"));
  free(t);
  return out;
}

static void test_wrong_model(void)
{
  const char *path = cnnb_test_path("wrong_model.h5");
  cnnb_net *a = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  cnnb_net_init_params(a, 1);
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(path, a, NULL, NULL), 0);
  cnnb_net_free(a);

  char *text = lenet_with_filters(8);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *b = NULL;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&b, text, "lenet8", &o), 0);
  int rc = cnnb_ckpt_load(path, b, NULL, NULL);
  CNNB_ASSERT_EQ_INT(rc, CNNB_ESHAPE);
  const char *msg = cnnb_error_message();
  if (!strstr(msg, "6x1x5x5") || !strstr(msg, "8x1x5x5")) fprintf(stderr, "\n  message: %s\n", msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "/layers/000_convolutional/weights"));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "6x1x5x5"));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "8x1x5x5"));
  cnnb_net_free(b);
  free(text);
}

static void test_not_a_checkpoint(void)
{
  const char *path = cnnb_test_path("plain.h5");
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  H5Fclose(f);
  cnnb_net *b = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  int rc = cnnb_ckpt_load(path, b, NULL, NULL);
  CNNB_ASSERT_EQ_INT(rc, CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), path));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "not a cnn-batch checkpoint"));
  CU_ASSERT_PTR_NULL(cnnb_ckpt_model_text(path));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), path));

  /* A text file is not HDF5 at all. */
  const char *txt = cnnb_test_path("plain.txt");
  FILE *t = fopen(txt, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  fputs("not hdf5\n", t);
  fclose(t);
  CNNB_ASSERT_EQ_INT(cnnb_ckpt_load(txt, b, NULL, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), txt));

  const char *missing = cnnb_test_path("missing.h5");
  CNNB_ASSERT_EQ_INT(cnnb_ckpt_load(missing, b, NULL, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), missing));
  CU_ASSERT_PTR_NULL(cnnb_ckpt_model_text(missing));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), missing));
  cnnb_net_free(b);
}

/* Resuming with the other optimizer must not silently take Adam's first moment for SGD's
 * momentum (or miss v): it fails naming both kinds. */
static void test_optimizer_kind_mismatch(void)
{
  const char *path = cnnb_test_path("kind.h5");
  cnnb_net *a = build_lenet();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  cnnb_net_init_params(a, 1);
  cnnb_optim oa;
  CU_ASSERT_EQUAL_FATAL(cnnb_optim_init(&oa, CNNB_OPTIM_ADAM, a), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(path, a, &oa, NULL), 0);
  cnnb_optim os;
  CU_ASSERT_EQUAL_FATAL(cnnb_optim_init(&os, CNNB_OPTIM_SGD, a), 0);
  int rc = cnnb_ckpt_load(path, a, &os, NULL);
  CU_ASSERT(rc < 0);
  const char *msg = cnnb_error_message();
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "adam"));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "sgd"));
  cnnb_optim_free(&os);
  cnnb_optim_free(&oa);
  cnnb_net_free(a);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("ckpt", NULL, NULL);
  CU_add_test(s, "SGD round trip is bit-exact", test_round_trip_sgd);
  CU_add_test(s, "Adam round trip (m, v, t)", test_round_trip_adam);
  CU_add_test(s, "model text and weights-only checkpoints", test_model_text);
  CU_add_test(s, "atomic replacement", test_atomic_replace);
  CU_add_test(s, "different model: shape error", test_wrong_model);
  CU_add_test(s, "not a checkpoint, missing file", test_not_a_checkpoint);
  CU_add_test(s, "optimizer kind mismatch", test_optimizer_kind_mismatch);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
