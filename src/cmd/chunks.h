/* What the bulk commands (detect, faces, embed) share: the rank plan over chunks of items
 * (photos, crops), growable row buffers, resumable chunk files under OUT.work/, and stopping
 * after the current chunk on SIGUSR1/SIGTERM.
 *
 * A run is cut into chunks of B items whose grid does not depend on the rank count; rank 0
 * plans contiguous runs of chunks per rank. Each finished chunk is saved as
 * OUT.work/chunk-K: "cnnb-<tag>-chunk 1 KEY\n", int64 item count, int64 rows of each item, then
 * the rows (fixed-size records). KEY hashes everything the rows depend on (model, data,
 * thresholds), so a rerun of the same command loads the chunks instead of computing them and a
 * changed command ignores stale ones.
 *
 * The chunk loop of every command, so that all ranks stop together after their current chunk:
 *
 *   cnnb_chunks_catch_stop();                        // at the start of the command
 *   ...
 *   cnnb_chunk_loop loop;
 *   cnnb_chunks_loop_init(&loop, &d, nchunks, k0, k1);
 *   for (long k; cnnb_chunks_next(&loop, lrc, &k);) { // collective
 *     ... load chunk k or compute and save it; on error set lrc and `continue`, never `break`
 *   }
 *   rc = cnnb_dist_agree(&d, lrc);                   // errors first
 *   if (!rc && loop.stopped) rc = cnnb_chunks_stopped(...); // CNNB_EINTR: the command exits 3
 */
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
/* Room for n more rows (so that a known total is allocated once). */
int cnnb_rows_reserve(cnnb_rows *b, size_t n);

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

/* Loads chunk k of nimg items: fills counts[0..nimg) and appends the rows. counts NULL: every
 * item has exactly one row (embed), which the file must say. Returns 0 when loaded, 1 when
 * missing, stale or damaged (then rows and counts are left as they were). */
int cnnb_chunk_load(const char *work, const char *tag, long k, uint64_t key, long nimg, long long *counts,
                    cnnb_rows *rows);
/* Saves chunk k atomically (.tmp then rename); counts NULL: one row per item. Failing to save
 * is not an error: resuming is a convenience. */
void cnnb_chunk_save(const char *work, const char *tag, long k, uint64_t key, long nimg, const long long *counts,
                     const void *rows, size_t nrows, size_t rowsize);
/* Collective, after the output is complete: removes this rank's chunks [k0, k1), then rank 0
 * the directory. */
void cnnb_chunks_cleanup(const cnnb_dist *d, const char *work, long k0, long k1);

/* Installs handlers for SIGUSR1 and SIGTERM (what Slurm sends before a time limit and on
 * preemption) that only record the signal; the chunk loop then stops after its current chunk.
 * Process-wide, for the rest of the process (a command runs once per process). */
void cnnb_chunks_catch_stop(void);

/* The chunk loop: as many steps on every rank as the longest run of the plan, each step one
 * allreduce of "stop" (a signal or an error on this rank), so that every rank sees the same
 * answer at the same point, and a signal that reached one rank stops them all. */
typedef struct cnnb_chunk_loop {
  const cnnb_dist *d;
  long k0, k1;      /* this rank's run of chunks */
  long step, steps; /* steps taken, steps in all (the same on every rank) */
  int stopped;      /* the loop ended early: a stop signal or an error on some rank */
} cnnb_chunk_loop;

void cnnb_chunks_loop_init(cnnb_chunk_loop *l, const cnnb_dist *d, long nchunks, long k0, long k1);
/* Collective: returns 1 with *k the next chunk of this rank; 0 when the loop is over, after the
 * last chunk or once any rank has got a stop signal or passes a nonzero err (then
 * l->stopped = 1). A rank whose run is shorter takes its remaining steps here. */
int cnnb_chunks_next(cnnb_chunk_loop *l, int err, long *k);
/* Collective, after a stop: rank 0 says how far the run got ("CMD: stopped by a signal: N WHAT
 * computed in this run, M of TOTAL saved in WORK; run the same command again to continue").
 * Returns CNNB_EINTR, which the command turns into exit code 3 (CNNB_EXIT_STOPPED). */
int cnnb_chunks_stopped(const cnnb_dist *d, const char *cmd, const char *what, long long computed, long long resumed,
                        long total, const char *work);

#endif
