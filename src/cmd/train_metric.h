/* What train adds for metric learning and fine-tuning, kept out of train.c so that its hooks
 * are a few lines: P x K batches and --classes (cnnb/pk.h), the global-batch gather of
 * [triplet]/[siamese], and frozen early layers. */
#ifndef CNNB_CMD_TRAIN_METRIC_H
#define CNNB_CMD_TRAIN_METRIC_H

#include <stddef.h>

#include "cnnb/data.h"
#include "cnnb/dist.h"
#include "cnnb/net.h"
#include "cnnb/optim.h"
#include "cnnb/pk.h"

/* 1 when the last layer is a metric loss ([triplet], [siamese]): labels are identities. */
int cnnb_train_is_metric(const cnnb_net *net);
/* On more than one rank, a metric loss gathers the global batch (net->gather_rows). */
void cnnb_train_metric_hooks(cnnb_net *net, const cnnb_dist *d);
/* Rows of this rank's anchors whose nearest neighbour in the global batch shares their label
 * (the "acc" train prints for a metric loss); -1 for other nets. */
int cnnb_train_metric_correct(const cnnb_net *net);
/* The sampler when [net] pk_p/pk_k or --classes ask for one (pk->batch > 0), else pk stays
 * empty (pk->batch == 0). Uses the first n rows of ds. */
int cnnb_train_sampler(cnnb_pk *pk, const cnnb_net *net, cnnb_dataset *ds, long batch, const char *classes, long n,
                       const char *data_path);
/* Layers 0..N-1 are frozen, N from --freeze (flag >= 0) else [net] freeze: *first receives
 * the first trainable value that still moves (the arena lays layers in order). */
int cnnb_train_frozen(const cnnb_net *net, long flag, size_t *first);
/* The optimizer step on params[first..]: the frozen prefix keeps its values bit for bit
 * (no weight decay, no momentum). */
void cnnb_train_optim_step(cnnb_optim *o, cnnb_net *net, size_t first, float lr);

/* --weights: starts from a checkpoint (of this model, or of one whose layers are the first
 * layers of this one) or Darknet .weights; errors name the file and the layer. */
int cnnb_train_load_weights(cnnb_net *net, const char *path);

#endif
