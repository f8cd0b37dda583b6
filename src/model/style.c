/* Neural style transfer (include/cnnb/style.h): costs, their gradients, a partial forward and a
 * backward that starts from deltas filled by the caller, and Adam or L-BFGS on the image. */
#include "cnnb/style.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/image.h"
#include "cnnb/rng.h"

void cnnb_net_layer_name(const cnnb_net *net, int i, char *buf, size_t n)
{
  int block = 1, k = 0;
  for (int j = 0; j <= i; j++) {
    const char *kind = cnnb_layer_kind(&net->layers[j]);
    if (!strcmp(kind, "convolutional")) {
      k++;
    } else if (!strcmp(kind, "maxpool") || !strcmp(kind, "avgpool")) {
      if (j < i) block++, k = 0;
    }
  }
  const char *kind = cnnb_layer_kind(&net->layers[i]);
  if (!strcmp(kind, "convolutional")) snprintf(buf, n, "conv%d_%d", block, k);
  else snprintf(buf, n, "%s_%d", kind, i);
}

int cnnb_net_find_layer(const cnnb_net *net, const char *spec, int *index)
{
  char *end;
  long v = strtol(spec, &end, 10);
  if (end != spec && !*end) {
    if (v < 0 || v >= net->n)
      return cnnb_error(CNNB_EINVAL, "%s: no layer %ld (the model has layers 0-%d)", net->cfg.path, v, net->n - 1);
    *index = (int)v;
    return 0;
  }
  char name[64], first[64] = "", last[64] = "";
  for (int i = 0; i < net->n; i++) {
    cnnb_net_layer_name(net, i, name, sizeof name);
    if (!strcmp(name, spec)) {
      *index = i;
      return 0;
    }
    if (!strcmp(cnnb_layer_kind(&net->layers[i]), "convolutional")) {
      if (!first[0]) snprintf(first, sizeof first, "%s", name);
      snprintf(last, sizeof last, "%s", name);
    }
  }
  if (first[0])
    return cnnb_error(CNNB_EINVAL, "%s: no layer '%s' (the model has %d layers, its convolutions named %s .. %s)",
                      net->cfg.path, spec, net->n, first, last);
  return cnnb_error(CNNB_EINVAL, "%s: no layer '%s' (the model has %d layers and no convolutions)", net->cfg.path, spec,
                    net->n);
}

void cnnb_net_forward_to(cnnb_net *net, const float *x, int n, int last)
{
  net->batch = n;
  net->input = x;
  net->layers[0].input = x;
  for (int i = 0; i <= last; i++) net->layers[i].ops->forward(&net->layers[i], net);
}

void cnnb_net_backward_from(cnnb_net *net, int last)
{
  for (int i = last; i >= 0; i--) {
    net->layers[i].ops->backward(&net->layers[i], net);
    if (net->backward_hook) net->backward_hook(net, i, net->backward_hook_ctx);
  }
}

void cnnb_gram(const float *a, int c, int hw, float *g)
{
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c, c, hw, 1.f, a, hw, a, hw, 0.f, g, c);
}

double cnnb_content_cost(const float *ac, const float *ag, cnnb_shape s, float scale, float *grad)
{
  const size_t n = cnnb_shape_size(s);
  const double norm = 4.0 * (double)n;
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)ac[i] - ag[i];
    sum += d * d;
  }
  if (grad) {
    /* d/d ag of (ac - ag)^2 / (4n) = (ag - ac) / (2n) */
    const float k = (float)(scale * 2.0 / norm);
    for (size_t i = 0; i < n; i++) grad[i] += k * (ag[i] - ac[i]);
  }
  return sum / norm;
}

double cnnb_style_layer_cost(const float *gs, const float *ag, cnnb_shape s, float *gg, float scale, float *grad)
{
  const int c = s.c, hw = s.h * s.w;
  const double nn = (double)c * hw, norm = 4.0 * nn * nn; /* (2 nH nW nC)^2 */
  cnnb_gram(ag, c, hw, gg);
  double sum = 0;
  for (size_t i = 0; i < (size_t)c * c; i++) {
    double d = (double)gs[i] - gg[i];
    sum += d * d;
    gg[i] -= gs[i]; /* D = Gram(G) - Gram(S), for the gradient */
  }
  /* d/dA sum (Gs - A A^T)^2 = 4 D A (D symmetric), divided by the normalisation */
  if (grad)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, c, (float)(scale * 4.0 / norm), gg, c, ag, hw, 1.f,
                grad, hw);
  return sum / norm;
}

/* ---- L-BFGS ---- */

void cnnb_lbfgs_free(cnnb_lbfgs *lb)
{
  free(lb->s);
  free(lb->y);
  free(lb->rho);
  free(lb->alpha);
  free(lb->d);
  free(lb->xt);
  free(lb->gt);
  memset(lb, 0, sizeof *lb);
}

int cnnb_lbfgs_init(cnnb_lbfgs *lb, size_t n, int m)
{
  memset(lb, 0, sizeof *lb);
  if (m < 1 || n < 1) return cnnb_error(CNNB_EINVAL, "L-BFGS needs n >= 1 values and a history m >= 1 (got %zu, %d)", n, m);
  lb->n = n;
  lb->m = m;
  lb->max_evals = CNNB_LBFGS_MAX_EVALS;
  lb->c1 = 1e-4;
  lb->first_step = 1;
  lb->s = malloc((size_t)m * n * sizeof(float));
  lb->y = malloc((size_t)m * n * sizeof(float));
  lb->rho = malloc((size_t)m * sizeof(double));
  lb->alpha = malloc((size_t)m * sizeof(double));
  lb->d = malloc(n * sizeof(float));
  lb->xt = malloc(n * sizeof(float));
  lb->gt = malloc(n * sizeof(float));
  if (!lb->s || !lb->y || !lb->rho || !lb->alpha || !lb->d || !lb->xt || !lb->gt) {
    cnnb_lbfgs_free(lb);
    return cnnb_error(CNNB_ENOMEM, "out of memory for L-BFGS (%d pairs of %zu values)", m, n);
  }
  return 0;
}

void cnnb_lbfgs_reset(cnnb_lbfgs *lb)
{
  lb->npairs = lb->head = lb->since_restart = 0;
  lb->gamma = 1;
}

/* Sums in double: n is up to ~10^5 pixels and s'y is a small difference of large terms. */
static double dot(const float *a, const float *b, size_t n)
{
  double r = 0;
  for (size_t i = 0; i < n; i++) r += (double)a[i] * b[i];
  return r;
}

/* d = -H g by the two-loop recursion, newest pair first then oldest first. */
static void lbfgs_direction(cnnb_lbfgs *lb, const float *g)
{
  const size_t n = lb->n;
  float *q = lb->d;
  memcpy(q, g, n * sizeof *q);
  for (int k = 0; k < lb->npairs; k++) {
    int i = (lb->head - 1 - k + lb->m) % lb->m;
    const float *s = lb->s + (size_t)i * n, *y = lb->y + (size_t)i * n;
    double a = lb->rho[i] * dot(s, q, n);
    lb->alpha[i] = a;
    for (size_t j = 0; j < n; j++) q[j] -= (float)a * y[j];
  }
  const float gam = (float)(lb->npairs ? lb->gamma : 1.0);
  for (size_t j = 0; j < n; j++) q[j] *= gam;
  for (int k = lb->npairs - 1; k >= 0; k--) {
    int i = (lb->head - 1 - k + lb->m) % lb->m;
    const float *s = lb->s + (size_t)i * n, *y = lb->y + (size_t)i * n;
    double b = lb->rho[i] * dot(y, q, n);
    float c = (float)(lb->alpha[i] - b);
    for (size_t j = 0; j < n; j++) q[j] += c * s[j];
  }
  for (size_t j = 0; j < n; j++) q[j] = -q[j];
}

int cnnb_lbfgs_step(cnnb_lbfgs *lb, float *x, double *f, float *g, cnnb_lbfgs_fn fn, cnnb_lbfgs_project proj,
                    void *ctx)
{
  const size_t n = lb->n;
  double gmax = 0;
  for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)g[i]));
  if (!(gmax > 0)) return CNNB_LBFGS_DONE; /* a stationary point */
  int fresh = lb->npairs == 0;
  lbfgs_direction(lb, g);
  double gd = dot(g, lb->d, n);
  if (!(gd < 0)) { /* H lost positive definiteness to rounding: start over from -g */
    cnnb_lbfgs_reset(lb);
    fresh = 1;
    for (size_t i = 0; i < n; i++) lb->d[i] = -g[i];
    gd = -dot(g, g, n);
  }
  /* Without pairs H0 = I has no scale: bound the first move instead. */
  double t = fresh ? lb->first_step / gmax : 1.0;
  for (int e = 0; e < lb->max_evals; e++) {
    for (size_t i = 0; i < n; i++) lb->xt[i] = x[i] + (float)t * lb->d[i];
    if (proj) proj(ctx, lb->xt);
    /* g'(x(t) - x): the first-order decrease along the projected step, what Armijo compares to */
    double dec = 0;
    int moved = 0;
    for (size_t i = 0; i < n; i++) {
      dec += (double)g[i] * ((double)lb->xt[i] - x[i]);
      moved |= lb->xt[i] != x[i];
    }
    if (!moved) break; /* t below float resolution: more trials would evaluate x again */
    lb->evals++;
    double ft = fn(ctx, lb->xt, lb->gt);
    if (isfinite(ft) && dec < 0 && ft <= *f + lb->c1 * dec) {
      /* Two passes: a pair that fails the curvature check must not overwrite the oldest one. */
      double sy = 0, yy = 0;
      for (size_t i = 0; i < n; i++) {
        double si = (double)lb->xt[i] - x[i], yi = (double)lb->gt[i] - g[i];
        sy += si * yi;
        yy += yi * yi;
      }
      if (sy > 1e-10 * yy && isfinite(sy)) {
        float *s = lb->s + (size_t)lb->head * n, *y = lb->y + (size_t)lb->head * n;
        for (size_t i = 0; i < n; i++) s[i] = lb->xt[i] - x[i], y[i] = lb->gt[i] - g[i];
        lb->rho[lb->head] = 1.0 / sy;
        lb->gamma = sy / yy;
        lb->head = (lb->head + 1) % lb->m;
        if (lb->npairs < lb->m) lb->npairs++;
      }
      memcpy(x, lb->xt, n * sizeof *x);
      memcpy(g, lb->gt, n * sizeof *g);
      *f = ft;
      lb->since_restart++;
      return CNNB_LBFGS_MOVED;
    }
    double tn = 0.5 * t;
    if (isfinite(ft)) {
      double den = 2 * (ft - *f - gd * t);
      if (den > 0) tn = -gd * t * t / den;
    }
    t = fmin(fmax(tn, 0.1 * t), 0.5 * t);
  }
  /* Failing again right after a restart is the signature of f's rounding floor. */
  int done = fresh || lb->since_restart <= 1;
  cnnb_lbfgs_reset(lb);
  return done ? CNNB_LBFGS_DONE : CNNB_LBFGS_RESTART;
}

/* ---- style transfer ---- */

void cnnb_style_opts_init(cnnb_style_opts *o)
{
  memset(o, 0, sizeof *o);
  o->content_layer = -1;
  o->alpha = 10.f;
  o->beta = 40.f;
  o->steps = 200;
  o->lr = 0.02f;
  o->history = 10;
  o->noise = 0.1f;
  o->seed = 1;
}

void cnnb_style_free(cnnb_style *st)
{
  free(st->content_act);
  free(st->style_gram);
  free(st->gg);
  free(st->m);
  free(st->v);
  free(st->grad);
  cnnb_lbfgs_free(&st->lb);
  memset(st, 0, sizeof *st);
}

