/* Detection training data (include/cnnb/boxdata.h): an image set's pixels through Darknet's
 * letterbox, and its /truth boxes mapped from the photo's pixels to the network input the way
 * cnnb_detect_unletterbox maps detections back, so that training and `detect` agree on where a
 * box is. */
#include "cnnb/boxdata.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/imageset.h"
#include "io/h5util.h"
#include "layers/heads.h"

#define BOXDATA_CACHE_BYTES (512ull << 20)

struct cnnb_boxdata {
  char *path;
  cnnb_imageset *set;
  long n;
  float *truth;          /* M x 5, pixels */
  long long *toff;       /* N + 1 */
  unsigned char *pixels; /* all images end to end when they fit BOXDATA_CACHE_BYTES, else NULL */
  size_t *poff;          /* each image's first byte in pixels */
  unsigned char *img;    /* one image, when not cached */
  float *scratch;        /* letterbox scratch for the largest image */
  int nc, nh, nw;        /* network input */
  int warned;
};

int cnnb_boxdata_wanted(const cnnb_net *net)
{
  int na, nc;
  const cnnb_layer *l = cnnb_net_output_layer(net);
  return cnnb_yolo_info(l, &na, &nc) || cnnb_region_info(l, &na, &nc);
}

void cnnb_boxdata_close(cnnb_boxdata *bd)
{
  if (!bd) return;
  cnnb_imageset_close(bd->set);
  free(bd->truth);
  free(bd->toff);
  free(bd->pixels);
  free(bd->poff);
  free(bd->img);
  free(bd->scratch);
  free(bd->path);
  free(bd);
}

/* Reads the whole dataset name of f as type into a new buffer; *dims gets its shape. */
static int read_ds(hid_t f, const char *path, const char *name, hid_t type, int want_ndim, void **out,
                   hsize_t *dims)
{
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
    return cnnb_error(CNNB_EIO,
                      "%s: no dataset /%s: detection training and eval --map need truth boxes (/truth M x 5 and "
                      "/truth_offsets N+1, docs/FORMATS.md \"Image sets\"; tools/make_scenes writes them)",
                      path, name);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: cannot open /%s", path, name);
  hid_t sp = H5Dget_space(d);
  int nd = H5Sget_simple_extent_ndims(sp);
  dims[0] = dims[1] = 0;
  if (nd == want_ndim) H5Sget_simple_extent_dims(sp, dims, NULL);
  H5Sclose(sp);
  if (nd != want_ndim || (want_ndim == 2 && dims[1] != 5)) {
    H5Dclose(d);
    return cnnb_error(CNNB_ESHAPE, "%s: /%s must be %s", path, name, want_ndim == 2 ? "M x 5" : "1-D (N + 1)");
  }
  size_t cnt = (size_t)dims[0] * (want_ndim == 2 ? 5 : 1);
  void *buf = malloc((cnt ? cnt : 1) * 8);
  int bad = !buf || (cnt && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0);
  H5Dclose(d);
  if (bad) {
    free(buf);
    return cnnb_error(CNNB_EIO, "%s: cannot read /%s", path, name);
  }
  *out = buf;
  return 0;
}

