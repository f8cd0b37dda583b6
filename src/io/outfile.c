/* Output files written by all ranks at once through parallel HDF5 (MPI-IO driver): 1-D to
 * 5-D float32, uint8 or int64 datasets, one row per example; layout in
 * docs/FORMATS.md "Output files". Every call is collective. Before any collective HDF5 call,
 * ranks agree (MPI_Allreduce) that all of them passed their local checks, so that one bad
 * argument gives an error on every rank instead of a hang; after it, they agree on success. */
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "io/h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out_dset {
  char *name;
  hid_t d;
  cnnb_out_type type;
  int rank;                             /* 1 + ndim (1 for strings) */
  hsize_t dims[1 + CNNB_OUT_MAX_NDIM]; /* dims[0] = rows */
  size_t strsize;                       /* CNNB_OUT_STR: bytes per string */
} out_dset;

struct cnnb_outfile {
  MPI_Comm comm;
  int rank;
  char *path, *tmp;
  hid_t file;
  out_dset *ds;
  int nds, cap;
};

/* All ranks learn whether every rank's rc is 0. Returns the local error where there was one,
 * else CNNB_EMPI on the ranks that did fine while another failed. */
static int agree(cnnb_outfile *of, int rc, const char *what)
{
  int all = 0;
  const char *p = of->path ? of->path : "output file";
  if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, of->comm) != MPI_SUCCESS)
    return cnnb_error(CNNB_EMPI, "%s: MPI_Allreduce failed during %s", p, what);
  if (rc < 0) return rc;
  if (all < 0) return cnnb_error(CNNB_EMPI, "%s: another rank failed during %s", p, what);
  return 0;
}

static void free_of(cnnb_outfile *of)
{
  for (int i = 0; i < of->nds; i++) free(of->ds[i].name);
  free(of->ds);
  free(of->path);
  free(of->tmp);
  if (of->comm != MPI_COMM_NULL) MPI_Comm_free(&of->comm);
  free(of);
}

/* Closes every HDF5 object (collective: H5Fclose flushes metadata from all ranks). */
static int close_all(cnnb_outfile *of)
{
  int bad = 0;
  for (int i = 0; i < of->nds; i++) {
    if (of->ds[i].d >= 0 && H5Dclose(of->ds[i].d) < 0) bad = 1;
    of->ds[i].d = -1;
  }
  if (of->file >= 0 && H5Fclose(of->file) < 0) bad = 1;
  of->file = -1;
  return bad ? cnnb_error(CNNB_EIO, "%s: closing the HDF5 file failed (disk full?)", of->tmp) : 0;
}

