/* What train, eval and predict share: opening a dataset for a model (shape and label checks,
 * input standardisation) and sharded evaluation over ranks. */
#ifndef CNNB_CMD_JOB_H
#define CNNB_CMD_JOB_H

#include "cnnb/data.h"
#include "cnnb/dist.h"
#include "cnnb/net.h"

typedef struct cnnb_data_args {
  const char *images_name, *labels_name; /* --images-name, --labels-name */
  const char *mean, *std;                /* --mean, --std: comma-separated per channel */
} cnnb_data_args;

/* The option-table rows (cmd/args.h) for the image dataset and input standardisation that
 * every data command takes; da is a cnnb_data_args. */
#define CNNB_DATA_OPTS(da)                                                                         \
  {"images-name", "NAME", "images dataset (default images)", &(da).images_name, NULL},            \
  {"mean", "M[,M..]", "input mean per channel, on the [0,1] scale", &(da).mean, NULL},           \
  {"std", "S[,S..]", "input standard deviation per channel", &(da).std, NULL}

/* Opens path for net: the model's input must be the images' H x W x C; with need_labels 1, every
 * label must be a class the model outputs (2: labels required, any value: identities). Standardisation: --mean/--std, else [net]
 * input_mean/input_scale (net.h), else [net] mean/std, else the file's attributes. Errors name the file, dataset and model. */
int cnnb_job_open_data(cnnb_dataset **ds, const char *path, const cnnb_net *net, const cnnb_data_args *a,
                       int need_labels);
/* Number of classes the model outputs (values per sample of its last layer). */
int cnnb_job_num_outputs(const cnnb_net *net);
/* Loss (mean) and accuracy of net on the first n rows of ds (n <= 0: all), rows split in
 * contiguous ranges over ranks, in batches of net->max_batch. Collective. */
int cnnb_job_evaluate(const cnnb_dist *d, cnnb_net *net, cnnb_dataset *ds, long n, double *loss, double *acc);
/* Prints "cnn-batch: error: ..." once (rank 0, or the failing rank) for an agreed error. */
void cnnb_job_fail(const cnnb_dist *d, const char *cmd);
double cnnb_now(void);
#endif
