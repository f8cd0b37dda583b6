/* Checkpoints: HDF5 files holding the model file's text, every layer's parameters and
 * running statistics, the optimizer's state and where training stands. Layout in
 * docs/FORMATS.md "Checkpoints". Writes are atomic: PATH.tmp is written, flushed and renamed,
 * so the previous checkpoint stays valid until the new one is complete. */
#ifndef CNNB_CKPT_H
#define CNNB_CKPT_H

#include "cnnb/net.h"
#include "cnnb/optim.h"

#define CNNB_CKPT_SCHEMA "cnnb-checkpoint"
#define CNNB_CKPT_VERSION 1

typedef struct cnnb_ckpt_meta {
  long long epoch;       /* epochs completed */
  long long step;        /* optimizer steps taken */
  long long epoch_step;  /* steps taken inside the current epoch (resume point) */
  long long images_seen;
  unsigned long long seed;
  int world_size;        /* rank count that wrote it */
  int global_batch;
} cnnb_ckpt_meta;

/* Writes (one process). opt may be NULL (weights only). */
int cnnb_ckpt_save(const char *path, const cnnb_net *net, const cnnb_optim *opt, const cnnb_ckpt_meta *meta);
/* Reads into an already built net whose layers must match (errors name the checkpoint, the
 * layer and both shapes). opt and meta may be NULL. */
int cnnb_ckpt_load(const char *path, cnnb_net *net, cnnb_optim *opt, cnnb_ckpt_meta *meta);
/* Returns a malloc'ed copy of the model text stored in a checkpoint, or NULL with an error. */
char *cnnb_ckpt_model_text(const char *path);

/* 1 when path starts with HDF5's signature (a checkpoint), 0 when it does not (a Darknet
 * .weights file, say), a negative status with an error naming path when it cannot be read. */
int cnnb_weights_is_ckpt(const char *path);
/* Loads the weights of an already built net from path: a checkpoint (by HDF5's signature,
 * through cnnb_ckpt_load) or else a Darknet .weights file (cnnb_darknet_weights_load). What the
 * bulk and evaluation commands take as --weights. Returns 0, or a negative status with an error
 * that names path (and the layer and shapes when they do not match). */
int cnnb_weights_load(cnnb_net *net, const char *path);

#endif
