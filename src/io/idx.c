/* IDX import: `cnn-batch import idx` reads IDX image/label files (gzip or raw) and writes an
 * HDF5 dataset file (layout in docs/FORMATS.md "Dataset files"). */
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "io/h5util.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

void cnnb_import_opts_init(cnnb_import_opts *o)
{
  memset(o, 0, sizeof *o);
  o->compress = 4;
}

typedef struct idx_file {
  const char *path;
  gzFile gz;
  int ndim;
  long dims[4];
} idx_file;

/* Opens an IDX file of unsigned bytes and reads its header. zlib's gzread reads a file without
 * the gzip magic (1f 8b) as-is, so one code path takes both gzip and raw files. */
static int idx_open(idx_file *f, const char *path, int min_dim, int max_dim, const char *what)
{
  struct stat st;
  memset(f, 0, sizeof *f);
  f->path = path;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT) return cnnb_error(CNNB_EIO, "%s: no such file", path);
    return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return cnnb_error(CNNB_EIO, "%s: not a regular file", path);
  f->gz = gzopen(path, "rb");
  if (!f->gz) return cnnb_error(CNNB_EIO, "%s: cannot open: %s", path, strerror(errno));
  gzbuffer(f->gz, 1 << 18);
  unsigned char h[4];
  if (gzread(f->gz, h, 4) != 4 || h[0] != 0 || h[1] != 0)
    return cnnb_error(CNNB_EIO, "%s: not an IDX file (bad magic number)", path);
  if (h[2] != 0x08)
    return cnnb_error(CNNB_EIO, "%s: IDX element type 0x%02x, expected 0x08 (unsigned byte)",
                      path, h[2]);
  if (h[3] < min_dim || h[3] > max_dim)
    return cnnb_error(CNNB_EIO, "%s: IDX file with %d dimensions, expected %s", path, h[3],
                      what);
  f->ndim = h[3];
  for (int i = 0; i < f->ndim; i++) {
    unsigned char b[4];
    if (gzread(f->gz, b, 4) != 4) return cnnb_error(CNNB_EIO, "%s: truncated IDX header", path);
    uint32_t d = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    if (d == 0 || d > INT32_MAX)
      return cnnb_error(CNNB_EIO, "%s: IDX dimension %d is %lu", path, i, (unsigned long)d);
    f->dims[i] = (long)d;
  }
  return 0;
}

static void idx_close(idx_file *f)
{
  if (f->gz) gzclose(f->gz);
  f->gz = NULL;
}

