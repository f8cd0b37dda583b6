/* Tests for IDX import, the dataset reader and output files (src/io). Runs as one MPI
 * process: the output-file writer needs MPI. */
#define _POSIX_C_SOURCE 200809L
#include "cnnb/data.h"
#include "cnnb/error.h"

#include <CUnit/Basic.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define N 5
#define H 3
#define W 2
#define FMNIST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
#define FMNIST_LABELS "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"

static char dir[64];
static unsigned char pix[N][H * W];
static unsigned char lab[N];

static const char *tpath(const char *name)
{
  static char buf[8][256];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static int exists(const char *p)
{
  struct stat st;
  return stat(p, &st) == 0;
}

static void put_be32(unsigned char *b, unsigned v)
{
  b[0] = (unsigned char)(v >> 24);
  b[1] = (unsigned char)(v >> 16);
  b[2] = (unsigned char)(v >> 8);
  b[3] = (unsigned char)v;
}

/* Writes an IDX file with gzip (gz=1, through zlib) or raw. */
static void write_idx(const char *path, int gz, int ndim, const unsigned *dims, const void *data,
                      size_t bytes)
{
  unsigned char hdr[4 + 16] = {0, 0, 0x08, (unsigned char)ndim};
  for (int i = 0; i < ndim; i++) put_be32(hdr + 4 + 4 * i, dims[i]);
  size_t hl = 4 + 4 * (size_t)ndim;
  if (gz) {
    gzFile f = gzopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    gzwrite(f, hdr, (unsigned)hl);
    gzwrite(f, data, (unsigned)bytes);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fwrite(hdr, 1, hl, f);
    fwrite(data, 1, bytes, f);
    fclose(f);
  }
}

static void make_idx(const char *img, const char *lbl, int gz, unsigned nlabels)
{
  unsigned di[3] = {N, H, W}, dl[1] = {nlabels};
  write_idx(img, gz, 3, di, pix, sizeof pix);
  write_idx(lbl, gz, 1, dl, lab, nlabels);
}

/* Mean and population std of p/255 over the tiny data set, in double. */
static void tiny_stats(double *m, double *s)
{
  double a = 0, b = 0;
  for (int i = 0; i < N; i++)
    for (int p = 0; p < H * W; p++) {
      double v = pix[i][p] / 255.0;
      a += v;
      b += v * v;
    }
  a /= N * H * W;
  *m = a;
  *s = sqrt(b / (N * H * W) - a * a);
}

static float attr_f(hid_t loc, const char *name, int i)
{
  float v[4] = {0};
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  CU_ASSERT_FATAL(a >= 0);
  H5Aread(a, H5T_NATIVE_FLOAT, v);
  H5Aclose(a);
  return v[i];
}

static long long attr_i(hid_t loc, const char *name)
{
  long long v = -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return -1;
  H5Aread(a, H5T_NATIVE_LLONG, &v);
  H5Aclose(a);
  return v;
}

static void check_imported(const char *out)
{
  hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  hid_t d = H5Dopen2(f, "/images", H5P_DEFAULT);
  CU_ASSERT_FATAL(d >= 0);
  hid_t sp = H5Dget_space(d);
  hsize_t dims[4];
  CU_ASSERT_EQUAL(H5Sget_simple_extent_ndims(sp), 4);
  H5Sget_simple_extent_dims(sp, dims, NULL);
  CU_ASSERT(dims[0] == N && dims[1] == H && dims[2] == W && dims[3] == 1);
  unsigned char got[N][H * W];
  CU_ASSERT(H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0);
  CU_ASSERT(memcmp(got, pix, sizeof pix) == 0);
  hid_t t = H5Dget_type(d);
  CU_ASSERT(H5Tequal(t, H5T_STD_U8LE) > 0);
  H5Tclose(t);
  hid_t pl = H5Dget_create_plist(d);
  CU_ASSERT(H5Pget_layout(pl) == H5D_CHUNKED);
  H5Pclose(pl);
  double m, s;
  tiny_stats(&m, &s);
  CU_ASSERT_DOUBLE_EQUAL(attr_f(d, "mean", 0), m, 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(attr_f(d, "std", 0), s, 1e-6);
  H5Sclose(sp);
  H5Dclose(d);
  d = H5Dopen2(f, "/labels", H5P_DEFAULT);
  CU_ASSERT_FATAL(d >= 0);
  t = H5Dget_type(d);
  CU_ASSERT(H5Tequal(t, H5T_STD_I32LE) > 0);
  H5Tclose(t);
  int l[N];
  H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, l);
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(l[i], lab[i]);
  H5Dclose(d);
  CU_ASSERT_EQUAL(attr_i(f, "cnnb_version"), 1);
  CU_ASSERT_EQUAL(attr_i(f, "num_classes"), 3);
  H5Fclose(f);
}

static void test_import_gzip_and_raw(void)
{
  for (int gz = 0; gz < 2; gz++) {
    const char *img = tpath(gz ? "i.gz" : "i.raw"), *lbl = tpath(gz ? "l.gz" : "l.raw");
    const char *out = tpath(gz ? "gz.h5" : "raw.h5");
    make_idx(img, lbl, gz, N);
    int rc = cnnb_import_idx(img, lbl, out, NULL);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(!exists(tpath(gz ? "gz.h5.tmp" : "raw.h5.tmp")));
    check_imported(out);
  }
}

static void test_import_class_names_and_limit(void)
{
  const char *img = tpath("i.gz"), *lbl = tpath("l.gz"), *out = tpath("names.h5");
  make_idx(img, lbl, 1, N);
  cnnb_import_opts o;
  cnnb_import_opts_init(&o);
  o.class_names = "cat, dog,bird";
  o.limit = 3;
  CU_ASSERT_EQUAL_FATAL(cnnb_import_idx(img, lbl, out, &o), 0);
  cnnb_dataset *ds;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, out, NULL), 0);
  CU_ASSERT_EQUAL(cnnb_dataset_count(ds), 3);
  CU_ASSERT_EQUAL(cnnb_dataset_num_classes(ds), 3);
  CU_ASSERT_STRING_EQUAL(cnnb_dataset_class_name(ds, 1), "dog");
  CU_ASSERT_STRING_EQUAL(cnnb_dataset_class_name(ds, 2), "bird");
  CU_ASSERT_PTR_NULL(cnnb_dataset_class_name(ds, 3));
  cnnb_dataset_close(ds);
  /* A label beyond the names given is an error, and no output is left. */
  o.class_names = "cat,dog";
  o.limit = 0;
  const char *out2 = tpath("names2.h5");
  CU_ASSERT_EQUAL(cnnb_import_idx(img, lbl, out2, &o), CNNB_EINVAL);
  CU_ASSERT(!exists(out2));
  CU_ASSERT(!exists(tpath("names2.h5.tmp")));
}

/* mode 0: default (preloaded), 1: through HDF5 selections (no preload). */
static void read_rows(int mode)
{
  const char *out = tpath("gz.h5");
  cnnb_dataset *ds;
  cnnb_dataset_opts o;
  cnnb_dataset_opts_init(&o);
  o.cache_mb = mode ? -1 : 0;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, out, &o), 0);
  int h, w, c;
  cnnb_dataset_shape(ds, &h, &w, &c);
  CU_ASSERT(h == H && w == W && c == 1);
  CU_ASSERT_EQUAL(cnnb_dataset_count(ds), N);
  CU_ASSERT_EQUAL(cnnb_dataset_num_classes(ds), 3);
  const int *all = cnnb_dataset_labels(ds);
  CU_ASSERT_FATAL(all != NULL);
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(all[i], lab[i]);
  double m, s;
  tiny_stats(&m, &s);
  long rows[] = {4, 1, 4, 0, 2, 3, 2};
  int n = 7;
  float x[7 * H * W];
  int l[7];
  for (int rep = 0; rep < 2; rep++) { /* twice: the second read reuses the buffers */
    memset(x, 0, sizeof x);
    CU_ASSERT_EQUAL_FATAL(cnnb_dataset_read(ds, rows, n, x, l), 0);
    for (int i = 0; i < n; i++) {
      CU_ASSERT_EQUAL(l[i], lab[rows[i]]);
      for (int p = 0; p < H * W; p++)
        CU_ASSERT_DOUBLE_EQUAL(x[i * H * W + p], (pix[rows[i]][p] / 255.0 - m) / s, 1e-5);
    }
  }
  unsigned char u8[2 * H * W];
  CU_ASSERT_EQUAL(cnnb_dataset_read_u8(ds, 3, 2, u8), 0);
  CU_ASSERT(memcmp(u8, pix[3], sizeof u8) == 0);
  long bad = N;
  CU_ASSERT_EQUAL(cnnb_dataset_read(ds, &bad, 1, x, l), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_dataset_read_u8(ds, 4, 2, u8), CNNB_EINVAL);
  cnnb_dataset_close(ds);

  /* Override: mean 0, std 1 gives plain p/255. */
  o.have_norm = 1;
  o.mean[0] = 0.0f;
  o.std[0] = 1.0f;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, out, &o), 0);
  CU_ASSERT_EQUAL(cnnb_dataset_read(ds, rows, 1, x, NULL), 0);
  for (int p = 0; p < H * W; p++) CU_ASSERT_DOUBLE_EQUAL(x[p], pix[4][p] / 255.0, 1e-6);
  cnnb_dataset_close(ds);
}