/* Every truth inside its image, with a positive size and a class of the model. */
static int check_truths(const cnnb_boxdata *bd, long m, int classes, const char *model)
{
  const char *p = bd->path;
  if (bd->toff[0] != 0 || bd->toff[bd->n] != m)
    return cnnb_error(CNNB_EINVAL,
                      "%s: /truth_offsets must run from 0 to the %ld rows of /truth (it runs from %lld to %lld)", p, m,
                      bd->toff[0], bd->toff[bd->n]);
  for (long i = 0; i < bd->n; i++) /* all offsets first: they index /truth below */
    if (bd->toff[i + 1] < bd->toff[i])
      return cnnb_error(CNNB_EINVAL, "%s: /truth_offsets row %ld (%lld) is below row %ld (%lld)", p, i + 1,
                        bd->toff[i + 1], i, bd->toff[i]);
  for (long i = 0; i < bd->n; i++) {
    int h, w;
    cnnb_imageset_size(bd->set, i, &h, &w);
    for (long long r = bd->toff[i]; r < bd->toff[i + 1]; r++) {
      const float *t = bd->truth + 5 * r;
      const float s = 0.5f; /* generators round box edges; half a pixel is not outside */
      if (!(t[2] > 0 && t[3] > 0 && t[0] - t[2] / 2 >= -s && t[1] - t[3] / 2 >= -s && t[0] + t[2] / 2 <= w + s &&
            t[1] + t[3] / 2 <= h + s))
        return cnnb_error(CNNB_EINVAL,
                          "%s: /truth row %lld (image %ld): box x %g y %g w %g h %g is empty or reaches outside the "
                          "%d x %d image",
                          p, r, i, t[0], t[1], t[2], t[3], w, h);
      if (!(t[4] >= 0 && t[4] < classes && t[4] == floorf(t[4])))
        return cnnb_error(CNNB_EINVAL, "%s: /truth row %lld (image %ld): class %g is not one of the %d classes of %s",
                          p, r, i, t[4], classes, model);
    }
  }
  return 0;
}

int cnnb_boxdata_open(cnnb_boxdata **out, const char *path, const cnnb_net *net)
{
  *out = NULL;
  cnnb_boxdata *bd = calloc(1, sizeof *bd);
  if (!bd || !(bd->path = strdup(path))) {
    free(bd);
    return cnnb_error(CNNB_ENOMEM, "out of memory");
  }
  int rc = cnnb_imageset_open(&bd->set, path);
  if (rc) {
    if (strstr(cnnb_error_message(), "not an image set"))
      cnnb_error(rc, "%s: not an image set (/pixels, /offsets, /shapes) with truth boxes: %s trains on boxes "
                 "(docs/FORMATS.md \"Image sets\")", path, net->cfg.path);
    goto fail;
  }
  bd->n = cnnb_imageset_count(bd->set);
  bd->nc = net->in.c, bd->nh = net->in.h, bd->nw = net->in.w;
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot open", path);
    goto fail;
  }
  hsize_t dt[2], doff[2];
  rc = read_ds(f, path, "truth", H5T_NATIVE_FLOAT, 2, (void **)&bd->truth, dt);
  if (!rc) rc = read_ds(f, path, "truth_offsets", H5T_NATIVE_LLONG, 1, (void **)&bd->toff, doff);
  H5Fclose(f);
  if (rc) goto fail;
  if ((long)doff[0] != bd->n + 1) {
    rc = cnnb_error(CNNB_ESHAPE, "%s: /truth_offsets has %llu rows, expected images + 1 = %ld", path,
                    (unsigned long long)doff[0], bd->n + 1);
    goto fail;
  }
  if ((rc = check_truths(bd, (long)dt[0], cnnb_detect_num_classes(net), net->cfg.path))) goto fail;
  size_t total = 0, most = 1;
  int hmax = 1;
  for (long i = 0; i < bd->n; i++) {
    int h, w;
    cnnb_imageset_size(bd->set, i, &h, &w);
    total += (size_t)h * w * 3;
    if ((size_t)h * w * 3 > most) most = (size_t)h * w * 3;
    if (h > hmax) hmax = h;
  }
  bd->scratch = malloc(sizeof(float) * cnnb_letterbox_scratch(hmax, bd->nh, bd->nw, bd->nc));
  if (!bd->scratch) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
    goto fail;
  }
  if (total <= BOXDATA_CACHE_BYTES) { /* one pass in file order, served from HDF5's chunk cache */
    bd->pixels = malloc(total ? total : 1);
    bd->poff = malloc(sizeof *bd->poff * (size_t)(bd->n ? bd->n : 1));
    if (!bd->pixels || !bd->poff) {
      rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for %zu bytes of pixels", path, total);
      goto fail;
    }
    size_t o = 0;
    for (long i = 0; i < bd->n && !rc; i++) {
      int h, w;
      cnnb_imageset_size(bd->set, i, &h, &w);
      bd->poff[i] = o;
      rc = cnnb_imageset_read(bd->set, i, bd->pixels + o);
      o += (size_t)h * w * 3;
    }
    if (rc) goto fail;
  } else if (!(bd->img = malloc(most))) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
    goto fail;
  }
  *out = bd;
  return 0;
