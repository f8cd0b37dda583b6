/* Layers: a small common struct plus a const ops table defined in each layer kind's own file
 * (src/layers/<kind>.c). Tensors are float32 NCHW; a layer's output and delta hold
 * max_batch samples of out.c*out.h*out.w floats each.
 *
 * Life of a layer inside a network (see net.h):
 *   setup    reads its cfg keys, sets l->out, declares parameters with cnnb_layer_param()
 *            and the scratch it needs (l->workspace, in floats, at max batch)
 *   (the network then lays every parameter into one arena, every gradient into another,
 *    and the non-trainable state, say batch-norm running statistics, into a third)
 *   init     fills its parameters from the rng
 *   forward  reads l->input (net->batch samples), writes l->output
 *   backward reads l->delta (dL/d output), ADDS dL/d input into l->input_delta (when not NULL)
 *            and ADDS parameter gradients into param[i].grad; the network zeroes both first,
 *            so that fan-out (route, shortcut) and gradient accumulation just work.
 */
#ifndef CNNB_LAYER_H
#define CNNB_LAYER_H

#include <stddef.h>

#include "cnnb/cfg.h"
#include "cnnb/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnnb_net cnnb_net;
typedef struct cnnb_layer cnnb_layer;

typedef struct cnnb_shape {
  int c, h, w;
} cnnb_shape;

static inline size_t cnnb_shape_size(cnnb_shape s) { return (size_t)s.c * s.h * s.w; }

typedef enum cnnb_act {
  CNNB_ACT_LINEAR = 0,
  CNNB_ACT_RELU,
  CNNB_ACT_LEAKY, /* slope 0.1 as in Darknet */
  CNNB_ACT_SIGMOID,
  CNNB_ACT_TANH,
  CNNB_ACT_RELU6,
  CNNB_ACT_COUNT
} cnnb_act;

/* Parses Darknet's activation names ("linear", "relu", "leaky", "logistic", "tanh", "relu6");
 * returns -1 for an unknown name. */
int cnnb_act_parse(const char *name);
const char *cnnb_act_name(cnnb_act a);
/* y = f(x) in place, n values. */
void cnnb_act_forward(cnnb_act a, float *x, size_t n);
/* x = act(scale * x + shift) in one pass (inference's folded batch norm, or a bias). */
void cnnb_act_affine(cnnb_act a, float *x, size_t n, float scale, float shift);
/* delta *= f'(x) where y = f(x) is the already activated output (all our activations have
 * derivatives expressible in y). */
void cnnb_act_backward(cnnb_act a, const float *y, float *delta, size_t n);

#define CNNB_MAX_PARAMS 8

typedef struct cnnb_param {
  char name[24];  /* "weights", "biases", "scales", "rolling_mean", "rolling_variance", ... */
  float *data;    /* in net->params (trainable) or net->state (not) */
  float *grad;    /* in net->grads; NULL when not trainable */
  size_t count;
  size_t offset;  /* in its arena */
  int ndim, dims[4]; /* logical shape, stored as is in checkpoints */
  int trainable;
} cnnb_param;

typedef struct cnnb_layer_ops {
  const char *section; /* cfg section name */
  int (*setup)(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net);
  void (*init)(cnnb_layer *l, cnnb_rng *rng);
  void (*forward)(cnnb_layer *l, cnnb_net *net);
  void (*backward)(cnnb_layer *l, cnnb_net *net);
  void (*free)(cnnb_layer *l); /* frees priv; may be NULL */
  /* Optional: for loss layers (softmax with cross-entropy, ...). Computes the mean loss over
   * net->batch samples from net->truth, and writes l->delta = dL/d output scaled by
   * net->loss_scale. Returns the loss summed over the batch (not averaged). */
  double (*loss)(cnnb_layer *l, cnnb_net *net);
  /* Optional: the indices of the layers whose outputs this one reads besides the previous
   * layer's ([route], [shortcut]), at most cap of them; returns how many. Output sharing in
   * inference (cnnb_net_opts.share_outputs) keeps those outputs until this layer has run. */
  int (*sources)(const cnnb_layer *l, int *idx, int cap);
} cnnb_layer_ops;

struct cnnb_layer {
  const cnnb_layer_ops *ops;
  int index;
  int cfg_section;    /* index in net->cfg.sec, for messages */
  cnnb_shape in, out;
  const float *input; /* previous layer's output (or the network input) */
  float *input_delta; /* previous layer's delta; NULL for layer 0 unless the net wants input gradients */
  float *output;      /* max_batch x out */
  float *delta;       /* max_batch x out; NULL in inference-only networks */
  cnnb_param param[CNNB_MAX_PARAMS];
  int nparam;
  cnnb_act act;
  double madds;       /* multiply-adds per sample, for `info` */
  size_t workspace;   /* floats of shared scratch needed at max batch */
  int delta_is_input_grad; /* loss layers: backward passes delta through unchanged */
  void *priv;         /* kind-specific state, owned by the layer */
};

/* Declares a parameter during setup; returns its index or a negative cnnb_status.
 * dims are the logical shape (ndim 1..4); the arena pointers are filled in later. */
int cnnb_layer_param(cnnb_layer *l, const char *name, int trainable, int ndim, const int *dims);
/* Finds a parameter by name, NULL when absent. */
cnnb_param *cnnb_layer_find_param(cnnb_layer *l, const char *name);
size_t cnnb_layer_num_trainable(const cnnb_layer *l);
const char *cnnb_layer_kind(const cnnb_layer *l);

/* The registry of layer kinds: returns the ops for a section name, or NULL. */
const cnnb_layer_ops *cnnb_layer_ops_find(const char *section);
/* Comma-separated list of known section names, for error messages. */
const char *cnnb_layer_known_sections(void);

#ifdef __cplusplus
}
#endif
#endif
