/* Networks: built from a model file (cfg.h), a list of layers (layer.h) that share one
 * arena of trainable parameters, one of their gradients and one of non-trainable state.
 *
 *   cnnb_net *net;
 *   cnnb_net_opts o = cnnb_net_opts_default();
 *   o.max_batch = 64; o.train = 1;
 *   if (cnnb_net_load(&net, "jobs/lenet5.cfg", &o) < 0) fprintf(stderr, "%s\n", cnnb_error_message());
 *   cnnb_net_init_params(net, seed);
 *   net->truth = labels; double loss = cnnb_net_train_step(net, x, n);  // forward+loss+backward
 *   ... average net->grads across ranks, then an optimizer step on net->params ...
 *   cnnb_net_free(net);
 */
#ifndef CNNB_NET_H
#define CNNB_NET_H

#include <stddef.h>

#include "cnnb/cfg.h"
#include "cnnb/layer.h"
#include "cnnb/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters from [net], in Darknet's vocabulary where it has a word for them. */
typedef struct cnnb_hparams {
  int batch;              /* global batch (Darknet: batch) */
  float learning_rate, momentum, decay;
  int nmean, nstd;        /* input standardisation overrides (cnnb keys: mean=, std=) */
  float mean[4], std[4];
  /* Learning-rate schedule (Darknet's policy, steps, scales, burn_in, power, max_batches;
   * cosine is cnn-batch's addition). */
  int policy;             /* CNNB_LR_* */
  int nsteps;
  int steps[16];
  float scales[16];
  int burn_in;            /* warm-up steps: lr * (step/burn_in)^power */
  float power;            /* poly exponent and warm-up exponent (Darknet default 4) */
  int max_batches;        /* steps of the whole run for poly/cosine; 0: the run's own length */
  int flip;               /* augmentation: random horizontal flips (Darknet's flip=1) */
  int crop_pad;           /* augmentation: random crop after zero padding by this many pixels */
  /* The model's own input normalisation (cnnb keys input_mean=R,G,B input_scale=S): the input
   * is (pixel - input_mean[c]) * input_scale with pixels on the 0..255 scale, as pretrained
   * models imported from other frameworks expect (face-api.js: mean RGB, then / 255). */
  int has_input_norm;
  float input_mean[4], input_scale;
  int pk_p, pk_k;         /* batches of pk_p identities x pk_k images (metric losses); 0: plain */
  int pk_line;            /* cfg line of pk_p/pk_k, for messages */
  int freeze;             /* layers 0..freeze-1 keep their trainable parameters (fine-tuning) */
} cnnb_hparams;

enum { CNNB_LR_CONSTANT = 0, CNNB_LR_STEPS, CNNB_LR_POLY, CNNB_LR_COSINE };

/* The learning rate at a step (0-based) of a run of total_steps, from base lr and hp. */
float cnnb_lr_at(const cnnb_hparams *hp, float base, long long step, long long total_steps);

typedef struct cnnb_net_opts {
  int max_batch;     /* samples per forward on this rank */
  int train;         /* allocate deltas and gradients */
  int input_grad;    /* also compute dL/d input (style transfer, gradient checks) */
  int h, w, c;       /* override [net] input size when > 0 */
  int quiet;         /* no warnings for unused Darknet keys */
  int share_outputs; /* inference only (no train, no input_grad): layers whose outputs are no
                      * longer read share buffers; only the last layer's, loss layers' (YOLO
                      * heads) and the sources of later layers' outputs stay valid after
                      * forward. For bulk commands that read only those. */
  int threads;       /* threads splitting a layer's samples inside this rank; 0: CNNB_THREADS
                      * from the environment, else OpenBLAS's thread count (docs/ARCHITECTURE.md) */
} cnnb_net_opts;

