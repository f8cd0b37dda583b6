/* Reading embedding files (cnnb/match.h; layout docs/FORMATS.md "Embeddings"), one process. */
#include "cnnb/error.h"
#include "cnnb/match.h"
#include "io/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s)
{
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* A root string attribute into buf (cap bytes); 1 if read. */
static int attr_str(hid_t f, const char *name, char *buf, size_t cap)
{
  char **s = NULL;
  int n = cnnb_h5_attr_get_strs(f, name, &s);
  if (n < 1) return 0;
  snprintf(buf, cap, "%s", s[0]);
  cnnb_h5_free_strs(s, n);
  return 1;
}

/* 1-D (or N x 1) dataset of n rows? */
static int has_rows(hid_t f, const char *name, long n)
{
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0) return 0;
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return 0;
  hid_t sp = H5Dget_space(d);
  hsize_t dims[2] = {0, 0};
  int r = H5Sget_simple_extent_ndims(sp);
  int ok = (r == 1 || r == 2) && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0 && (long)dims[0] == n &&
           (r == 1 || dims[1] == 1);
  H5Sclose(sp);
  H5Dclose(d);
  return ok ? 1 : -1;
}

void cnnb_embfile_close(cnnb_embfile *f)
{
  if (!f) return;
  if (f->h5emb > 0) H5Dclose((hid_t)f->h5emb);
  if (f->h5file > 0) H5Fclose((hid_t)f->h5file);
  free(f->path);
  free(f);
}

int cnnb_embfile_open(cnnb_embfile **out, const char *path)
{
  *out = NULL;
  int rc = cnnb_h5_check_file(path);
  if (rc) return rc;
  cnnb_embfile *f = calloc(1, sizeof *f);
  if (!f || !(f->path = dup_str(path))) {
    free(f);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  f->h5file = f->h5emb = -1;
  hid_t h = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  f->h5file = h;
  if (h < 0) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: cannot open HDF5 file", path);
  }
  long long complete = 0, dim = 0;
  if (!cnnb_h5_attr_get_int(h, "complete", &complete) || complete != 1) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: not a complete embedding file (root attribute complete is not 1)", path);
  }
  if (H5Lexists(h, "/embeddings", H5P_DEFAULT) <= 0 || (f->h5emb = H5Dopen2(h, "/embeddings", H5P_DEFAULT)) < 0) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: no dataset '/embeddings' (not written by cnn-batch embed?)", path);
  }
  hid_t sp = H5Dget_space((hid_t)f->h5emb), t = H5Dget_type((hid_t)f->h5emb);
  hsize_t dims[2] = {0, 0};
  int r = H5Sget_simple_extent_ndims(sp);
  if (r == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
  int isfloat = H5Tget_class(t) == H5T_FLOAT;
  H5Sclose(sp);
  H5Tclose(t);
  if (r != 2 || !isfloat || dims[1] < 1 || dims[1] > 1 << 20) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: '/embeddings' must be N x D floats", path);
  }
  f->n = (long)dims[0];
  f->dim = (int)dims[1];
  if (cnnb_h5_attr_get_int(h, "dim", &dim) && dim != f->dim) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: attribute dim = %lld but '/embeddings' has %d columns", path, dim, (int)dims[1]);
  }
  attr_str(h, "model_hash", f->model_hash, sizeof f->model_hash);
  int hl = has_rows(h, "/labels", f->n), hn = has_rows(h, "/names", f->n), hi = has_rows(h, "/ids", f->n);
  if (hl < 0 || hn < 0 || hi < 0) {
    cnnb_embfile_close(f);
    return cnnb_error(CNNB_EIO, "%s: '/%s' does not have one value per row of '/embeddings' (%ld)", path,
                      hl < 0 ? "labels" : hn < 0 ? "names" : "ids", f->n);
  }
  f->has_labels = hl, f->has_names = hn, f->has_ids = hi;
  *out = f;
  return 0;
}

