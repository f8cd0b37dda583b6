/* Detection: IoU and non-max suppression on hand-worked cases, Darknet's letterbox on
 * hand-worked images, [yolo] decoding of a hand-set output, and Darknet .weights files (round
 * trip, sizes, the error for a file of the wrong size). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnb/detect.h"
#include "cnnb/rng.h"
#include "cnnb_test.h"

static cnnb_box B(float x, float y, float w, float h) { return (cnnb_box){x, y, w, h}; }

static void test_iou(void)
{
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(0, 0, 2, 2), B(5, 5, 2, 2)), 0, 0);      /* disjoint */
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(0, 0, 2, 2), B(2, 0, 2, 2)), 0, 0);      /* touching edges */
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(0, 0, 4, 4), B(0.5f, 0.5f, 2, 2)), 0.25, 1e-7); /* nested: 4/16 */
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(3, 4, 5, 6), B(3, 4, 5, 6)), 1, 1e-7);   /* identical */
  /* [0,2]x[0,2] and [1,3]x[0,2]: intersection 1x2 = 2, union 4+4-2 = 6 */
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(1, 1, 2, 2), B(2, 1, 2, 2)), 1.0 / 3, 1e-7);
  /* [0,2]x[0,2] and [1,3]x[1,3]: 1 over 7 */
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(1, 1, 2, 2), B(2, 2, 2, 2)), 1.0 / 7, 1e-7);
  CNNB_ASSERT_NEAR(cnnb_box_iou(B(2, 2, 2, 2), B(1, 1, 2, 2)), 1.0 / 7, 1e-7); /* symmetric */
}

static void test_nms_two_classes(void)
{
  /* Class 0: A (0.9); B overlaps A with IoU 3.6/4.4 = 0.82 -> dropped; E (0.75) has IoU 0.48
   * with A -> kept, although IoU 0.6 with the dropped B (a dropped box suppresses nothing);
   * C far away -> kept; D has IoU 3.4/4.6 = 0.74 with E -> dropped. Class 1: F is A's box and
   * survives (other class), G is A's box too, scored 0.3, and falls to F. */
  cnnb_det d[] = {
    {B(0.2f, 0, 2, 2), 0.8f, 1, 0},  /* B */
    {B(1, 0, 2, 2), 0.6f, 1, 0},     /* D */
    {B(0, 0, 2, 2), 0.3f, 1, 1},     /* G */
    {B(0, 0, 2, 2), 0.9f, 1, 0},     /* A */
    {B(5, 5, 2, 2), 0.7f, 1, 0},     /* C */
    {B(0.7f, 0, 2, 2), 0.75f, 1, 0}, /* E */
    {B(0, 0, 2, 2), 0.85f, 1, 1},    /* F */
  };
  int n = cnnb_nms(d, 7, 0.5f);
  CNNB_ASSERT_EQ_INT(n, 4);
  const float want_score[] = {0.9f, 0.75f, 0.7f, 0.85f};
  const int want_cls[] = {0, 0, 0, 1};
  const float want_x[] = {0, 0.7f, 5, 0};
  for (int i = 0; i < n && i < 4; i++) {
    CNNB_ASSERT_EQ_INT(d[i].cls, want_cls[i]);
    CNNB_ASSERT_NEAR(d[i].score, want_score[i], 0);
    CNNB_ASSERT_NEAR(d[i].box.x, want_x[i], 0);
  }
  CNNB_ASSERT_EQ_INT(cnnb_nms(d, 0, 0.5f), 0);
}