struct cnnb_net {
  cnnb_cfg cfg;              /* owned; cfg.text is stored in checkpoints */
  cnnb_layer *layers;
  int n;
  cnnb_shape in;
  int max_batch;
  int batch;                 /* samples in the current forward, <= max_batch */
  int train;                 /* training mode: batch statistics, dropout */
  int backprop;              /* deltas exist (opts.train or opts.input_grad): backward can run */
  cnnb_hparams hp;
  float *params, *grads;     /* trainable arena and its gradients (grads NULL if not training) */
  size_t nparams;
  float *state;              /* non-trainable arena (running statistics) */
  size_t nstate;
  float *workspace;          /* shared scratch, sized for the largest layer; with a pool,
                              * nthreads slices of thread_ws floats (cnnb_net_thread_ws) */
  size_t nworkspace;         /* floats of the largest layer's scratch */
  float **out_blocks;        /* with opts.share_outputs: the buffers the outputs share */
  int nout_blocks;
  int nthreads;              /* threads that split a layer's samples (1: none) */
  struct cnnb_pool *pool;    /* those threads (NULL when nthreads is 1) */
  size_t thread_ws;          /* floats per thread: nworkspace, then (training) room for the
                              * largest layer's weight gradient */
  const float *input;        /* current input, batch x in */
  float *input_delta;        /* dL/d input when opts.input_grad */
  const int *truth;          /* class labels, batch of them, for loss layers */
  const float *truth_f;      /* dense targets, for layers that take them */
  float loss_scale;          /* multiplies dL/d output at the loss: 1/global batch */
  cnnb_rng rng;              /* dropout masks etc.; reseeded per step by the trainer */
  /* Called after each layer's backward (layers run last to first), so that gradient
   * buckets can start their allreduce while earlier layers still compute. */
  void (*backward_hook)(cnnb_net *net, int layer, void *ctx);
  void *backward_hook_ctx;
  /* Sums n doubles over all ranks in place: set for synchronised batch norm (statistics of
   * the global batch); NULL keeps batch-norm statistics per rank. */
  void (*stat_sum)(double *v, int n, void *ctx);
  void *stat_sum_ctx;
  /* Concatenates every rank's n rows of k floats, in rank order, into all (room for cap rows)
   * for loss layers that see the global batch (triplet mining, siamese pairs); returns the
   * total rows and this rank's first row in *first, and gathers nothing when the total exceeds
   * cap (every rank alike). NULL: one process, the batch is global. Collective. */
  int (*gather_rows)(const float *mine, int n, int k, float *all, int cap, int *first, void *ctx);
  void *gather_ctx;
};

cnnb_net_opts cnnb_net_opts_default(void);

/* Thread t's scratch: nworkspace floats, then a private weight-gradient buffer when training. */
static inline float *cnnb_net_thread_ws(const cnnb_net *net, int t)
{
  return net->workspace + (size_t)t * net->thread_ws;
}
/* Builds from a model file; errors name the file, line and key. */
int cnnb_net_load(cnnb_net **out, const char *path, const cnnb_net_opts *opts);
/* Same from text held in memory (tests, checkpoints); name is used in messages. */
int cnnb_net_from_string(cnnb_net **out, const char *text, const char *name, const cnnb_net_opts *opts);
void cnnb_net_free(cnnb_net *net);

/* Fills parameters from the seed (He/Xavier style per layer kind) and resets running stats. */
void cnnb_net_init_params(cnnb_net *net, unsigned long long seed);
/* Forward over n samples (n <= max_batch); returns the last layer's output. */
const float *cnnb_net_forward(cnnb_net *net, const float *x, int n);
/* Loss of the last forward (sum over the batch) and its deltas; needs a loss layer last. */
double cnnb_net_loss(cnnb_net *net);
/* Zeroes deltas (not gradients) then runs backward from the last layer's delta. */
void cnnb_net_backward(cnnb_net *net);
void cnnb_net_zero_grads(cnnb_net *net);
/* forward + loss + backward, gradients accumulated into net->grads; returns summed loss. */
double cnnb_net_train_step(cnnb_net *net, const float *x, int n);

/* 1 when the model file has input_mean/input_scale (then mean[0..in.c-1] and *scale are filled;
 * either may be NULL), 0 when it has none (commands then use the dataset's mean/std). */
int cnnb_net_input_norm(const cnnb_net *net, float *mean, float *scale);
/* n planar CHW images (net->in) of float pixels on the 0..255 scale, e.g. resized and not
 * rounded, to the network's input: (pixel - mean_c) * scale; out may equal pixels. Without
 * input_mean/input_scale it copies unchanged. */
void cnnb_net_normalize_input(const cnnb_net *net, const float *pixels, int n, float *out);

const cnnb_layer *cnnb_net_output_layer(const cnnb_net *net);
size_t cnnb_net_num_trainable(const cnnb_net *net);
/* Prints the `info` table (one row per layer and totals) to f. */
void cnnb_net_print_summary(const cnnb_net *net, void *file);

#ifdef __cplusplus
}
#endif
#endif
