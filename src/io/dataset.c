/* Reading HDF5 dataset files (docs/FORMATS.md "Dataset files"): validation at open, and
 * minibatch reads of arbitrary rows, normalised to NCHW float32. */
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "io/h5util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A read selects at most this many runs of consecutive rows per H5Dread: HDF5 1.10 builds
 * OR-ed hyperslab unions in time that grows faster than linearly with the run count. */
#define MAX_RUNS_PER_READ 256

struct cnnb_dataset {
  char *path;
  char images_name[256], labels_name[256]; /* with a leading '/', for messages */
  hid_t file, dset, fspace;
  int rank; /* 3 (N x H x W) or 4 (N x H x W x C) */
  long n;
  int h, w, c;
  size_t rowb; /* bytes per row: h * w * c */
  int *labels;
  int num_classes;
  char **names;
  int nnames;
  float mean[CNNB_MAX_CHANNELS], std[CNNB_MAX_CHANNELS];
  float lut[CNNB_MAX_CHANNELS][256]; /* (p/255 - mean) / std for every byte value */
  size_t budget;      /* bytes of decompressed pixels this handle may keep (cache_mb) */
  unsigned char *all; /* every row, NHWC, when the data fit the budget (loaded at first read) */
  int all_tried;
  /* Reused across reads so the steady state allocates nothing. */
  unsigned char *buf;
  size_t bufcap;
  long *order; /* 2 per requested row: row, position in the request */
  int *uidx;   /* per requested position: index of its row among the unique sorted rows */
  int ordcap;
};

void cnnb_dataset_opts_init(cnnb_dataset_opts *o)
{
  memset(o, 0, sizeof *o);
  o->images_name = "images";
  o->labels_name = "labels";
  o->labels_required = 1;
}

static void slash_name(char *dst, size_t cap, const char *name, const char *def)
{
  if (!name || !*name) name = def;
  snprintf(dst, cap, "%s%s", name[0] == '/' ? "" : "/", name);
}

static int is_prime(size_t v)
{
  if (v < 2) return 0;
  for (size_t d = 2; d * d <= v; d++)
    if (v % d == 0) return 0;
  return 1;
}

/* Opens the image dataset with a chunk cache big enough that repeated random access (one
 * epoch after another) decompresses each chunk once when the data fits. */
static hid_t open_images(cnnb_dataset *ds)
{
  hid_t probe = H5Dopen2(ds->file, ds->images_name, H5P_DEFAULT);
  if (probe < 0) return -1;
  hid_t dcpl = H5Dget_create_plist(probe);
  size_t chunkb = 0;
  if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
    hsize_t cd[8];
    int r = H5Pget_chunk(dcpl, 8, cd);
    chunkb = 1;
    for (int i = 0; i < r; i++) chunkb *= (size_t)cd[i];
  }
  H5Pclose(dcpl);
  size_t nbytes = ds->budget;
  /* Contiguous data has no chunk cache; budget 0 keeps HDF5's default one. */
  if (chunkb == 0 || nbytes == 0) return probe;
  H5Dclose(probe);
  size_t slots = nbytes / chunkb * 10 + 1;
  if (slots < 521) slots = 521;
  while (!is_prime(slots)) slots++;
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  H5Pset_chunk_cache(dapl, slots, nbytes, 1.0);
  hid_t d = H5Dopen2(ds->file, ds->images_name, dapl);
  H5Pclose(dapl);
  return d;
}

static int link_exists(hid_t file, const char *name)
{
  /* H5Lexists fails rather than says 0 when an intermediate group is missing. */
  return H5Lexists(file, name, H5P_DEFAULT) > 0;
}

