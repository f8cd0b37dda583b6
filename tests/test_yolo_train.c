/* Detection training: the [region] (YOLOv2) loss against finite differences and on a worked
 * example; truth boxes through the letterbox (a round trip with detect's inverse mapping) and
 * through flip/crop augmentation (the moved box still frames the moved pixels); bad truths
 * named by file and row. */
#include <dlfcn.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/augment.h"
#include "cnnb/boxdata.h"
#include "cnnb/detect.h"
#include "cnnb/rng.h"
#include "cnnb_test.h"

/* Darknet's own loss deltas, through Debian's libdarknet when it is installed (package darknet):
 * its header for the structs, the library opened at run time so that nothing links against it. */
#if defined(__has_include)
#if __has_include("/usr/lib/darknet/include/darknet.h")
#define HAVE_DARKNET 1
#include "/usr/lib/darknet/include/darknet.h"
#endif
#endif

/* dL/d input and dL/d params of cfg's network (2 samples of 3 x 4 x 4) against central
 * differences of the loss itself; returns the worst relative error. */
static double loss_gradcheck(const char *cfg, const float *truth)
{
  cnnb_net *net;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 2, o.train = 1, o.input_grad = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, "region-loss", &o), 0);
  cnnb_net_init_params(net, 3);
  net->truth_f = truth;
  net->loss_scale = 1;
  cnnb_rng r;
  cnnb_rng_seed(&r, 5, 0, 0, 0);
  float x[96];
  for (int i = 0; i < 96; i++) x[i] = cnnb_rng_normal(&r);
  double worst = cnnb_gradcheck_loss(net, x, 2, 1e-2f, 1e-2, 0);
  CU_ASSERT(isfinite(cnnb_net_loss(net)) && cnnb_net_loss(net) > 0);
  cnnb_net_free(net);
  return worst;
}

/* Two truths in sample 0 (one per anchor shape), one in sample 1; thresh=1 keeps the no-object
 * mask fixed (it is a step). Softmax classes with anchors chosen by their own shape, then
 * logistic classes with anchors chosen by the predicted shape, non-default scales. */
static void test_region_gradcheck(void)
{
  static float truth[2 * CNNB_YOLO_MAX_TRUTH * 5];
  const float t[] = {0.3f, 0.6f, 0.5f, 0.7f, 1, 0.8f, 0.2f, 0.25f, 0.25f, 0};
  const float t1[] = {0.5f, 0.5f, 0.4f, 0.6f, 0};
  memcpy(truth, t, sizeof t);
  memcpy(truth + CNNB_YOLO_MAX_TRUTH * 5, t1, sizeof t1);
  const char *cfg_softmax = "[net]\nheight=4\nwidth=4\nchannels=3\n"
                            "[convolutional]\nfilters=14\nsize=3\npad=1\nactivation=linear\n"
                            "[region]\nanchors=1,1.5, 2,1\nclasses=2\nnum=2\nsoftmax=1\nbias_match=1\nthresh=1\n";
  CU_ASSERT(loss_gradcheck(cfg_softmax, truth) <= 1e-2);
  const char *cfg_logistic = "[net]\nheight=4\nwidth=4\nchannels=3\n"
                             "[convolutional]\nfilters=14\nsize=3\npad=1\nactivation=linear\n"
                             "[region]\nanchors=1,1.5, 2,1\nclasses=2\nnum=2\nsoftmax=0\nbias_match=0\nthresh=1\n"
                             "object_scale=5\nnoobject_scale=0.5\nclass_scale=2\ncoord_scale=3\n";
  CU_ASSERT(loss_gradcheck(cfg_logistic, truth) <= 1e-2);
}

/* A 2 x 2 grid, one anchor of 1 x 1 cells, two classes (softmax), raw input 0: every logistic is
 * 0.5, each class 0.5, every predicted box 0.5 x 0.5 centred in its cell. One truth (0.3, 0.6,
 * 0.5, 0.5) of class 1 lies in cell (0, 1): x* = 0.6, y* = 0.2, tw* = th* = log(0.5 * 2 / 1) = 0,
 * scale 2 - 0.25 = 1.75; coordinates 1.75/2 (0.1^2 + 0.3^2) = 0.0875, objectness (0.5 - 1)^2/2
 * = 0.125, class -log 0.5; the other three cells overlap the truth by IoU 0.156, 0.015 and 0.036
 * (< thresh 0.5): no-object 0.5^2/2 = 0.125 each. Gradients: x 1.75 (0.5 - 0.6) 0.25 = -0.04375
 * (Darknet's delta scale (x* - x) times the logistic's slope, negated), objectness
 * (0.5 - 1) 0.25, no-object 0.5 x 0.25, class 1: 0.5 - 1. With rescore=1 the objectness target
 * is the IoU of the predicted box (0.25, 0.75, .5, .5) with the truth: 0.1575 / 0.3425. */
