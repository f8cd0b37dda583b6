/* Neural style transfer (include/cnnb/style.h): costs, their gradients, a partial forward and a
 * backward that starts from deltas filled by the caller, and Adam on the image. */
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

void cnnb_style_opts_init(cnnb_style_opts *o)
{
  memset(o, 0, sizeof *o);
  o->content_layer = -1;
  o->alpha = 10.f;
  o->beta = 40.f;
  o->steps = 200;
  o->lr = 0.02f;
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
  st->m = malloc(in * sizeof(float));
  st->v = malloc(in * sizeof(float));
  if (!st->content_act || !st->style_gram || !st->gg || !st->m || !st->v) {
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

int cnnb_style_run(cnnb_style *st, const float *c, long image, float *g, double *j0, double *j1, double *history)
{
  cnnb_net *net = st->net;
  const cnnb_style_opts *o = &st->o;
  const size_t n = cnnb_shape_size(net->in), hw = (size_t)net->in.h * net->in.w;
  cnnb_rng r;
  cnnb_rng_seed(&r, o->seed, 0x57e1e, (uint64_t)image, 0);
  for (size_t i = 0; i < n; i++) {
    int ch = (int)(i / hw);
    float sd = o->clamp && o->hi[ch] > o->lo[ch] ? o->hi[ch] - o->lo[ch] : 1.f; /* 1/std: pixel scale -> input */
    g[i] = c[i] + o->noise * sd * (2.f * cnnb_rng_uniform(&r) - 1.f);
  }
  memset(st->m, 0, n * sizeof(float));
  memset(st->v, 0, n * sizeof(float));
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  double J = 0;
  for (int t = 1; t <= o->steps + 1; t++) {
    J = cnnb_style_cost(st, g, NULL, NULL);
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
      if (o->clamp) {
        int ch = (int)(i / hw);
        g[i] = g[i] < o->lo[ch] ? o->lo[ch] : g[i] > o->hi[ch] ? o->hi[ch] : g[i];
      }
    }
  }
  if (j1) *j1 = J;
  return 0;
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
