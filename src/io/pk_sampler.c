/* P identities x K images per batch, and class selection (include/cnnb/pk.h). */
#include "cnnb/pk.h"

#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/rng.h"

int cnnb_class_list_has(const char *list, int label)
{
  if (!list) return 1;
  const char *s = list;
  while (*s) {
    char *end;
    long lo = strtol(s, &end, 10), hi = lo;
    if (end == s || lo < 0) goto bad;
    s = end;
    if (*s == '-') {
      hi = strtol(s + 1, &end, 10);
      if (end == s + 1 || hi < lo) goto bad;
      s = end;
    }
    if (*s && *s != ',') goto bad;
    if (label >= lo && label <= hi) return 1;
    if (*s == ',') s++;
  }
  return 0;
bad:
  return cnnb_error(CNNB_EINVAL, "--classes '%s': expected labels and ranges such as 0-6 or 7,8,9", list);
}

void cnnb_pk_free(cnnb_pk *pk)
{
  free(pk->rows);
  free(pk->start);
  free(pk->work);
  free(pk->cursor);
  free(pk->order);
  memset(pk, 0, sizeof *pk);
}

typedef struct lab_row {
  int label;
  long row;
} lab_row;

/* By label, then row: an identity's images stay in file order. */
static int by_label(const void *a, const void *b)
{
  const lab_row *x = a, *y = b;
  if (x->label != y->label) return x->label < y->label ? -1 : 1;
  return x->row < y->row ? -1 : x->row > y->row;
}

int cnnb_pk_init(cnnb_pk *pk, const int *labels, long n, int p, int k, long batch, const char *classes,
                 const char *data_path, const char *where)
{
  memset(pk, 0, sizeof *pk);
  pk->p = p, pk->k = k;
  if (p > 0 && (long)p * k != batch)
    return cnnb_error(CNNB_EINVAL,
                      "%s: pk_p=%d x pk_k=%d = %ld images cannot make the global batch of %ld (--batch or [net] "
                      "batch): they must be equal",
                      where, p, k, (long)p * k, batch);
  if (p == 1 || (p > 0 && k < 2))
    return cnnb_error(CNNB_EINVAL, "%s: pk_p=%d x pk_k=%d: a batch needs at least 2 identities (pk_p) and 2 images of each (pk_k)",
                      where, p, k);
  if (!labels) return cnnb_error(CNNB_EINVAL, "%s: no labels: metric learning needs identity labels", data_path);
  int rc = cnnb_class_list_has(classes, 0);
  if (rc < 0) return rc;
  /* Selected rows, then grouped by label (stable: row order inside an identity). */
  long *rows = malloc(sizeof(long) * (size_t)(n ? n : 1));
  if (!rows) return cnnb_error(CNNB_ENOMEM, "out of memory for %ld rows", n);
  long m = 0;
  for (long i = 0; i < n; i++)
    if (labels[i] >= 0 && cnnb_class_list_has(classes, labels[i]) == 1) rows[m++] = i;
  pk->rows = rows;
  pk->nrows = m;
  pk->batch = batch;
  if (!m)
    return cnnb_error(CNNB_EINVAL, "%s: no images of the classes %s", data_path, classes ? classes : "(all)");
  if (p == 0) { /* plain: a seeded shuffle of the selected rows */
    pk->steps = (m + batch - 1) / batch;
    pk->work = malloc(sizeof(long) * (size_t)m);
    return pk->work ? 0 : cnnb_error(CNNB_ENOMEM, "out of memory");
  }
  lab_row *lr = malloc(sizeof *lr * (size_t)m);
  if (!lr) return cnnb_error(CNNB_ENOMEM, "out of memory for %ld rows", m);
  for (long i = 0; i < m; i++) lr[i] = (lab_row){labels[rows[i]], rows[i]};
  qsort(lr, (size_t)m, sizeof *lr, by_label);
  for (long i = 0; i < m; i++) rows[i] = lr[i].row;
  free(lr);
  long nlab = 0;
  for (long i = 0; i < m; i++) nlab += i == 0 || labels[rows[i]] != labels[rows[i - 1]];
  if (nlab < 2)
    return cnnb_error(CNNB_EINVAL, "%s: one identity (label %d) in the %s: metric learning needs at least 2",
                      data_path, labels[rows[0]], classes ? "selected classes" : "dataset");
  /* Keep identities with at least k images, contiguous in rows. */
  pk->start = malloc(sizeof(long) * (size_t)(nlab + 1));
  pk->cursor = malloc(sizeof(long) * (size_t)nlab);
  pk->order = malloc(sizeof(int) * (size_t)nlab);
  pk->work = malloc(sizeof(long) * (size_t)m);
  if (!pk->start || !pk->cursor || !pk->order || !pk->work) return cnnb_error(CNNB_ENOMEM, "out of memory");
  long kept = 0;
  for (long i = 0; i < m;) {
    long j = i;
    while (j < m && labels[rows[j]] == labels[rows[i]]) j++;
    if (j - i >= k) {
      pk->start[pk->nid++] = kept;
      memmove(rows + kept, rows + i, sizeof(long) * (size_t)(j - i));
      kept += j - i;
    }
    i = j;
  }
  pk->start[pk->nid] = kept;
  if (pk->nid < p)
    return cnnb_error(CNNB_EINVAL,
                      "%s: only %d of its %ld identities have pk_k=%d images or more, but pk_p=%d identities are "
                      "needed per batch (%s)",
                      data_path, pk->nid, nlab, k, p, where);
  pk->nrows = kept;
  pk->steps = kept / batch > 0 ? kept / batch : 1;
  return 0;
}