static void test_region_worked(void)
{
  for (int rescore = 0; rescore <= 1; rescore++) {
    char cfg[256];
    snprintf(cfg, sizeof cfg,
             "[net]\nheight=2\nwidth=2\nchannels=7\n[region]\nanchors=1,1\nclasses=2\nnum=1\nsoftmax=1\n"
             "rescore=%d\n",
             rescore);
    cnnb_net *net;
    cnnb_net_opts o = cnnb_net_opts_default();
    o.max_batch = 1, o.train = 1, o.input_grad = 1;
    CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, "region-worked", &o), 0);
    static float truth[CNNB_YOLO_MAX_TRUTH * 5];
    const float t[] = {0.3f, 0.6f, 0.5f, 0.5f, 1};
    memcpy(truth, t, sizeof t);
    float x[28] = {0};
    net->truth_f = truth;
    net->loss_scale = 1;
    double L = cnnb_net_train_step(net, x, 1);
    const double iou = 0.1575 / 0.3425, target = rescore ? iou : 1;
    CNNB_ASSERT_NEAR(L, 0.0875 + 0.5 * (0.5 - target) * (0.5 - target) + log(2.0) + 3 * 0.125, 1e-5);
    const float *g = net->input_delta; /* plane k of cell c at k * 4 + c */
    CNNB_ASSERT_NEAR(g[0 * 4 + 2], 1.75 * (0.5 - 0.6) * 0.25, 1e-6);
    CNNB_ASSERT_NEAR(g[1 * 4 + 2], 1.75 * (0.5 - 0.2) * 0.25, 1e-6);
    CNNB_ASSERT_NEAR(g[2 * 4 + 2], 0, 1e-6);
    CNNB_ASSERT_NEAR(g[4 * 4 + 2], (0.5 - target) * 0.25, 1e-6);
    CNNB_ASSERT_NEAR(g[5 * 4 + 2], 0.5, 1e-6);
    CNNB_ASSERT_NEAR(g[6 * 4 + 2], -0.5, 1e-6);
    for (int c = 0; c < 4; c++)
      if (c != 2) {
        CNNB_ASSERT_NEAR(g[4 * 4 + c], 0.5 * 0.25, 1e-6);
        CNNB_ASSERT_NEAR(g[0 * 4 + c], 0, 0);
        CNNB_ASSERT_NEAR(g[5 * 4 + c], 0, 0);
      }
    cnnb_net_free(net);
  }
}

#ifdef HAVE_DARKNET
/* Runs cfg (one 3x3 convolution and a [yolo] or [region] head, 8 x 8 x 3 input, batch 2) in
 * cnn-batch and in libdarknet with the same weights (written by cnnb_darknet_weights_save), the
 * same inputs and truths, and compares the heads' outputs and, after the loss, the gradient at
 * the head's input against Darknet's deltas (l.delta, the negative gradient; for [region] before
 * the logistic's slope on x, y and objectness, which Darknet's CPU backward leaves to its GPU
 * code): every entry within 1e-4 (absolute, plus 1e-4 relative). */