static char *dup_str(const char *s)
{
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

int cnnb_outfile_create(cnnb_outfile **out, const char *path, MPI_Comm comm)
{
  *out = NULL;
  cnnb_h5_quiet();
  cnnb_outfile *of = calloc(1, sizeof *of);
  if (!of) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  of->file = -1;
  of->comm = MPI_COMM_NULL;
  /* A private communicator keeps our agreement messages apart from the caller's traffic. */
  if (MPI_Comm_dup(comm, &of->comm) != MPI_SUCCESS) {
    free_of(of);
    return cnnb_error(CNNB_EMPI, "%s: MPI_Comm_dup failed", path);
  }
  MPI_Comm_rank(of->comm, &of->rank);
  int rc = 0;
  size_t n = strlen(path) + 5;
  of->path = dup_str(path);
  of->tmp = malloc(n);
  if (!of->path || !of->tmp) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  else snprintf(of->tmp, n, "%s.tmp", path);
  if ((rc = agree(of, rc, "create")) < 0) {
    free_of(of);
    return rc;
  }
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, of->comm, MPI_INFO_NULL);
  /* Metadata written collectively scales better than every rank writing it. */
  H5Pset_coll_metadata_write(fapl, 1);
  of->file = H5Fcreate(of->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (of->file < 0) rc = cnnb_error(CNNB_EIO, "%s: cannot create HDF5 file", of->tmp);
  if ((rc = agree(of, rc, "create")) < 0) {
    /* H5Fcreate through MPI-IO succeeds or fails on all ranks together. */
    if (of->file >= 0) H5Fclose(of->file);
    free_of(of);
    return rc;
  }
  *out = of;
  return 0;
}

static out_dset *find(cnnb_outfile *of, const char *name)
{
  for (int i = 0; i < of->nds; i++)
    if (strcmp(of->ds[i].name, name) == 0) return &of->ds[i];
  return NULL;
}

static const char *type_name(cnnb_out_type t)
{
  return t == CNNB_OUT_F32 ? "float32" : t == CNNB_OUT_U8 ? "uint8" : t == CNNB_OUT_STR ? "string" : "int64";
}

/* Fixed-length strings (parallel HDF5 1.10 cannot write variable-length data); the caller closes
 * the copy. */
static hid_t str_type(size_t size)
{
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, size);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

static hid_t file_type(cnnb_out_type t)
{
  return t == CNNB_OUT_F32 ? H5T_IEEE_F32LE : t == CNNB_OUT_U8 ? H5T_STD_U8LE : H5T_STD_I64LE;
}

static hid_t mem_type(cnnb_out_type t)
{
  return t == CNNB_OUT_F32 ? H5T_NATIVE_FLOAT : t == CNNB_OUT_U8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_LLONG;
}

int cnnb_outfile_add(cnnb_outfile *of, const char *name, cnnb_out_type type, long nrows, int ndim,
                     const int *dims)
{
  int rc = 0;
  if (!name || !*name || nrows < 0 || ndim < 0 || ndim > CNNB_OUT_MAX_NDIM || (ndim > 0 && !dims) ||
      (type != CNNB_OUT_F32 && type != CNNB_OUT_U8 && type != CNNB_OUT_I64 && type != CNNB_OUT_STR) ||
      (type == CNNB_OUT_STR && ndim != 1))
    rc = cnnb_error(CNNB_EINVAL, "%s: bad dataset '%s' (%ld rows, %d more dimensions)", of->path,
                    name ? name : "", nrows, ndim);
  for (int i = 0; rc == 0 && i < ndim; i++)
    if (dims[i] < 1)
      rc = cnnb_error(CNNB_EINVAL, "%s: dataset '%s' has an empty dimension", of->path, name);
  if (rc == 0 && find(of, name))
    rc = cnnb_error(CNNB_EINVAL, "%s: dataset '%s' added twice", of->path, name);
  if (rc == 0 && of->nds == of->cap) {
    int cap = of->cap ? 2 * of->cap : 8;
    out_dset *d = realloc(of->ds, (size_t)cap * sizeof *d);
    if (!d) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", of->path);
    else {
      of->ds = d;
      of->cap = cap;
    }
  }
  char *nm = rc == 0 ? dup_str(name) : NULL;
  if (rc == 0 && !nm) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", of->path);
  if ((rc = agree(of, rc, "dataset creation")) < 0) {
    free(nm);
    return rc;
  }
  out_dset g = {.name = nm, .d = -1, .type = type, .rank = 1 + ndim, .dims = {(hsize_t)nrows}};
  for (int i = 0; i < ndim; i++) g.dims[i + 1] = (hsize_t)dims[i];
  if (type == CNNB_OUT_STR) g.rank = 1, g.strsize = (size_t)dims[0];
  hid_t sp = H5Screate_simple(g.rank, g.dims, NULL);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t ft = type == CNNB_OUT_STR ? str_type(g.strsize) : file_type(type);
  g.d = H5Dcreate2(of->file, name, ft, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  if (type == CNNB_OUT_STR) H5Tclose(ft);
  H5Pclose(lcpl);
  H5Sclose(sp);
  if (g.d < 0) rc = cnnb_error(CNNB_EIO, "%s: cannot create dataset '%s'", of->tmp, name);
  if ((rc = agree(of, rc, "dataset creation")) < 0) {
    if (g.d >= 0) H5Dclose(g.d);
    free(nm);
    return rc;
  }
  of->ds[of->nds++] = g;
  return 0;
}

/* The 2-D wrappers: ncols 0 is a 1-D dataset, as before the general call existed. A negative
 * ncols reaches cnnb_outfile_add as a bad dimension. */
int cnnb_outfile_add_f32(cnnb_outfile *of, const char *name, long nrows, int ncols)
{
  return cnnb_outfile_add(of, name, CNNB_OUT_F32, nrows, ncols != 0, &ncols);
}

int cnnb_outfile_add_i64(cnnb_outfile *of, const char *name, long nrows, int ncols)
{
  return cnnb_outfile_add(of, name, CNNB_OUT_I64, nrows, ncols != 0, &ncols);
}

/* want < 0: any type (cnnb_outfile_write); else the typed wrappers' check. */
static int write_rows(cnnb_outfile *of, const char *name, long row0, long nrows,
                      const void *data, int want)
{
  int rc = 0;
  out_dset *ds = name ? find(of, name) : NULL;
  if (!ds)
    rc = cnnb_error(CNNB_EINVAL, "%s: no dataset '%s' was added", of->path, name ? name : "");
  else if (want >= 0 && ds->type != (cnnb_out_type)want)
    rc = cnnb_error(CNNB_EINVAL, "%s: dataset '%s' is %s", of->path, name, type_name(ds->type));
  else if (row0 < 0 || nrows < 0 || (hsize_t)(row0 + nrows) > ds->dims[0] || (nrows > 0 && !data))
    rc = cnnb_error(CNNB_EINVAL, "%s: rows %ld-%ld out of range 0-%ld in '%s'", of->path, row0,
                    row0 + nrows - 1, (long)ds->dims[0] - 1, name);
  if ((rc = agree(of, rc, "write")) < 0) return rc;

  hsize_t start[1 + CNNB_OUT_MAX_NDIM] = {(hsize_t)row0}, cnt[1 + CNNB_OUT_MAX_NDIM];
  memcpy(cnt, ds->dims, sizeof cnt);
  cnt[0] = (hsize_t)nrows;
  hid_t fsp = H5Dget_space(ds->d), msp;
  static const long long dummy = 0; /* H5Dwrite wants a buffer even for 0 rows */
  if (nrows > 0) {
    H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    msp = H5Screate_simple(ds->rank, cnt, NULL);
  } else {
    /* A rank with nothing to write still joins the collective write, with empty
     * selections. */
    hsize_t one = 1;
    H5Sselect_none(fsp);
    msp = H5Screate_simple(1, &one, NULL);
    H5Sselect_none(msp);
    data = &dummy;
  }
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  hid_t mt = ds->type == CNNB_OUT_STR ? str_type(ds->strsize) : mem_type(ds->type);
  herr_t e = H5Dwrite(ds->d, mt, msp, fsp, dxpl, data);
  if (ds->type == CNNB_OUT_STR) H5Tclose(mt);
  H5Pclose(dxpl);
  H5Sclose(msp);
  H5Sclose(fsp);
  if (e < 0)
    rc = cnnb_error(CNNB_EIO, "%s: writing rows %ld-%ld of '%s' failed", of->tmp, row0,
                    row0 + nrows - 1, name);
  return agree(of, rc, "write");
}

int cnnb_outfile_write(cnnb_outfile *of, const char *name, long row0, long nrows, const void *data)
{
  return write_rows(of, name, row0, nrows, data, -1);
}

int cnnb_outfile_write_f32(cnnb_outfile *of, const char *name, long row0, long nrows,
                           const float *data)
{
  return write_rows(of, name, row0, nrows, data, CNNB_OUT_F32);
}

int cnnb_outfile_write_i64(cnnb_outfile *of, const char *name, long row0, long nrows,
                           const long long *data)
{
  return write_rows(of, name, row0, nrows, data, CNNB_OUT_I64);
}

/* One scalar attribute: the string s, else the float64 *f, else the int64 v. */
static int attr(cnnb_outfile *of, const char *obj, const char *name, const char *s,
                long long v, const double *f)
{
  int rc = 0;
  hid_t loc = of->file;
  const char *on = obj && *obj && strcmp(obj, "/") ? obj : "/";
  if (on[0] != '/' || on[1]) {
    out_dset *ds = find(of, on);
    if (ds) loc = ds->d;
    else rc = cnnb_error(CNNB_EINVAL, "%s: no dataset '%s' for attribute '%s'", of->path, on, name);
  }
  if (!name || !*name) rc = cnnb_error(CNNB_EINVAL, "%s: attribute without a name", of->path);
  if ((rc = agree(of, rc, "attribute")) < 0) return rc;
  int e;
  if (s) {
    e = cnnb_h5_attr_str(loc, name, s);
  } else if (f) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    e = a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, f) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
  } else {
    e = cnnb_h5_attr_int(loc, name, v, H5T_STD_I64LE);
  }
  if (e < 0) rc = cnnb_error(CNNB_EIO, "%s: cannot write attribute '%s' of '%s'", of->tmp, name, on);
  return agree(of, rc, "attribute");
}