int cnnb_pk_epoch_plan(cnnb_pk *pk, const cnnb_dist *d, unsigned long long seed, long epoch, long *plan)
{
  const long total = pk->steps * pk->batch;
  if (d->rank == 0) {
    cnnb_rng r;
    cnnb_rng_seed(&r, seed, 0x9c4b, (uint64_t)epoch, 0);
    if (pk->p == 0) {
      memcpy(plan, pk->rows, sizeof(long) * (size_t)pk->nrows);
      cnnb_rng_shuffle_long(&r, plan, pk->nrows);
    } else {
      memcpy(pk->work, pk->rows, sizeof(long) * (size_t)pk->nrows);
      for (int i = 0; i < pk->nid; i++) {
        cnnb_rng_shuffle_long(&r, pk->work + pk->start[i], pk->start[i + 1] - pk->start[i]);
        pk->cursor[i] = 0;
        pk->order[i] = i;
      }
      long o = 0;
      for (long s = 0; s < pk->steps; s++) {
        for (int j = 0; j < pk->p; j++) {
          int t = j + (int)cnnb_rng_below(&r, (uint64_t)(pk->nid - j)), id = pk->order[t];
          pk->order[t] = pk->order[j];
          pk->order[j] = id;
          long *list = pk->work + pk->start[id], cnt = pk->start[id + 1] - pk->start[id];
          if (pk->cursor[id] + pk->k > cnt) {
            cnnb_rng_shuffle_long(&r, list, cnt);
            pk->cursor[id] = 0;
          }
          for (int i = 0; i < pk->k; i++) plan[o++] = list[pk->cursor[id]++];
        }
      }
    }
  }
  long n = pk->p == 0 ? pk->nrows : total;
  for (long off = 0; off < n; off += 1L << 28) {
    long c = n - off < (1L << 28) ? n - off : (1L << 28);
    if (MPI_Bcast(plan + off, (int)c, MPI_LONG, 0, d->comm) != MPI_SUCCESS)
      return cnnb_error(CNNB_EMPI, "broadcast of the P x K plan failed");
  }
  return 0;
}