int cnnb_style_init(cnnb_style *st, cnnb_net *net, const cnnb_style_opts *o)
{
  memset(st, 0, sizeof *st);
  const char *path = net->cfg.path;
  if (!net->input_delta || net->max_batch < 1)
    return cnnb_error(CNNB_EINVAL, "%s: style transfer needs a network built with input gradients", path);
  if (o->content_layer < 0 || o->content_layer >= net->n)
    return cnnb_error(CNNB_EINVAL, "%s: content layer %d is not a layer of the model (0-%d)", path, o->content_layer,
                      net->n - 1);
  if (o->nstyle < 1 || o->nstyle > CNNB_STYLE_MAX_LAYERS)
    return cnnb_error(CNNB_EINVAL, "%s: %d style layers (1-%d)", path, o->nstyle, CNNB_STYLE_MAX_LAYERS);
  if (o->steps < 0 || !(o->lr > 0))
    return cnnb_error(CNNB_EINVAL, "style transfer needs steps >= 0 and lr > 0 (got %d, %g)", o->steps, o->lr);
  if (o->optimizer != CNNB_STYLE_ADAM && o->optimizer != CNNB_STYLE_LBFGS)
    return cnnb_error(CNNB_EINVAL, "style transfer: unknown optimizer %d", o->optimizer);
  if (o->optimizer == CNNB_STYLE_LBFGS && (o->history < 1 || o->history > 1000))
    return cnnb_error(CNNB_EINVAL, "style transfer: L-BFGS history %d (1-1000 pairs)", o->history);
  st->net = net;
  st->o = *o;
  st->last = o->content_layer;
  size_t gsz = 0, gmax = 0;
  for (int i = 0; i < o->nstyle; i++) {
    int l = o->style_layers[i];
    if (l < 0 || l >= net->n)
      return cnnb_error(CNNB_EINVAL, "%s: style layer %d is not a layer of the model (0-%d)", path, l, net->n - 1);
    if (l > st->last) st->last = l;
    size_t c = (size_t)net->layers[l].out.c;
    st->gram_off[i] = gsz;
    gsz += c * c;
    if (c * c > gmax) gmax = c * c;
  }
  for (int i = 0; i <= st->last; i++)
    if (!net->layers[i].delta)
      return cnnb_error(CNNB_EINVAL, "%s: layer %d has no delta buffer (build with input gradients)", path, i);
  size_t in = cnnb_shape_size(net->in);
  st->content_act = malloc(cnnb_shape_size(net->layers[o->content_layer].out) * sizeof(float));
  st->style_gram = malloc(gsz * sizeof(float));
  st->gg = malloc(gmax * sizeof(float));
  int ok;
  if (o->optimizer == CNNB_STYLE_ADAM) {
    st->m = malloc(in * sizeof(float));
    st->v = malloc(in * sizeof(float));
    ok = st->m && st->v;
  } else {
    st->grad = malloc(in * sizeof(float));
    ok = st->grad && !cnnb_lbfgs_init(&st->lb, in, o->history);
  }
  if (!st->content_act || !st->style_gram || !st->gg || !ok) {
    cnnb_style_free(st);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory for style transfer", path);
  }
  return 0;
}

void cnnb_style_set_style(cnnb_style *st, const float *s)
{
  cnnb_net *net = st->net;
  cnnb_net_forward_to(net, s, 1, st->last);
  for (int i = 0; i < st->o.nstyle; i++) {
    const cnnb_layer *l = &net->layers[st->o.style_layers[i]];
    cnnb_gram(l->output, l->out.c, l->out.h * l->out.w, st->style_gram + st->gram_off[i]);
  }
  st->have_style = 1;
}

void cnnb_style_set_content(cnnb_style *st, const float *c)
{
  cnnb_net *net = st->net;
  cnnb_net_forward_to(net, c, 1, st->o.content_layer);
  const cnnb_layer *l = &net->layers[st->o.content_layer];
  memcpy(st->content_act, l->output, cnnb_shape_size(l->out) * sizeof(float));
}