int cnnb_outfile_attr_str(cnnb_outfile *of, const char *obj, const char *name, const char *value)
{
  return attr(of, obj, name, value ? value : "", 0, NULL);
}

int cnnb_outfile_attr_i64(cnnb_outfile *of, const char *obj, const char *name, long long value)
{
  return attr(of, obj, name, NULL, value, NULL);
}

int cnnb_outfile_attr_f64(cnnb_outfile *of, const char *obj, const char *name, double value)
{
  return attr(of, obj, name, NULL, 0, &value);
}

int cnnb_outfile_commit(cnnb_outfile *of)
{
  int rc = cnnb_h5_attr_int(of->file, "complete", 1, H5T_STD_I32LE) < 0
               ? cnnb_error(CNNB_EIO, "%s: cannot write attribute 'complete'", of->tmp)
               : 0;
  int rc2 = close_all(of);
  if (rc == 0) rc = rc2;
  /* The allreduce is also the barrier: every rank has closed before rank 0 renames. */
  rc = agree(of, rc, "commit");
  if (rc == 0 && of->rank == 0 && rename(of->tmp, of->path) != 0)
    rc = cnnb_error(CNNB_EIO, "%s: cannot rename from %s: %s", of->path, of->tmp,
                    strerror(errno));
  int r0 = rc;
  if (MPI_Bcast(&r0, 1, MPI_INT, 0, of->comm) != MPI_SUCCESS && rc == 0)
    rc = cnnb_error(CNNB_EMPI, "%s: MPI_Bcast failed during commit", of->path);
  if (rc == 0 && r0 < 0) rc = cnnb_error(CNNB_EIO, "%s: rank 0 could not finish the file", of->path);
  if (rc < 0 && of->rank == 0) remove(of->tmp); /* never leave a half-written file */
  free_of(of);
  return rc;
}

void cnnb_outfile_abort(cnnb_outfile *of)
{
  if (!of) return;
  close_all(of);
  MPI_Barrier(of->comm);
  if (of->rank == 0) remove(of->tmp);
  free_of(of);
}