static void darknet_deltas(void *lib, const char *name, const char *cfg, int region, const float *tr, int ntr)
{
  network *(*parse)(char *) = (network * (*)(char *)) dlsym(lib, "parse_network_cfg");
  void (*loadw)(network *, char *) = (void (*)(network *, char *))dlsym(lib, "load_weights");
  void (*fwd)(network *) = (void (*)(network *))dlsym(lib, "forward_network");
  void (*freen)(network *) = (void (*)(network *))dlsym(lib, "free_network");
  CU_ASSERT_FATAL(parse && loadw && fwd && freen);
  char cpath[512], wpath[600];
  snprintf(cpath, sizeof cpath, "%s", cnnb_test_path(name));
  snprintf(wpath, sizeof wpath, "%s.weights", cpath);
  FILE *f = fopen(cpath, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(cfg, f);
  fclose(f);
  cnnb_net *net;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 2, o.train = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, name, &o), 0);
  cnnb_net_init_params(net, 11);
  CU_ASSERT_EQUAL_FATAL(cnnb_darknet_weights_save(net, wpath, 0), 0);
  network *dn = parse(cpath);
  CU_ASSERT_FATAL(dn != NULL);
  loadw(dn, wpath);
  const size_t in = cnnb_shape_size(net->in), out = cnnb_shape_size(net->layers[1].out);
  CU_ASSERT_FATAL(dn->batch == 2 && (size_t)dn->inputs == in && (size_t)dn->layers[1].outputs == out);
  float x[2 * 8 * 8 * 3];
  cnnb_rng r;
  cnnb_rng_seed(&r, 9, 0, 0, 0);
  for (size_t i = 0; i < 2 * in; i++) x[i] = cnnb_rng_normal(&r);
  /* The same truths in both formats: cnn-batch's CNNB_YOLO_MAX_TRUTH rows per sample, Darknet's
   * dn->truths floats per sample (both lists end with a zero row). */
  static float ours[2 * CNNB_YOLO_MAX_TRUTH * 5];
  float *theirs = calloc((size_t)2 * dn->truths, sizeof(float));
  memset(ours, 0, sizeof ours);
  for (int t = 0, k[2] = {0, 0}; t < ntr; t++) {
    const int b = (int)tr[6 * t];
    memcpy(ours + ((size_t)b * CNNB_YOLO_MAX_TRUTH + k[b]) * 5, tr + 6 * t + 1, 5 * sizeof(float));
    memcpy(theirs + (size_t)b * dn->truths + 5 * k[b], tr + 6 * t + 1, 5 * sizeof(float));
    k[b]++;
  }
  float *own_in = dn->input, *own_truth = dn->truth; /* free_network frees these */
  dn->input = x;
  dn->truth = theirs;
  dn->train = 1;
  *dn->seen = 1 << 20; /* past [region]'s first-12800-images term */
  fwd(dn);
  net->truth_f = ours;
  net->loss_scale = 1;
  cnnb_net_train_step(net, x, 2);
  const layer *hl = &dn->layers[1];
  const float *y = net->layers[1].output, *g = net->layers[0].delta;
  const int hw = 64, per = (int)(out / hw) / (region ? 2 : 2); /* 2 anchors in both configs */
  double worst_y = 0, worst_g = 0;
  int nonzero = 0;
  for (size_t i = 0; i < 2 * out; i++) {
    worst_y = fmax(worst_y, fabs(y[i] - hl->output[i]) / (1e-4 + 1e-4 * fabs(hl->output[i])));
    const int plane = (int)(i % out / hw) % per;
    float want = -hl->delta[i];
    if (region && (plane == 0 || plane == 1 || plane == 4)) want *= hl->output[i] * (1 - hl->output[i]);
    worst_g = fmax(worst_g, fabs(g[i] - want) / (1e-4 + 1e-4 * fabs(want)));
    nonzero += want != 0;
  }
  if (worst_y > 1 || worst_g > 1) fprintf(stderr, "\n  %s: worst output %g, gradient %g (x 1e-4)\n", name, worst_y,
                                              worst_g);
  CU_ASSERT(worst_y <= 1);
  CU_ASSERT(worst_g <= 1);
  CU_ASSERT(nonzero > 2 * hw / 2); /* no-object terms almost everywhere */
  free(theirs);
  dn->input = own_in, dn->truth = own_truth;
  freen(dn);
  cnnb_net_free(net);
}

/* Sample 0: two truths in different cells, and two of different classes on one cell whose best
 * anchor is the same (the later one's box is learnt; [yolo]'s class targets hold both classes,
 * [region]'s only the later one's); sample 1: one truth. */
