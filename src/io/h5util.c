/* Private HDF5 helpers (see h5util.h). */
#define _POSIX_C_SOURCE 200809L
#include "io/h5util.h"

#include "cnnb/error.h"
#include "io/inflate.h"

#include <errno.h>
#include <stdint.h>
#include <zlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void cnnb_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

int cnnb_h5_deflate_only(hid_t dcpl)
{
  unsigned flags, cd[8];
  size_t ncd = 8;
  return H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) == 1 &&
         H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL) == H5Z_FILTER_DEFLATE;
}

int cnnb_h5_read_deflate_chunk(hid_t d, const hsize_t *off, void *dst, size_t n, unsigned char **zbuf, size_t *zcap)
{
  hsize_t zs = 0;
  uint32_t mask = 0;
  if (H5Dget_chunk_storage_size(d, off, &zs) < 0 || zs == 0) return -1; /* 0: never written */
  if (zs > *zcap) {
    unsigned char *z = realloc(*zbuf, zs);
    if (!z) return CNNB_ENOMEM;
    *zbuf = z, *zcap = zs;
  }
  if (H5Dread_chunk(d, H5P_DEFAULT, off, &mask, *zbuf) < 0) return -1;
  if (mask & 1) { /* stored without the filter (HDF5 does that when deflate would not shrink it) */
    if (zs != n) return -1;
    memcpy(dst, *zbuf, n);
    return 0;
  }
  size_t got = 0;
  int zr = cnnb_inflate_enabled() ? cnnb_inflate_zlib(*zbuf, (size_t)zs, dst, n, &got) : CNNB_INFLATE_UNSUPPORTED;
  if (zr == CNNB_INFLATE_UNSUPPORTED) { /* a preset dictionary, or CNNB_INFLATE=zlib */
    uLongf zn = (uLongf)n;
    zr = uncompress(dst, &zn, *zbuf, (uLong)zs) == Z_OK ? CNNB_INFLATE_OK : CNNB_INFLATE_CORRUPT;
    got = zn;
  }
  return zr == CNNB_INFLATE_OK && got == n ? 0 : -1;
}

int cnnb_h5_check_file(const char *path)
{
  struct stat st;
  cnnb_h5_quiet();
  if (stat(path, &st) != 0) {
    if (errno == ENOENT) return cnnb_error(CNNB_EIO, "%s: no such file", path);
    return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return cnnb_error(CNNB_EIO, "%s: not a regular file", path);
  if (access(path, R_OK) != 0) return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  /* H5Fis_hdf5 is the 1.10 spelling (H5Fis_accessible came in 1.12); it fails (< 0) on an
   * unreadable file and says 0 on a readable non-HDF5 one. */
  htri_t ok = H5Fis_hdf5(path);
  if (ok <= 0) return cnnb_error(CNNB_EIO, "%s: not an HDF5 file", path);
  return 0;
}

static int write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hid_t space,
                      const void *buf)
{
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  hid_t a = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) return -1;
  herr_t e = H5Awrite(a, mtype, buf);
  if (H5Aclose(a) < 0) e = -1;
  return e < 0 ? -1 : 0;
}

int cnnb_h5_attr_int(hid_t loc, const char *name, long long v, hid_t type)
{
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = write_attr(loc, name, type, H5T_NATIVE_LLONG, s, &v);
  H5Sclose(s);
  return rc;
}

