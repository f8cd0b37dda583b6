/* Global-batch gathering for loss layers that compare samples with each other (triplet
 * mining, siamese pairs): every rank gets every rank's rows, in rank order, which is the
 * global batch's order because cnnb_dist_slice gives rank r the r-th contiguous slice. */
#include <stdlib.h>

#include "cnnb/dist.h"
#include "cnnb/error.h"

int cnnb_dist_gather_rows(const float *mine, int n, int k, float *all, int cap, int *first, void *ctx)
{
  const cnnb_dist *d = ctx;
  /* Row counts are tiny (a batch); a fixed array avoids allocating in the training loop
   * for the usual rank counts, and larger jobs allocate once per call. */
  int stack_cnt[2 * 64];
  int *cnt = d->size <= 64 ? stack_cnt : malloc(sizeof(int) * 2 * (size_t)d->size);
  if (!cnt) return cnnb_error(CNNB_ENOMEM, "out of memory for the gather of %d ranks", d->size);
  int *disp = cnt + d->size;
  MPI_Allgather(&n, 1, MPI_INT, cnt, 1, MPI_INT, d->comm);
  int total = 0;
  for (int r = 0; r < d->size; r++) {
    if (r == d->rank) *first = total;
    total += cnt[r];
  }
  if (total <= cap) {
    for (int r = 0, off = 0; r < d->size; r++) {
      disp[r] = off * k;
      off += cnt[r];
      cnt[r] *= k;
    }
    MPI_Allgatherv(mine, n * k, MPI_FLOAT, all, cnt, disp, MPI_FLOAT, d->comm);
  }
  if (cnt != stack_cnt) free(cnt);
  return total;
}