fail:
  cnnb_boxdata_close(bd);
  return rc;
}

long cnnb_boxdata_count(const cnnb_boxdata *bd) { return bd->n; }
const char *cnnb_boxdata_path(const cnnb_boxdata *bd) { return bd->path; }

void cnnb_boxdata_image(const cnnb_boxdata *bd, long i, int *h, int *w, const float **truth, int *n)
{
  cnnb_imageset_size(bd->set, i, h, w);
  *truth = bd->truth + 5 * bd->toff[i];
  *n = (int)(bd->toff[i + 1] - bd->toff[i]);
}

int cnnb_boxdata_read(cnnb_boxdata *bd, const long *rows, int n, float *x, float *truth)
{
  const size_t in = (size_t)bd->nc * bd->nh * bd->nw;
  for (int k = 0; k < n; k++) {
    const long i = rows[k];
    if (i < 0 || i >= bd->n) return cnnb_error(CNNB_EINVAL, "%s: row %ld outside the %ld images", bd->path, i, bd->n);
    int h, w;
    cnnb_imageset_size(bd->set, i, &h, &w);
    const unsigned char *px = bd->pixels ? bd->pixels + bd->poff[i] : bd->img;
    if (!bd->pixels) {
      int rc = cnnb_imageset_read(bd->set, i, bd->img);
      if (rc) return rc;
    }
    cnnb_letterbox(px, h, w, 3, x + k * in, bd->nh, bd->nw, bd->nc, bd->scratch);
    if (!truth) continue;
    float *t = truth + (size_t)k * CNNB_YOLO_MAX_TRUTH * 5;
    memset(t, 0, sizeof(float) * CNNB_YOLO_MAX_TRUTH * 5);
    /* The inverse of cnnb_detect_unletterbox: the photo occupies new_w x new_h of the input,
     * centred. */
    int new_w, new_h;
    if ((float)bd->nw / w < (float)bd->nh / h)
      new_w = bd->nw, new_h = (h * bd->nw) / w;
    else
      new_h = bd->nh, new_w = (w * bd->nh) / h;
    const double sx = (double)new_w / bd->nw, sy = (double)new_h / bd->nh;
    const double ox = (bd->nw - new_w) / 2. / bd->nw, oy = (bd->nh - new_h) / 2. / bd->nh;
    long long nt = bd->toff[i + 1] - bd->toff[i];
    if (nt > CNNB_YOLO_MAX_TRUTH) {
      if (!bd->warned++)
        cnnb_log(CNNB_LOG_WARN, "%s: image %ld has %lld truths; training uses the first %d", bd->path, i, nt,
                 CNNB_YOLO_MAX_TRUTH);
      nt = CNNB_YOLO_MAX_TRUTH;
    }
    for (long long r = 0; r < nt; r++) {
      const float *s = bd->truth + 5 * (bd->toff[i] + r);
      t[5 * r] = (float)(s[0] / w * sx + ox);
      t[5 * r + 1] = (float)(s[1] / h * sy + oy);
      t[5 * r + 2] = (float)(s[2] / w * sx);
      t[5 * r + 3] = (float)(s[3] / h * sy);
      t[5 * r + 4] = s[4];
    }
  }
  return 0;
}