static hid_t vlen_str_type(void)
{
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

int cnnb_h5_attr_str(hid_t loc, const char *name, const char *s)
{
  hid_t t = vlen_str_type(), sp = H5Screate(H5S_SCALAR);
  int rc = write_attr(loc, name, t, t, sp, &s);
  H5Sclose(sp);
  H5Tclose(t);
  return rc;
}

int cnnb_h5_attr_str_array(hid_t loc, const char *name, const char *const *s, int n)
{
  hsize_t d = (hsize_t)n;
  hid_t t = vlen_str_type(), sp = H5Screate_simple(1, &d, NULL);
  int rc = write_attr(loc, name, t, t, sp, s);
  H5Sclose(sp);
  H5Tclose(t);
  return rc;
}

int cnnb_h5_attr_f32_array(hid_t loc, const char *name, const float *v, int n)
{
  hsize_t d = (hsize_t)n;
  hid_t sp = H5Screate_simple(1, &d, NULL);
  int rc = write_attr(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, sp, v);
  H5Sclose(sp);
  return rc;
}

int cnnb_h5_attr_get_int(hid_t loc, const char *name, long long *v)
{
  if (H5Aexists(loc, name) <= 0) return 0;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return 0;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
           H5Aread(a, H5T_NATIVE_LLONG, v) >= 0;
  H5Sclose(sp);
  H5Tclose(t);
  H5Aclose(a);
  return ok;
}

int cnnb_h5_attr_get_f32_array(hid_t loc, const char *name, float *v, int n)
{
  if (H5Aexists(loc, name) <= 0) return 0;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return -1;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  H5T_class_t cl = H5Tget_class(t);
  int ok = (cl == H5T_FLOAT || cl == H5T_INTEGER) && H5Sget_simple_extent_npoints(sp) == n &&
           H5Aread(a, H5T_NATIVE_FLOAT, v) >= 0;
  H5Sclose(sp);
  H5Tclose(t);
  H5Aclose(a);
  return ok ? 1 : -1;
}

static char *dup_str(const char *s)
{
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

void cnnb_h5_free_strs(char **s, int n)
{
  if (!s) return;
  for (int i = 0; i < n; i++) free(s[i]);
  free(s);
}

/* Splits one comma-joined string into trimmed pieces. */
static int split_commas(const char *s, char ***out)
{
  int n = 1;
  for (const char *p = s; *p; p++) n += *p == ',';
  char **v = calloc((size_t)n, sizeof *v);
  if (!v) return CNNB_ENOMEM;
  const char *p = s;
  for (int i = 0; i < n; i++) {
    const char *e = strchr(p, ',');
    if (!e) e = p + strlen(p);
    while (p < e && *p == ' ') p++;
    const char *q = e;
    while (q > p && q[-1] == ' ') q--;
    v[i] = malloc((size_t)(q - p) + 1);
    if (!v[i]) {
      cnnb_h5_free_strs(v, i);
      return CNNB_ENOMEM;
    }
    memcpy(v[i], p, (size_t)(q - p));
    v[i][q - p] = 0;
    p = *e ? e + 1 : e;
  }
  *out = v;
  return n;
}

int cnnb_h5_attr_get_strs(hid_t loc, const char *name, char ***out)
{
  *out = NULL;
  if (H5Aexists(loc, name) <= 0) return 0;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return 0;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  int rc = 0;
  hssize_t n = H5Sget_simple_extent_npoints(sp);
  if (H5Tget_class(t) != H5T_STRING || n <= 0) goto done;
  char **v = calloc((size_t)n, sizeof *v);
  if (!v) {
    rc = CNNB_ENOMEM;
    goto done;
  }
  if (H5Tis_variable_str(t) > 0) {
    hid_t mt = vlen_str_type();
    if (H5Aread(a, mt, v) >= 0) {
      for (hssize_t i = 0; i < n; i++) {
        char *c = dup_str(v[i] ? v[i] : "");
        H5free_memory(v[i]);
        v[i] = c;
        if (!c) rc = CNNB_ENOMEM;
      }
      if (rc == 0) rc = (int)n;
    }
    H5Tclose(mt);
  } else {
    /* Fixed-length strings: read into one block, then copy each (not necessarily
     * NUL-terminated) slot. */
    size_t len = H5Tget_size(t);
    char *blk = malloc(len * (size_t)n);
    hid_t mt = H5Tcopy(t);
    if (blk && H5Aread(a, mt, blk) >= 0) {
      rc = (int)n;
      for (hssize_t i = 0; i < n && rc > 0; i++) {
        v[i] = calloc(len + 1, 1);
        if (!v[i]) rc = CNNB_ENOMEM;
        else memcpy(v[i], blk + (size_t)i * len, len);
      }
    } else if (!blk) {
      rc = CNNB_ENOMEM;
    }
    H5Tclose(mt);
    free(blk);
  }
  if (rc <= 0) {
    cnnb_h5_free_strs(v, (int)n);
    goto done;
  }
  if (rc == 1 && strchr(v[0], ',')) {
    char **parts;
    int np = split_commas(v[0], &parts);
    cnnb_h5_free_strs(v, 1);
    if (np < 0) {
      rc = np;
      goto done;
    }
    v = parts;
    rc = np;
  }
  *out = v;
done:
  H5Sclose(sp);
  H5Tclose(t);
  H5Aclose(a);
  return rc;
}

const char *cnnb_h5_type_name(hid_t type)
{
  switch (H5Tget_class(type)) {
  case H5T_INTEGER: {
    int sgn = H5Tget_sign(type) == H5T_SGN_2;
    switch (H5Tget_size(type)) {
    case 1: return sgn ? "int8" : "uint8";
    case 2: return sgn ? "int16" : "uint16";
    case 4: return sgn ? "int32" : "uint32";
    case 8: return sgn ? "int64" : "uint64";
    default: return "integer";
    }
  }
  case H5T_FLOAT: return H5Tget_size(type) == 4 ? "float32" : H5Tget_size(type) == 8 ? "float64" : "float";
  case H5T_STRING: return "string";
  case H5T_COMPOUND: return "compound";
  case H5T_ENUM: return "enum";
  default: return "non-numeric";
  }
}
