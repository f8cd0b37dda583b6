/* Classic filters (cnn-batch filter): the notes' worked 6x6 example through the depthwise
 * network, the named kernels, per-channel filtering, stride and padding, kernel files and their
 * errors, the filter command itself on a small dataset; and the image files it writes and the
 * style command reads (PNG, JPEG, bilinear resampling). */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "cnnb/filter.h"
#include "cnnb/image.h"
#include "cnnb_test.h"

static const float notes_img[36] = {3, 0, 1, 2, 7, 4, 1, 5, 8, 9, 3, 1, 2, 7, 2, 5, 1, 3,
                                    0, 1, 3, 1, 7, 8, 4, 2, 1, 6, 2, 8, 2, 4, 5, 2, 3, 9};

static void test_notes_vertical(void)
{
  static const float want[16] = {-5, -4, 0, 8, -10, -2, 2, 3, 0, -2, -4, -7, -3, -2, -3, -16};
  cnnb_kernel k;
  CU_ASSERT_EQUAL_FATAL(cnnb_kernel_get("vertical", &k), 0);
  cnnb_net *net;
  CU_ASSERT_EQUAL_FATAL(cnnb_filter_net(&net, &k, 6, 6, 1, 1, 0, 1), 0);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 4);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 4);
  const float *y = cnnb_net_forward(net, notes_img, 1);
  for (int i = 0; i < 16; i++) CNNB_ASSERT_NEAR(y[i], want[i], 0);
  cnnb_net_free(net);
}

static void test_named_kernels(void)
{
  static const struct {
    const char *name;
    float w[9];
  } want[] = {{"vertical", {1, 0, -1, 1, 0, -1, 1, 0, -1}},
              {"horizontal", {1, 1, 1, 0, 0, 0, -1, -1, -1}},
              {"sobel", {1, 0, -1, 2, 0, -2, 1, 0, -1}},
              {"scharr", {3, 0, -3, 10, 0, -10, 3, 0, -3}}};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    cnnb_kernel k;
    CU_ASSERT_EQUAL_FATAL(cnnb_kernel_named(want[i].name, &k), 0);
    CNNB_ASSERT_EQ_INT(k.size, 3);
    for (int j = 0; j < 9; j++) CNNB_ASSERT_NEAR(k.w[j], want[i].w[j], 0);
  }
  cnnb_kernel k;
  CU_ASSERT_EQUAL(cnnb_kernel_named("laplace", &k), CNNB_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "laplace"));
}

/* Depthwise: each channel is filtered on its own with the same kernel; padding and stride
 * follow the convolution's rules, (n + 2p - f)/s + 1. */
static void test_depthwise_stride_pad(void)
{
  cnnb_kernel k;
  CU_ASSERT_EQUAL_FATAL(cnnb_kernel_named("sobel", &k), 0);
  float x[72];
  for (int i = 0; i < 36; i++) x[i] = notes_img[i], x[36 + i] = -2.f * notes_img[i];
  cnnb_net *net;
  CU_ASSERT_EQUAL_FATAL(cnnb_filter_net(&net, &k, 6, 6, 2, 2, 1, 1), 0);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.h, 3);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.w, 3);
  CNNB_ASSERT_EQ_INT(net->layers[0].out.c, 2);
  const float *y = cnnb_net_forward(net, x, 1);
  for (int oy = 0; oy < 3; oy++)
    for (int ox = 0; ox < 3; ox++) {
      double s = 0; /* direct cross-correlation with zero padding 1, stride 2 */
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
          int iy = oy * 2 - 1 + a, ix = ox * 2 - 1 + b;
          if (iy >= 0 && iy < 6 && ix >= 0 && ix < 6) s += k.w[a * 3 + b] * notes_img[iy * 6 + ix];
        }
      CNNB_ASSERT_NEAR(y[oy * 3 + ox], s, 1e-4);
      CNNB_ASSERT_NEAR(y[9 + oy * 3 + ox], -2 * s, 1e-4);
    }
  cnnb_net_free(net);
}

static const char *write_text(const char *name, const char *text)
{
  const char *p = cnnb_test_path(name);
  FILE *f = fopen(p, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static void test_kernel_file(void)
{
  const char *p = write_text("k5.txt", "# a 2x2 kernel\n\n 1   -1\n\t2 0.5  # comment\n");
  cnnb_kernel k;
  CU_ASSERT_EQUAL_FATAL(cnnb_kernel_get(p, &k), 0);
  CNNB_ASSERT_EQ_INT(k.size, 2);
  CNNB_ASSERT_NEAR(k.w[0], 1, 0);
  CNNB_ASSERT_NEAR(k.w[1], -1, 0);
  CNNB_ASSERT_NEAR(k.w[2], 2, 0);
  CNNB_ASSERT_NEAR(k.w[3], 0.5, 0);
  CU_ASSERT_STRING_EQUAL(k.name, "k5.txt");
}

static void expect_kernel_error(const char *name, const char *text, const char *where, const char *what)
{
  const char *p = write_text(name, text);
  cnnb_kernel k;
  int rc = cnnb_kernel_load(p, &k);
  CU_ASSERT(rc < 0);
  const char *msg = cnnb_error_message();
  char want[600];
  snprintf(want, sizeof want, "%s%s", p, where);
  if (!strstr(msg, want) || !strstr(msg, what)) fprintf(stderr, "\n  message: %s (want '%s', '%s')\n", msg, want, what);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, what));
}

static void test_kernel_file_errors(void)
{
  expect_kernel_error("short_row.txt", "1 0 -1\n1 0\n1 0 -1\n", ":2:", "row 2 has 2 numbers but row 1 has 3");
  expect_kernel_error("tall.txt", "1 0\n0 1\n1 1\n", ":3:", "square");
  expect_kernel_error("wide.txt", "1 0 -1\n# note\n1 0 -1\n", ":3:", "ends after 2 rows of 3 numbers");
  expect_kernel_error("nan.txt", "1 0\n0 x1\n", ":2:", "'x1' is not a number");
  expect_kernel_error("empty.txt", "# nothing\n\n", ": no kernel rows", "k lines");
  cnnb_kernel k;
  CU_ASSERT_EQUAL(cnnb_kernel_get(cnnb_test_path("absent.txt"), &k), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "no such file"));
}

static void test_png_jpeg_resize(void)
{
  unsigned char img[4 * 6 * 3];
  for (int i = 0; i < 72; i++) img[i] = (unsigned char)(i * 3);
  const char *png = cnnb_test_path("a.png");
  CU_ASSERT_EQUAL(cnnb_png_write(png, img, 4, 6, 3), 0);
  FILE *f = fopen(png, "rb");
  unsigned char sig[8] = {0};
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_EQUAL(fread(sig, 1, 8, f), 8);
  fclose(f);
  CU_ASSERT(sig[1] == 'P' && sig[2] == 'N' && sig[3] == 'G');
  /* JPEG is lossy: a smooth grey ramp comes back within a few levels */
  unsigned char grey[16 * 16], *back = NULL;
  for (int i = 0; i < 256; i++) grey[i] = (unsigned char)(8 * (i % 16) + 4 * (i / 16));
  const char *jpg = cnnb_test_path("g.jpg");
  CU_ASSERT_EQUAL_FATAL(cnnb_jpeg_write(jpg, grey, 16, 16, 1, 95), 0);
  int h, w, c;
  CU_ASSERT_EQUAL_FATAL(cnnb_jpeg_read(jpg, &back, &h, &w, &c), 0);
  CNNB_ASSERT_EQ_INT(h, 16);
  CNNB_ASSERT_EQ_INT(w, 16);
  CNNB_ASSERT_EQ_INT(c, 1);
  int worst = 0;
  for (int i = 0; i < 256; i++) worst = abs(back[i] - grey[i]) > worst ? abs(back[i] - grey[i]) : worst;
  CU_ASSERT(worst <= 6);
  free(back);
  const char *txt = write_text("not.jpg", "hello");
  CU_ASSERT_EQUAL(cnnb_jpeg_read(txt, &back, &h, &w, &c), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "not.jpg: not a readable JPEG"));
  /* bilinear 2x2 -> 4x4 with centres aligned: rows/columns at 1/4 and 3/4 of the way */
  const unsigned char s[4] = {0, 100, 200, 40};
  unsigned char d[16];
  cnnb_image_resize_bilinear(s, 2, 2, 1, d, 4, 4);
  const unsigned char want[16] = {0, 25, 75, 100, 50, 59, 76, 85, 150, 126, 79, 55, 200, 160, 80, 40};
  for (int i = 0; i < 16; i++) CNNB_ASSERT_EQ_INT(d[i], want[i]);
}

/* The command: a 2-image dataset through `filter`, read back with HDF5. */
static void test_filter_command(void)
{
  const char *data = cnnb_test_path("six.h5"), *out = cnnb_test_path("f.h5");
  unsigned char px[72];
  for (int i = 0; i < 36; i++) px[i] = (unsigned char)notes_img[i], px[36 + i] = (unsigned char)(2 * notes_img[i]);
  hid_t f = H5Fcreate(data, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[4] = {2, 6, 6, 1};
  hid_t sp = H5Screate_simple(4, dims, NULL);
  hid_t d = H5Dcreate2(f, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, px);
  H5Dclose(d);
  H5Sclose(sp);
  H5Fclose(f);
  char *argv[] = {"filter", "--kernel", "vertical", "--data", (char *)data, "-o", (char *)out, "--png",
                  (char *)cnnb_test_path("png"), NULL};
  CU_ASSERT_EQUAL_FATAL(cnnb_cmd_filter(9, argv), CNNB_EXIT_OK);
  float y[32];
  f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  d = H5Dopen2(f, "filtered", H5P_DEFAULT);
  sp = H5Dget_space(d);
  hsize_t got[4] = {0};
  CNNB_ASSERT_EQ_INT(H5Sget_simple_extent_dims(sp, got, NULL), 4);
  CU_ASSERT(got[0] == 2 && got[1] == 4 && got[2] == 4 && got[3] == 1);
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
  H5Sclose(sp);
  H5Dclose(d);
  H5Fclose(f);
  static const float want[16] = {-5, -4, 0, 8, -10, -2, 2, 3, 0, -2, -4, -7, -3, -2, -3, -16};
  for (int i = 0; i < 16; i++) {
    CNNB_ASSERT_NEAR(y[i], want[i], 0);
    CNNB_ASSERT_NEAR(y[16 + i], 2 * want[i], 0);
  }
  FILE *pf = fopen(cnnb_test_path("png/000001.png"), "rb");
  CU_ASSERT_PTR_NOT_NULL(pf);
  if (pf) fclose(pf);
  /* a kernel file of the wrong shape: exit 1, message names file and line, no output left */
  const char *bad = write_text("bad.k", "1 2 3\n4 5\n");
  const char *out2 = cnnb_test_path("g.h5");
  char *argv2[] = {"filter", "--kernel", (char *)bad, "--data", (char *)data, "-o", (char *)out2, NULL};
  CU_ASSERT_EQUAL(cnnb_cmd_filter(7, argv2), CNNB_EXIT_FAIL);
  char want_msg[600];
  snprintf(want_msg, sizeof want_msg, "%s:2: row 2 has 2 numbers", bad);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), want_msg));
  FILE *g = fopen(out2, "rb");
  CU_ASSERT_PTR_NULL(g);
  if (g) fclose(g);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("filter", NULL, NULL);
  CU_add_test(s, "notes' 6x6 example, vertical filter", test_notes_vertical);
  CU_add_test(s, "named kernels", test_named_kernels);
  CU_add_test(s, "depthwise, stride 2, padding 1", test_depthwise_stride_pad);
  CU_add_test(s, "kernel file", test_kernel_file);
  CU_add_test(s, "kernel file errors name file and line", test_kernel_file_errors);
  CU_add_test(s, "PNG, JPEG, bilinear resize", test_png_jpeg_resize);
  CU_add_test(s, "filter command", test_filter_command);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