static void test_letterbox(void)
{
  /* 2 x 4 into 4 x 4: scale 1 (no interpolation), rows 1-2, grey bars above and below */
  const unsigned char im[8] = {0, 51, 102, 153, 204, 255, 0, 51};
  float out[16], scratch[64];
  CU_ASSERT(cnnb_letterbox_scratch(2, 4, 4, 1) <= 64);
  cnnb_letterbox(im, 2, 4, 1, out, 4, 4, 1, scratch);
  for (int x = 0; x < 4; x++) {
    CNNB_ASSERT_NEAR(out[x], 0.5, 0);
    CNNB_ASSERT_NEAR(out[12 + x], 0.5, 0);
    CNNB_ASSERT_NEAR(out[4 + x], im[x] / 255., 1e-7);
    CNNB_ASSERT_NEAR(out[8 + x], im[4 + x] / 255., 1e-7);
  }
  /* 2 x 2 up to 3 x 3, corners aligned: columns [0, .5, 1] / [1, .5, 0], then the middle row
   * halfway between them */
  const unsigned char im2[4] = {0, 255, 255, 0};
  const float want[9] = {0, .5f, 1, .5f, .5f, .5f, 1, .5f, 0};
  cnnb_letterbox(im2, 2, 2, 1, out, 3, 3, 1, scratch);
  for (int i = 0; i < 9; i++) CNNB_ASSERT_NEAR(out[i], want[i], 1e-7);
  /* one grey channel repeated over three */
  float out3[27];
  cnnb_letterbox(im2, 2, 2, 1, out3, 3, 3, 3, scratch);
  for (int i = 0; i < 9; i++) CNNB_ASSERT_NEAR(out3[18 + i], want[i], 1e-7);
  /* a 1 x 8 strip into 4 x 4 resizes to one row (Darknet's scale divides by rows - 1 = 0):
   * row 1 holds pixels 0, 2 1/3, 4 2/3 and 7 of 36*i, i.e. 0, 84, 168, 252; and the 8 x 1
   * strip the same down column 1 */
  const unsigned char strip[8] = {0, 36, 72, 108, 144, 180, 216, 252};
  const float line[4] = {0, 84 / 255.f, 168 / 255.f, 252 / 255.f};
  for (int tall = 0; tall < 2; tall++) {
    cnnb_letterbox(strip, tall ? 8 : 1, tall ? 1 : 8, 1, out, 4, 4, 1, scratch);
    for (int i = 0; i < 16; i++) {
      const int along = tall ? i / 4 : i % 4, across = tall ? i % 4 : i / 4;
      CNNB_ASSERT_NEAR(out[i], across == 1 ? line[along] : 0.5f, 1e-6);
    }
  }
}

static void test_yolo_decode(void)
{
  /* One anchor (2 x 3 input pixels), 2 classes, on a 2 x 2 grid of a 2 x 2 network; only cell
   * (row 1, col 0) has an object: tx = ty = tw = th = 0, objectness logit 4, class logits 2, -2.
   * Box: centre ((0 + .5)/2, (1 + .5)/2), size (e^0 * 2/2, e^0 * 3/2) of the network;
   * score sigmoid(4) * sigmoid(2). */
  static const char *cfg = "[net]\nheight=2\nwidth=2\nchannels=7\n[yolo]\nmask=0\nanchors=2,3\nclasses=2\nnum=1\n";
  cnnb_net *net;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, "yolo-test", &o), 0);
  float x[28];
  for (int i = 0; i < 28; i++) x[i] = 0;
  for (int i = 0; i < 4; i++) x[4 * 4 + i] = -10; /* objectness plane */
  x[4 * 4 + 2] = 4, x[5 * 4 + 2] = 2, x[6 * 4 + 2] = -2;
  cnnb_net_forward(net, x, 1);
  CNNB_ASSERT_EQ_INT(cnnb_detect_capacity(net), 8);
  CNNB_ASSERT_EQ_INT(cnnb_detect_num_classes(net), 2);
  cnnb_det d[8];
  int n = cnnb_detect(net, 0, 4, 4, 0.5f, 0.45f, d, 8); /* 4 x 4 image: twice the network */
  CNNB_ASSERT_EQ_INT(n, 1);
  const double s = 1 / (1 + exp(-4.0)) * (1 / (1 + exp(-2.0)));
  CNNB_ASSERT_NEAR(d[0].score, s, 1e-6);
  CNNB_ASSERT_EQ_INT(d[0].cls, 0);
  CNNB_ASSERT_NEAR(d[0].box.x, 1, 1e-6);
  CNNB_ASSERT_NEAR(d[0].box.y, 3, 1e-6);
  CNNB_ASSERT_NEAR(d[0].box.w, 4, 1e-6);
  CNNB_ASSERT_NEAR(d[0].box.h, 6, 1e-6);
  /* a 4 x 2 image (wide): letterboxed into rows 0.5..1.5 of the 2 x 2 network */
  n = cnnb_detect(net, 0, 4, 2, 0.5f, 0.45f, d, 8);
  CNNB_ASSERT_EQ_INT(n, 1);
  CNNB_ASSERT_NEAR(d[0].box.y, (0.75 - 0.25) / 0.5 * 2, 1e-5);
  CNNB_ASSERT_NEAR(d[0].box.h, 1.5 / 0.5 * 2, 1e-5);
  cnnb_net_free(net);
}

static const char *weights_cfg = "[net]\nheight=6\nwidth=6\nchannels=2\n"
                                 "[convolutional]\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n"
                                 "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
                                 "[connected]\noutput=5\nactivation=linear\n";

