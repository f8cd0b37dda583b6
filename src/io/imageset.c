/* Image sets (include/cnnb/imageset.h): /pixels uint8 (all images end to end), /offsets int64
 * N (first byte of each), /shapes int32 N x 3 (h, w, 3), /paths string N. */
#include <dirent.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cnnb/error.h"
#include "cnnb/image.h"
#include "cnnb/imageset.h"
#include "io/h5util.h"

static int is_image_name(const char *n)
{
  const char *dot = strrchr(n, '.');
  return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_dir(const char *dir, char ***names, long *n)
{
  DIR *d = opendir(dir);
  if (!d) return cnnb_error(CNNB_EIO, "%s: cannot open directory", dir);
  long cap = 0, k = 0;
  char **v = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!is_image_name(e->d_name)) continue;
    if (k == cap) {
      cap = cap ? 2 * cap : 64;
      char **nv = realloc(v, (size_t)cap * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    if (!(v[k] = malloc(len))) break;
    snprintf(v[k], len, "%s/%s", dir, e->d_name);
    k++;
  }
  closedir(d);
  if (e) { /* stopped early: out of memory */
    for (long i = 0; i < k; i++) free(v[i]);
    free(v);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory listing the directory", dir);
  }
  if (k) qsort(v, (size_t)k, sizeof *v, cmp_str);
  *names = v, *n = k;
  return 0;
}

/* Appends len bytes to the extendible 1-D dataset ds at offset off. */
static int append_u8(hid_t ds, hsize_t off, const unsigned char *p, hsize_t len)
{
  hsize_t size = off + len;
  if (H5Dset_extent(ds, &size) < 0) return -1;
  hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(1, &len, NULL);
  int rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &len, NULL) < 0 ||
                   H5Dwrite(ds, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, p) < 0
               ? -1
               : 0;
  H5Sclose(ms);
  H5Sclose(fs);
  return rc;
}

static int write_1d(hid_t f, const char *name, hid_t ftype, hid_t mtype, int ndim, const hsize_t *dims, const void *v)
{
  hid_t sp = H5Screate_simple(ndim, dims, NULL);
  hid_t ds = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  int rc = ds < 0 || H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0 ? -1 : 0;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(sp);
  return rc;
}

