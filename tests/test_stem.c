/* The fused stem (src/model/stem.c) against the same network run layer by layer, and both
 * against a double-precision convolution + bias (or batch norm) + leaky + 2x2 max pool written
 * out here: the face detector's ('valid', bias) and a yolov3-tiny-like one ('same' padding,
 * batch norm with negative scales, a [route] and an [upsample] after it, 2 threads); and the
 * cases it must refuse. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/net.h"
#include "cnnb_test.h"
#include "model/stem.h"

static unsigned long long lcg = 12345;
static float urand(void) /* uniform in [-1, 1) */
{
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((lcg >> 40) / (double)(1 << 24)) * 2.f - 1.f;
}

static cnnb_net *detector(int size, int batch)
{
  char path[4200];
  snprintf(path, sizeof path, "%s/jobs/face-detector-tiny.cfg", cnnb_test_source_dir());
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = batch;
  o.h = o.w = size;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, path, &o)) fprintf(stderr, "\n  %s\n", cnnb_error_message());
  CU_ASSERT_PTR_NOT_NULL(net);
  return net;
}

/* The fused stem on net (S x S input, pad 0 or 1, batch norm or bias) against its layers run
 * one by one and against double loops. */
static void stem_matches(cnnb_net *net, int S, int pad, int B)
{
  const int Wc = S - 2 + 2 * pad, P = Wc / 2;
  cnnb_net_init_params(net, 3);
  cnnb_layer *l0 = &net->layers[0];
  float *w = cnnb_layer_find_param(l0, "weights")->data, *bias = cnnb_layer_find_param(l0, "biases")->data;
  cnnb_param *gp = cnnb_layer_find_param(l0, "scales"), *mp = cnnb_layer_find_param(l0, "rolling_mean"),
             *vp = cnnb_layer_find_param(l0, "rolling_variance");
  for (int f = 0; f < 16; f++) {
    bias[f] = 0.3f * urand(); /* both signs after the max: leaky's two sides */
    if (gp) { /* batch norm with some negative scales: the max then picks the smaller conv value */
      gp->data[f] = f % 3 == 0 ? -0.5f - 0.5f * fabsf(urand()) : 0.5f + urand() * 0.4f;
      mp->data[f] = 0.2f * urand();
      vp->data[f] = 0.5f + 0.5f * fabsf(urand());
    }
  }
  const size_t in = (size_t)3 * S * S, pooled = (size_t)16 * P * P;
  const size_t nout = cnnb_shape_size(net->layers[net->n - 1].out);
  float *x = malloc(sizeof *x * in * B), *p0 = malloc(sizeof *p0 * pooled * B), *y0 = malloc(sizeof *y0 * nout * B);
  CU_ASSERT_FATAL(x && p0 && y0);
  for (size_t i = 0; i < in * B; i++) x[i] = urand();
  const float *y = cnnb_net_forward(net, x, B); /* layer by layer */
  memcpy(p0, net->layers[1].output, sizeof *p0 * pooled * B);
  memcpy(y0, y, sizeof *y0 * nout * B);

  cnnb_stem st;
  if (!cnnb_stem_install(&st, net)) {
    printf("\n  fused stem not installed (no AVX2/FMA or CNNB_STEM=0): nothing to compare ");
  } else {
    CNNB_ASSERT_EQ_INT(st.pad, pad);
    CNNB_ASSERT_EQ_INT(st.bn, gp != NULL);
    memset(net->layers[1].output, 0, sizeof(float) * pooled * B); /* the stem must write all of it */
    y = cnnb_net_forward(net, x, B);
    const float *p1 = net->layers[1].output;
    double worst_ref = 0, worst_layers = 0, scale = 0, worst_out = 0, oscale = 0;
    for (int b = 0; b < B; b++)
      for (int f = 0; f < 16; f++)
        for (int py = 0; py < P; py++)
          for (int px = 0; px < P; px++) {
            double m = -INFINITY;
            for (int dy = 0; dy < 2; dy++)
              for (int dx = 0; dx < 2; dx++) {
                double s = 0;
                for (int c = 0; c < 3; c++)
                  for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                      const int iy = 2 * py + dy + ky - pad, ix = 2 * px + dx + kx - pad;
                      if (iy < 0 || ix < 0 || iy >= S || ix >= S) continue;
                      s += (double)w[((f * 3 + c) * 3 + ky) * 3 + kx] * x[b * in + (size_t)c * S * S + (size_t)iy * S + ix];
                    }
                if (gp)
                  s = gp->data[f] * (s - mp->data[f]) / sqrt(vp->data[f] + 1e-5) + bias[f];
                else
                  s += bias[f];
                s = s > 0 ? s : 0.1 * s;
                if (s > m) m = s;
              }
            const size_t i = b * pooled + (size_t)f * P * P + (size_t)py * P + px;
            worst_ref = fmax(worst_ref, fabs(p1[i] - m));
            worst_layers = fmax(worst_layers, fabs(p1[i] - p0[i]));
            scale = fmax(scale, fabs(m));
          }
    for (size_t i = 0; i < nout * B; i++) {
      worst_out = fmax(worst_out, fabs(y[i] - y0[i]));
      oscale = fmax(oscale, fabs(y0[i]));
    }
    CU_ASSERT(scale > 0.5);
    CU_ASSERT(worst_ref <= 1e-6 * scale);
    CU_ASSERT(worst_layers <= 1e-6 * scale);
    CU_ASSERT(worst_out <= 1e-4 * oscale);
    if (worst_ref > 1e-6 * scale || worst_layers > 1e-6 * scale || worst_out > 1e-4 * oscale)
      printf("\n  pooled map: %g from double, %g from the layers (scale %g); output %g (scale %g) ", worst_ref,
             worst_layers, scale, worst_out, oscale);
    cnnb_stem_remove(&st, net);
    CU_ASSERT(!st.on);
    CU_ASSERT_STRING_EQUAL(net->layers[0].ops->section, "convolutional");
  }
  free(x);
  free(p0);
  free(y0);
}