void cnnb_boxdata_augment(const cnnb_augment *a, float *truth, int n, cnnb_shape s, uint64_t seed, uint64_t epoch,
                          uint64_t step, long pos0)
{
  if (!a->crop_pad && !a->flip) return;
  const float W = (float)s.w, H = (float)s.h;
  for (int i = 0; i < n; i++) {
    int dx, dy, flip;
    cnnb_augment_draw(a, seed, epoch, step, pos0 + i, &dx, &dy, &flip);
    if (!dx && !dy && !flip) continue;
    float *t = truth + (size_t)i * CNNB_YOLO_MAX_TRUTH * 5;
    int k = 0;
    for (int r = 0; r < CNNB_YOLO_MAX_TRUTH && t[5 * r + 2] > 0; r++) {
      /* Input column u (continuous, pixel j covers [j, j+1)) lands at u - dx, mirrored at
       * W - u + dx; rows at v - dy. */
      float x0 = (t[5 * r] - t[5 * r + 2] / 2) * W, x1 = (t[5 * r] + t[5 * r + 2] / 2) * W;
      float y0 = (t[5 * r + 1] - t[5 * r + 3] / 2) * H - dy, y1 = (t[5 * r + 1] + t[5 * r + 3] / 2) * H - dy;
      if (flip) {
        float a0 = W - x1 + dx, a1 = W - x0 + dx;
        x0 = a0, x1 = a1;
      } else {
        x0 -= dx, x1 -= dx;
      }
      x0 = fmaxf(x0, 0), y0 = fmaxf(y0, 0), x1 = fminf(x1, W), y1 = fminf(y1, H);
      if (x1 - x0 < 1 || y1 - y0 < 1) continue;
      float *o = t + 5 * k++;
      const float cls = t[5 * r + 4];
      o[0] = (x0 + x1) / 2 / W, o[1] = (y0 + y1) / 2 / H, o[2] = (x1 - x0) / W, o[3] = (y1 - y0) / H, o[4] = cls;
    }
    memset(t + 5 * k, 0, sizeof(float) * 5 * (CNNB_YOLO_MAX_TRUTH - k));
  }
}