static void test_darknet_loss(void)
{
  void *lib = dlopen("/usr/lib/darknet/libdarknet.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    printf("skipped: %s ", dlerror());
    return;
  }
  const float tr[] = {0, 0.3f, 0.6f, 0.5f, 0.4f, 1, 0, 0.8f, 0.2f, 0.25f, 0.3f, 0,
                      0, 0.32f, 0.62f, 0.45f, 0.42f, 0, 1, 0.5f, 0.55f, 0.4f, 0.6f, 1};
  darknet_deltas(lib, "dk-yolo.cfg",
                 "[net]\nbatch=2\nsubdivisions=1\nheight=8\nwidth=8\nchannels=3\n"
                 "[convolutional]\nfilters=14\nsize=3\nstride=1\npad=1\nactivation=linear\n"
                 "[yolo]\nmask=0,1\nanchors=2,2, 4,3, 3,5\nclasses=2\nnum=3\nignore_thresh=.5\n",
                 0, tr, 4);
  darknet_deltas(lib, "dk-region.cfg",
                 "[net]\nbatch=2\nsubdivisions=1\nheight=8\nwidth=8\nchannels=3\n"
                 "[convolutional]\nfilters=16\nsize=3\nstride=1\npad=1\nactivation=linear\n"
                 "[region]\nanchors=1,1.5, 2,1\nclasses=3\ncoords=4\nnum=2\nsoftmax=1\nbias_match=1\n"
                 "thresh=.6\nrescore=1\nobject_scale=5\nnoobject_scale=1\nclass_scale=1\ncoord_scale=1\n",
                 1, tr, 4);
  darknet_deltas(lib, "dk-region2.cfg",
                 "[net]\nbatch=2\nsubdivisions=1\nheight=8\nwidth=8\nchannels=3\n"
                 "[convolutional]\nfilters=16\nsize=3\nstride=1\npad=1\nactivation=linear\n"
                 "[region]\nanchors=1,1.5, 2,1\nclasses=3\ncoords=4\nnum=2\nsoftmax=0\nbias_match=0\n"
                 "thresh=.5\nrescore=0\nobject_scale=2\nnoobject_scale=.5\nclass_scale=3\ncoord_scale=2\n",
                 1, tr, 4);
  dlclose(lib);
}
#endif

/* Writes an image set of n images h x w (pixels from fill) with truths rows (5 per truth,
 * counts per image). Returns the path. */