static void test_stem_matches(void)
{
  cnnb_net *net = detector(96, 2);
  if (net) stem_matches(net, 96, 0, 2);
  cnnb_net_free(net);
}

/* yolov3-tiny's start (same padding, batch norm, leaky, 2x2/2) followed by a [route] and an
 * [upsample] that read other layers, on 2 threads and 3 samples */
static void test_stem_yolo(void)
{
  static const char *cfg =
      "[net]\nwidth=34\nheight=34\nchannels=3\n"
      "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
      "[maxpool]\nsize=2\nstride=2\n"
      "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
      "[route]\nlayers=-1,-2\n"
      "[upsample]\nstride=2\n"
      "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n";
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 3;
  o.quiet = 1;
  o.threads = 2; /* not share_outputs: the pooled map is compared after the forward */
  cnnb_net *net = NULL;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, "stem.cfg", &o), 0);
  stem_matches(net, 34, 1, 3);
  cnnb_net_free(net);
}

static void test_stem_refuses(void)
{
  /* padding 2, or a 3x3 pool, or another activation, or odd sizes, or a later layer reading
   * layer 0: not the stem */
  static const char *cfgs[] = {
    "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=16\nsize=3\npadding=2\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n",
    "[net]\nwidth=63\nheight=63\nchannels=3\n[convolutional]\nfilters=16\nsize=3\npad=1\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n",
    "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=16\nsize=3\nactivation=leaky\n"
    "[maxpool]\nsize=3\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n",
    "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=16\nsize=3\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n",
    "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=16\nsize=3\nstride=2\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n",
    "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=16\nsize=3\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[route]\nlayers=0\n",
  };
  for (size_t k = 0; k < sizeof cfgs / sizeof *cfgs; k++) {
    cnnb_net *net = cnnb_test_net(cfgs[k], 1, 0);
    if (!net) continue;
    cnnb_stem st;
    CU_ASSERT_EQUAL(cnnb_stem_install(&st, net), 0);
    CU_ASSERT_STRING_EQUAL(net->layers[0].ops->section, "convolutional");
    cnnb_net_free(net);
  }
  /* the switch that turns it off */
  cnnb_net *net = detector(64, 1);
  if (!net) return;
  setenv("CNNB_STEM", "0", 1);
  cnnb_stem st;
  CU_ASSERT_EQUAL(cnnb_stem_install(&st, net), 0);
  unsetenv("CNNB_STEM");
  cnnb_stem_remove(&st, net); /* not installed: nothing to undo */
  cnnb_net_free(net);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("stem", NULL, NULL);
  CU_add_test(s, "fused detector stem = layers = double loops", test_stem_matches);
  CU_add_test(s, "fused yolov3-tiny stem (padding, batch norm, threads) = layers", test_stem_yolo);
  CU_add_test(s, "fused stem refuses other first layers", test_stem_refuses);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