static void test_read_rows(void) { read_rows(0); }
static void test_read_rows_hdf5(void) { read_rows(1); }

/* Writes a file shaped like the course exercises' train_signs.h5. */
static void make_course_file(const char *path, int nlabels)
{
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dx[4] = {4, 2, 3, 3}, dy[2] = {1, (hsize_t)nlabels}, dc = 6;
  unsigned char x[4 * 2 * 3 * 3];
  for (int i = 0; i < (int)sizeof x; i++) x[i] = (unsigned char)(i * 5);
  long long y[8] = {5, 0, 2, 1, 3, 3, 3, 3}, cls[6] = {0, 1, 2, 3, 4, 5};
  hid_t s = H5Screate_simple(4, dx, NULL);
  hid_t d = H5Dcreate2(f, "train_set_x", H5T_STD_U8LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
  H5Dclose(d);
  H5Sclose(s);
  s = H5Screate_simple(2, dy, NULL);
  d = H5Dcreate2(f, "train_set_y", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
  H5Dclose(d);
  H5Sclose(s);
  s = H5Screate_simple(1, &dc, NULL);
  d = H5Dcreate2(f, "list_classes", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, cls);
  H5Dclose(d);
  H5Sclose(s);
  H5Fclose(f);
}

static void test_course_file(void)
{
  const char *p = tpath("train_signs.h5");
  make_course_file(p, 4);
  cnnb_dataset_opts o;
  cnnb_dataset_opts_init(&o);
  o.images_name = "train_set_x";
  o.labels_name = "train_set_y";
  cnnb_dataset *ds;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, p, &o), 0);
  int h, w, c;
  cnnb_dataset_shape(ds, &h, &w, &c);
  CU_ASSERT(h == 2 && w == 3 && c == 3);
  CU_ASSERT_EQUAL(cnnb_dataset_count(ds), 4);
  CU_ASSERT_EQUAL(cnnb_dataset_num_classes(ds), 6);
  CU_ASSERT_EQUAL(cnnb_dataset_labels(ds)[0], 5);
  /* No mean/std attributes: plain p/255, NHWC transposed to NCHW. */
  long rows[2] = {2, 0};
  float x[2 * 18];
  int l[2];
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_read(ds, rows, 2, x, l), 0);
  CU_ASSERT(l[0] == 2 && l[1] == 5);
  for (int i = 0; i < 2; i++)
    for (int ch = 0; ch < 3; ch++)
      for (int q = 0; q < 6; q++) {
        int src = (int)rows[i] * 18 + q * 3 + ch;
        CU_ASSERT_DOUBLE_EQUAL(x[i * 18 + ch * 6 + q], (unsigned char)(src * 5) / 255.0, 1e-6);
      }
  cnnb_dataset_close(ds);
  /* Without labels. */
  o.labels_name = "nothing_here";
  o.labels_required = 0;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, p, &o), 0);
  CU_ASSERT_PTR_NULL(cnnb_dataset_labels(ds));
  CU_ASSERT_EQUAL(cnnb_dataset_read(ds, rows, 2, x, NULL), 0);
  CU_ASSERT_EQUAL(cnnb_dataset_read(ds, rows, 2, x, l), CNNB_EINVAL);
  cnnb_dataset_close(ds);
}