/* Reads exactly n bytes (in pieces: gzread takes an unsigned count). */
static int idx_read(idx_file *f, void *buf, size_t n)
{
  unsigned char *p = buf;
  while (n > 0) {
    unsigned k = n > (1u << 30) ? 1u << 30 : (unsigned)n;
    int got = gzread(f->gz, p, k);
    if (got <= 0) {
      int zerr;
      const char *m = gzerror(f->gz, &zerr);
      if (zerr != Z_OK && zerr != Z_BUF_ERROR)
        return cnnb_error(CNNB_EIO, "%s: %s", f->path, m);
      return cnnb_error(CNNB_EIO, "%s: truncated IDX file", f->path);
    }
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

/* Splits "a, b,c" into trimmed names; *n gets the count. */
static int split_names(const char *s, char ***out, int *n)
{
  int k = 1;
  for (const char *p = s; *p; p++) k += *p == ',';
  char **v = calloc((size_t)k, sizeof *v);
  if (!v) return cnnb_error(CNNB_ENOMEM, "class names: out of memory");
  const char *p = s;
  for (int i = 0; i < k; i++) {
    const char *e = strchr(p, ',');
    if (!e) e = p + strlen(p);
    const char *q = e;
    while (p < q && (*p == ' ' || *p == '\t')) p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t')) q--;
    v[i] = calloc((size_t)(q - p) + 1, 1);
    if (!v[i]) {
      for (int j = 0; j < i; j++) free(v[j]);
      free(v);
      return cnnb_error(CNNB_ENOMEM, "class names: out of memory");
    }
    memcpy(v[i], p, (size_t)(q - p));
    if (!*v[i]) {
      for (int j = 0; j <= i; j++) free(v[j]);
      free(v);
      return cnnb_error(CNNB_EINVAL, "class names '%s': name %d is empty", s, i);
    }
    p = *e ? e + 1 : e;
  }
  *out = v;
  *n = k;
  return 0;
}

int cnnb_import_idx(const char *images_path, const char *labels_path, const char *out_path,
                    const cnnb_import_opts *opts)
{
  cnnb_import_opts def;
  if (!opts) {
    cnnb_import_opts_init(&def);
    opts = &def;
  }
  if (!images_path || !labels_path || !out_path)
    return cnnb_error(CNNB_EINVAL, "import idx: images, labels and output paths are needed");
  if (opts->compress < 0 || opts->compress > 9)
    return cnnb_error(CNNB_EINVAL, "import idx: compression level %d not in 0-9", opts->compress);
  cnnb_h5_quiet();

  idx_file fi = {0}, fl = {0};
  char **names = NULL, *tmp = NULL;
  int nnames = 0, rc;
  unsigned char *lab8 = NULL, *buf = NULL;
  int32_t *lab = NULL;
  hid_t file = -1, dimg = -1, dlab = -1, fsp = -1, msp = -1, dcpl = -1;

  if ((rc = idx_open(&fi, images_path, 3, 4, "3 (N x H x W) or 4 (N x H x W x C)")) < 0) goto out;
  if ((rc = idx_open(&fl, labels_path, 1, 1, "1 (labels)")) < 0) goto out;
  long n = fi.dims[0], h = fi.dims[1], w = fi.dims[2], c = fi.ndim == 4 ? fi.dims[3] : 1;
  if (c > CNNB_MAX_CHANNELS) {
    rc = cnnb_error(CNNB_EIO, "%s: %ld channels, at most %d supported", images_path, c,
                    CNNB_MAX_CHANNELS);
    goto out;
  }
  if (fl.dims[0] != n) {
    rc = cnnb_error(CNNB_EIO, "%s: %ld images but %s has %ld labels", images_path, n,
                    labels_path, fl.dims[0]);
    goto out;
  }
  if (opts->limit > 0 && opts->limit < n) n = opts->limit;
  if (opts->class_names && *opts->class_names &&
      (rc = split_names(opts->class_names, &names, &nnames)) < 0)
    goto out;

  /* Labels are small (N bytes): read them all first so a bad label fails before any
   * image work. */
  lab8 = malloc((size_t)n);
  lab = malloc((size_t)n * sizeof *lab);
  if (!lab8 || !lab) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for %ld labels", labels_path, n);
    goto out;
  }
  if ((rc = idx_read(&fl, lab8, (size_t)n)) < 0) goto out;
  int maxlab = 0;
  for (long i = 0; i < n; i++) {
    lab[i] = lab8[i];
    if (lab8[i] > maxlab) maxlab = lab8[i];
  }
  if (names && maxlab >= nnames) {
    rc = cnnb_error(CNNB_EINVAL, "%s: label %d found but only %d class names given",
                    labels_path, maxlab, nnames);
    goto out;
  }
  int num_classes = names ? nnames : maxlab + 1;

  size_t tlen = strlen(out_path) + 5;
  tmp = malloc(tlen);
  if (!tmp) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", out_path);
    goto out;
  }
  snprintf(tmp, tlen, "%s.tmp", out_path);
  file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot create HDF5 file", tmp);
    goto out;
  }

  /* Chunks of whole rows, about 64 KiB: small enough that a random row costs little to
   * decompress, large enough for gzip to work well. */
  size_t rowb = (size_t)(h * w * c);
  hsize_t crow = 65536 / rowb;
  if (crow < 1) crow = 1;
  if (crow > (hsize_t)n) crow = (hsize_t)n;
  hsize_t dims[4] = {(hsize_t)n, (hsize_t)h, (hsize_t)w, (hsize_t)c};
  hsize_t cdims[4] = {crow, (hsize_t)h, (hsize_t)w, (hsize_t)c};
  dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 4, cdims);
  if (opts->compress > 0) H5Pset_deflate(dcpl, (unsigned)opts->compress);
  fsp = H5Screate_simple(4, dims, NULL);
  dimg = H5Dcreate2(file, "images", H5T_STD_U8LE, fsp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Sclose(fsp);
  fsp = -1;
  hsize_t ln = (hsize_t)n;
  hid_t lsp = H5Screate_simple(1, &ln, NULL);
  dlab = H5Dcreate2(file, "labels", H5T_STD_I32LE, lsp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = dlab >= 0 ? H5Dwrite(dlab, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, lab) : -1;
  H5Sclose(lsp);
  if (dimg < 0 || e < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot create datasets '/images' and '/labels'", tmp);
    goto out;
  }

  /* Stream images in blocks of whole chunks so each chunk is compressed and written once.
   * Pixel sums are kept as exact integers (2^64 is far beyond 255^2 * pixels), so mean and
   * variance carry no accumulation error. */
  hsize_t brow = crow * (hsize_t)((4u << 20) / (crow * rowb) + 1);
  buf = malloc(brow * rowb);
  if (!buf) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", images_path);
    goto out;
  }
  uint64_t sum[CNNB_MAX_CHANNELS] = {0}, sq[CNNB_MAX_CHANNELS] = {0};
  fsp = H5Dget_space(dimg);
  for (hsize_t r0 = 0; r0 < (hsize_t)n; r0 += brow) {
    hsize_t k = (hsize_t)n - r0 < brow ? (hsize_t)n - r0 : brow;
    if ((rc = idx_read(&fi, buf, k * rowb)) < 0) {
      cnnb_error_prefix(rc, "reading image %llu: ", (unsigned long long)r0);
      goto out;
    }
    size_t np = k * rowb;
    for (size_t i = 0; i < np; i += (size_t)c)
      for (long ch = 0; ch < c; ch++) {
        unsigned v = buf[i + (size_t)ch];
        sum[ch] += v;
        sq[ch] += v * v;
      }
    hsize_t start[4] = {r0, 0, 0, 0}, cnt[4] = {k, (hsize_t)h, (hsize_t)w, (hsize_t)c};
    H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    msp = H5Screate_simple(4, cnt, NULL);
    e = H5Dwrite(dimg, H5T_NATIVE_UCHAR, msp, fsp, H5P_DEFAULT, buf);
    H5Sclose(msp);
    msp = -1;
    if (e < 0) {
      rc = cnnb_error(CNNB_EIO, "%s: writing '/images' failed (disk full?)", tmp);
      goto out;
    }
  }

  float mean[CNNB_MAX_CHANNELS], sd[CNNB_MAX_CHANNELS];
  double cnt = (double)n * (double)(h * w);
  for (long ch = 0; ch < c; ch++) {
    double m = (double)sum[ch] / cnt, v = (double)sq[ch] / cnt - m * m;
    m /= 255.0;
    v /= 255.0 * 255.0;
    mean[ch] = (float)m;
    /* A constant channel has std 0; 1 keeps the reader's division finite. */
    sd[ch] = v > 1e-12 ? (float)sqrt(v) : 1.0f;
  }
  if (cnnb_h5_attr_f32_array(dimg, "mean", mean, (int)c) < 0 ||
      cnnb_h5_attr_f32_array(dimg, "std", sd, (int)c) < 0 ||
      cnnb_h5_attr_str(file, "cnnb_schema", CNNB_DATASET_SCHEMA) < 0 ||
      cnnb_h5_attr_int(file, "cnnb_version", CNNB_DATASET_VERSION, H5T_STD_I32LE) < 0 ||
      cnnb_h5_attr_int(file, "num_classes", num_classes, H5T_STD_I32LE) < 0 ||
      (names && cnnb_h5_attr_str_array(file, "class_names", (const char *const *)names,
                                       nnames) < 0)) {
    rc = cnnb_error(CNNB_EIO, "%s: writing attributes failed", tmp);
    goto out;
  }
  H5Sclose(fsp);
  fsp = -1;
  e = H5Dclose(dimg);
  e |= H5Dclose(dlab);
  dimg = dlab = -1;
  e |= H5Fclose(file);
  file = -1;
  if (e < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: closing the HDF5 file failed (disk full?)", tmp);
    goto out;
  }
  if (rename(tmp, out_path) != 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot rename from %s: %s", out_path, tmp, strerror(errno));
    goto out;
  }
  rc = 0;

out:
  if (msp >= 0) H5Sclose(msp);
  if (fsp >= 0) H5Sclose(fsp);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (dimg >= 0) H5Dclose(dimg);
  if (dlab >= 0) H5Dclose(dlab);
  if (file >= 0) H5Fclose(file);
  if (rc < 0 && tmp) remove(tmp); /* never leave a half-written file behind */
  idx_close(&fi);
  idx_close(&fl);
  for (int i = 0; i < nnames; i++) free(names[i]);
  free(names);
  free(tmp);
  free(lab8);
  free(lab);
  free(buf);
  return rc;
}
