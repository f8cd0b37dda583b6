/* Data files: IDX import, reading HDF5 dataset files, writing HDF5 output files.
 * docs/FORMATS.md defines the layouts. All functions return 0 or a negative cnnb_status
 * with a one-line message (cnnb_error_message()) naming the file and dataset. */
#ifndef CNNB_DATA_H
#define CNNB_DATA_H

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version written to the root attribute cnnb_version of dataset files. */
#define CNNB_DATASET_SCHEMA "cnnb-dataset"
#define CNNB_DATASET_VERSION 1
/* Most channels a dataset may have (mean/std arrays are this long). */
#define CNNB_MAX_CHANNELS 4

typedef struct cnnb_import_opts {
  const char *class_names; /* comma-separated or NULL */
  int compress;            /* gzip level 0-9 (0 = none); cnnb_import_opts_init sets 4 */
  long limit;              /* import at most this many images; 0 = all */
} cnnb_import_opts;

void cnnb_import_opts_init(cnnb_import_opts *o);

/* Reads IDX images (idx3 ubyte N x H x W, or idx4 N x H x W x C with C <= 4) and labels
 * (idx1 ubyte), each gzip-compressed or raw (told apart by the gzip magic 1f 8b), and writes
 * OUT atomically (OUT.tmp, then rename). Layout: docs/FORMATS.md "Dataset files".
 * opts may be NULL (defaults). */
int cnnb_import_idx(const char *images_path, const char *labels_path, const char *out_path,
                    const cnnb_import_opts *opts);

typedef struct cnnb_dataset_opts {
  const char *images_name; /* default "images"; NULL or "" -> default */
  const char *labels_name; /* default "labels"; NULL or "" -> default */
  int labels_required;     /* 0: a file without the labels dataset opens with no labels */
  int have_norm;           /* 1: use mean/std below instead of the file's attributes */
  float mean[CNNB_MAX_CHANNELS], std[CNNB_MAX_CHANNELS];
  /* Memory per handle for decompressed pixels, in MiB (0 -> 64): data that fit are read
   * whole at the first cnnb_dataset_read; larger data go through an HDF5 chunk cache of this
   * size. Negative: never preload, HDF5's default chunk cache. */
  long cache_mb;
} cnnb_dataset_opts;

/* Defaults: names "images"/"labels", labels_required = 1, no override. */
void cnnb_dataset_opts_init(cnnb_dataset_opts *o);

typedef struct cnnb_dataset cnnb_dataset; /* opaque */

/* Opens PATH read-only for this process alone (each MPI rank opens its own handle; nothing
 * collective). opts may be NULL (defaults). Validates file, datasets, types, shapes and label
 * counts; reads all labels. A handle is not safe to share between threads. */
int cnnb_dataset_open(cnnb_dataset **out, const char *path, const cnnb_dataset_opts *opts);
void cnnb_dataset_close(cnnb_dataset *ds);
long cnnb_dataset_count(const cnnb_dataset *ds);
void cnnb_dataset_shape(const cnnb_dataset *ds, int *h, int *w, int *c);
/* Root attribute num_classes, else the number of class names, else max label + 1 (0 if no
 * labels). */
int cnnb_dataset_num_classes(const cnnb_dataset *ds);
const int *cnnb_dataset_labels(const cnnb_dataset *ds); /* all labels, NULL if none */
/* Name of class k from the root attribute class_names, or NULL if absent / out of range. */
const char *cnnb_dataset_class_name(const cnnb_dataset *ds, int k);
/* The mean and std (C values each) that cnnb_dataset_read uses. */
void cnnb_dataset_norm(const cnnb_dataset *ds, float *mean, float *std);
const char *cnnb_dataset_path(const cnnb_dataset *ds);

/* Reads rows (any order, duplicates allowed, each in [0, count)) into x as NCHW float32,
 * (p/255 - mean[c]) / std[c], in the order given, and their labels when labels != NULL
 * (the dataset must have labels then). */
int cnnb_dataset_read(cnnb_dataset *ds, const long *rows, int n, float *x, int *labels);
/* Reads n consecutive rows from row0 as raw uint8 NHWC (n*H*W*C bytes). */
int cnnb_dataset_read_u8(cnnb_dataset *ds, long row0, int n, unsigned char *nhwc);

/* Output files written by all ranks at once (parallel HDF5, MPI-IO driver). Every function
 * below is collective on the communicator given to create: all ranks call it with the same
 * names and sizes (write: each with its own row range, possibly 0 rows). Ranks agree on the
 * outcome: when one fails, all return an error. Data goes to PATH.tmp; commit writes the root
 * attribute complete=1 and renames it to PATH; abort removes PATH.tmp. Layout:
 * docs/FORMATS.md "Output files". */
typedef struct cnnb_outfile cnnb_outfile;
/* Element type of a dataset: float32, uint8, int64 (little-endian on disk), or CNNB_OUT_STR:
 * fixed-length NUL-padded UTF-8 strings, added with ndim 1 and dims[0] = bytes per string (a
 * 1-D dataset of nrows strings), written from nrows x dims[0] chars. */
typedef enum cnnb_out_type { CNNB_OUT_F32 = 0, CNNB_OUT_U8, CNNB_OUT_I64, CNNB_OUT_STR } cnnb_out_type;
/* Most dimensions after the row dimension. */
#define CNNB_OUT_MAX_NDIM 4
int cnnb_outfile_create(cnnb_outfile **of, const char *path, MPI_Comm comm);
/* Dataset of nrows x dims[0] x .. x dims[ndim-1] (ndim 0 -> 1-D of nrows; dims may then be
 * NULL; every dims[i] >= 1), contiguous so that every rank writes its own rows directly. A
 * name may contain '/' (groups are created as needed). */
int cnnb_outfile_add(cnnb_outfile *of, const char *name, cnnb_out_type type, long nrows, int ndim,
                     const int *dims);
/* float32 / int64 dataset of nrows x ncols (ncols 0 -> 1-D of nrows). */
int cnnb_outfile_add_f32(cnnb_outfile *of, const char *name, long nrows, int ncols);
int cnnb_outfile_add_i64(cnnb_outfile *of, const char *name, long nrows, int ncols);
/* Writes rows [row0, row0 + nrows) of a dataset added before (nrows may be 0; data is then
 * unused). data holds whole rows in the dataset's type: float, unsigned char or long long. */
int cnnb_outfile_write(cnnb_outfile *of, const char *name, long row0, long nrows, const void *data);
/* As cnnb_outfile_write, and the dataset must be float32 / int64. */
int cnnb_outfile_write_f32(cnnb_outfile *of, const char *name, long row0, long nrows,
                           const float *data);
int cnnb_outfile_write_i64(cnnb_outfile *of, const char *name, long row0, long nrows,
                           const long long *data);
/* Attribute on obj ("/" or NULL for the root, else a dataset name); same value on all ranks.
 * Strings are scalar variable-length UTF-8 (h5py reads them as str); numbers are scalar int64
 * or float64. */
int cnnb_outfile_attr_str(cnnb_outfile *of, const char *obj, const char *name, const char *value);
int cnnb_outfile_attr_i64(cnnb_outfile *of, const char *obj, const char *name, long long value);
int cnnb_outfile_attr_f64(cnnb_outfile *of, const char *obj, const char *name, double value);
int cnnb_outfile_commit(cnnb_outfile *of); /* frees of, also on failure (then as abort) */
void cnnb_outfile_abort(cnnb_outfile *of); /* frees of; NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif
