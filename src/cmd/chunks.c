/* Rank plans, row buffers, resumable chunk files and stop-after-chunk of the bulk commands
 * (cmd/chunks.h). */
#include "cmd/chunks.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnnb/error.h"

int cnnb_rows_reserve(cnnb_rows *b, size_t n)
{
  if (b->n + n <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + n) cap *= 2;
  unsigned char *np = realloc(b->p, cap * b->rowsize);
  if (!np) return cnnb_error(CNNB_ENOMEM, "out of memory for %zu rows of %zu bytes", cap, b->rowsize);
  b->p = np, b->cap = cap;
  return 0;
}

int cnnb_rows_push(cnnb_rows *b, const void *rows, size_t n)
{
  int rc = cnnb_rows_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->p + b->n * b->rowsize, rows, n * b->rowsize);
  b->n += n;
  return 0;
}

uint64_t cnnb_fnv(uint64_t h, const void *p, size_t n)
{
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t cnnb_fnv_str(uint64_t h, const char *s) { return cnnb_fnv(h, s, strlen(s) + 1); }

uint64_t cnnb_fnv_file(uint64_t h, const char *path)
{
  struct stat st;
  long long v[2] = {0, 0};
  if (!stat(path, &st)) v[0] = (long long)st.st_size, v[1] = (long long)st.st_mtime;
  return cnnb_fnv(cnnb_fnv_str(h, path), v, sizeof v);
}

int cnnb_chunks_plan(const cnnb_dist *d, long nchunks, long *k0, long *k1)
{
  long *plan = malloc(sizeof *plan * 2 * (size_t)d->size);
  int rc = cnnb_dist_agree(d, plan ? 0 : cnnb_error(CNNB_ENOMEM, "out of memory"));
  if (rc) {
    free(plan);
    return rc;
  }
  if (d->rank == 0)
    for (int r = 0; r < d->size; r++) {
      long q = nchunks / d->size, m = nchunks % d->size;
      plan[2 * r] = r * q + (r < m ? r : m);
      plan[2 * r + 1] = plan[2 * r] + q + (r < m);
    }
  MPI_Bcast(plan, 2 * d->size, MPI_LONG, 0, d->comm);
  *k0 = plan[2 * d->rank], *k1 = plan[2 * d->rank + 1];
  free(plan);
  return 0;
}

int cnnb_chunks_workdir(const cnnb_dist *d, const char *work)
{
  int rc = 0;
  if (d->rank == 0 && mkdir(work, 0777) && errno != EEXIST)
    rc = cnnb_error(CNNB_EIO, "%s: cannot create: %s", work, strerror(errno));
  return cnnb_dist_agree(d, rc);
}

static void chunk_path(char *buf, size_t n, const char *work, long k) { snprintf(buf, n, "%s/chunk-%09ld", work, k); }

int cnnb_chunk_load(const char *work, const char *tag, long k, uint64_t key, long nimg, long long *counts,
                    cnnb_rows *rows)
{
  char path[4200];
  chunk_path(path, sizeof path, work, k);
  FILE *f = fopen(path, "rb");
  if (!f) return 1;
  char line[96], want[96];
  snprintf(want, sizeof want, "cnnb-%s-chunk 1 %016llx\n", tag, (unsigned long long)key);
  int64_t m = -1;
  int ok = fgets(line, sizeof line, f) && !strcmp(line, want) && fread(&m, 8, 1, f) == 1 && m == nimg;
  int64_t *c = ok ? malloc(sizeof *c * (size_t)(nimg > 0 ? nimg : 1)) : NULL;
  ok = ok && c && fread(c, 8, (size_t)nimg, f) == (size_t)nimg;
  long long total = 0;
  for (long i = 0; ok && i < nimg; i++) ok = (counts ? c[i] >= 0 : c[i] == 1), total += c[i];
  const size_t r0 = rows->n;
  ok = ok && total < (1LL << 31) && !cnnb_rows_reserve(rows, (size_t)total);
  if (ok && total) ok = fread(rows->p + rows->n * rows->rowsize, rows->rowsize, (size_t)total, f) == (size_t)total;
  ok = ok && fgetc(f) == EOF;
  fclose(f);
  if (!ok) {
    rows->n = r0;
    free(c);
    return 1;
  }
  rows->n += (size_t)total;
  for (long i = 0; counts && i < nimg; i++) counts[i] = c[i];
  free(c);
  return 0;
}

void cnnb_chunk_save(const char *work, const char *tag, long k, uint64_t key, long nimg, const long long *counts,
                     const void *rows, size_t nrows, size_t rowsize)
{
  char path[4200], tmp[4300];
  chunk_path(path, sizeof path, work, k);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return;
  int64_t m = nimg;
  int ok = fprintf(f, "cnnb-%s-chunk 1 %016llx\n", tag, (unsigned long long)key) > 0 && fwrite(&m, 8, 1, f) == 1;
  for (long i = 0; i < nimg && ok; i++) {
    int64_t c = counts ? counts[i] : 1;
    ok = fwrite(&c, 8, 1, f) == 1;
  }
  if (ok && nrows) ok = fwrite(rows, rowsize, nrows, f) == nrows;
  if (fclose(f) || !ok || rename(tmp, path)) remove(tmp);
}

void cnnb_chunks_cleanup(const cnnb_dist *d, const char *work, long k0, long k1)
{
  char path[4200];
  for (long k = k0; k < k1; k++) {
    chunk_path(path, sizeof path, work, k);
    remove(path);
  }
  MPI_Barrier(d->comm);
  if (d->rank == 0) rmdir(work);
}

/* The signal that asked to stop (0: none); set by the handler, read between chunks. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

void cnnb_chunks_catch_stop(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

void cnnb_chunks_loop_init(cnnb_chunk_loop *l, const cnnb_dist *d, long nchunks, long k0, long k1)
{
  l->d = d, l->k0 = k0, l->k1 = k1, l->step = 0, l->stopped = 0;
  l->steps = (nchunks + d->size - 1) / d->size; /* the first ranks of the plan take one more */
}

int cnnb_chunks_next(cnnb_chunk_loop *l, int err, long *k)
{
  while (!l->stopped && l->step < l->steps) {
    int mine = stop_signal != 0 || err != 0, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, l->d->comm);
    l->stopped = any;
    *k = l->k0 + l->step++;
    if (!any && *k < l->k1) return 1;
  }
  return 0;
}

int cnnb_chunks_stopped(const cnnb_dist *d, const char *cmd, const char *what, long long computed, long long resumed,
                        long total, const char *work)
{
  long long mine[2] = {computed, resumed}, sums[2] = {0, 0};
  MPI_Reduce(mine, sums, 2, MPI_LONG_LONG, MPI_SUM, 0, d->comm);
  if (d->rank == 0) {
    printf("%s: stopped by a signal: %lld %s computed in this run, %lld of %ld saved in %s; run the same command "
           "again to continue\n",
           cmd, sums[0], what, sums[0] + sums[1], total, work);
    fflush(stdout);
  }
  return CNNB_EINTR;
}
