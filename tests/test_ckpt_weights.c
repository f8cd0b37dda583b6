/* cnnb_weights_load (src/io/checkpoint.c): what --weights of detect, embed and eval --map
 * reads. A checkpoint and a Darknet .weights file of the same values load into a fresh net
 * bit-exactly (parameters and running statistics), chosen by the file's first bytes; a
 * missing, empty or truncated file is an error that names it. One MPI process (HDF5 is the
 * MPI flavour). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb_test.h"

/* Two convolutions, the first with batch norm: every array a Darknet file holds. */
static const char *cfg =
  "[net]\nwidth=8\nheight=8\nchannels=3\n"
  "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
  "[convolutional]\nfilters=2\nsize=1\nstride=1\nactivation=linear\n";

static cnnb_net *build(unsigned long long seed)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_from_string(&net, cfg, "two-conv.cfg", &o) < 0) {
    fprintf(stderr, "\n  %s\n", cnnb_error_message());
    return NULL;
  }
  cnnb_net_init_params(net, seed);
  /* running statistics away from their reset values, so that loading them is seen */
  for (size_t i = 0; i < net->nstate; i++) net->state[i] = 0.25f + 0.01f * (float)(i % 7) + (float)seed;
  return net;
}

static int same_values(const cnnb_net *a, const cnnb_net *b)
{
  return a->nparams == b->nparams && a->nstate == b->nstate &&
         !memcmp(a->params, b->params, sizeof(float) * a->nparams) &&
         !memcmp(a->state, b->state, sizeof(float) * a->nstate);
}

static void test_both_formats(void)
{
  cnnb_net *a = build(1), *b = build(2), *c = build(3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT_FATAL(!same_values(a, b)); /* else the loads below would prove nothing */
  const char *h5 = cnnb_test_path("w.h5"), *dn = cnnb_test_path("w.weights");
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(h5, a, NULL, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_darknet_weights_save(a, dn, 0), 0);
  CNNB_ASSERT_EQ_INT(cnnb_weights_is_ckpt(h5), 1);
  CNNB_ASSERT_EQ_INT(cnnb_weights_is_ckpt(dn), 0);
  CNNB_ASSERT_EQ_INT(cnnb_weights_load(b, h5), 0);
  CU_ASSERT(same_values(a, b));
  CNNB_ASSERT_EQ_INT(cnnb_weights_load(c, dn), 0);
  CU_ASSERT(same_values(a, c));
  cnnb_net_free(a);
  cnnb_net_free(b);
  cnnb_net_free(c);
}

/* Writes the first n bytes of src to dst. */
static void truncate_copy(const char *src, const char *dst, long n)
{
  FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
  for (long i = 0; f && g && i < n; i++) {
    int ch = fgetc(f);
    if (ch == EOF) break;
    fputc(ch, g);
  }
  if (f) fclose(f);
  if (g) fclose(g);
}

static void expect_error(cnnb_net *net, const char *path, const char *also)
{
  int rc = cnnb_weights_load(net, path);
  CU_ASSERT(rc < 0);
  const char *msg = cnnb_error_message();
  if (!strstr(msg, path) || (also && !strstr(msg, also)))
    fprintf(stderr, "\n  message for %s lacks the file or '%s': %s\n", path, also ? also : "", msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, path));
  if (also) CU_ASSERT_PTR_NOT_NULL(strstr(msg, also));
}

static void test_bad_files(void)
{
  cnnb_net *a = build(1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  const char *h5 = cnnb_test_path("bad-src.h5"), *dn = cnnb_test_path("bad-src.weights");
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(h5, a, NULL, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_darknet_weights_save(a, dn, 0), 0);
  expect_error(a, cnnb_test_path("missing.h5"), NULL);
  const char *empty = cnnb_test_path("empty.weights");
  truncate_copy(dn, empty, 0);
  expect_error(a, empty, NULL);
  const char *half = cnnb_test_path("half.weights");
  truncate_copy(dn, half, 100);
  expect_error(a, half, "100 bytes");
  const char *cut = cnnb_test_path("cut.h5"); /* HDF5's signature, then nothing usable */
  truncate_copy(h5, cut, 600);
  expect_error(a, cut, NULL);
  cnnb_net_free(a);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("weights", NULL, NULL);
  CU_add_test(s, "checkpoint and Darknet file load the same values", test_both_formats);
  CU_add_test(s, "missing, empty, short and truncated files name the file", test_bad_files);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