static void expect_open_error(const char *path, const cnnb_dataset_opts *o, int code,
                              const char *w1, const char *w2)
{
  cnnb_dataset *ds = (cnnb_dataset *)1;
  cnnb_error_clear();
  int rc = cnnb_dataset_open(&ds, path, o);
  CU_ASSERT_EQUAL(rc, code);
  CU_ASSERT_PTR_NULL(ds);
  const char *m = cnnb_error_message();
  CU_ASSERT_PTR_NOT_NULL(strstr(m, path));
  if (w1) CU_ASSERT_PTR_NOT_NULL(strstr(m, w1));
  if (w2) CU_ASSERT_PTR_NOT_NULL(strstr(m, w2));
  CU_ASSERT_PTR_NULL(strchr(m, '\n'));
}

static void test_errors(void)
{
  expect_open_error(tpath("missing.h5"), NULL, CNNB_EIO, "no such file", NULL);
  const char *txt = tpath("notes.txt");
  FILE *f = fopen(txt, "w");
  fputs("this is not HDF5\n", f);
  fclose(f);
  expect_open_error(txt, NULL, CNNB_EIO, "not an HDF5 file", NULL);
  cnnb_dataset_opts o;
  cnnb_dataset_opts_init(&o);
  o.images_name = "nope";
  expect_open_error(tpath("gz.h5"), &o, CNNB_EIO, "'/nope'", NULL);
  cnnb_dataset_opts_init(&o);
  o.labels_name = "/missing_labels";
  expect_open_error(tpath("gz.h5"), &o, CNNB_EIO, "'/missing_labels'", NULL);
  const char *mm = tpath("mismatch.h5");
  make_course_file(mm, 3);
  cnnb_dataset_opts_init(&o);
  o.images_name = "train_set_x";
  o.labels_name = "train_set_y";
  expect_open_error(mm, &o, CNNB_EIO, "4 images in '/train_set_x' but 3 labels in '/train_set_y'",
                    NULL);
  o.images_name = "train_set_y"; /* int64, not uint8 */
  expect_open_error(mm, &o, CNNB_EIO, "'/train_set_y' is int64", NULL);

  /* Import: missing input, mismatched counts, not IDX; never an output file. */
  const char *img = tpath("e.gz"), *lbl = tpath("el.gz"), *out = tpath("err.h5");
  cnnb_error_clear();
  CU_ASSERT_EQUAL(cnnb_import_idx(tpath("none.gz"), lbl, out, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "none.gz: no such file"));
  make_idx(img, lbl, 1, N - 1);
  CU_ASSERT_EQUAL(cnnb_import_idx(img, lbl, out, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "5 images but"));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "has 4 labels"));
  CU_ASSERT_EQUAL(cnnb_import_idx(txt, lbl, out, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "not an IDX file"));
  /* Truncated image data: the half-written output must go away. */
  unsigned di[3] = {N, H, W};
  write_idx(img, 1, 3, di, pix, sizeof pix - 3);
  make_idx(tpath("ok_i.gz"), lbl, 1, N);
  CU_ASSERT_EQUAL(cnnb_import_idx(img, lbl, out, NULL), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "truncated"));
  CU_ASSERT(!exists(out));
  CU_ASSERT(!exists(tpath("err.h5.tmp")));
}