static void test_weights_roundtrip(void)
{
  cnnb_net *a, *b;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&a, weights_cfg, "w.cfg", &o), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&b, weights_cfg, "w.cfg", &o), 0);
  cnnb_net_init_params(a, 7);
  for (size_t i = 0; i < a->nstate; i++) a->state[i] = 0.5f + (float)i;
  /* conv1: 3 biases + 3 x 3 BN arrays + 3*2*9 weights; conv2: 2 + 2*3; connected: 5 + 5*72 */
  const size_t floats = 3 + 9 + 54 + 2 + 6 + 5 + 5 * 72;
  CNNB_ASSERT_EQ_INT(cnnb_darknet_weights_size(a), 20 + 4 * floats);
  const char *p = cnnb_test_path("w.weights");
  CU_ASSERT_EQUAL_FATAL(cnnb_darknet_weights_save(a, p, 12345), 0);
  long long seen = 0;
  CU_ASSERT_EQUAL(cnnb_darknet_weights_load(b, p, &seen), 0);
  CNNB_ASSERT_EQ_INT(seen, 12345);
  CU_ASSERT(!memcmp(a->params, b->params, a->nparams * sizeof(float)));
  CU_ASSERT(!memcmp(a->state, b->state, a->nstate * sizeof(float)));
  /* Darknet's order: the first conv's biases, scales, means, variances, then its weights */
  FILE *f = fopen(p, "rb");
  float head[12];
  CU_ASSERT_FATAL(f != NULL);
  fseek(f, 20, SEEK_SET);
  CU_ASSERT(fread(head, 4, 12, f) == 12);
  fclose(f);
  const cnnb_layer *l = &a->layers[0];
  cnnb_param *bi = cnnb_layer_find_param((cnnb_layer *)l, "biases"), *sc = cnnb_layer_find_param((cnnb_layer *)l, "scales"),
             *va = cnnb_layer_find_param((cnnb_layer *)l, "rolling_variance");
  CNNB_ASSERT_NEAR(head[0], bi->data[0], 0);
  CNNB_ASSERT_NEAR(head[3], sc->data[0], 0);
  CNNB_ASSERT_NEAR(head[11], va->data[2], 0);
  /* one float short, and one float too many: both sizes in the message */
  CU_ASSERT(truncate(p, (off_t)(20 + 4 * floats - 4)) == 0);
  CU_ASSERT(cnnb_darknet_weights_load(b, p, NULL) == CNNB_EIO);
  char want[64];
  snprintf(want, sizeof want, "%zu bytes, but w.cfg needs %zu", 20 + 4 * floats - 4, 20 + 4 * floats);
  CU_ASSERT(strstr(cnnb_error_message(), want) != NULL);
  if (!strstr(cnnb_error_message(), want)) fprintf(stderr, "\n  message: %s\n", cnnb_error_message());
  CU_ASSERT(truncate(p, (off_t)(20 + 4 * floats + 4)) == 0);
  CU_ASSERT(cnnb_darknet_weights_load(b, p, NULL) == CNNB_EIO);
  CU_ASSERT(strstr(cnnb_error_message(), "needs") != NULL);
  cnnb_net_free(a);
  cnnb_net_free(b);
}

/* The [yolo] loss against central differences of itself, through a convolution: every input
 * value and every parameter. ignore_thresh=1 keeps the no-object mask fixed (it is a step). */
/* Checks dL/d input and dL/d params of cfg's network (2 samples of 3 x 4 x 4) with truths t;
 * returns the loss. */
static double loss_gradcheck(const char *cfg, const float *truth, cnnb_net **out, float *x)
{
  cnnb_net *net;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 2, o.train = 1, o.input_grad = 1;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_from_string(&net, cfg, "yolo-loss", &o), 0);
  cnnb_net_init_params(net, 3);
  net->truth_f = truth;
  net->loss_scale = 1;
  cnnb_rng r;
  cnnb_rng_seed(&r, 5, 0, 0, 0);
  for (int i = 0; i < 96; i++) x[i] = cnnb_rng_normal(&r);
  CNNB_ASSERT_NEAR(cnnb_gradcheck_loss(net, x, 2, 1e-2f, 1e-2, 0), 0, 1e-2);
  cnnb_net_forward(net, x, 2);
  double L = cnnb_net_loss(net);
  CU_ASSERT(isfinite(L) && L > 0);
  *out = net;
  return L;
}

static void test_yolo_loss_gradcheck(void)
{
  static const char *cfg = "[net]\nheight=4\nwidth=4\nchannels=3\n"
                           "[convolutional]\nfilters=14\nsize=3\npad=1\nactivation=linear\n"
                           "[yolo]\nmask=0,1\nanchors=1,1, 2,3, 3,2\nclasses=2\nnum=3\nignore_thresh=1\n";
  static float truth[2 * CNNB_YOLO_MAX_TRUTH * 5];
  const float t[] = {0.3f, 0.6f, 0.5f, 0.7f, 1, 0.8f, 0.2f, 0.25f, 0.25f, 0};
  memcpy(truth, t, sizeof t);
  const float t1[] = {0.5f, 0.5f, 0.4f, 0.6f, 0};
  memcpy(truth + CNNB_YOLO_MAX_TRUTH * 5, t1, sizeof t1);
  cnnb_net *net;
  float x[96];
  double L = loss_gradcheck(cfg, truth, &net, x);
  /* with the truth removed only the no-object terms remain: every objectness is pushed down */
  truth[2] = truth[7] = truth[CNNB_YOLO_MAX_TRUTH * 5 + 2] = 0;
  cnnb_net_zero_grads(net);
  double L0 = cnnb_net_train_step(net, x, 2);
  CU_ASSERT(L0 > 0 && L0 < L);
  cnnb_net_free(net);
}

