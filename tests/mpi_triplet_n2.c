/* Metric losses on 2 ranks give the same result as on 1: every rank gathers the global
 * batch's embeddings, mines triplets / forms pairs over all of it and keeps its own rows'
 * gradients. Ten SGD steps of a small network with [triplet] (hard and semi-hard) and
 * [siamese] (whose head parameters are split between ranks by pair), on a global batch of
 * 5 identities x 3 images split 8 + 7: the loss curve and the parameters match a one-process
 * run of the same batches. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/dist.h"
#include "cnnb/optim.h"
#include "cnnb_test.h"

#define G 15
#define STEPS 10
#define IN (2 * 6 * 6)

static cnnb_dist world, self;

static cnnb_net *make(const char *head, int batch)
{
  char cfg[1024];
  snprintf(cfg, sizeof cfg,
           "[net]\nheight=6\nwidth=6\nchannels=2\nmomentum=0.9\ndecay=0.0005\n"
           "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=relu\n"
           "[connected]\noutput=8\nactivation=linear\n[l2norm]\n%s",
           head);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = batch, o.train = 1, o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, cfg, "m.cfg", &o) < 0) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  if (net) cnnb_net_init_params(net, 11);
  return net;
}

/* Step s's global batch: identity i's images are a class pattern plus noise. */
static void batch_of(int s, float *x, int *lab)
{
  cnnb_rng r;
  for (int i = 0; i < G; i++) {
    lab[i] = (i / 3 + s) % 7;
    cnnb_rng_seed(&r, 5, (uint64_t)lab[i], 0, 0);
    float *xi = x + (size_t)i * IN;
    for (int k = 0; k < IN; k++) xi[k] = cnnb_rng_normal(&r);
    cnnb_rng_seed(&r, 6, (uint64_t)s, (uint64_t)i, 0);
    for (int k = 0; k < IN; k++) xi[k] += 0.8f * cnnb_rng_normal(&r);
  }
}

/* Trains STEPS steps on d (its ranks split each batch); losses[s] is the global mean loss. */
static int train(const char *head, const cnnb_dist *d, double *losses, float **params, size_t *np)
{
  long lo, hi;
  cnnb_dist_slice(d, G, &lo, &hi);
  cnnb_net *net = make(head, (int)(hi - lo));
  if (!net) return -1;
  if (d->size > 1) {
    net->gather_rows = cnnb_dist_gather_rows;
    net->gather_ctx = (void *)d;
  }
  cnnb_optim opt;
  cnnb_grad_sync gs;
  cnnb_optim_init(&opt, CNNB_OPTIM_SGD, net);
  cnnb_grad_sync_init(&gs, net, d, CNNB_ALLREDUCE_BLOCKING, 1 << 20);
  float *x = malloc(sizeof(float) * G * IN);
  int lab[G];
  for (int s = 0; s < STEPS; s++) {
    batch_of(s, x, lab);
    cnnb_net_zero_grads(net);
    net->loss_scale = 1.0f / G;
    net->truth = lab + lo;
    double l = cnnb_net_train_step(net, x + lo * IN, (int)(hi - lo));
    cnnb_grad_sync_finish(&gs);
    MPI_Allreduce(MPI_IN_PLACE, &l, 1, MPI_DOUBLE, MPI_SUM, d->comm);
    losses[s] = l / G;
    cnnb_optim_step(&opt, net->params, net->grads, 0.05f);
  }
  *np = net->nparams;
  *params = malloc(sizeof(float) * net->nparams);
  memcpy(*params, net->params, sizeof(float) * net->nparams);
  free(x);
  cnnb_grad_sync_free(&gs);
  cnnb_optim_free(&opt);
  cnnb_net_free(net);
  return 0;
}

static void compare(const char *head)
{
  double l1[STEPS], l2[STEPS];
  float *p1 = NULL, *p2 = NULL;
  size_t n1 = 0, n2 = 0;
  CNNB_ASSERT_EQ_INT(train(head, &self, l1, &p1, &n1), 0);
  CNNB_ASSERT_EQ_INT(train(head, &world, l2, &p2, &n2), 0);
  CNNB_ASSERT_EQ_INT(n1, n2);
  double dl = 0, dp = 0, pmax = 0;
  for (int s = 0; s < STEPS; s++) dl = fmax(dl, fabs(l1[s] - l2[s]));
  for (size_t i = 0; i < n1 && p1 && p2; i++) dp = fmax(dp, fabs(p1[i] - p2[i])), pmax = fmax(pmax, fabs(p1[i]));
  if (world.rank == 0)
    fprintf(stderr, "\n  %.*s: loss %.4f -> %.4f; 1 vs 2 ranks: loss %.2e, parameters %.2e relative", (int)strcspn(head, "\n"),
            head, l1[0], l1[STEPS - 1], dl, dp / pmax);
  CU_ASSERT(l1[0] > 0);
  CNNB_ASSERT_NEAR(dl, 0, 1e-5);
  CNNB_ASSERT_NEAR(dp / pmax, 0, 1e-5);
  /* the parameters did move: the comparison is not between two untouched copies */
  float *p0;
  size_t n0;
  cnnb_net *fresh = make(head, 1);
  p0 = fresh->params, n0 = fresh->nparams;
  double moved = 0;
  for (size_t i = 0; i < n0; i++) moved = fmax(moved, fabs(p0[i] - p1[i]));
  CU_ASSERT(moved > 1e-3);
  cnnb_net_free(fresh);
  free(p1);
  free(p2);
}

static void test_hard(void) { compare("[triplet]\nmargin=0.3\nmining=hard\n"); }
static void test_semihard(void) { compare("[triplet]\nmargin=0.3\nmining=semihard\n"); }
static void test_siamese(void) { compare("[siamese]\ndistance=l1\n"); }
static void test_siamese_chi2(void) { compare("[siamese]\ndistance=chi2\n"); }

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  cnnb_dist_init(&world, MPI_COMM_WORLD);
  cnnb_dist_init(&self, MPI_COMM_SELF);
  if (world.rank != 0) cnnb_log_set_level(CNNB_LOG_ERROR);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("metric losses on 2 ranks", NULL, NULL);
  CU_add_test(s, "[triplet] hard: 1 rank == 2 ranks", test_hard);
  CU_add_test(s, "[triplet] semi-hard: 1 rank == 2 ranks", test_semihard);
  CU_add_test(s, "[siamese] l1: 1 rank == 2 ranks", test_siamese);
  CU_add_test(s, "[siamese] chi2: 1 rank == 2 ranks", test_siamese_chi2);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