int cnnb_boxdata_map(const cnnb_dist *d, cnnb_net *net, cnnb_boxdata *bd, long n, float thresh, float nms,
                     float iou, double *ap, double *map)
{
  long total = bd->n;
  if (n <= 0 || n > total) n = total;
  long lo, hi;
  cnnb_dist_slice(d, n, &lo, &hi);
  const int B = net->max_batch, K = cnnb_detect_num_classes(net);
  const size_t in = cnnb_shape_size(net->in), cap = cnnb_detect_capacity(net);
  float *x = malloc(sizeof *x * (size_t)B * in);
  long *rows = malloc(sizeof *rows * (size_t)B);
  cnnb_det *dets = malloc(sizeof *dets * (cap ? cap : 1));
  /* My detections: per image a count, then rows of class, score, x, y, w, h (pixels). */
  int *cnt = calloc((size_t)(hi - lo + 1), sizeof *cnt);
  size_t nr = 0, rcap = 1024;
  float *mine = malloc(sizeof *mine * 6 * rcap);
  int rc = !x || !rows || !dets || !cnt || !mine ? cnnb_error(CNNB_ENOMEM, "mAP: out of memory") : 0;
  const int was_train = net->train;
  net->train = 0;
  for (long r0 = lo; r0 < hi && !rc; r0 += B) {
    int m = (int)(hi - r0 < B ? hi - r0 : B);
    for (int k = 0; k < m; k++) rows[k] = r0 + k;
    if ((rc = cnnb_boxdata_read(bd, rows, m, x, NULL))) break;
    cnnb_net_forward(net, x, m);
    for (int k = 0; k < m && !rc; k++) {
      int h, w, nt;
      const float *t;
      cnnb_boxdata_image(bd, r0 + k, &h, &w, &t, &nt);
      int got = cnnb_detect(net, k, w, h, thresh, nms, dets, cap);
      if (got < 0) {
        rc = got;
        break;
      }
      if (nr + (size_t)got > rcap) {
        while (nr + (size_t)got > rcap) rcap *= 2;
        float *nm = realloc(mine, sizeof *mine * 6 * rcap);
        if (!nm) {
          rc = cnnb_error(CNNB_ENOMEM, "mAP: out of memory for %zu boxes", rcap);
          break;
        }
        mine = nm;
      }
      for (int j = 0; j < got; j++) {
        float *o = mine + 6 * nr++;
        o[0] = (float)dets[j].cls, o[1] = dets[j].score;
        o[2] = dets[j].box.x, o[3] = dets[j].box.y, o[4] = dets[j].box.w, o[5] = dets[j].box.h;
      }
      cnt[r0 + k - lo] = got;
    }
  }
  net->train = was_train;
  free(x);
  free(rows);
  free(dets);
  rc = cnnb_dist_agree(d, rc);
  /* Rank 0 gathers every rank's counts and rows, in rank order (= image order). */
  int *rcounts = NULL, *displs = NULL, *ccounts = NULL, *cdispls = NULL;
  int *allcnt = NULL;
  float *all = NULL;
  long long *doff = NULL, *dcls = NULL, *toff = NULL;
  float *score = NULL, *box = NULL, *truth = NULL;
  if (!rc) {
    int my[2] = {(int)(hi - lo), (int)(6 * nr)}, *both = d->rank == 0 ? malloc(sizeof *both * 2 * d->size) : NULL;
    MPI_Gather(my, 2, MPI_INT, both, 2, MPI_INT, 0, d->comm);
    long rows_all = 0;
    if (d->rank == 0) {
      ccounts = malloc(sizeof *ccounts * d->size), cdispls = malloc(sizeof *cdispls * d->size);
      rcounts = malloc(sizeof *rcounts * d->size), displs = malloc(sizeof *displs * d->size);
      long c = 0, v = 0;
      for (int r = 0; both && ccounts && cdispls && rcounts && displs && r < d->size; r++) {
        ccounts[r] = both[2 * r], cdispls[r] = (int)c, c += both[2 * r];
        rcounts[r] = both[2 * r + 1], displs[r] = (int)v, v += both[2 * r + 1];
      }
      rows_all = v / 6;
      allcnt = malloc(sizeof *allcnt * (size_t)(n ? n : 1));
      all = malloc(sizeof *all * (size_t)(v ? v : 1));
    }
    free(both);
    int ok = d->rank != 0 || (ccounts && cdispls && rcounts && displs && allcnt && all);
    MPI_Bcast(&ok, 1, MPI_INT, 0, d->comm);
    if (!ok) {
      rc = cnnb_error(CNNB_ENOMEM, "mAP: out of memory gathering detections");
    } else {
      MPI_Gatherv(cnt, (int)(hi - lo), MPI_INT, allcnt, ccounts, cdispls, MPI_INT, 0, d->comm);
      MPI_Gatherv(mine, (int)(6 * nr), MPI_FLOAT, all, rcounts, displs, MPI_FLOAT, 0, d->comm);
    }
    if (!rc && d->rank == 0) {
      long long nt = bd->toff[n];
      doff = malloc(sizeof *doff * (size_t)(n + 1));
      dcls = malloc(sizeof *dcls * (size_t)(rows_all ? rows_all : 1));
      score = malloc(sizeof *score * (size_t)(rows_all ? rows_all : 1));
      box = malloc(sizeof *box * 4 * (size_t)(rows_all ? rows_all : 1));
      toff = malloc(sizeof *toff * (size_t)(n + 1));
      truth = malloc(sizeof *truth * 5 * (size_t)(nt ? nt : 1));
      double *aps = malloc(sizeof *aps * (size_t)(K ? K : 1));
      if (!doff || !dcls || !score || !box || !toff || !truth || !aps) {
        rc = cnnb_error(CNNB_ENOMEM, "mAP: out of memory");
      } else {
        doff[0] = 0;
        for (long i = 0; i < n; i++) doff[i + 1] = doff[i] + allcnt[i], toff[i] = bd->toff[i];
        toff[n] = nt;
        for (long r = 0; r < rows_all; r++) {
          dcls[r] = (long long)all[6 * r], score[r] = all[6 * r + 1];
          memcpy(box + 4 * r, all + 6 * r + 2, 4 * sizeof(float));
        }
        memcpy(truth, bd->truth, sizeof *truth * 5 * (size_t)nt);
        rc = cnnb_detect_map(n, doff, dcls, score, box, toff, truth, K, iou, aps, map);
        if (!rc && ap) memcpy(ap, aps, sizeof *aps * (size_t)K);
      }
      free(aps);
    }
    rc = cnnb_dist_agree(d, rc);
  }
  free(cnt), free(mine), free(rcounts), free(displs), free(ccounts), free(cdispls), free(allcnt), free(all);
  free(doff), free(dcls), free(toff), free(score), free(box), free(truth);
  return rc;
}