static int read_rows(cnnb_embfile *f, hid_t d, hid_t mtype, int cols, long row0, long n, void *buf, const char *name)
{
  if (row0 < 0 || n < 0 || row0 + n > f->n)
    return cnnb_error(CNNB_EINVAL, "%s: rows %ld-%ld out of range (%ld rows)", f->path, row0, row0 + n - 1, f->n);
  if (n == 0) return 0;
  hid_t fs = H5Dget_space(d);
  int r = H5Sget_simple_extent_ndims(fs);
  hsize_t start[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)n, (hsize_t)cols};
  if (r == 2 && cols == 0) cnt[1] = 1; /* N x 1 labels */
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
  hid_t ms = H5Screate_simple(r, cnt, NULL);
  herr_t e = H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
  H5Sclose(ms);
  H5Sclose(fs);
  return e < 0 ? cnnb_error(CNNB_EIO, "%s: reading rows %ld-%ld of '%s' failed", f->path, row0, row0 + n - 1, name) : 0;
}

int cnnb_embfile_read(cnnb_embfile *f, long row0, long n, float *x)
{
  return read_rows(f, (hid_t)f->h5emb, H5T_NATIVE_FLOAT, f->dim, row0, n, x, "/embeddings");
}

int cnnb_embfile_labels(cnnb_embfile *f, long row0, long n, long long *labels)
{
  if (!f->has_labels) return cnnb_error(CNNB_EINVAL, "%s: no dataset '/labels'", f->path);
  hid_t d = H5Dopen2((hid_t)f->h5file, "/labels", H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: cannot open '/labels'", f->path);
  hid_t t = H5Dget_type(d);
  int ok = H5Tget_class(t) == H5T_INTEGER;
  H5Tclose(t);
  int rc = ok ? read_rows(f, d, H5T_NATIVE_LLONG, 0, row0, n, labels, "/labels")
              : cnnb_error(CNNB_EIO, "%s: '/labels' is not integer", f->path);
  H5Dclose(d);
  return rc;
}

/* All of /names as malloc'ed strings (variable or fixed length in the file). */
static int read_names(cnnb_embfile *f, char **v)
{
  hid_t d = H5Dopen2((hid_t)f->h5file, "/names", H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: cannot open '/names'", f->path);
  hid_t t = H5Dget_type(d);
  int rc = 0;
  if (H5Tget_class(t) != H5T_STRING) {
    rc = cnnb_error(CNNB_EIO, "%s: '/names' is not strings", f->path);
  } else if (H5Tis_variable_str(t) > 0) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(t));
    char **raw = calloc((size_t)(f->n ? f->n : 1), sizeof *raw);
    if (!raw) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
    else if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)
      rc = cnnb_error(CNNB_EIO, "%s: reading '/names' failed", f->path);
    for (long i = 0; raw && i < f->n; i++) {
      if (!rc && !(v[i] = dup_str(raw[i] ? raw[i] : ""))) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
      if (raw[i]) H5free_memory(raw[i]);
    }
    free(raw);
    H5Tclose(mt);
  } else {
    size_t len = H5Tget_size(t);
    char *blk = malloc(len * (size_t)(f->n ? f->n : 1));
    hid_t mt = H5Tcopy(t);
    if (!blk) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
    else if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, blk) < 0)
      rc = cnnb_error(CNNB_EIO, "%s: reading '/names' failed", f->path);
    for (long i = 0; !rc && i < f->n; i++) {
      if (!(v[i] = calloc(len + 1, 1))) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
      else memcpy(v[i], blk + (size_t)i * len, len);
    }
    free(blk);
    H5Tclose(mt);
  }
  H5Tclose(t);
  H5Dclose(d);
  return rc;
}

int cnnb_embfile_identities(cnnb_embfile *f, char ***names)
{
  *names = NULL;
  if (!f->has_names && !f->has_labels)
    return cnnb_error(CNNB_EINVAL, "%s: neither '/names' nor '/labels': rows have no identities", f->path);
  char **v = calloc((size_t)(f->n ? f->n : 1), sizeof *v);
  if (!v) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
  int rc = 0;
  if (f->has_names) {
    rc = read_names(f, v);
  } else {
    long long *lab = malloc(sizeof *lab * (size_t)(f->n ? f->n : 1));
    rc = lab ? cnnb_embfile_labels(f, 0, f->n, lab) : cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
    for (long i = 0; !rc && i < f->n; i++) {
      char b[32];
      snprintf(b, sizeof b, "%lld", lab[i]);
      if (!(v[i] = dup_str(b))) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", f->path);
    }
    free(lab);
  }
  if (rc) {
    cnnb_match_free_strs(v, f->n);
    return rc;
  }
  *names = v;
  return 0;
}