/* Two heads, as in yolov3-tiny: the last head's loss includes the first's, and the first head's
 * gradient reaches the shared layer through its own backward. The truth of shape 0.75 x 0.5
 * belongs to anchor 2, which only the second head has. Linear activations: a central difference
 * straddling leaky's kink is not its derivative. */
static void test_yolo_loss_two_heads(void)
{
  static const char *cfg = "[net]\nheight=4\nwidth=4\nchannels=3\n"
                           "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=linear\n"
                           "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n"
                           "[yolo]\nmask=0,1\nanchors=1,1, 2,3, 3,2\nclasses=2\nnum=3\nignore_thresh=1\n"
                           "[route]\nlayers=-3\n"
                           "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
                           "[yolo]\nmask=2\nanchors=1,1, 2,3, 3,2\nclasses=2\nnum=3\nignore_thresh=1\n";
  static float truth[2 * CNNB_YOLO_MAX_TRUTH * 5];
  const float t[] = {0.3f, 0.6f, 0.5f, 0.7f, 1, 0.6f, 0.3f, 0.75f, 0.5f, 1};
  memcpy(truth, t, sizeof t);
  const float t1[] = {0.5f, 0.5f, 0.4f, 0.6f, 0};
  memcpy(truth + CNNB_YOLO_MAX_TRUTH * 5, t1, sizeof t1);
  cnnb_net *net;
  float x[96];
  loss_gradcheck(cfg, truth, &net, x);
  /* the first head alone is part of the total */
  cnnb_net_forward(net, x, 2);
  double all = cnnb_net_loss(net), first = net->layers[2].ops->loss(&net->layers[2], net);
  CU_ASSERT(first > 0 && first < all);
  cnnb_net_free(net);
}

/* Image 0: truths of class 0 at A = (10,10) and (50,50), class 1 at (30,30); image 1: class 0 at
 * (10,10); all 10 x 10. Class 0 by score: 0.9 on A (TP), 0.8 on A again (duplicate: FP), 0.75 on
 * image 1's truth (TP), 0.7 on nothing (FP): precision 1, .5, .67, .5 at recall 1/3, 1/3, 2/3,
 * 2/3; the envelope gives AP = 1/3 x 1 + 1/3 x 2/3 = 5/9. Class 1: one hit, AP 1. Class 2 has
 * no truth (NAN, not in the mean): mAP = (5/9 + 1) / 2 = 7/9. */
static void test_map(void)
{
  const long long doff[] = {0, 4, 5}, dcls[] = {0, 0, 0, 1, 0};
  const float dscore[] = {0.9f, 0.8f, 0.7f, 0.6f, 0.75f};
  const float dbox[] = {10, 10, 10, 10, 11, 10, 10, 10, 80, 80, 10, 10, 30, 30, 10, 10, 10, 10, 10, 10};
  const long long toff[] = {0, 3, 4};
  const float truth[] = {10, 10, 10, 10, 0, 50, 50, 10, 10, 0, 30, 30, 10, 10, 1, 10, 10, 10, 10, 0};
  double ap[3], map;
  CU_ASSERT_EQUAL(cnnb_detect_map(2, doff, dcls, dscore, dbox, toff, truth, 3, 0.5f, ap, &map), 0);
  CNNB_ASSERT_NEAR(ap[0], 5.0 / 9, 1e-9);
  CNNB_ASSERT_NEAR(ap[1], 1, 1e-9);
  CU_ASSERT(isnan(ap[2]));
  CNNB_ASSERT_NEAR(map, 7.0 / 9, 1e-9);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("detect", NULL, NULL);
  CU_add_test(s, "IoU: disjoint, touching, nested, identical, partial", test_iou);
  CU_add_test(s, "NMS on overlapping boxes of two classes", test_nms_two_classes);
  CU_add_test(s, "Darknet letterbox", test_letterbox);
  CU_add_test(s, "[yolo] decoding of a hand-set output", test_yolo_decode);
  CU_add_test(s, "Darknet .weights round trip and size errors", test_weights_roundtrip);
  CU_add_test(s, "[yolo] loss: gradient check", test_yolo_loss_gradcheck);
  CU_add_test(s, "[yolo] loss: two heads, gradient check", test_yolo_loss_two_heads);
  CU_add_test(s, "mAP: all-point interpolated AP on a hand-worked case", test_map);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