double cnnb_style_cost(cnnb_style *st, const float *g, double *jc, double *js)
{
  cnnb_net *net = st->net;
  const cnnb_style_opts *o = &st->o;
  cnnb_net_forward_to(net, g, 1, st->last);
  for (int i = 0; i <= st->last; i++)
    memset(net->layers[i].delta, 0, cnnb_shape_size(net->layers[i].out) * sizeof(float));
  memset(net->input_delta, 0, cnnb_shape_size(net->in) * sizeof(float));
  cnnb_layer *cl = &net->layers[o->content_layer];
  double c = cnnb_content_cost(st->content_act, cl->output, cl->out, o->alpha, cl->delta), s = 0;
  for (int i = 0; i < o->nstyle; i++) {
    cnnb_layer *l = &net->layers[o->style_layers[i]];
    float w = o->beta * o->style_weights[i];
    s += o->style_weights[i] *
         cnnb_style_layer_cost(st->style_gram + st->gram_off[i], l->output, l->out, st->gg, w, l->delta);
  }
  cnnb_net_backward_from(net, st->last);
  if (jc) *jc = c;
  if (js) *js = s;
  return o->alpha * c + o->beta * s;
}

/* G inside [lo, hi] per channel: the valid pixel range in network-input units. */
static void style_clamp(const cnnb_style_opts *o, const cnnb_shape in, float *g)
{
  if (!o->clamp) return;
  const size_t hw = (size_t)in.h * in.w;
  for (int ch = 0; ch < in.c; ch++) {
    float *p = g + (size_t)ch * hw;
    for (size_t i = 0; i < hw; i++) p[i] = p[i] < o->lo[ch] ? o->lo[ch] : p[i] > o->hi[ch] ? o->hi[ch] : p[i];
  }
}

static void style_project(void *ctx, float *g)
{
  cnnb_style *st = ctx;
  style_clamp(&st->o, st->net->in, g);
}

/* The L-BFGS callback: the same cost and backward as Adam's (cnnb_style_cost); the gradient is
 * copied out because the next trial overwrites input_delta. */
static double style_fg(void *ctx, const float *g, float *grad)
{
  cnnb_style *st = ctx;
  double J = cnnb_style_cost(st, g, NULL, NULL);
  memcpy(grad, st->net->input_delta, cnnb_shape_size(st->net->in) * sizeof *grad);
  return J;
}

static int run_adam(cnnb_style *st, long image, float *g, double *j0, double *j1, double *history)
{
  cnnb_net *net = st->net;
  const cnnb_style_opts *o = &st->o;
  const size_t n = cnnb_shape_size(net->in);
  memset(st->m, 0, n * sizeof(float));
  memset(st->v, 0, n * sizeof(float));
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  double J = 0;
  for (int t = 1; t <= o->steps + 1; t++) {
    J = cnnb_style_cost(st, g, NULL, NULL);
    st->evals++;
    if (!isfinite(J))
      return cnnb_error(CNNB_ENUM, "style transfer of image %ld diverged at step %d (J = %g): lower lr", image, t - 1, J);
    if (t == 1 && j0) *j0 = J;
    if (t > o->steps) break; /* the last evaluation only measures the result */
    if (history) history[t - 1] = J;
    const float *gr = net->input_delta;
    const float c1 = 1.f - powf(b1, (float)t), c2 = 1.f - powf(b2, (float)t);
    for (size_t i = 0; i < n; i++) {
      st->m[i] = b1 * st->m[i] + (1 - b1) * gr[i];
      st->v[i] = b2 * st->v[i] + (1 - b2) * gr[i] * gr[i];
      g[i] -= o->lr * (st->m[i] / c1) / (sqrtf(st->v[i] / c2) + eps);
    }
    style_clamp(o, net->in, g);
  }
  if (j1) *j1 = J;
  return 0;
}

