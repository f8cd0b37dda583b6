/* Neural style transfer (Gatys et al., as in the course notes): generate G by gradient descent
 * on the image itself to minimise
 *   J(G) = alpha J_content(C, G) + beta sum_l lambda_l J_style^l(S, G)
 *   J_content = 1/(4 nH nW nC) sum (a(C) - a(G))^2                   on one layer
 *   J_style^l = 1/(2 nH nW nC)^2 sum_kk' (Gram(S) - Gram(G))_kk'^2  Gram_kk' = sum_ij a_ijk a_ijk'
 * with a layer's activations a (its output: after its activation function). The gradient
 * reaches the image through the network's own backward: each term's gradient is added into its
 * layer's delta and backward runs from the deepest layer involved down to the input. */
#ifndef CNNB_STYLE_H
#define CNNB_STYLE_H

#include <stddef.h>

#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Finds a layer by index ("12") or by name: convB_K is the K-th [convolutional] after B-1
 * pooling layers ([maxpool], [avgpool]), which gives VGG's names (conv4_2) on jobs/vgg19.cfg.
 * The error names the model and what it has. */
int cnnb_net_find_layer(const cnnb_net *net, const char *spec, int *index);
/* That name of layer i ("conv4_2"; other kinds "KIND_i", e.g. "maxpool_2"). */
void cnnb_net_layer_name(const cnnb_net *net, int i, char *buf, size_t n);

/* Forward through layers 0..last only (n <= max_batch samples). */
void cnnb_net_forward_to(cnnb_net *net, const float *x, int n, int last);
/* Backward of layers last..0 from their deltas as they are (cnnb_net_backward instead zeroes
 * every delta and starts from the last layer's): the caller zeroes and fills deltas first.
 * dL/d input goes to net->input_delta when the network was built with input_grad. */
void cnnb_net_backward_from(cnnb_net *net, int last);

/* Gram matrix of activations a (c x hw, one sample): g = a a^T, c x c. */
void cnnb_gram(const float *a, int c, int hw, float *g);
/* J_content of one sample; when grad != NULL, ADDS scale * dJ/d ag into it. */
double cnnb_content_cost(const float *ac, const float *ag, cnnb_shape s, float scale, float *grad);
/* J_style of one layer from the style image's Gram gs (c x c); gg is c x c scratch; when
 * grad != NULL, ADDS scale * dJ/d ag into it. */
double cnnb_style_layer_cost(const float *gs, const float *ag, cnnb_shape s, float *gg, float scale, float *grad);

#define CNNB_STYLE_MAX_LAYERS 16

typedef struct cnnb_style_opts {
  int content_layer;
  int nstyle;
  int style_layers[CNNB_STYLE_MAX_LAYERS];
  float style_weights[CNNB_STYLE_MAX_LAYERS]; /* lambda_l */
  float alpha, beta;
  int steps;              /* Adam steps */
  float lr;               /* Adam step size, in network-input units */
  float noise;            /* G0 = C + U(-noise, noise) / std, noise on the [0,1] pixel scale */
  unsigned long long seed;
  int clamp;              /* keep G inside [lo, hi] per channel after every step */
  float lo[4], hi[4];
} cnnb_style_opts;

/* alpha 10, beta 40, 200 steps, lr 0.02, noise 0.1, seed 1, clamp off; layers unset (-1). */
void cnnb_style_opts_init(cnnb_style_opts *o);

typedef struct cnnb_style {
  cnnb_net *net;          /* not owned: built with opts.input_grad = 1, max_batch >= 1 */
  cnnb_style_opts o;
  int last;               /* deepest layer involved */
  float *content_act;     /* a(C) at the content layer */
  float *style_gram;      /* Gram(S) of every style layer, one after the other */
  size_t gram_off[CNNB_STYLE_MAX_LAYERS];
  float *gg;              /* Gram(G) scratch */
  float *m, *v;           /* Adam moments over the image */
  int have_style;
} cnnb_style;

/* Checks the layers and allocates everything the optimisation needs (nothing is allocated
 * after this). Errors name the model and layer. */
int cnnb_style_init(cnnb_style *st, cnnb_net *net, const cnnb_style_opts *o);
void cnnb_style_free(cnnb_style *st);
/* Style image S (one sample, network input): computes its Gram matrices. */
void cnnb_style_set_style(cnnb_style *st, const float *s);
/* Content image C: computes a(C). */
void cnnb_style_set_content(cnnb_style *st, const float *c);
/* J(G), its parts, and dJ/dG into net->input_delta. */
double cnnb_style_cost(cnnb_style *st, const float *g, double *jc, double *js);
/* From G0 = C + noise (the rng stream from (seed, image)), o.steps Adam steps; g receives the
 * result; J of G0 and of the result in *j0 and *j1 (j1 evaluated after the last step). Needs
 * set_style and set_content before. history, when not NULL, gets J before each step. */
int cnnb_style_run(cnnb_style *st, const float *c, long image, float *g, double *j0, double *j1, double *history);

/* The style image as network input x (C x H x W of net's input): a JPEG (cnnb_jpeg_read) whose
 * channel count must be the model's, resized with bilinear resampling to the model's input size
 * (cnnb_image_resize_bilinear), then standardised as the content images: (p/255 - mean) / std. */
int cnnb_style_load_image(const char *path, const cnnb_net *net, const float *mean, const float *std, float *x);

#ifdef __cplusplus
}
#endif
#endif
