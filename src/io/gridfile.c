/* N-dimensional parallel output files (include/cnnb/gridfile.h). The protocol is outfile.c's:
 * before every collective HDF5 call the ranks agree that all passed their local checks (one bad
 * argument then fails everywhere instead of hanging), and after it they agree on success. Kept
 * apart from outfile.c so that its 2-D interface stays as it is. */
#include "cnnb/gridfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "io/h5util.h"

typedef struct grid_dset {
  char *name;
  hid_t d;
  cnnb_grid_type type;
  int rank;           /* 1 + ndim */
  hsize_t dims[4];    /* dims[0] = rows */
} grid_dset;

struct cnnb_gridfile {
  MPI_Comm comm;
  int rank;
  char *path, *tmp;
  hid_t file;
  grid_dset *ds;
  int nds, cap;
};

static int agree(cnnb_gridfile *gf, int rc, const char *what)
{
  int all = 0;
  if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, gf->comm) != MPI_SUCCESS)
    return cnnb_error(CNNB_EMPI, "%s: MPI_Allreduce failed during %s", gf->path, what);
  if (rc < 0) return rc;
  if (all < 0) return cnnb_error(CNNB_EMPI, "%s: another rank failed during %s", gf->path, what);
  return 0;
}

static void free_gf(cnnb_gridfile *gf)
{
  for (int i = 0; i < gf->nds; i++) free(gf->ds[i].name);
  free(gf->ds);
  free(gf->path);
  free(gf->tmp);
  if (gf->comm != MPI_COMM_NULL) MPI_Comm_free(&gf->comm);
  free(gf);
}

static int close_all(cnnb_gridfile *gf)
{
  int bad = 0;
  for (int i = 0; i < gf->nds; i++) {
    if (gf->ds[i].d >= 0 && H5Dclose(gf->ds[i].d) < 0) bad = 1;
    gf->ds[i].d = -1;
  }
  if (gf->file >= 0 && H5Fclose(gf->file) < 0) bad = 1;
  gf->file = -1;
  return bad ? cnnb_error(CNNB_EIO, "%s: closing the HDF5 file failed (disk full?)", gf->tmp) : 0;
}

