/* cnn-batch filter: a hand-made kernel over every image of a dataset, rows split over ranks, the
 * filtered images written by all ranks into one HDF5 file (and optionally PNG files). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/imgcmd.h"
#include "cmd/job.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/filter.h"
#include "cnnb/image.h"

/* Creates DIR on rank 0 (an existing directory is fine); collective. */
int cnnb_cmd_make_png_dir(const cnnb_dist *d, const char *dir)
{
  int rc = 0;
  if (d->rank == 0 && mkdir(dir, 0777) != 0 && errno != EEXIST)
    rc = cnnb_error(CNNB_EIO, "%s: cannot create the PNG directory: %s", dir, strerror(errno));
  return cnnb_dist_agree(d, rc);
}

/* PNG of one filtered image (NHWC floats): |response| scaled so that the image's largest
 * magnitude is 255, since responses are signed and their range depends on the kernel. Two or
 * four channels become one grey image of the largest magnitude over channels. */
static int write_png(const char *dir, long row, const float *hwc, int h, int w, int c, unsigned char *buf)
{
  int pc = c == 3 ? 3 : 1;
  float mx = 0;
  for (size_t i = 0; i < (size_t)h * w * c; i++) mx = fmaxf(mx, fabsf(hwc[i]));
  float s = mx > 0 ? 255.f / mx : 0.f;
  for (size_t p = 0; p < (size_t)h * w; p++) {
    if (pc == c) {
      for (int k = 0; k < c; k++) buf[p * c + k] = (unsigned char)lrintf(fabsf(hwc[p * c + k]) * s);
    } else {
      float m = 0;
      for (int k = 0; k < c; k++) m = fmaxf(m, fabsf(hwc[p * c + k]));
      buf[p] = (unsigned char)lrintf(m * s);
    }
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%06ld.png", dir, row);
  return cnnb_png_write(path, buf, h, w, pc);
}

int cnnb_cmd_filter(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch filter --kernel vertical|horizontal|sobel|scharr|FILE --data IMGS.h5 -o OUT.h5\n"
    "                        [--stride S] [--pad P] [--png DIR]\n"
    "Filters every channel of every image with the kernel (cross-correlation on pixel values 0-255, as in\n"
    "the course notes) through a depthwise [convolutional] layer; writes /filtered (N x H' x W' x C float32).";
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  const char *kspec = NULL, *data = NULL, *out = NULL, *png = NULL, *images_name = NULL;
  const char *stride_s = "1", *pad_s = "0", *batch_s = "64", *limit_s = "0";
  cnnb_opt opts[] = {
    {"kernel", "K", "vertical, horizontal, sobel, scharr, or a kernel file (k rows of k numbers)", &kspec, NULL},
    {"data", "FILE", "images in HDF5 (a dataset file)", &data, NULL},
    {"output", "FILE", "output HDF5 file (-o)", &out, NULL},
    {"stride", "S", "step of the kernel (default 1)", &stride_s, NULL},
    {"pad", "P", "zeros added on every side (default 0: 'valid')", &pad_s, NULL},
    {"png", "DIR", "also write DIR/NNNNNN.png per image (|response| scaled to 0-255)", &png, NULL},
    {"batch", "B", "images per forward on each rank (default 64)", &batch_s, NULL},
    {"limit", "N", "only the first N images", &limit_s, NULL},
    {"images-name", "NAME", "images dataset (default images)", &images_name, NULL},
    {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos;
  int prc = cnnb_args_parse(argc, argv, usage, opts, pos, 0, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  long stride, pad, B, limit;
  if (!kspec || !data || !out) {
    fprintf(stderr, "cnn-batch filter: needs --kernel, --data and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  if (cnnb_arg_long("filter", "stride", stride_s, 1, 4096, &stride) ||
      cnnb_arg_long("filter", "pad", pad_s, 0, 4096, &pad) || cnnb_arg_long("filter", "batch", batch_s, 1, 1 << 16, &B) ||
      cnnb_arg_long("filter", "limit", limit_s, 0, 1L << 40, &limit))
    return CNNB_EXIT_USAGE;

  cnnb_kernel k;
  cnnb_dataset *ds = NULL;
  cnnb_net *net = NULL;
  cnnb_outfile *of = NULL;
  unsigned char *u8 = NULL, *pbuf = NULL;
  float *x = NULL, *y = NULL;
  int h = 0, w = 0, c = 0;
  int rc = cnnb_kernel_get(kspec, &k);
  if (!rc) {
    cnnb_dataset_opts o;
    cnnb_dataset_opts_init(&o);
    o.images_name = images_name;
    o.labels_required = 0;
    rc = cnnb_dataset_open(&ds, data, &o);
  }
  if (!rc) {
    cnnb_dataset_shape(ds, &h, &w, &c);
    rc = cnnb_filter_net(&net, &k, h, w, c, (int)stride, (int)pad, (int)B);
  }
  rc = cnnb_dist_agree(&d, rc);
  if (!rc && png) rc = cnnb_cmd_make_png_dir(&d, png);
  if (rc) goto done;
  long n = cnnb_dataset_count(ds);
  if (limit && limit < n) n = limit;
  const int oh = net->layers[0].out.h, ow = net->layers[0].out.w;
  const size_t in_sz = (size_t)h * w * c, out_sz = (size_t)oh * ow * c;
  long lo, hi;
  cnnb_dist_slice(&d, n, &lo, &hi);
  char ktext[8192];
  size_t kl = 0;
  for (int i = 0; i < k.size; i++)
    for (int j = 0; j < k.size && kl < sizeof ktext - 32; j++)
      kl += (size_t)snprintf(ktext + kl, sizeof ktext - kl, "%g%c", k.w[i * k.size + j], j + 1 < k.size ? ' ' : '\n');
  int dims[3] = {oh, ow, c};
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add(of, "filtered", CNNB_OUT_F32, n, 3, dims);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "kernel", ktext);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "kernel_name", k.name);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "stride", stride);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "padding", pad);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", data);
  if (rc) goto done;
  u8 = malloc((size_t)B * in_sz);
  x = malloc((size_t)B * in_sz * sizeof *x);
  y = malloc((size_t)B * out_sz * sizeof *y);
  pbuf = png ? malloc(out_sz) : NULL;
  int lrc = !u8 || !x || !y || (png && !pbuf) ? cnnb_error(CNNB_ENOMEM, "out of memory for a batch of %ld images", B) : 0;
  /* Every rank makes the same number of collective writes, some of 0 rows. */
  long my = hi - lo, most = (n + d.size - 1) / d.size;
  for (long s = 0; s < most && !rc; s += B) {
    long r0 = lo + s, m = s < my ? (my - s < B ? my - s : B) : 0;
    if (!lrc && m > 0) lrc = cnnb_dataset_read_u8(ds, r0, (int)m, u8);
    if (!lrc && m > 0) {
      /* NHWC pixels 0-255 -> NCHW floats: the notes filter raw pixel values */
      for (long i = 0; i < m; i++)
        for (int ch = 0; ch < c; ch++)
          for (int p = 0; p < h * w; p++) x[(size_t)i * in_sz + (size_t)ch * h * w + p] = u8[(size_t)i * in_sz + (size_t)p * c + ch];
      const float *o = cnnb_net_forward(net, x, (int)m);
      for (long i = 0; i < m; i++)
        for (int ch = 0; ch < c; ch++)
          for (int p = 0; p < oh * ow; p++) y[(size_t)i * out_sz + (size_t)p * c + ch] = o[(size_t)i * out_sz + (size_t)ch * oh * ow + p];
      for (long i = 0; png && !lrc && i < m; i++) lrc = write_png(png, r0 + i, y + (size_t)i * out_sz, oh, ow, c, pbuf);
    }
    rc = cnnb_dist_agree(&d, lrc);
    if (!rc) rc = cnnb_outfile_write(of, "filtered", m ? r0 : 0, m, y);
  }
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc && d.rank == 0)
    printf("wrote %s: %ld images filtered by %s (%dx%d, stride %ld, padding %ld) -> %dx%dx%d\n", out, n, k.name, k.size,
           k.size, stride, pad, oh, ow, c);
done:
  if (rc) cnnb_job_fail(&d, "filter");
  cnnb_outfile_abort(of);
  free(u8);
  free(x);
  free(y);
  free(pbuf);
  cnnb_net_free(net);
  cnnb_dataset_close(ds);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
