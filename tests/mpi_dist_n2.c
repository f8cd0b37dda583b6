/* Multi-rank pieces on 2 ranks: batch slices, the broadcast epoch plan, error agreement
 * naming the failing rank, and both gradient averaging modes. */
#include <mpi.h>
#include <string.h>

#include "cnnb/dist.h"
#include "cnnb_test.h"

static cnnb_dist d;

static void test_slices(void)
{
  /* Every global batch size splits into contiguous, covering, near-equal slices. */
  for (long b = d.size; b < 40; b++) {
    long lo, hi, sum = 0, first = -1;
    for (int r = 0; r < d.size; r++) {
      cnnb_dist dr = d;
      dr.rank = r;
      cnnb_dist_slice(&dr, b, &lo, &hi);
      if (first < 0) first = lo;
      CU_ASSERT(hi - lo == b / d.size || hi - lo == b / d.size + 1);
      sum += hi - lo;
    }
    CNNB_ASSERT_EQ_INT(first, 0);
    CNNB_ASSERT_EQ_INT(sum, b);
  }
}

static void test_plan(void)
{
  long n = 1000, perm[1000], other[1000];
  CNNB_ASSERT_EQ_INT(cnnb_dist_epoch_plan(&d, 42, 3, n, perm), 0);
  /* A permutation, the same on every rank. */
  long seen[1000] = {0};
  for (long i = 0; i < n; i++) seen[perm[i]]++;
  for (long i = 0; i < n; i++) CNNB_ASSERT_EQ_INT(seen[i], 1);
  memcpy(other, perm, sizeof other);
  MPI_Bcast(other, (int)n, MPI_LONG, 1, d.comm);
  CU_ASSERT(memcmp(other, perm, sizeof other) == 0);
  /* Another epoch gives another order. */
  long next[1000];
  cnnb_dist_epoch_plan(&d, 42, 4, n, next);
  CU_ASSERT(memcmp(next, perm, sizeof next) != 0);
}

static void test_agree(void)
{
  CNNB_ASSERT_EQ_INT(cnnb_dist_agree(&d, 0), 0);
  int mine = d.rank == 1 ? cnnb_error(CNNB_EIO, "data.h5: no such file") : 0;
  int rc = cnnb_dist_agree(&d, mine);
  CNNB_ASSERT_EQ_INT(rc, CNNB_EIO);
  CU_ASSERT_STRING_EQUAL(cnnb_error_message(), "rank 1: data.h5: no such file");
}

static void check_mode(cnnb_allreduce_mode mode)
{
  static const char *cfg = "[net]\nheight=6\nwidth=6\nchannels=2\n"
                           "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n"
                           "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n"
                           "[connected]\noutput=5\nactivation=linear\n[softmax]\n";
  cnnb_net_opts o = cnnb_net_opts_default();
  o.train = 1;
  o.quiet = 1;
  cnnb_net *net;
  CU_ASSERT_FATAL(cnnb_net_from_string(&net, cfg, "t.cfg", &o) == 0);
  cnnb_grad_sync g;
  /* A tiny bucket size gives several buckets, so the overlap path really splits. */
  CU_ASSERT_FATAL(cnnb_grad_sync_init(&g, net, &d, mode, 1) == 0);
  if (mode == CNNB_ALLREDUCE_OVERLAP) CU_ASSERT(g.nb >= 2);
  for (size_t i = 0; i < net->nparams; i++) net->grads[i] = (float)(d.rank + 1) * (float)(i % 7);
  if (mode == CNNB_ALLREDUCE_OVERLAP) /* as backward would: hooks from the last layer */
    for (int i = net->n - 1; i >= 0; i--) net->backward_hook(net, i, net->backward_hook_ctx);
  CU_ASSERT(cnnb_grad_sync_finish(&g) == 0);
  int bad = 0;
  for (size_t i = 0; i < net->nparams; i++) bad += net->grads[i] != 3.0f * (float)(i % 7);
  CNNB_ASSERT_EQ_INT(bad, 0);
  cnnb_grad_sync_free(&g);
  cnnb_net_free(net);
}

static void test_overlap(void) { check_mode(CNNB_ALLREDUCE_OVERLAP); }
static void test_blocking(void) { check_mode(CNNB_ALLREDUCE_BLOCKING); }

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  if (d.rank != 0) CU_basic_set_mode(CU_BRM_SILENT);
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("dist (2 ranks)", NULL, NULL);
  CU_add_test(s, "batch slices", test_slices);
  CU_add_test(s, "epoch plan broadcast", test_plan);
  CU_add_test(s, "error agreement names the rank", test_agree);
  CU_add_test(s, "bucketed overlapped allreduce", test_overlap);
  CU_add_test(s, "blocking allreduce", test_blocking);
  int rc = cnnb_test_run();
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