int cnnb_gridfile_create(cnnb_gridfile **out, const char *path, MPI_Comm comm)
{
  *out = NULL;
  cnnb_h5_quiet();
  cnnb_gridfile *gf = calloc(1, sizeof *gf);
  if (!gf) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  gf->file = -1;
  gf->comm = MPI_COMM_NULL;
  size_t n = strlen(path) + 5;
  gf->path = malloc(n);
  gf->tmp = malloc(n);
  /* A private communicator keeps the agreement messages apart from the caller's traffic. */
  if (!gf->path || !gf->tmp || MPI_Comm_dup(comm, &gf->comm) != MPI_SUCCESS) {
    free_gf(gf);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  snprintf(gf->path, n, "%s", path);
  snprintf(gf->tmp, n, "%s.tmp", path);
  MPI_Comm_rank(gf->comm, &gf->rank);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, gf->comm, MPI_INFO_NULL);
  H5Pset_coll_metadata_write(fapl, 1);
  gf->file = H5Fcreate(gf->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  int rc = gf->file < 0 ? cnnb_error(CNNB_EIO, "%s: cannot create HDF5 file", gf->tmp) : 0;
  if ((rc = agree(gf, rc, "create")) < 0) {
    if (gf->file >= 0) H5Fclose(gf->file);
    free_gf(gf);
    return rc;
  }
  *out = gf;
  return 0;
}

static grid_dset *find(cnnb_gridfile *gf, const char *name)
{
  for (int i = 0; name && i < gf->nds; i++)
    if (!strcmp(gf->ds[i].name, name)) return &gf->ds[i];
  return NULL;
}

static hid_t file_type(cnnb_grid_type t)
{
  return t == CNNB_GRID_F32 ? H5T_IEEE_F32LE : t == CNNB_GRID_U8 ? H5T_STD_U8LE : H5T_STD_I64LE;
}

static hid_t mem_type(cnnb_grid_type t)
{
  return t == CNNB_GRID_F32 ? H5T_NATIVE_FLOAT : t == CNNB_GRID_U8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_LLONG;
}

int cnnb_gridfile_add(cnnb_gridfile *gf, const char *name, cnnb_grid_type type, long nrows, int ndim,
                      const int *dims)
{
  int rc = 0;
  if (!name || !*name || nrows < 0 || ndim < 0 || ndim > 3)
    rc = cnnb_error(CNNB_EINVAL, "%s: bad dataset '%s'", gf->path, name ? name : "");
  for (int i = 0; !rc && i < ndim; i++)
    if (dims[i] < 1) rc = cnnb_error(CNNB_EINVAL, "%s: dataset '%s' has an empty dimension", gf->path, name);
  if (!rc && find(gf, name)) rc = cnnb_error(CNNB_EINVAL, "%s: dataset '%s' added twice", gf->path, name);
  if (!rc && gf->nds == gf->cap) {
    int cap = gf->cap ? 2 * gf->cap : 8;
    grid_dset *d = realloc(gf->ds, (size_t)cap * sizeof *d);
    if (!d) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", gf->path);
    else gf->ds = d, gf->cap = cap;
  }
  char *nm = rc ? NULL : malloc(strlen(name) + 1);
  if (!rc && !nm) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", gf->path);
  if ((rc = agree(gf, rc, "dataset creation")) < 0) {
    free(nm);
    return rc;
  }
  strcpy(nm, name);
  grid_dset g = {nm, -1, type, ndim + 1, {(hsize_t)nrows, 1, 1, 1}};
  for (int i = 0; i < ndim; i++) g.dims[i + 1] = (hsize_t)dims[i];
  hid_t sp = H5Screate_simple(g.rank, g.dims, NULL);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  g.d = H5Dcreate2(gf->file, name, file_type(type), sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  H5Pclose(lcpl);
  H5Sclose(sp);
  if (g.d < 0) rc = cnnb_error(CNNB_EIO, "%s: cannot create dataset '%s'", gf->tmp, name);
  if ((rc = agree(gf, rc, "dataset creation")) < 0) {
    if (g.d >= 0) H5Dclose(g.d);
    free(nm);
    return rc;
  }
  gf->ds[gf->nds++] = g;
  return 0;
}

int cnnb_gridfile_write(cnnb_gridfile *gf, const char *name, long row0, long nrows, const void *data)
{
  int rc = 0;
  grid_dset *ds = find(gf, name);
  if (!ds)
    rc = cnnb_error(CNNB_EINVAL, "%s: no dataset '%s' was added", gf->path, name ? name : "");
  else if (row0 < 0 || nrows < 0 || (hsize_t)(row0 + nrows) > ds->dims[0] || (nrows > 0 && !data))
    rc = cnnb_error(CNNB_EINVAL, "%s: rows %ld-%ld out of range in '%s'", gf->path, row0, row0 + nrows - 1, name);
  if ((rc = agree(gf, rc, "write")) < 0) return rc;
  hsize_t start[4] = {(hsize_t)row0, 0, 0, 0}, cnt[4];
  memcpy(cnt, ds->dims, sizeof cnt);
  cnt[0] = (hsize_t)nrows;
  hid_t fsp = H5Dget_space(ds->d), msp;
  static const long long dummy = 0; /* H5Dwrite wants a buffer even for 0 rows */
  if (nrows > 0) {
    H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    msp = H5Screate_simple(ds->rank, cnt, NULL);
  } else {
    /* A rank with nothing to write still joins the collective write, with empty selections. */
    hsize_t one = 1;
    H5Sselect_none(fsp);
    msp = H5Screate_simple(1, &one, NULL);
    H5Sselect_none(msp);
    data = &dummy;
  }
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  herr_t e = H5Dwrite(ds->d, mem_type(ds->type), msp, fsp, dxpl, data);
  H5Pclose(dxpl);
  H5Sclose(msp);
  H5Sclose(fsp);
  if (e < 0) rc = cnnb_error(CNNB_EIO, "%s: writing rows %ld-%ld of '%s' failed", gf->tmp, row0, row0 + nrows - 1, name);
  return agree(gf, rc, "write");
}

static int attr(cnnb_gridfile *gf, const char *obj, const char *name, const char *s, long long v, const double *f)
{
  int rc = 0;
  hid_t loc = gf->file;
  const char *on = obj && *obj && strcmp(obj, "/") ? obj : "/";
  if (strcmp(on, "/")) {
    grid_dset *ds = find(gf, on);
    if (ds) loc = ds->d;
    else rc = cnnb_error(CNNB_EINVAL, "%s: no dataset '%s' for attribute '%s'", gf->path, on, name);
  }
  if (!name || !*name) rc = cnnb_error(CNNB_EINVAL, "%s: attribute without a name", gf->path);
  if ((rc = agree(gf, rc, "attribute")) < 0) return rc;
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
  if (e < 0) rc = cnnb_error(CNNB_EIO, "%s: cannot write attribute '%s' of '%s'", gf->tmp, name, on);
  return agree(gf, rc, "attribute");
}

int cnnb_gridfile_attr_str(cnnb_gridfile *gf, const char *obj, const char *name, const char *value)
{
  return attr(gf, obj, name, value ? value : "", 0, NULL);
}

int cnnb_gridfile_attr_i64(cnnb_gridfile *gf, const char *obj, const char *name, long long value)
{
  return attr(gf, obj, name, NULL, value, NULL);
}

int cnnb_gridfile_attr_f64(cnnb_gridfile *gf, const char *obj, const char *name, double value)
{
  return attr(gf, obj, name, NULL, 0, &value);
}

int cnnb_gridfile_commit(cnnb_gridfile *gf)
{
  int rc = cnnb_h5_attr_int(gf->file, "complete", 1, H5T_STD_I32LE) < 0
               ? cnnb_error(CNNB_EIO, "%s: cannot write attribute 'complete'", gf->tmp)
               : 0;
  int rc2 = close_all(gf);
  if (!rc) rc = rc2;
  /* The allreduce is also the barrier: every rank has closed before rank 0 renames. */
  rc = agree(gf, rc, "commit");
  if (!rc && gf->rank == 0 && rename(gf->tmp, gf->path) != 0)
    rc = cnnb_error(CNNB_EIO, "%s: cannot rename from %s: %s", gf->path, gf->tmp, strerror(errno));
  int r0 = rc;
  MPI_Bcast(&r0, 1, MPI_INT, 0, gf->comm);
  if (!rc && r0 < 0) rc = cnnb_error(CNNB_EIO, "%s: rank 0 could not finish the file", gf->path);
  if (rc < 0 && gf->rank == 0) remove(gf->tmp); /* never leave a half-written file */
  free_gf(gf);
  return rc;
}

void cnnb_gridfile_abort(cnnb_gridfile *gf)
{
  if (!gf) return;
  close_all(gf);
  MPI_Barrier(gf->comm);
  if (gf->rank == 0) remove(gf->tmp);
  free_gf(gf);
}