static void test_outfile(void)
{
  const char *p = tpath("out.h5");
  cnnb_outfile *of;
  CU_ASSERT_EQUAL_FATAL(cnnb_outfile_create(&of, p, MPI_COMM_WORLD), 0);
  CU_ASSERT(exists(tpath("out.h5.tmp")));
  CU_ASSERT_EQUAL(cnnb_outfile_add_f32(of, "probs", 4, 3), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add_i64(of, "pred", 4, 0), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add_f32(of, "probs", 4, 3), CNNB_EINVAL);
  float pr[12];
  for (int i = 0; i < 12; i++) pr[i] = (float)i * 0.5f;
  long long pd[4] = {7, -1, 1LL << 40, 3};
  CU_ASSERT_EQUAL(cnnb_outfile_write_f32(of, "probs", 0, 2, pr), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write_f32(of, "probs", 2, 2, pr + 6), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write_f32(of, "probs", 2, 0, NULL), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write_i64(of, "pred", 0, 4, pd), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write_i64(of, "pred", 3, 2, pd), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_write_i64(of, "probs", 0, 1, pd), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_attr_str(of, "/", "model", "lenet.cfg"), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_attr_i64(of, "pred", "epoch", 12), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_attr_i64(of, "nope", "epoch", 12), CNNB_EINVAL);
  CU_ASSERT(!exists(p));
  CU_ASSERT_EQUAL_FATAL(cnnb_outfile_commit(of), 0);
  CU_ASSERT(exists(p));
  CU_ASSERT(!exists(tpath("out.h5.tmp")));

  hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  CU_ASSERT_EQUAL(attr_i(f, "complete"), 1);
  float gp[12];
  long long gd[4];
  hid_t d = H5Dopen2(f, "probs", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, gp);
  H5Dclose(d);
  CU_ASSERT(memcmp(gp, pr, sizeof pr) == 0);
  d = H5Dopen2(f, "pred", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, gd);
  CU_ASSERT_EQUAL(attr_i(d, "epoch"), 12);
  H5Dclose(d);
  CU_ASSERT(memcmp(gd, pd, sizeof pd) == 0);
  char *model = NULL;
  hid_t a = H5Aopen(f, "model", H5P_DEFAULT);
  hid_t st = H5Aget_type(a);
  CU_ASSERT(H5Aread(a, st, &model) >= 0);
  CU_ASSERT_STRING_EQUAL(model, "lenet.cfg");
  H5free_memory(model);
  H5Tclose(st);
  H5Aclose(a);
  H5Fclose(f);

  /* Abort leaves nothing behind. */
  const char *q = tpath("aborted.h5");
  CU_ASSERT_EQUAL_FATAL(cnnb_outfile_create(&of, q, MPI_COMM_WORLD), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add_f32(of, "grp/x", 10, 0), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write_f32(of, "grp/x", 0, 2, pr), 0);
  cnnb_outfile_abort(of);
  CU_ASSERT(!exists(q));
  CU_ASSERT(!exists(tpath("aborted.h5.tmp")));
}

/* N-D datasets through the general calls: a uint8 N x H x W x C grid written in two row ranges,
 * a 1-D int64 one, a float64 attribute; types, shapes and values read back, and the typed
 * wrappers and bad shapes refused. */
