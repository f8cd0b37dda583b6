/* N-dimensional output files written by all ranks at once (parallel HDF5): the per-image grids
 * of the filter, style and sliding-window commands, N x H x W x C, which the 2-D
 * cnnb_outfile (data.h) cannot hold. Same contract as cnnb_outfile: every call is collective on
 * the communicator given to create, ranks agree on the outcome, data goes to PATH.tmp and
 * commit writes the root attribute complete=1 and renames it to PATH; abort removes PATH.tmp.
 * Layout: docs/FORMATS.md "Output files" (and the commands' sections). */
#ifndef CNNB_GRIDFILE_H
#define CNNB_GRIDFILE_H

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnnb_grid_type { CNNB_GRID_F32 = 0, CNNB_GRID_U8, CNNB_GRID_I64 } cnnb_grid_type;

typedef struct cnnb_gridfile cnnb_gridfile;
int cnnb_gridfile_create(cnnb_gridfile **gf, const char *path, MPI_Comm comm);
/* A dataset of nrows x dims[0] x .. x dims[ndim-1] (ndim 0-3; 0 gives a 1-D dataset),
 * contiguous, so that every rank writes its own rows directly. */
int cnnb_gridfile_add(cnnb_gridfile *gf, const char *name, cnnb_grid_type type, long nrows, int ndim,
                      const int *dims);
/* Writes rows [row0, row0 + nrows) (nrows may be 0; data then unused). The data type matches
 * the dataset's: float, unsigned char or long long. */
int cnnb_gridfile_write(cnnb_gridfile *gf, const char *name, long row0, long nrows, const void *data);
/* Attributes on the root ("/" or NULL) or a dataset; same value on every rank. */
int cnnb_gridfile_attr_str(cnnb_gridfile *gf, const char *obj, const char *name, const char *value);
int cnnb_gridfile_attr_i64(cnnb_gridfile *gf, const char *obj, const char *name, long long value);
int cnnb_gridfile_attr_f64(cnnb_gridfile *gf, const char *obj, const char *name, double value);
int cnnb_gridfile_commit(cnnb_gridfile *gf); /* frees gf, also on failure (then as abort) */
void cnnb_gridfile_abort(cnnb_gridfile *gf); /* frees gf; NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif
