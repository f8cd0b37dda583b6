/* cnn-batch map: mean average precision of a detections file (cnn-batch detect) against the
 * truths stored in its image set (/truth, /truth_offsets; docs/FORMATS.md "Image sets").
 * Rank 0 does the work. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "io/h5util.h"

/* Reads a whole dataset as int64 (f32 = 0) or float (f32 = 1); *n gets its element count. */
static int read_all(hid_t f, const char *file, const char *name, int f32, void **out, long *n)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: no dataset /%s", file, name);
  hid_t sp = H5Dget_space(d);
  hssize_t cnt = H5Sget_simple_extent_npoints(sp);
  H5Sclose(sp);
  void *buf = malloc((size_t)(cnt > 0 ? cnt : 1) * 8);
  int bad = !buf || (cnt > 0 && H5Dread(d, f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                                        H5P_DEFAULT, buf) < 0);
  H5Dclose(d);
  if (bad) {
    free(buf);
    return cnnb_error(CNNB_EIO, "%s: cannot read /%s", file, name);
  }
  *out = buf, *n = (long)cnt;
  return 0;
}

static int compute(const char *dets, const char *data, double iou, int *nclasses_out)
{
  cnnb_h5_quiet();
  int rc = cnnb_h5_check_file(dets);
  if (!rc) rc = cnnb_h5_check_file(data);
  if (rc) return rc;
  hid_t fd = H5Fopen(dets, H5F_ACC_RDONLY, H5P_DEFAULT), fi = H5Fopen(data, H5F_ACC_RDONLY, H5P_DEFAULT);
  long long *doff = NULL, *dcls = NULL, *toff = NULL;
  float *score = NULL, *box = NULL, *truth = NULL;
  double *ap = NULL;
  long nd1, nc, ns, nb, nt1, nt;
  if (fd < 0 || fi < 0) {
    rc = cnnb_error(CNNB_EIO, "cannot open %s or %s", dets, data);
    goto done;
  }
  if ((rc = read_all(fd, dets, "offsets", 0, (void **)&doff, &nd1)) || (rc = read_all(fd, dets, "class", 0, (void **)&dcls, &nc)) ||
      (rc = read_all(fd, dets, "score", 1, (void **)&score, &ns)) || (rc = read_all(fd, dets, "box", 1, (void **)&box, &nb)) ||
      (rc = read_all(fi, data, "truth_offsets", 0, (void **)&toff, &nt1)) || (rc = read_all(fi, data, "truth", 1, (void **)&truth, &nt)))
    goto done;
  const long N = nd1 - 1;
  if (N < 0 || nt1 != nd1 || doff[N] != nc || nc != ns || 4 * nc != nb || toff[N] * 5 != nt) {
    rc = cnnb_error(CNNB_EINVAL, "%s (%ld images) and %s (%ld images) do not match, or their sizes are inconsistent",
                    dets, N, data, nt1 - 1);
    goto done;
  }
  int K = 0;
  for (long i = 0; i < nc; i++) K = dcls[i] + 1 > K ? (int)dcls[i] + 1 : K;
  for (long t = 0; t < nt / 5; t++) K = (int)truth[5 * t + 4] + 1 > K ? (int)truth[5 * t + 4] + 1 : K;
  ap = malloc(sizeof *ap * (size_t)(K ? K : 1));
  double map = NAN;
  if (!ap) {
    rc = cnnb_error(CNNB_ENOMEM, "out of memory");
    goto done;
  }
  if ((rc = cnnb_detect_map(N, doff, dcls, score, box, toff, truth, K, (float)iou, ap, &map))) goto done;
  for (int k = 0; k < K; k++)
    if (!isnan(ap[k])) printf("class %d AP: %.4f\n", k, ap[k]);
  printf("images: %ld\nmAP@%.2g: %.4f\n", N, iou, map);
  *nclasses_out = K;
done:
  if (fd >= 0) H5Fclose(fd);
  if (fi >= 0) H5Fclose(fi);
  free(doff), free(dcls), free(toff), free(score), free(box), free(truth), free(ap);
  return rc;
}

int cnnb_cmd_map(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch map DETS.h5 --data IMGS.h5 [--iou 0.5]\n"
    "Mean average precision of detect's output against the image set's /truth boxes: per class\n"
    "all-point interpolated AP (VOC 2010 on), and 'mAP@0.5: 0.xxxx' over the classes with truths.";
  const char *data = NULL, *iou_s = "0.5";
  cnnb_opt opts[] = {{"data", "FILE", "image set with /truth and /truth_offsets", &data, NULL},
                     {"iou", "T", "IoU a detection needs with a truth (default 0.5)", &iou_s, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  double iou;
  if (npos != 1 || !data) {
    fprintf(stderr, "cnn-batch map: needs DETS.h5 and --data\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  if (cnnb_arg_float("map", "iou", iou_s, 0, 1, &iou)) return CNNB_EXIT_USAGE;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  int k = 0, rc = d.rank == 0 ? compute(pos[0], data, iou, &k) : 0;
  rc = cnnb_dist_agree(&d, rc);
  if (rc) {
    cnnb_job_fail(&d, "map");
    return CNNB_EXIT_FAIL;
  }
  return CNNB_EXIT_OK;
}