int cnnb_imageset_import_dir(const char *dir, const char *out, int compress, long *count, long *skipped)
{
  cnnb_h5_quiet();
  char **names = NULL;
  long n = 0, kept = 0, skip = 0;
  int rc = list_dir(dir, &names, &n);
  if (rc) return rc;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  int64_t *offs = malloc(sizeof *offs * (size_t)(n ? n : 1));
  int32_t *shapes = malloc(sizeof *shapes * 3 * (size_t)(n ? n : 1));
  const char **paths = malloc(sizeof *paths * (size_t)(n ? n : 1));
  hid_t f = -1, ds = -1;
  if (!offs || !shapes || !paths) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", out);
    goto done;
  }
  if ((f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot create", tmp);
    goto done;
  }
  hsize_t zero = 0, unlim = H5S_UNLIMITED, chunk = 1 << 20, total = 0;
  hid_t sp = H5Screate_simple(1, &zero, &unlim), pl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(pl, 1, &chunk);
  if (compress > 0) H5Pset_deflate(pl, (unsigned)compress);
  ds = H5Dcreate2(f, "pixels", H5T_STD_U8LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
  H5Pclose(pl);
  H5Sclose(sp);
  if (ds < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot create dataset /pixels", tmp);
    goto done;
  }
  for (long i = 0; i < n; i++) {
    unsigned char *px;
    int h, w;
    if (cnnb_image_load_rgb(names[i], &px, &h, &w)) {
      cnnb_log(CNNB_LOG_WARN, "import images: image %ld (%s) skipped: %s", i, names[i], cnnb_error_message());
      skip++;
      continue;
    }
    hsize_t len = (hsize_t)h * w * 3;
    int wrc = append_u8(ds, total, px, len);
    free(px);
    if (wrc) {
      rc = cnnb_error(CNNB_EIO, "%s: cannot write /pixels for image %ld (%s)", tmp, i, names[i]);
      goto done;
    }
    offs[kept] = (int64_t)total;
    shapes[3 * kept] = h, shapes[3 * kept + 1] = w, shapes[3 * kept + 2] = 3;
    paths[kept] = names[i];
    total += len;
    kept++;
  }
  if (!kept) {
    rc = cnnb_error(CNNB_EIO, "%s: no decodable JPEG or PNG image (%ld skipped)", dir, skip);
    goto done;
  }
  hsize_t dn[2] = {(hsize_t)kept, 3};
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  H5Tset_cset(st, H5T_CSET_UTF8);
  int wrc = write_1d(f, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dn, offs) ||
            write_1d(f, "shapes", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dn, shapes) ||
            write_1d(f, "paths", st, st, 1, dn, paths) ||
            cnnb_h5_attr_str(f, "cnnb_schema", CNNB_IMAGESET_SCHEMA) < 0 ||
            cnnb_h5_attr_int(f, "cnnb_version", CNNB_IMAGESET_VERSION, H5T_STD_I32LE) < 0 ||
            cnnb_h5_attr_int(f, "skipped", skip, H5T_STD_I64LE) < 0;
  H5Tclose(st);
  if (wrc) rc = cnnb_error(CNNB_EIO, "%s: cannot write the index datasets", tmp);
done:
  if (ds >= 0) H5Dclose(ds);
  if (f >= 0 && H5Fclose(f) < 0 && !rc) rc = cnnb_error(CNNB_EIO, "%s: close failed", tmp);
  if (!rc && rename(tmp, out)) rc = cnnb_error(CNNB_EIO, "%s: cannot rename to %s", tmp, out);
  if (rc) remove(tmp);
  for (long i = 0; i < n; i++) free(names[i]);
  free(names);
  free(offs);
  free(shapes);
  free(paths);
  if (!rc) *count = kept, *skipped = skip;
  return rc;
}

struct cnnb_imageset {
  char *path;
  hid_t f, pixels;
  long n;
  int64_t *offs;
  int32_t *shapes;
  char **paths;
  /* deflate-only chunks (what import writes) are read as stored and decoded here
   * (cnnb_image_read_direct); the chunk a photo shares with the next is kept in cbuf */
  size_t chunk;         /* pixels per chunk; 0: HDF5's own read path */
  unsigned char *cbuf;  /* chunk ccur, decoded (ccur < 0: none) */
  long long ccur;
  unsigned char *zbuf;  /* compressed bytes of one chunk */
  size_t zcap;
};

void cnnb_imageset_close(cnnb_imageset *s)
{
  if (!s) return;
  if (s->pixels >= 0) H5Dclose(s->pixels);
  if (s->f >= 0) H5Fclose(s->f);
  if (s->paths) {
    for (long i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
  }
  free(s->offs);
  free(s->shapes);
  free(s->path);
  free(s->cbuf);
  free(s->zbuf);
  free(s);
}

int cnnb_imageset_open(cnnb_imageset **out, const char *path)
{
  cnnb_h5_quiet();
  int rc = cnnb_h5_check_file(path);
  if (rc) return rc;
  cnnb_imageset *s = calloc(1, sizeof *s);
  if (!s) return cnnb_error(CNNB_ENOMEM, "out of memory");
  s->f = s->pixels = -1;
  s->path = strdup(path);
  if ((s->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot open", path);
    goto fail;
  }
  hid_t o = H5Dopen2(s->f, "offsets", H5P_DEFAULT), sh = H5Dopen2(s->f, "shapes", H5P_DEFAULT);
  s->pixels = H5Dopen2(s->f, "pixels", H5P_DEFAULT);
  /* Photos are read once, in order, each a run of whole or partial 1 MiB chunks. Uncompressed,
   * they are best read without a chunk cache: HDF5 then copies straight into the caller's
   * buffer (145 MB of photos: 0.022 -> 0.016 s). Compressed, the cache keeps the chunk that two
   * photos share from being inflated twice. */
  hid_t dcpl = s->pixels >= 0 ? H5Dget_create_plist(s->pixels) : -1;
  hsize_t cdim = 0;
  s->ccur = -1;
  if (dcpl >= 0 && cnnb_h5_deflate_only(dcpl) && H5Pget_chunk(dcpl, 1, &cdim) == 1 && cdim > 0) {
    /* gzip chunks: read as stored and decoded by the project's decoder, 1.6x zlib's speed on
     * 1 MiB photo chunks (docs/BENCHMARKS.md item 23), without a chunk cache */
    s->chunk = (size_t)cdim;
    if (!(s->cbuf = malloc(s->chunk))) {
      H5Pclose(dcpl);
      rc = cnnb_error(CNNB_ENOMEM, "out of memory");
      goto fail;
    }
  }
  if (dcpl >= 0 && (H5Pget_nfilters(dcpl) == 0 || s->chunk)) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT) >= 0) {
      H5Dclose(s->pixels);
      s->pixels = H5Dopen2(s->f, "pixels", dapl);
    }
    if (dapl >= 0) H5Pclose(dapl);
  }
  if (dcpl >= 0) H5Pclose(dcpl);
  if (o < 0 || sh < 0 || s->pixels < 0) {
    if (o >= 0) H5Dclose(o);
    if (sh >= 0) H5Dclose(sh);
    rc = cnnb_error(CNNB_EIO, "%s: not an image set (needs /pixels, /offsets, /shapes: cnn-batch import images)",
                    path);
    goto fail;
  }
  hid_t sp = H5Dget_space(o);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(sp, &n, NULL);
  H5Sclose(sp);
  s->n = (long)n;
  s->offs = malloc(sizeof *s->offs * (n ? n : 1));
  s->shapes = malloc(sizeof *s->shapes * 3 * (n ? n : 1));
  s->paths = calloc(n ? n : 1, sizeof *s->paths);
  int bad = !s->offs || !s->shapes || !s->paths || H5Dread(o, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->offs) < 0 ||
            H5Dread(sh, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->shapes) < 0;
  H5Dclose(o);
  H5Dclose(sh);
  hid_t pd = bad ? -1 : H5Dopen2(s->f, "paths", H5P_DEFAULT);
  if (pd >= 0) {
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    if (H5Dread(pd, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->paths) < 0) bad = 1;
    H5Tclose(st);
    H5Dclose(pd);
  }
  if (bad) {
    rc = cnnb_error(CNNB_EIO, "%s: cannot read /offsets, /shapes or /paths", path);
    goto fail;
  }
  for (long i = 0; i < s->n; i++)
    if (s->shapes[3 * i] < 1 || s->shapes[3 * i + 1] < 1 || s->shapes[3 * i + 2] != 3 || s->offs[i] < 0) {
      rc = cnnb_error(CNNB_EIO, "%s: /shapes or /offsets row %ld is invalid", path, i);
      goto fail;
    }
  *out = s;
  return 0;
fail:
  cnnb_imageset_close(s);
  return rc;
}

