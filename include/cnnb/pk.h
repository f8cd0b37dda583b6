/* Batches of P identities x K images for metric learning (triplet mining needs positives and
 * negatives in every batch), optionally restricted to some classes. Rank 0 draws each
 * epoch's plan from (seed, epoch) and broadcasts it, like cnnb_dist_epoch_plan, so the
 * batches do not depend on the rank count.
 *
 * The plan of an epoch: steps = max(1, rows / (P K)) global batches. Each picks P distinct
 * identities uniformly (a partial Fisher-Yates shuffle of the identities, kept from batch to
 * batch) and, for each, the next K images of that identity's shuffled list; a list that has
 * fewer than K left is reshuffled and starts again, so every image comes round evenly. The
 * identities and images of a batch are laid out identity by identity. tools/oneshot_torch.py
 * draws the same plan with the same generator. */
#ifndef CNNB_PK_H
#define CNNB_PK_H

#include "cnnb/dist.h"

typedef struct cnnb_pk {
  int p, k;      /* identities and images per identity in a global batch; p = 0: plain order */
  long nrows;    /* rows in the selected classes */
  long steps;    /* global batches per epoch */
  long batch;    /* global batch (p k, or the plain batch) */
  int nid;       /* identities with at least k selected rows */
  long *rows;    /* selected rows grouped by identity (identities in label order) */
  long *start;   /* nid + 1 offsets into rows */
  long *work;    /* scratch for a plan: shuffled copies of rows */
  long *cursor;  /* nid */
  int *order;    /* nid: identity order of the partial shuffle */
} cnnb_pk;

/* A class list "0-6", "7,8,9", "0-3,5": returns 1 when label is in it (NULL: every label),
 * 0 when not, a negative status for a malformed list (message names it). */
int cnnb_class_list_has(const char *list, int label);
/* Builds the sampler from n labels of data_path. p = 0: every selected row once per epoch in
 * a seeded shuffle, batches of `batch`. p > 0: batch must be p k. classes: NULL or a class list.
 * where: "FILE:LINE" of the pk keys for messages. Errors: a batch that is not p x k, p < 2 or
 * k < 2, a malformed class list, no selected rows, one identity, fewer than p identities with
 * k images; each names the data file and the model's key. */
int cnnb_pk_init(cnnb_pk *pk, const int *labels, long n, int p, int k, long batch, const char *classes,
                 const char *data_path, const char *where);
void cnnb_pk_free(cnnb_pk *pk);
/* Rank 0 draws the epoch's steps x batch rows from (seed, epoch) into plan and broadcasts
 * them. Collective. */
int cnnb_pk_epoch_plan(cnnb_pk *pk, const cnnb_dist *d, unsigned long long seed, long epoch, long *plan);

#endif