static const char *write_set(const char *name, int n, int h, int w, const unsigned char *px, const float *truth,
                             const long long *toff, int with_truth)
{
  const char *p = cnnb_test_path(name);
  hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t np = (hsize_t)n * h * w * 3, nn = (hsize_t)n, sh[2] = {(hsize_t)n, 3};
  long long offs[16];
  int shapes[48];
  for (int i = 0; i < n; i++) {
    offs[i] = (long long)i * h * w * 3;
    shapes[3 * i] = h, shapes[3 * i + 1] = w, shapes[3 * i + 2] = 3;
  }
  hid_t s1 = H5Screate_simple(1, &np, NULL), s2 = H5Screate_simple(1, &nn, NULL), s3 = H5Screate_simple(2, sh, NULL);
  hid_t d1 = H5Dcreate2(f, "pixels", H5T_STD_U8LE, s1, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t d2 = H5Dcreate2(f, "offsets", H5T_STD_I64LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hid_t d3 = H5Dcreate2(f, "shapes", H5T_STD_I32LE, s3, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d1, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, px);
  H5Dwrite(d2, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, offs);
  H5Dwrite(d3, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, shapes);
  H5Dclose(d1), H5Dclose(d2), H5Dclose(d3), H5Sclose(s1), H5Sclose(s2), H5Sclose(s3);
  if (with_truth) {
    hsize_t tm[2] = {(hsize_t)toff[n], 5}, to = (hsize_t)n + 1;
    hid_t a = H5Screate_simple(2, tm, NULL), b = H5Screate_simple(1, &to, NULL);
    hid_t da = H5Dcreate2(f, "truth", H5T_IEEE_F32LE, a, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t db = H5Dcreate2(f, "truth_offsets", H5T_STD_I64LE, b, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(da, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, truth);
    H5Dwrite(db, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, toff);
    H5Dclose(da), H5Dclose(db), H5Sclose(a), H5Sclose(b);
  }
  H5Fclose(f);
  return p;
}

static cnnb_net *yolo_net(int h, int w)
{
  char cfg[256];
  snprintf(cfg, sizeof cfg,
           "[net]\nheight=%d\nwidth=%d\nchannels=3\n[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
           "[yolo]\nmask=0\nanchors=4,4\nclasses=2\nnum=1\n",
           h, w);
  cnnb_net *net = NULL;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 2;
  CU_ASSERT_EQUAL(cnnb_net_from_string(&net, cfg, "boxdata-net", &o), 0);
  return net;
}

/* A 20 x 40 photo into a 16 x 16 input: it fills 16 x 8 rows 4..11 (letterbox). The truth mapped
 * by boxdata, then mapped back as detect maps its boxes (cnnb_detect_unletterbox), is the truth
 * again; and its value is the hand-computed one. */
static void test_boxdata_letterbox(void)
{
  static unsigned char px[20 * 40 * 3];
  const float truth[] = {20, 10, 10, 4, 1, 5, 6, 8, 8, 0};
  const long long toff[] = {0, 2};
  const char *p = write_set("lb.h5", 1, 20, 40, px, truth, toff, 1);
  cnnb_net *net = yolo_net(16, 16);
  cnnb_boxdata *bd;
  CU_ASSERT_EQUAL_FATAL(cnnb_boxdata_open(&bd, p, net), 0);
  CNNB_ASSERT_EQ_INT(cnnb_boxdata_count(bd), 1);
  float x[3 * 16 * 16];
  static float t[CNNB_YOLO_MAX_TRUTH * 5];
  long row = 0;
  CU_ASSERT_EQUAL(cnnb_boxdata_read(bd, &row, 1, x, t), 0);
  CNNB_ASSERT_NEAR(t[0], 0.5, 1e-6);
  CNNB_ASSERT_NEAR(t[1], 0.5 * 0.5 + 0.25, 1e-6);
  CNNB_ASSERT_NEAR(t[2], 0.25, 1e-6);
  CNNB_ASSERT_NEAR(t[3], 0.2 * 0.5, 1e-6);
  CNNB_ASSERT_NEAR(t[4], 1, 0);
  CNNB_ASSERT_NEAR(t[10 + 2], 0, 0); /* the list ends */
  CNNB_ASSERT_NEAR(x[0], 0.5, 1e-6);  /* grey bar above the photo */
  cnnb_det d[2];
  for (int k = 0; k < 2; k++) d[k].box = (cnnb_box){t[5 * k], t[5 * k + 1], t[5 * k + 2], t[5 * k + 3]};
  cnnb_detect_unletterbox(d, 2, 40, 20, 16, 16);
  for (int k = 0; k < 2; k++) {
    CNNB_ASSERT_NEAR(d[k].box.x * 40, truth[5 * k], 1e-4);
    CNNB_ASSERT_NEAR(d[k].box.y * 20, truth[5 * k + 1], 1e-4);
    CNNB_ASSERT_NEAR(d[k].box.w * 40, truth[5 * k + 2], 1e-4);
    CNNB_ASSERT_NEAR(d[k].box.h * 20, truth[5 * k + 3], 1e-4);
  }
  cnnb_boxdata_close(bd);
  cnnb_net_free(net);
}

/* Bounding box (x0, y0, x1, y1, in pixel edges) of the pixels of channel 0 above 0.9. */
static void bright_box(const float *img, int h, int w, int *b)
{
  b[0] = w, b[1] = h, b[2] = 0, b[3] = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      if (img[y * w + x] > 0.9f) {
        if (x < b[0]) b[0] = x;
        if (y < b[1]) b[1] = y;
        if (x + 1 > b[2]) b[2] = x + 1;
        if (y + 1 > b[3]) b[3] = y + 1;
      }
}

/* A white rectangle on black, its truth exact: after random flips and crops (the training
 * augmentation, drawn per position), the moved truth frames the moved white pixels, also when
 * the crop cuts the rectangle. */
static void test_boxdata_augment(void)
{
  enum { H = 24, W = 24, N = 2 };
  static unsigned char px[N * H * W * 3];
  const int r[N][4] = {{3, 5, 9, 16}, {14, 2, 24, 9}}; /* x0, y0, x1, y1 */
  float truth[N * 5];
  for (int i = 0; i < N; i++) {
    for (int y = r[i][1]; y < r[i][3]; y++)
      for (int x = r[i][0]; x < r[i][2]; x++) memset(px + ((size_t)(i * H + y) * W + x) * 3, 255, 3);
    float *t = truth + 5 * i;
    t[0] = (r[i][0] + r[i][2]) / 2.f, t[1] = (r[i][1] + r[i][3]) / 2.f;
    t[2] = (float)(r[i][2] - r[i][0]), t[3] = (float)(r[i][3] - r[i][1]), t[4] = (float)i;
  }
  const long long toff[] = {0, 1, 2};
  const char *p = write_set("aug.h5", N, H, W, px, truth, toff, 1);
  cnnb_net *net = yolo_net(H, W);
  cnnb_boxdata *bd;
  CU_ASSERT_EQUAL_FATAL(cnnb_boxdata_open(&bd, p, net), 0);
  const cnnb_augment aug = {5, 1};
  int moved = 0, flipped = 0;
  for (int step = 0; step < 12; step++) {
    float x[N * 3 * H * W], scratch[H * W];
    static float t[N * CNNB_YOLO_MAX_TRUTH * 5];
    long rows[N] = {0, 1};
    CU_ASSERT_EQUAL_FATAL(cnnb_boxdata_read(bd, rows, N, x, t), 0);
    cnnb_augment_batch(&aug, x, N, net->in, 7, 0, (uint64_t)step, 0, scratch);
    cnnb_boxdata_augment(&aug, t, N, net->in, 7, 0, (uint64_t)step, 0);
    for (int i = 0; i < N; i++) {
      int dx, dy, fl, b[4];
      cnnb_augment_draw(&aug, 7, 0, (uint64_t)step, i, &dx, &dy, &fl);
      moved += dx != 0 || dy != 0, flipped += fl;
      bright_box(x + (size_t)i * 3 * H * W, H, W, b);
      const float *ti = t + (size_t)i * CNNB_YOLO_MAX_TRUTH * 5;
      if (b[2] - b[0] < 1 || b[3] - b[1] < 1) { /* cropped away: no truth either */
        CNNB_ASSERT_NEAR(ti[2], 0, 0);
        continue;
      }
      CNNB_ASSERT_NEAR((ti[0] - ti[2] / 2) * W, b[0], 1e-4);
      CNNB_ASSERT_NEAR((ti[0] + ti[2] / 2) * W, b[2], 1e-4);
      CNNB_ASSERT_NEAR((ti[1] - ti[3] / 2) * H, b[1], 1e-4);
      CNNB_ASSERT_NEAR((ti[1] + ti[3] / 2) * H, b[3], 1e-4);
      CNNB_ASSERT_NEAR(ti[4], i, 0);
    }
  }
  CU_ASSERT(moved > 0 && flipped > 0 && flipped < 24); /* the draws did vary */
  cnnb_boxdata_close(bd);
  cnnb_net_free(net);
}

/* Bad truths: each an error naming the file, the dataset and the row. */
static void test_boxdata_errors(void)
{
  static unsigned char px[2 * 8 * 8 * 3];
  cnnb_net *net = yolo_net(8, 8);
  cnnb_boxdata *bd = NULL;
  const long long toff[] = {0, 1, 2};
  const float outside[] = {4, 4, 2, 2, 0, 8, 4, 2, 1, 1}; /* row 1 reaches x = 9 of 8 */
  const char *p = write_set("outside.h5", 2, 8, 8, px, outside, toff, 1);
  CU_ASSERT(cnnb_boxdata_open(&bd, p, net) < 0);
  CU_ASSERT(strstr(cnnb_error_message(), p) && strstr(cnnb_error_message(), "/truth row 1 (image 1)") &&
            strstr(cnnb_error_message(), "outside"));
  const float cls[] = {4, 4, 2, 2, 0, 4, 4, 2, 2, 2}; /* class 2 of a 2-class model */
  p = write_set("class.h5", 2, 8, 8, px, cls, toff, 1);
  CU_ASSERT(cnnb_boxdata_open(&bd, p, net) < 0);
  CU_ASSERT(strstr(cnnb_error_message(), p) && strstr(cnnb_error_message(), "/truth row 1") &&
            strstr(cnnb_error_message(), "class 2 is not one of the 2 classes"));
  p = write_set("notruth.h5", 2, 8, 8, px, NULL, toff, 0);
  CU_ASSERT(cnnb_boxdata_open(&bd, p, net) < 0);
  CU_ASSERT(strstr(cnnb_error_message(), p) && strstr(cnnb_error_message(), "no dataset /truth"));
  const long long bad_off[] = {0, 2, 1};
  p = write_set("offsets.h5", 2, 8, 8, px, cls, bad_off, 1);
  CU_ASSERT(cnnb_boxdata_open(&bd, p, net) < 0);
  CU_ASSERT(strstr(cnnb_error_message(), p) && strstr(cnnb_error_message(), "/truth_offsets"));
  if (bd) cnnb_boxdata_close(bd);
  cnnb_net_free(net);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("yolo_train", NULL, NULL);
  CU_add_test(s, "[region] loss: gradient check (softmax, logistic, scales)", test_region_gradcheck);
  CU_add_test(s, "[region] loss: worked example (rescore 0 and 1)", test_region_worked);
#ifdef HAVE_DARKNET
  CU_add_test(s, "[yolo] and [region] losses against libdarknet's deltas", test_darknet_loss);
#endif
  CU_add_test(s, "boxdata: truths through the letterbox and back", test_boxdata_letterbox);
  CU_add_test(s, "boxdata: truths follow flips and crops", test_boxdata_augment);
  CU_add_test(s, "boxdata: bad truths named by file and row", test_boxdata_errors);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