long cnnb_imageset_count(const cnnb_imageset *s) { return s->n; }

void cnnb_imageset_size(const cnnb_imageset *s, long i, int *h, int *w)
{
  *h = s->shapes[3 * i], *w = s->shapes[3 * i + 1];
}

const char *cnnb_imageset_path(const cnnb_imageset *s, long i) { return s->paths[i] ? s->paths[i] : ""; }

/* Pixels [off, off + len) from the chunks that hold them: a chunk wholly inside the range is
 * decoded straight into buf; one that the range shares with a neighbour goes through cbuf,
 * where the next image (read in order) finds it. -1 on failure, CNNB_ENOMEM. */
static int read_direct(cnnb_imageset *s, size_t off, size_t len, unsigned char *buf)
{
  const size_t C = s->chunk, end = off + len;
  for (size_t k = off / C; k * C < end; k++) {
    const size_t c0 = k * C, a = c0 > off ? c0 : off, b = c0 + C < end ? c0 + C : end;
    const hsize_t at = (hsize_t)c0;
    if (a == c0 && b == c0 + C) { /* whole chunk */
      const int rc = cnnb_h5_read_deflate_chunk(s->pixels, &at, buf + (c0 - off), C, &s->zbuf, &s->zcap);
      if (rc) return rc;
      continue;
    }
    if (s->ccur != (long long)k) {
      s->ccur = -1;
      const int rc = cnnb_h5_read_deflate_chunk(s->pixels, &at, s->cbuf, C, &s->zbuf, &s->zcap);
      if (rc) return rc;
      s->ccur = (long long)k;
    }
    memcpy(buf + (a - off), s->cbuf + (a - c0), b - a);
  }
  return 0;
}

int cnnb_imageset_read(cnnb_imageset *s, long i, unsigned char *buf)
{
  if (s->chunk) {
    const size_t len = (size_t)s->shapes[3 * i] * s->shapes[3 * i + 1] * 3;
    const int rc = read_direct(s, (size_t)s->offs[i], len, buf);
    if (rc == CNNB_ENOMEM) return cnnb_error(CNNB_ENOMEM, "%s: out of memory reading image %ld", s->path, i);
    return rc ? cnnb_error(CNNB_EIO, "%s: cannot read /pixels of image %ld (corrupt chunk?)", s->path, i) : 0;
  }
  hsize_t off = (hsize_t)s->offs[i], len = (hsize_t)s->shapes[3 * i] * s->shapes[3 * i + 1] * 3;
  hid_t fs = H5Dget_space(s->pixels), ms = H5Screate_simple(1, &len, NULL);
  int bad = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &len, NULL) < 0 ||
            H5Dread(s->pixels, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, buf) < 0;
  H5Sclose(ms);
  H5Sclose(fs);
  return bad ? cnnb_error(CNNB_EIO, "%s: cannot read /pixels of image %ld", s->path, i) : 0;
}
