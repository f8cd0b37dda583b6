/* Output sharing in inference (cnnb_net_opts.share_outputs, src/model/net.c): a YOLO-style net
 * with a residual [shortcut], a [route] back over an [upsample] and two [yolo] heads gives the
 * same heads and last output, bit for bit, with shared buffers as with one buffer per layer,
 * with fewer buffers than layers; a layer never gets the buffer of an output that a later layer
 * still reads. Also: nets that can run backward ignore the option. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"

/* layer indices: 0 conv, 1 max, 2 conv (16x16x16), 3 max, 4 conv, 5 conv, 6 shortcut(-3 = 3),
 * 7 conv, 8 yolo, 9 route(-4 = 5), 10 upsample, 11 route(-1, 2), 12 conv, 13 yolo */
static const char *NET =
    "[net]\nheight=32\nwidth=32\nchannels=3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nfilters=16\nsize=3\npad=1\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\npad=1\nactivation=leaky\n"
    "[convolutional]\nfilters=16\nsize=1\nactivation=leaky\n"
    "[shortcut]\nfrom=-3\nactivation=linear\n"
    "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"
    "[yolo]\nmask=3,4,5\nanchors=4,5, 8,9, 12,10, 16,20, 24,22, 30,30\nclasses=1\nnum=6\n"
    "[route]\nlayers=-4\n"
    "[upsample]\nstride=2\n"
    "[route]\nlayers=-1,2\n"
    "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"
    "[yolo]\nmask=0,1,2\nanchors=4,5, 8,9, 12,10, 16,20, 24,22, 30,30\nclasses=1\nnum=6\n";

static cnnb_net *build(int share, int train)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 3;
  o.train = train;
  o.quiet = 1;
  o.share_outputs = share;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, NET, "share.cfg", &o);
  if (rc) fprintf(stderr, "\n  build failed: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL(rc, 0);
  if (net) cnnb_net_init_params(net, 3);
  return net;
}

static void test_same_heads(void)
{
  cnnb_net *a = build(0, 0), *b = build(1, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CNNB_ASSERT_EQ_INT(a->nout_blocks, 0);
  CU_ASSERT(b->nout_blocks > 0 && b->nout_blocks < b->n);
  /* the shortcut's and the routes' sources keep their own buffers until read */
  CU_ASSERT(b->layers[3].output != b->layers[4].output && b->layers[3].output != b->layers[5].output);
  CU_ASSERT(b->layers[5].output != b->layers[6].output && b->layers[5].output != b->layers[8].output);
  for (int i = 3; i <= 10; i++) CU_ASSERT(b->layers[2].output != b->layers[i].output);
  CU_ASSERT(b->layers[8].output != b->layers[13].output); /* both heads survive forward */
  const size_t n = 3 * cnnb_shape_size(a->in);
  float *x = malloc(sizeof *x * n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  for (size_t i = 0; i < n; i++) x[i] = (float)((i * 37) % 101) / 101.f;
  for (int rep = 0; rep < 2; rep++) { /* a second forward on reused buffers too */
    cnnb_net_forward(a, x, 3);
    cnnb_net_forward(b, x, 3);
    const int heads[2] = {8, 13};
    for (int h = 0; h < 2; h++) {
      const size_t m = 3 * cnnb_shape_size(a->layers[heads[h]].out);
      CU_ASSERT(memcmp(a->layers[heads[h]].output, b->layers[heads[h]].output, m * sizeof(float)) == 0);
    }
    for (size_t i = 0; i < n; i++) x[i] = 1.f - x[i];
  }
  free(x);
  cnnb_net_free(a);
  cnnb_net_free(b);
}

static void test_training_ignores_it(void)
{
  cnnb_net *t = build(1, 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  CNNB_ASSERT_EQ_INT(t->nout_blocks, 0);
  for (int i = 1; i < t->n; i++) CU_ASSERT(t->layers[i].output != t->layers[i - 1].output);
  cnnb_net_free(t);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("share", NULL, NULL);
  CU_add_test(s, "shared outputs give the same YOLO heads", test_same_heads);
  CU_add_test(s, "a training net keeps one buffer per layer", test_training_ignores_it);
  return cnnb_test_run();
}