static int open_labels(cnnb_dataset *ds, int required)
{
  const char *P = ds->path, *L = ds->labels_name;
  if (!link_exists(ds->file, L)) {
    if (required) return cnnb_error(CNNB_EIO, "%s: no dataset '%s'", P, L);
    return 0;
  }
  hid_t d = H5Dopen2(ds->file, L, H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: '%s' is not a dataset", P, L);
  hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
  int rc = 0;
  long long *tmp = NULL;
  hsize_t dims[8] = {0};
  int r = H5Sget_simple_extent_ndims(sp);
  if (H5Tget_class(t) != H5T_INTEGER) {
    rc = cnnb_error(CNNB_EIO, "%s: '%s' is %s, expected integer labels", P, L,
                    cnnb_h5_type_name(t));
    goto done;
  }
  if (r < 1 || r > 2) {
    rc = cnnb_error(CNNB_EIO, "%s: '%s' has rank %d, expected N, 1 x N or N x 1", P, L, r);
    goto done;
  }
  H5Sget_simple_extent_dims(sp, dims, NULL);
  if (r == 2 && dims[0] != 1 && dims[1] != 1) {
    rc = cnnb_error(CNNB_EIO, "%s: '%s' is %llu x %llu, expected N, 1 x N or N x 1", P, L,
                    (unsigned long long)dims[0], (unsigned long long)dims[1]);
    goto done;
  }
  long nl = (long)(r == 1 ? dims[0] : dims[0] * dims[1]);
  if (nl != ds->n) {
    rc = cnnb_error(CNNB_EIO, "%s: %ld images in '%s' but %ld labels in '%s'", P, ds->n,
                    ds->images_name, nl, L);
    goto done;
  }
  /* Read as 64-bit so that a value outside int's range is caught, not clipped. */
  tmp = malloc((size_t)(nl > 0 ? nl : 1) * sizeof *tmp);
  ds->labels = malloc((size_t)(nl > 0 ? nl : 1) * sizeof *ds->labels);
  if (!tmp || !ds->labels) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for %ld labels", P, nl);
    goto done;
  }
  if (nl > 0 && H5Dread(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot read '%s'", P, L);
    goto done;
  }
  long long mx = -1;
  for (long i = 0; i < nl; i++) {
    if (tmp[i] < 0 || tmp[i] > 65535) {
      rc = cnnb_error(CNNB_EIO, "%s: label %lld at row %ld of '%s' is out of range 0-65535", P,
                      tmp[i], i, L);
      goto done;
    }
    ds->labels[i] = (int)tmp[i];
    if (tmp[i] > mx) mx = tmp[i];
  }
  ds->num_classes = (int)(mx + 1);
done:
  free(tmp);
  H5Sclose(sp);
  H5Tclose(t);
  H5Dclose(d);
  return rc;
}

static int open_images_checked(cnnb_dataset *ds)
{
  const char *P = ds->path, *I = ds->images_name;
  if (!link_exists(ds->file, I)) return cnnb_error(CNNB_EIO, "%s: no dataset '%s'", P, I);
  ds->dset = open_images(ds);
  if (ds->dset < 0) return cnnb_error(CNNB_EIO, "%s: '%s' is not a dataset", P, I);
  hid_t t = H5Dget_type(ds->dset);
  int u8 = H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 &&
           H5Tget_sign(t) == H5T_SGN_NONE;
  const char *tn = cnnb_h5_type_name(t);
  H5Tclose(t);
  if (!u8) return cnnb_error(CNNB_EIO, "%s: '%s' is %s, expected uint8 pixels", P, I, tn);
  ds->fspace = H5Dget_space(ds->dset);
  int r = H5Sget_simple_extent_ndims(ds->fspace);
  hsize_t d[8] = {0};
  if (r != 3 && r != 4)
    return cnnb_error(CNNB_EIO, "%s: '%s' has rank %d, expected N x H x W x C or N x H x W", P,
                      I, r);
  H5Sget_simple_extent_dims(ds->fspace, d, NULL);
  ds->rank = r;
  ds->n = (long)d[0];
  ds->h = (int)d[1];
  ds->w = (int)d[2];
  ds->c = r == 4 ? (int)d[3] : 1;
  if (ds->c < 1 || ds->c > CNNB_MAX_CHANNELS || ds->h < 1 || ds->w < 1)
    return cnnb_error(CNNB_EIO, "%s: '%s' is %llu x %llu x %llu x %d, expected 1-%d channels", P,
                      I, (unsigned long long)d[0], (unsigned long long)d[1],
                      (unsigned long long)d[2], ds->c, CNNB_MAX_CHANNELS);
  ds->rowb = (size_t)ds->h * (size_t)ds->w * (size_t)ds->c;
  return 0;
}

static int load_norm(cnnb_dataset *ds, const cnnb_dataset_opts *o)
{
  const char *P = ds->path, *I = ds->images_name;
  for (int c = 0; c < ds->c; c++) {
    ds->mean[c] = 0.0f;
    ds->std[c] = 1.0f;
  }
  if (o->have_norm) {
    memcpy(ds->mean, o->mean, sizeof ds->mean);
    memcpy(ds->std, o->std, sizeof ds->std);
  } else {
    float m[CNNB_MAX_CHANNELS], s[CNNB_MAX_CHANNELS];
    int hm = cnnb_h5_attr_get_f32_array(ds->dset, "mean", m, ds->c);
    int hs = cnnb_h5_attr_get_f32_array(ds->dset, "std", s, ds->c);
    if (hm < 0 || hs < 0)
      return cnnb_error(CNNB_EIO, "%s: attribute '%s' of '%s' must hold %d numbers", P,
                        hm < 0 ? "mean" : "std", I, ds->c);
    if (hm) memcpy(ds->mean, m, sizeof m);
    if (hs) memcpy(ds->std, s, sizeof s);
  }
  for (int c = 0; c < ds->c; c++) {
    if (!isfinite(ds->mean[c]) || !isfinite(ds->std[c]) || ds->std[c] <= 0.0f)
      return cnnb_error(CNNB_EINVAL, "%s: channel %d of '%s' has mean %g, std %g (std must be > 0)",
                        P, c, I, ds->mean[c], ds->std[c]);
    for (int p = 0; p < 256; p++)
      ds->lut[c][p] = (float)(((double)p / 255.0 - ds->mean[c]) / ds->std[c]);
  }
  return 0;
}

int cnnb_dataset_open(cnnb_dataset **out, const char *path, const cnnb_dataset_opts *opts)
{
  cnnb_dataset_opts def;
  *out = NULL;
  if (!opts) {
    cnnb_dataset_opts_init(&def);
    opts = &def;
  }
  if (!path) return cnnb_error(CNNB_EINVAL, "dataset: no path given");
  int rc = cnnb_h5_check_file(path);
  if (rc < 0) return rc;
  cnnb_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  ds->file = ds->dset = ds->fspace = -1;
  ds->path = malloc(strlen(path) + 1);
  if (!ds->path) {
    free(ds);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  strcpy(ds->path, path);
  slash_name(ds->images_name, sizeof ds->images_name, opts->images_name, "images");
  slash_name(ds->labels_name, sizeof ds->labels_name, opts->labels_name, "labels");

  ds->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (ds->file < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot open HDF5 file", path);
    goto fail;
  }
  ds->budget = opts->cache_mb < 0 ? 0 : (size_t)(opts->cache_mb > 0 ? opts->cache_mb : 64) << 20;
  if ((rc = open_images_checked(ds)) < 0) goto fail;
  if ((rc = open_labels(ds, opts->labels_required)) < 0) goto fail;
  if ((rc = load_norm(ds, opts)) < 0) goto fail;

  int nn = cnnb_h5_attr_get_strs(ds->file, "class_names", &ds->names);
  if (nn < 0) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
    goto fail;
  }
  ds->nnames = nn;
  long long ncls;
  int maxp1 = ds->num_classes;
  if (cnnb_h5_attr_get_int(ds->file, "num_classes", &ncls) && ncls > 0 && ncls < 65536)
    ds->num_classes = (int)ncls;
  else if (nn > 0)
    ds->num_classes = nn;
  if (maxp1 > ds->num_classes) {
    rc = cnnb_error(CNNB_EIO, "%s: label %d in '%s' but the file declares %d classes", path,
                    maxp1 - 1, ds->labels_name, ds->num_classes);
    goto fail;
  }
  *out = ds;
  return 0;
fail:
  cnnb_dataset_close(ds);
  return rc;
}

void cnnb_dataset_close(cnnb_dataset *ds)
{
  if (!ds) return;
  if (ds->fspace >= 0) H5Sclose(ds->fspace);
  if (ds->dset >= 0) H5Dclose(ds->dset);
  if (ds->file >= 0) H5Fclose(ds->file);
  cnnb_h5_free_strs(ds->names, ds->nnames);
  free(ds->labels);
  free(ds->buf);
  free(ds->all);
  free(ds->order);
  free(ds->uidx);
  free(ds->path);
  free(ds);
}

long cnnb_dataset_count(const cnnb_dataset *ds) { return ds->n; }

void cnnb_dataset_shape(const cnnb_dataset *ds, int *h, int *w, int *c)
{
  if (h) *h = ds->h;
  if (w) *w = ds->w;
  if (c) *c = ds->c;
}

int cnnb_dataset_num_classes(const cnnb_dataset *ds) { return ds->num_classes; }
const int *cnnb_dataset_labels(const cnnb_dataset *ds) { return ds->labels; }
const char *cnnb_dataset_path(const cnnb_dataset *ds) { return ds->path; }

const char *cnnb_dataset_class_name(const cnnb_dataset *ds, int k)
{
  return k >= 0 && k < ds->nnames ? ds->names[k] : NULL;
}

void cnnb_dataset_norm(const cnnb_dataset *ds, float *mean, float *std)
{
  for (int c = 0; c < ds->c; c++) {
    if (mean) mean[c] = ds->mean[c];
    if (std) std[c] = ds->std[c];
  }
}

static int grow_buf(cnnb_dataset *ds, size_t bytes)
{
  if (bytes <= ds->bufcap) return 0;
  unsigned char *b = realloc(ds->buf, bytes);
  if (!b) return cnnb_error(CNNB_ENOMEM, "%s: out of memory for %zu bytes", ds->path, bytes);
  ds->buf = b;
  ds->bufcap = bytes;
  return 0;
}

/* Selects rows [r0, r0 + k) in the file dataspace (op SET or OR). */
static herr_t select_rows(cnnb_dataset *ds, H5S_seloper_t op, hsize_t r0, hsize_t k)
{
  hsize_t start[4] = {r0, 0, 0, 0};
  hsize_t cnt[4] = {k, (hsize_t)ds->h, (hsize_t)ds->w, (hsize_t)ds->c};
  return H5Sselect_hyperslab(ds->fspace, op, start, NULL, cnt, NULL);
}

/* Reads sorted unique rows u[0..k) into ds->buf, row j at j * rowb. */
static int read_unique(cnnb_dataset *ds, const long *u, int k)
{
  int j = 0;
  while (j < k) {
    int first = j, runs = 0;
    while (j < k && runs < MAX_RUNS_PER_READ) {
      int s = j;
      while (j + 1 < k && u[j + 1] == u[j] + 1) j++;
      j++;
      if (select_rows(ds, runs ? H5S_SELECT_OR : H5S_SELECT_SET, (hsize_t)u[s],
                      (hsize_t)(j - s)) < 0)
        return cnnb_error(CNNB_EIO, "%s: cannot select rows of '%s'", ds->path, ds->images_name);
      runs++;
    }
    hsize_t m = (hsize_t)(j - first) * ds->rowb;
    hid_t msp = H5Screate_simple(1, &m, NULL);
    herr_t e = H5Dread(ds->dset, H5T_NATIVE_UCHAR, msp, ds->fspace, H5P_DEFAULT,
                       ds->buf + (size_t)first * ds->rowb);
    H5Sclose(msp);
    if (e < 0)
      return cnnb_error(CNNB_EIO, "%s: reading rows %ld-%ld of '%s' failed", ds->path, u[first],
                        u[j - 1], ds->images_name);
  }
  return 0;
}

/* Data that fit the budget are read once, whole: random rows then cost a table lookup per
 * pixel instead of HDF5's per-selection overhead (about 20 us a row from the chunk cache). */
static int preload(cnnb_dataset *ds)
{
  ds->all_tried = 1;
  size_t bytes = (size_t)ds->n * ds->rowb;
  if (ds->n == 0 || bytes > ds->budget) return 0;
  ds->all = malloc(bytes);
  if (!ds->all) return 0; /* fall back to reading rows through HDF5 */
  if (H5Dread(ds->dset, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->all) < 0) {
    free(ds->all);
    ds->all = NULL;
    return cnnb_error(CNNB_EIO, "%s: reading '%s' failed", ds->path, ds->images_name);
  }
  /* The chunk cache is no longer needed; the preloaded copy replaces it. */
  H5Dclose(ds->dset);
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  H5Pset_chunk_cache(dapl, 0, 0, 1.0);
  ds->dset = H5Dopen2(ds->file, ds->images_name, dapl);
  H5Pclose(dapl);
  if (ds->dset < 0) return cnnb_error(CNNB_EIO, "%s: cannot reopen '%s'", ds->path, ds->images_name);
  return 0;
}

static int cmp_pair(const void *a, const void *b)
{
  const long *x = a, *y = b;
  return (x[0] > y[0]) - (x[0] < y[0]);
}

/* One row: NHWC bytes -> NCHW normalised floats via the per-channel lookup table. */
static void scatter(const cnnb_dataset *ds, const unsigned char *src, float *dst, int C,
                    size_t hw)
{
  if (C == 1) {
    const float *l = ds->lut[0];
    for (size_t p = 0; p < hw; p++) dst[p] = l[src[p]];
    return;
  }
  for (int c = 0; c < C; c++) {
    const float *l = ds->lut[c];
    float *d = dst + (size_t)c * hw;
    for (size_t p = 0; p < hw; p++) d[p] = l[src[p * (size_t)C + (size_t)c]];
  }
}

int cnnb_dataset_read(cnnb_dataset *ds, const long *rows, int n, float *x, int *labels)
{
  if (n < 0) return cnnb_error(CNNB_EINVAL, "%s: negative row count %d", ds->path, n);
  if (n == 0) return 0;
  if (labels && !ds->labels)
    return cnnb_error(CNNB_EINVAL, "%s: labels asked for but there is no '%s'", ds->path,
                      ds->labels_name);
  for (int i = 0; i < n; i++)
    if (rows[i] < 0 || rows[i] >= ds->n)
      return cnnb_error(CNNB_EINVAL, "%s: row %ld out of range 0-%ld in '%s'", ds->path,
                        rows[i], ds->n - 1, ds->images_name);
  int rc;
  if (!ds->all_tried && (rc = preload(ds)) < 0) return rc;
  const int C = ds->c;
  const size_t hw = (size_t)ds->h * (size_t)ds->w;
  if (ds->all) {
    for (int i = 0; i < n; i++) {
      scatter(ds, ds->all + (size_t)rows[i] * ds->rowb, x + (size_t)i * ds->rowb, C, hw);
      if (labels) labels[i] = ds->labels[rows[i]];
    }
    return 0;
  }
  if (n > ds->ordcap) {
    long *o = realloc(ds->order, 2 * (size_t)n * sizeof *o);
    if (o) ds->order = o;
    int *ui = realloc(ds->uidx, (size_t)n * sizeof *ui);
    if (ui) ds->uidx = ui;
    if (!o || !ui) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", ds->path);
    ds->ordcap = n;
  }
  rc = grow_buf(ds, (size_t)n * ds->rowb);
  if (rc < 0) return rc;

  /* Sort (row, position) pairs, then compact the rows in place to the unique sorted list
   * (order[0..k) as plain longs) while noting each position's unique index. */
  long *o = ds->order;
  for (int i = 0; i < n; i++) {
    o[2 * i] = rows[i];
    o[2 * i + 1] = i;
  }
  qsort(o, (size_t)n, 2 * sizeof *o, cmp_pair);
  int k = 0;
  for (int i = 0; i < n; i++) {
    long r = o[2 * i], pos = o[2 * i + 1];
    if (k == 0 || o[k - 1] != r) o[k++] = r; /* k <= i: only consumed pairs are overwritten */
    ds->uidx[pos] = k - 1;
  }
  if ((rc = read_unique(ds, o, k)) < 0) return rc;

  for (int i = 0; i < n; i++) {
    scatter(ds, ds->buf + (size_t)ds->uidx[i] * ds->rowb, x + (size_t)i * ds->rowb, C, hw);
    if (labels) labels[i] = ds->labels[rows[i]];
  }
  return 0;
}

int cnnb_dataset_read_u8(cnnb_dataset *ds, long row0, int n, unsigned char *nhwc)
{
  if (n < 0 || row0 < 0 || row0 + n > ds->n)
    return cnnb_error(CNNB_EINVAL, "%s: rows %ld-%ld out of range 0-%ld in '%s'", ds->path, row0,
                      row0 + n - 1, ds->n - 1, ds->images_name);
  if (n == 0) return 0;
  if (ds->all) {
    memcpy(nhwc, ds->all + (size_t)row0 * ds->rowb, (size_t)n * ds->rowb);
    return 0;
  }
  hsize_t m = (hsize_t)n * ds->rowb;
  hid_t msp = H5Screate_simple(1, &m, NULL);
  herr_t e = select_rows(ds, H5S_SELECT_SET, (hsize_t)row0, (hsize_t)n);
  if (e >= 0) e = H5Dread(ds->dset, H5T_NATIVE_UCHAR, msp, ds->fspace, H5P_DEFAULT, nhwc);
  H5Sclose(msp);
  if (e < 0)
    return cnnb_error(CNNB_EIO, "%s: reading rows %ld-%ld of '%s' failed", ds->path, row0,
                      row0 + n - 1, ds->images_name);
  return 0;
}
