/* The geometric steps of the faces pipeline on hand-worked cases: TensorFlow's legacy bilinear
 * resize (the example of tfjs's own resize_bilinear_test), face-api's padding to a square (at
 * the end for the detector, centred for the crops), non-max suppression in face-api's order,
 * Box.clipAtImageBorders, and dlib's alignment box from landmarks. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/faces.h"
#include "cnnb_test.h"

/* An H x W x 3 photo whose three channels are equal to v. */
static void grey(unsigned char *rgb, const unsigned char *v, int n)
{
  for (int i = 0; i < n; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = v[i];
}

static void test_resize_tf_legacy(void)
{
  /* tfjs resize_bilinear_test "simple alignCorners=false": [[2, 2], [4, 4]] to 3 x 3 gives
   * rows 2, 10/3, 4 (source row = 0, 2/3, 4/3: the last clamps to row 1) */
  unsigned char v[4] = {2, 2, 4, 4}, rgb[12];
  grey(rgb, v, 4);
  float out[27];
  cnnb_faces_input(rgb, 2, 2, 0, 0, 2, 2, 0, 3, out);
  const double want[9] = {2, 2, 2, 10.0 / 3, 10.0 / 3, 10.0 / 3, 4, 4, 4};
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 9; i++) CNNB_ASSERT_NEAR(out[c * 9 + i], want[i], 1e-5);
  /* 2 x 2 to 4 x 4: source 0, 0.5, 1, 1.5 -> 2, 3, 4, 4 down the rows, flat across */
  float o4[48];
  cnnb_faces_input(rgb, 2, 2, 0, 0, 2, 2, 0, 4, o4);
  const double col[4] = {2, 3, 4, 4};
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) CNNB_ASSERT_NEAR(o4[16 + y * 4 + x], col[y], 1e-6);
}

static void test_pad_to_square(void)
{
  /* a 2 x 3 photo (rows 1 2 3 / 4 5 6): the detector pads at the bottom, no resize at size 3 */
  unsigned char v[6] = {1, 2, 3, 4, 5, 6}, rgb[18];
  grey(rgb, v, 6);
  float out[27];
  cnnb_faces_input(rgb, 2, 3, 0, 0, 3, 2, 0, 3, out);
  const float want[9] = {1, 2, 3, 4, 5, 6, 0, 0, 0};
  for (int i = 0; i < 9; i++) CNNB_ASSERT_NEAR(out[18 + i], want[i], 0);
  /* a 4-tall 1-wide crop (column 1 of a 4 x 3 photo), centred: d = 3, round(1.5) = 2 columns
   * after and 1 before, so the crop lands in column 1 of the 4 x 4 square */
  unsigned char p[12] = {0, 10, 0, 0, 20, 0, 0, 30, 0, 0, 40, 0}, rgb2[36];
  grey(rgb2, p, 12);
  float o2[48];
  cnnb_faces_input(rgb2, 4, 3, 1, 0, 1, 4, 1, 4, o2);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) CNNB_ASSERT_NEAR(o2[32 + y * 4 + x], x == 1 ? 10.0f * (y + 1) : 0.0f, 0);
  /* a 1-tall 2-wide crop centred: d = 1, round(0.5) = 1 row after, none before */
  float o3[12];
  cnnb_faces_input(rgb2, 4, 3, 0, 1, 2, 1, 1, 2, o3);
  CNNB_ASSERT_NEAR(o3[0], 0, 0);
  CNNB_ASSERT_NEAR(o3[1], 20, 0);
  CNNB_ASSERT_NEAR(o3[2], 0, 0);
  CNNB_ASSERT_NEAR(o3[3], 0, 0);
}

static void test_nms_order(void)
{
  /* A (0.9) and B (0.8, IoU 81/119 = 0.68 with A) and C (0.95, far away); D (0.7) has IoU
   * 25/175 = 0.14 with A: kept. Order: C, A, D. */
  const float boxes[16] = {0, 0, 10, 10, 1, 1, 10, 10, 20, 20, 5, 5, 5, 5, 10, 10};
  const float scores[4] = {0.9f, 0.8f, 0.95f, 0.7f};
  int keep[4];
  int k = cnnb_faces_nms(boxes, scores, 4, 0.4f, keep);
  CNNB_ASSERT_EQ_INT(k, 3);
  CNNB_ASSERT_EQ_INT(keep[0], 2);
  CNNB_ASSERT_EQ_INT(keep[1], 0);
  CNNB_ASSERT_EQ_INT(keep[2], 3);
  /* at IoU threshold 0.1 D falls to A too */
  CNNB_ASSERT_EQ_INT(cnnb_faces_nms(boxes, scores, 4, 0.1f, keep), 2);
}

static void test_clip(void)
{
  int r[4];
  /* x from -5.5 clipped to 0, width to the photo's 10; y 3.2 floored, height 10 -> 8 - 3.2 */
  cnnb_faces_clip((const double[4]){-5.5, 3.2, 20.7, 10}, 10, 8, r);
  CNNB_ASSERT_EQ_INT(r[0], 0);
  CNNB_ASSERT_EQ_INT(r[1], 3);
  CNNB_ASSERT_EQ_INT(r[2], 10);
  CNNB_ASSERT_EQ_INT(r[3], 4);
  /* inside: floor of each number (x 1.9 -> 1, w 5.99 -> 5) */
  cnnb_faces_clip((const double[4]){1.9, 2.1, 5.99, 3.5}, 100, 100, r);
  CNNB_ASSERT_EQ_INT(r[0], 1);
  CNNB_ASSERT_EQ_INT(r[1], 2);
  CNNB_ASSERT_EQ_INT(r[2], 5);
  CNNB_ASSERT_EQ_INT(r[3], 3);
}

static void test_align_dlib(void)
{
  /* eyes' centres (110, 110) and (130, 110), mouth's (120, 140): each eye is
   * sqrt(10^2 + 30^2) = 31.62 from the mouth, size = floor(31.62 / 0.45) = 70; reference point
   * (120, 120); x = floor(120 - 35) = 85, y = floor(120 - 30.1) = 89 */
  float lm[136];
  for (int i = 0; i < 68; i++) lm[2 * i] = 0, lm[2 * i + 1] = 0;
  for (int i = 36; i < 42; i++) lm[2 * i] = 110 + (i % 2 ? 1.f : -1.f), lm[2 * i + 1] = 110;
  for (int i = 42; i < 48; i++) lm[2 * i] = 130, lm[2 * i + 1] = 110 + (i % 2 ? 2.f : -2.f);
  for (int i = 48; i < 68; i++) lm[2 * i] = 120, lm[2 * i + 1] = 140;
  int r[4];
  cnnb_faces_align(lm, 100, 100, r);
  CNNB_ASSERT_EQ_INT(r[0], 85);
  CNNB_ASSERT_EQ_INT(r[1], 89);
  CNNB_ASSERT_EQ_INT(r[2], 70);
  CNNB_ASSERT_EQ_INT(r[3], 70);
  /* near the top-left corner x and y stop at 0 */
  for (int i = 0; i < 136; i++) lm[i] -= 100;
  cnnb_faces_align(lm, 100, 100, r);
  CNNB_ASSERT_EQ_INT(r[0], 0);
  CNNB_ASSERT_EQ_INT(r[1], 0);
  CNNB_ASSERT_EQ_INT(r[2], 70);
}

static void test_open_missing(void)
{
  cnnb_faces *f = (cnnb_faces *)1;
  cnnb_faces_opts o = cnnb_faces_opts_default();
  o.quiet = 1;
  CU_ASSERT(cnnb_faces_open(&f, "/nonexistent-face-models", &o) < 0);
  CU_ASSERT(f == NULL);
  CU_ASSERT(strstr(cnnb_error_message(), "/nonexistent-face-models/" CNNB_FACE_DETECTOR) != NULL);
  o.input_size = 100;
  CU_ASSERT(cnnb_faces_open(&f, "/nonexistent-face-models", &o) < 0);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("faces", NULL, NULL);
  CU_add_test(s, "TensorFlow legacy bilinear resize", test_resize_tf_legacy);
  CU_add_test(s, "padding to a square: at the end and centred", test_pad_to_square);
  CU_add_test(s, "NMS in face-api's order", test_nms_order);
  CU_add_test(s, "Box.clipAtImageBorders", test_clip);
  CU_add_test(s, "dlib alignment box from landmarks", test_align_dlib);
  CU_add_test(s, "missing models: error names the file", test_open_missing);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
