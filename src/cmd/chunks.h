/* What the bulk commands over image sets (detect, faces) share: the rank plan over chunks of
 * photos, growable row buffers, and resumable chunk files under OUT.work/.
 *
 * A run is cut into chunks of B photos whose grid does not depend on the rank count; rank 0
 * plans contiguous runs of chunks per rank. Each finished chunk is saved as
 * OUT.work/chunk-K: "cnnb-<tag>-chunk 1 KEY\n", int64 photo count, int64 rows per photo, then
 * the rows (fixed-size records). KEY hashes everything the rows depend on (model, data,
 * thresholds), so a rerun of the same command loads the chunks instead of computing them and a
 * changed command ignores stale ones. */
#ifndef CNNB_CMD_CHUNKS_H
#define CNNB_CMD_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#include "cnnb/dist.h"

/* Rows of rowsize bytes each. */
typedef struct cnnb_rows {
  unsigned char *p;
  size_t n, cap, rowsize;
} cnnb_rows;

int cnnb_rows_push(cnnb_rows *b, const void *rows, size_t n);

/* FNV-1a over bytes, a string (with its terminator) and a file's path, size and mtime. */
#define CNNB_FNV_INIT 0xcbf29ce484222325ULL
uint64_t cnnb_fnv(uint64_t h, const void *p, size_t n);
uint64_t cnnb_fnv_str(uint64_t h, const char *s);
uint64_t cnnb_fnv_file(uint64_t h, const char *path);

/* Collective: rank 0 splits nchunks into contiguous runs (the first nchunks % size ranks take
 * one more) and broadcasts them; this rank's run is [*k0, *k1). */
int cnnb_chunks_plan(const cnnb_dist *d, long nchunks, long *k0, long *k1);

/* Collective: creates the work directory (rank 0; an existing one is kept). */
int cnnb_chunks_workdir(const cnnb_dist *d, const char *work);

/* Loads chunk k of nimg photos: fills counts[0..nimg) and appends the rows. Returns 0 when
 * loaded, 1 when missing, stale or damaged (then rows and counts are left as they were). */
int cnnb_chunk_load(const char *work, const char *tag, long k, uint64_t key, long nimg, long long *counts,
                    cnnb_rows *rows);
/* Saves chunk k atomically (.tmp then rename); failing to save is not an error: resuming is a
 * convenience. */
void cnnb_chunk_save(const char *work, const char *tag, long k, uint64_t key, long nimg, const long long *counts,
                     const void *rows, size_t nrows, size_t rowsize);
/* Collective, after the output is complete: removes this rank's chunks [k0, k1), then rank 0
 * the directory. */
void cnnb_chunks_cleanup(const cnnb_dist *d, const char *work, long k0, long k1);

#endif