static void test_outfile_nd(void)
{
  const char *p = tpath("grid.h5");
  cnnb_outfile *of;
  enum { R = 3, GH = 2, GW = 4, GC = 3, RS = GH * GW * GC };
  const int dims[3] = {GH, GW, GC}, bad[2] = {2, 0};
  unsigned char px[R * RS];
  for (int i = 0; i < R * RS; i++) px[i] = (unsigned char)(i * 7 + 3);
  long long ix[R] = {-5, 0, 1LL << 50};
  CU_ASSERT_EQUAL_FATAL(cnnb_outfile_create(&of, p, MPI_COMM_WORLD), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add(of, "img/grid", CNNB_OUT_U8, R, 3, dims), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add(of, "ix", CNNB_OUT_I64, R, 0, NULL), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_add(of, "empty", CNNB_OUT_F32, R, 2, bad), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_add(of, "deep", CNNB_OUT_F32, R, CNNB_OUT_MAX_NDIM + 1, dims), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_write(of, "img/grid", 0, 1, px), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write(of, "img/grid", 1, 2, px + RS), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_write(of, "img/grid", 2, 2, px), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_write_f32(of, "img/grid", 0, 1, (const float *)(void *)px), CNNB_EINVAL);
  CU_ASSERT_EQUAL(cnnb_outfile_write(of, "ix", 0, R, ix), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_attr_f64(of, "/", "alpha", 0.1), 0);
  CU_ASSERT_EQUAL(cnnb_outfile_attr_f64(of, "img/grid", "scale", -2.5e-300), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_outfile_commit(of), 0);

  hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  CU_ASSERT_EQUAL(attr_i(f, "complete"), 1);
  hid_t d = H5Dopen2(f, "img/grid", H5P_DEFAULT);
  CU_ASSERT_FATAL(d >= 0);
  hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
  CU_ASSERT(H5Tequal(t, H5T_STD_U8LE) > 0);
  hsize_t got[4] = {0};
  CU_ASSERT_EQUAL(H5Sget_simple_extent_dims(sp, got, NULL), 4);
  CU_ASSERT(got[0] == R && got[1] == GH && got[2] == GW && got[3] == GC);
  H5Sclose(sp);
  H5Tclose(t);
  unsigned char back[R * RS];
  CU_ASSERT(H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
  CU_ASSERT(memcmp(back, px, sizeof px) == 0);
  double v = 0;
  hid_t a = H5Aopen(d, "scale", H5P_DEFAULT);
  t = H5Aget_type(a);
  CU_ASSERT(H5Tequal(t, H5T_IEEE_F64LE) > 0);
  CU_ASSERT(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
  CU_ASSERT_EQUAL(v, -2.5e-300);
  H5Tclose(t);
  H5Aclose(a);
  H5Dclose(d);
  a = H5Aopen(f, "alpha", H5P_DEFAULT);
  CU_ASSERT(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
  CU_ASSERT_EQUAL(v, 0.1);
  H5Aclose(a);
  d = H5Dopen2(f, "ix", H5P_DEFAULT);
  sp = H5Dget_space(d);
  CU_ASSERT_EQUAL(H5Sget_simple_extent_ndims(sp), 1);
  H5Sclose(sp);
  long long ib[R];
  CU_ASSERT(H5Dread(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, ib) >= 0);
  CU_ASSERT(memcmp(ib, ix, sizeof ix) == 0);
  H5Dclose(d);
  CU_ASSERT(H5Lexists(f, "empty", H5P_DEFAULT) == 0);
  H5Fclose(f);
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_fashion_mnist(void)
{
  if (!exists(FMNIST) || !exists(FMNIST_LABELS)) {
    fprintf(stderr, "\n  (skipped: %s not installed)\n", FMNIST);
    return;
  }
  const char *out = tpath("fmnist_t10k.h5");
  double t0 = now();
  CU_ASSERT_EQUAL_FATAL(cnnb_import_idx(FMNIST, FMNIST_LABELS, out, NULL), 0);
  double t1 = now();
  cnnb_dataset *ds;
  CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, out, NULL), 0);
  int h, w, c;
  cnnb_dataset_shape(ds, &h, &w, &c);
  CU_ASSERT_EQUAL(cnnb_dataset_count(ds), 10000);
  CU_ASSERT(h == 28 && w == 28 && c == 1);
  CU_ASSERT_EQUAL(cnnb_dataset_num_classes(ds), 10);
  float m, s;
  cnnb_dataset_norm(ds, &m, &s);
  /* Computed independently: mean 0.2868493, std 0.3524442 over t10k pixels / 255. */
  CU_ASSERT(m > 0.28684f && m < 0.28686f);
  CU_ASSERT(s > 0.35243f && s < 0.35245f);
  int counts[10] = {0};
  for (int i = 0; i < 10000; i++) counts[cnnb_dataset_labels(ds)[i]]++;
  for (int k = 0; k < 10; k++) CU_ASSERT_EQUAL(counts[k], 1000);

  cnnb_dataset_close(ds);
  fprintf(stderr, "\n  fashion-mnist t10k: import %.2f s", t1 - t0);
  CU_ASSERT(t1 - t0 < 20.0);

  /* Random minibatches of 128 over the whole set, as training does, preloaded and through
   * HDF5; both must give the same numbers. */
  enum { B = 128, STEPS = 50 };
  static float x[2][B * 784];
  long rows[B];
  int l[B];
  for (int mode = 0; mode < 2; mode++) {
    cnnb_dataset_opts o;
    cnnb_dataset_opts_init(&o);
    o.cache_mb = mode ? -1 : 0;
    CU_ASSERT_EQUAL_FATAL(cnnb_dataset_open(&ds, out, &o), 0);
    unsigned seed = 12345;
    double t2 = now();
    for (int step = 0; step < STEPS; step++) {
      for (int i = 0; i < B; i++) {
        seed = seed * 1103515245u + 12345u;
        rows[i] = (long)((seed >> 8) % 10000);
      }
      CU_ASSERT_EQUAL_FATAL(cnnb_dataset_read(ds, rows, B, x[mode], l), 0);
    }
    double t3 = now();
    fprintf(stderr, ", %s: %.0f images/s", mode ? "hdf5" : "preloaded", STEPS * B / (t3 - t2));
    CU_ASSERT(t3 - t2 < 20.0);
    cnnb_dataset_close(ds);
  }
  fprintf(stderr, "\n");
  CU_ASSERT(memcmp(x[0], x[1], sizeof x[0]) == 0);
  /* Normalised data has mean near 0 and std near 1. */
  double mean = 0, sq = 0;
  for (int i = 0; i < B * 784; i++) {
    mean += x[0][i];
    sq += x[0][i] * x[0][i];
  }
  mean /= B * 784;
  sq = sqrt(sq / (B * 784) - mean * mean);
  CU_ASSERT(fabs(mean) < 0.1);
  CU_ASSERT(fabs(sq - 1.0) < 0.1);
  remove(out);
}

static void fill_tiny(void)
{
  for (int i = 0; i < N; i++) {
    lab[i] = (unsigned char)(i % 3);
    for (int p = 0; p < H * W; p++) pix[i][p] = (unsigned char)((i * 71 + p * 13 + 5) % 256);
  }
}

static void cleanup_dir(void)
{
  static const char *names[] = {"i.gz", "l.gz", "i.raw", "l.raw", "gz.h5", "raw.h5", "names.h5",
                                "train_signs.h5", "notes.txt", "mismatch.h5", "e.gz", "el.gz",
                                "ok_i.gz", "out.h5", "fmnist_t10k.h5", NULL};
  for (int i = 0; names[i]; i++) remove(tpath(names[i]));
  rmdir(dir);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  fill_tiny();
  snprintf(dir, sizeof dir, "/tmp/cnnb_test_data.XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    MPI_Finalize();
    return 1;
  }
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("data", NULL, NULL);
  CU_add_test(s, "import gzip and raw IDX", test_import_gzip_and_raw);
  CU_add_test(s, "import class names and limit", test_import_class_names_and_limit);
  CU_add_test(s, "read unsorted and duplicate rows", test_read_rows);
  CU_add_test(s, "read rows through HDF5 selections", test_read_rows_hdf5);
  CU_add_test(s, "course exercise file", test_course_file);
  CU_add_test(s, "error messages", test_errors);
  CU_add_test(s, "output file commit and abort", test_outfile);
  CU_add_test(s, "output file N-D uint8 and float64 attribute", test_outfile_nd);
  CU_add_test(s, "fashion-mnist t10k", test_fashion_mnist);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  cleanup_dir();
  MPI_Finalize();
  return fails ? 1 : 0;
}