static int run_lbfgs(cnnb_style *st, long image, float *g, double *j0, double *j1, double *history)
{
  const cnnb_style_opts *o = &st->o;
  cnnb_lbfgs_reset(&st->lb);
  st->lb.first_step = o->lr;
  st->lb.evals = 0;
  double J = style_fg(st, g, st->grad);
  st->lb.evals++;
  if (!isfinite(J)) return cnnb_error(CNNB_ENUM, "style transfer of image %ld: J = %g at the start", image, J);
  if (j0) *j0 = J;
  int done = 0;
  for (int t = 0; t < o->steps; t++) {
    if (history) history[t] = J;
    if (done) continue;
    /* a failed line search is not an error: the iterate is the best point found */
    double prev = J;
    int rc = cnnb_lbfgs_step(&st->lb, g, &J, st->grad, style_fg, style_project, st);
    /* J is summed from float activations: a gain below CNNB_STYLE_LBFGS_FTOL J is rounding, and
     * such steps take many trials each */
    done = rc == CNNB_LBFGS_DONE || (rc == CNNB_LBFGS_MOVED && prev - J <= CNNB_STYLE_LBFGS_FTOL * fabs(prev));
  }
  st->evals = st->lb.evals;
  if (j1) *j1 = J;
  return 0;
}

int cnnb_style_run(cnnb_style *st, const float *c, long image, float *g, double *j0, double *j1, double *history)
{
  cnnb_net *net = st->net;
  const cnnb_style_opts *o = &st->o;
  const size_t n = cnnb_shape_size(net->in), hw = (size_t)net->in.h * net->in.w;
  if (o->optimizer == CNNB_STYLE_LBFGS ? !st->grad : !st->m)
    return cnnb_error(CNNB_EINVAL, "style transfer: the optimizer was changed after cnnb_style_init");
  cnnb_rng r;
  cnnb_rng_seed(&r, o->seed, 0x57e1e, (uint64_t)image, 0);
  for (size_t i = 0; i < n; i++) {
    int ch = (int)(i / hw);
    float sd = o->clamp && o->hi[ch] > o->lo[ch] ? o->hi[ch] - o->lo[ch] : 1.f; /* 1/std: pixel scale -> input */
    g[i] = c[i] + o->noise * sd * (2.f * cnnb_rng_uniform(&r) - 1.f);
  }
  /* Noise can leave the valid range; both optimisers start from a valid image (L-BFGS's Armijo
   * test measures the decrease from a feasible point). */
  style_clamp(o, net->in, g);
  st->evals = 0;
  return o->optimizer == CNNB_STYLE_LBFGS ? run_lbfgs(st, image, g, j0, j1, history)
                                          : run_adam(st, image, g, j0, j1, history);
}

/* The style image as network input: JPEG -> channel check -> bilinear resize to the content
 * size -> the content images' standardisation, NCHW. */
int cnnb_style_load_image(const char *path, const cnnb_net *net, const float *mean, const float *std, float *x)
{
  unsigned char *img = NULL, *rs = NULL;
  int h, w, c;
  int rc = cnnb_jpeg_read(path, &img, &h, &w, &c);
  if (rc) return rc;
  const int H = net->in.h, W = net->in.w;
  if (c != net->in.c)
    rc = cnnb_error(CNNB_ESHAPE, "%s: the style image has %d channel%s (%s) but the content images and model %s have %d",
                    path, c, c == 1 ? "" : "s", c == 1 ? "greyscale" : "colour", net->cfg.path, net->in.c);
  if (!rc && !(rs = malloc((size_t)H * W * c))) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  if (!rc) {
    cnnb_image_resize_bilinear(img, h, w, c, rs, H, W);
    for (int k = 0; k < c; k++)
      for (int p = 0; p < H * W; p++) x[(size_t)k * H * W + p] = (rs[(size_t)p * c + k] / 255.f - mean[k]) / std[k];
  }
  free(img);
  free(rs);
  return rc;
}
