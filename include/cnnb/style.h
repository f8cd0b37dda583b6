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

/* ---- L-BFGS (Nocedal & Wright, alg. 7.4 and 7.5), generic over a float vector of n values ----
 * One iteration: the direction d = -H g from the two-loop recursion over the last m pairs
 * (s = x+ - x, y = g+ - g; H0 = gamma I with gamma = s'y / y'y of the newest pair), then a
 * backtracking line search along the projected path x(t) = P(x + t d) (P: the caller's clamp,
 * or none) until Armijo holds: f(x(t)) <= f(x) + c1 g'(x(t) - x), c1 = 1e-4. The first trial is
 * t = 1, or, with no pairs yet, the t that changes the largest component by first_step (the
 * scale of H0 is unknown then). A rejected t shrinks to the minimiser of the quadratic through
 * f(x), g'd and f(x(t)), kept within [0.1 t, 0.5 t]. Every trial is one evaluation of f and its
 * gradient together (what the callback computes), so one iteration uses 1 to max_evals
 * evaluations [CNNB_LBFGS_MAX_EVALS]. A pair with s'y <= 1e-10 y'y (no positive curvature, to
 * float precision) is not stored. A failed line search drops the pairs (a restart); it is done
 * (nothing more to gain at the precision of f) when the gradient is zero or a line search fails
 * again within one step of a restart. */
#define CNNB_LBFGS_MAX_EVALS 20

/* f at x; writes its gradient into grad (n values). */
typedef double (*cnnb_lbfgs_fn)(void *ctx, const float *x, float *grad);
/* Puts x back into the feasible set in place (a box clamp); may be NULL in cnnb_lbfgs_step. */
typedef void (*cnnb_lbfgs_project)(void *ctx, float *x);

typedef struct cnnb_lbfgs {
  size_t n;
  int m;                  /* pairs kept */
  int max_evals;          /* evaluations per iteration at most [CNNB_LBFGS_MAX_EVALS] */
  double c1;              /* Armijo constant [1e-4] */
  double first_step;      /* largest component change of a step without pairs [1] */
  float *s, *y;           /* m x n, a ring: the newest pair at head - 1 */
  double *rho, *alpha;    /* 1 / s'y per pair; the two-loop's coefficients */
  double gamma;           /* s'y / y'y of the newest pair: H0 */
  float *d, *xt, *gt;     /* direction, trial point and its gradient */
  int npairs, head;
  int since_restart;      /* steps accepted since the pairs were last dropped */
  long evals;             /* evaluations so far (the caller may zero it) */
} cnnb_lbfgs;

enum { CNNB_LBFGS_MOVED = 0, CNNB_LBFGS_RESTART = 1, CNNB_LBFGS_DONE = 2 };

/* Allocates every buffer (m x n pairs and three n vectors); m >= 1. */
int cnnb_lbfgs_init(cnnb_lbfgs *lb, size_t n, int m);
void cnnb_lbfgs_free(cnnb_lbfgs *lb);
/* Forgets the pairs (a new problem, or a restart). */
void cnnb_lbfgs_reset(cnnb_lbfgs *lb);
/* One iteration from x with *f = f(x) and g = its gradient; on success x, *f and g are those of
 * the accepted point and it returns CNNB_LBFGS_MOVED. When no trial passes Armijo within
 * max_evals, x, *f and g stay, the pairs are dropped and it returns CNNB_LBFGS_RESTART (the next
 * iteration is a steepest-descent step), or CNNB_LBFGS_DONE when the last restart was at most one
 * step ago or the gradient is zero: x is a minimum to the precision of f (where steepest-descent
 * steps still gain a rounding error and L-BFGS steps fail, each at the cost of max_evals), or the
 * gradient is wrong. Iterating after DONE is allowed but gains nothing. */
int cnnb_lbfgs_step(cnnb_lbfgs *lb, float *x, double *f, float *g, cnnb_lbfgs_fn fn, cnnb_lbfgs_project proj,
                    void *ctx);

#define CNNB_STYLE_MAX_LAYERS 16

enum { CNNB_STYLE_ADAM = 0, CNNB_STYLE_LBFGS = 1 };

typedef struct cnnb_style_opts {
  int content_layer;
  int nstyle;
  int style_layers[CNNB_STYLE_MAX_LAYERS];
  float style_weights[CNNB_STYLE_MAX_LAYERS]; /* lambda_l */
  float alpha, beta;
  int optimizer;          /* CNNB_STYLE_ADAM or CNNB_STYLE_LBFGS */
  int steps;              /* iterations: Adam steps, or L-BFGS iterations (each 1 to
                             CNNB_LBFGS_MAX_EVALS cost evaluations) */
  float lr;               /* Adam step size, in network-input units; L-BFGS: the largest pixel
                             change of its first step (before it has curvature pairs) */
  int history;            /* L-BFGS pairs m */
  float noise;            /* G0 = C + U(-noise, noise) / std, noise on the [0,1] pixel scale */
  unsigned long long seed;
  int clamp;              /* keep G inside [lo, hi] per channel: G0 and every iterate */
  float lo[4], hi[4];
} cnnb_style_opts;

/* Adam, alpha 10, beta 40, 200 steps, lr 0.02, history 10, noise 0.1, seed 1, clamp off; layers
 * unset (-1). */
void cnnb_style_opts_init(cnnb_style_opts *o);

typedef struct cnnb_style {
  cnnb_net *net;          /* not owned: built with opts.input_grad = 1, max_batch >= 1 */
  cnnb_style_opts o;
  int last;               /* deepest layer involved */
  float *content_act;     /* a(C) at the content layer */
  float *style_gram;      /* Gram(S) of every style layer, one after the other */
  size_t gram_off[CNNB_STYLE_MAX_LAYERS];
  float *gg;              /* Gram(G) scratch */
  float *m, *v;           /* Adam moments over the image (Adam only) */
  cnnb_lbfgs lb;          /* L-BFGS state (L-BFGS only) */
  float *grad;            /* L-BFGS: dJ/dG of the current iterate (input_delta holds a trial's) */
  long evals;             /* cost evaluations (forward + backward) of the last run */
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
/* From G0 = C + noise (the rng stream from (seed, image)), clamped, o.steps iterations of
 * o.optimizer, the clamp (o.clamp) applied to every iterate; g receives the result; J of G0 and of the result
 * in *j0 and *j1. Needs set_style and set_content before. history, when not NULL, gets J before
 * each iteration (o.steps values). st->evals counts the cost evaluations: steps + 1 for Adam;
 * 1 + the line searches' trials for L-BFGS, which stops early (J repeated in history) when
 * cnnb_lbfgs_step says DONE or an iteration gains less than CNNB_STYLE_LBFGS_FTOL J: a minimum
 * to the float precision of J. */
#define CNNB_STYLE_LBFGS_FTOL 1e-9
int cnnb_style_run(cnnb_style *st, const float *c, long image, float *g, double *j0, double *j1, double *history);

/* The style image as network input x (C x H x W of net's input): a JPEG (cnnb_jpeg_read) whose
 * channel count must be the model's, resized with bilinear resampling to the model's input size
 * (cnnb_image_resize_bilinear), then standardised as the content images: (p/255 - mean) / std. */
int cnnb_style_load_image(const char *path, const cnnb_net *net, const float *mean, const float *std, float *x);

#ifdef __cplusplus
}
#endif
#endif
