/* [shortcut]: residual sum, output = activation(alpha * previous + beta * layer[from]).
 *   from        -k (relative) or an absolute layer index; AlexeyAB's list "from=-2,-5" adds
 *               each of them
 *   activation  default linear
 *   alpha, beta pjreddie's scales of the previous layer and of the from layer, default 1.
 *               alpha scales the whole previous output (pjreddie scales it only where the
 *               shapes overlap, yet its backward scales the whole delta; we keep forward and
 *               backward consistent)
 * The output has the previous layer's shape. When a from layer's shape differs, Darknet's
 * rule adds what overlaps: channels min(c1,c2); spatially, with stride = w_from/w_out and
 * sample = w_out/w_from (each at least 1), output position i*sample receives from position
 * i*stride for i < min(w_from, w_out), likewise in h. AlexeyAB's weighted shortcuts
 * (weights_type) are refused. */
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

#define SHORTCUT_MAX_FROM 16

typedef struct shortcut_from {
  int index;
  int stride, sample, minw, minh, minc;
} shortcut_from;

typedef struct shortcut_priv {
  float alpha, beta;
  int nfrom;
  shortcut_from from[SHORTCUT_MAX_FROM];
} shortcut_priv;

static int shortcut_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, idx[SHORTCUT_MAX_FROM], n = 0;
  float alpha, beta;
  if (!cnnb_cfg_find(s, "from"))
    return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] needs from=", cfg->path, s->line);
  if ((rc = cnnb_cfg_ints(cfg, s, "from", idx, SHORTCUT_MAX_FROM, &n)) < 0) return rc;
  if (n < 1) return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] from= is empty", cfg->path, s->line);
  const char *act = cnnb_cfg_str(s, "activation", "linear");
  int a = cnnb_act_parse(act);
  if (a < 0) return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] unknown activation '%s'", cfg->path, s->line, act);
  if ((rc = cnnb_cfg_float(cfg, s, "alpha", 1.0f, -1e6f, 1e6f, &alpha)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "beta", 1.0f, -1e6f, 1e6f, &beta)) < 0) return rc;
  const char *wt = cnnb_cfg_str(s, "weights_type", "none");
  if (strcmp(wt, "none") != 0)
    return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] weights_type=%s is not supported (only none)",
                      cfg->path, s->line, wt);
  const char *wn = cnnb_cfg_str(s, "weights_normalization", "none");
  if (strcmp(wn, "none") != 0)
    return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] weights_normalization=%s is not supported",
                      cfg->path, s->line, wn);

  shortcut_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[shortcut] out of memory");
  p->alpha = alpha;
  p->beta = beta;
  p->nfrom = n;
  l->out = l->in;
  for (int k = 0; k < n; k++) {
    int j = idx[k] < 0 ? l->index + idx[k] : idx[k];
    if (j < 0 || j >= l->index) {
      free(p);
      return cnnb_error(CNNB_ECFG, "%s:%d: [shortcut] from=%d: layer %d is not an earlier layer of layer %d",
                        cfg->path, s->line, idx[k], j, l->index);
    }
    cnnb_shape f = net->layers[j].out, o = l->out;
    shortcut_from *sf = &p->from[k];
    /* Darknet's ratios; both axes must agree or the overlap is ill-defined. */
    int stride = f.w / o.w, sample = o.w / f.w;
    if (stride != f.h / o.h || sample != o.h / f.h) {
      free(p);
      return cnnb_error(CNNB_ESHAPE, "%s:%d: [shortcut] layer %d (%dx%dx%d) and layer %d (%dx%dx%d) differ in h and w by different ratios",
                        cfg->path, s->line, j, f.c, f.h, f.w, l->index - 1, o.c, o.h, o.w);
    }
    sf->index = j;
    sf->stride = stride < 1 ? 1 : stride;
    sf->sample = sample < 1 ? 1 : sample;
    sf->minw = f.w < o.w ? f.w : o.w;
    sf->minh = f.h < o.h ? f.h : o.h;
    sf->minc = f.c < o.c ? f.c : o.c;
  }
  l->act = (cnnb_act)a;
  l->priv = p;
  l->madds = (double)cnnb_shape_size(l->out) * n;
  return 0;
}

static void shortcut_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

/* The added layer has the output's shape and is read element for element. */
static int same_shape(const shortcut_from *sf, cnnb_shape f, cnnb_shape o)
{
  return sf->stride == 1 && sf->sample == 1 && f.c == o.c && f.h == o.h && f.w == o.w;
}

static void shortcut_forward(cnnb_layer *l, cnnb_net *net)
{
  const shortcut_priv *p = l->priv;
  const cnnb_shape o = l->out;
  const size_t osz = cnnb_shape_size(o), total = osz * net->batch;
  for (int k = 0; k < p->nfrom; k++) {
    const shortcut_from *sf = &p->from[k];
    const cnnb_shape f = net->layers[sf->index].out;
    const float *add = net->layers[sf->index].output; /* read now: assigned after setup */
    const size_t fsz = cnnb_shape_size(f);
    if (same_shape(sf, f, o)) { /* ResNet's identity blocks: one flat pass, the same operations */
      float *restrict out = l->output;
      const float *restrict in = l->input, *restrict ad = add;
      if (k == 0)
        for (size_t i = 0; i < total; i++) out[i] = p->alpha * in[i] + p->beta * ad[i];
      else
        for (size_t i = 0; i < total; i++) out[i] += p->beta * ad[i];
      continue;
    }
    if (k == 0)
      for (size_t i = 0; i < total; i++) l->output[i] = p->alpha * l->input[i];
    for (int b = 0; b < net->batch; b++)
      for (int c = 0; c < sf->minc; c++)
        for (int y = 0; y < sf->minh; y++)
          for (int x = 0; x < sf->minw; x++) {
            size_t oi = b * osz + ((size_t)c * o.h + y * sf->sample) * o.w + x * sf->sample;
            size_t ai = b * fsz + ((size_t)c * f.h + y * sf->stride) * f.w + x * sf->stride;
            l->output[oi] += p->beta * add[ai];
          }
  }
  if (p->nfrom == 0)
    for (size_t i = 0; i < total; i++) l->output[i] = p->alpha * l->input[i];
  cnnb_act_forward(l->act, l->output, total);
}

static void shortcut_backward(cnnb_layer *l, cnnb_net *net)
{
  const shortcut_priv *p = l->priv;
  const cnnb_shape o = l->out;
  const size_t osz = cnnb_shape_size(o), total = osz * net->batch;
  cnnb_act_backward(l->act, l->output, l->delta, total);
  if (l->input_delta)
    for (size_t i = 0; i < total; i++) l->input_delta[i] += p->alpha * l->delta[i];
  for (int k = 0; k < p->nfrom; k++) {
    const shortcut_from *sf = &p->from[k];
    const cnnb_shape f = net->layers[sf->index].out;
    float *fd = net->layers[sf->index].delta;
    if (!fd) continue;
    const size_t fsz = cnnb_shape_size(f);
    if (same_shape(sf, f, o)) {
      const float *restrict d = l->delta;
      float *restrict fdr = fd;
      for (size_t i = 0; i < total; i++) fdr[i] += p->beta * d[i];
      continue;
    }
    for (int b = 0; b < net->batch; b++)
      for (int c = 0; c < sf->minc; c++)
        for (int y = 0; y < sf->minh; y++)
          for (int x = 0; x < sf->minw; x++) {
            size_t oi = b * osz + ((size_t)c * o.h + y * sf->sample) * o.w + x * sf->sample;
            size_t ai = b * fsz + ((size_t)c * f.h + y * sf->stride) * f.w + x * sf->stride;
            fd[ai] += p->beta * l->delta[oi];
          }
  }
}

static void shortcut_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

static int shortcut_sources(const cnnb_layer *l, int *idx, int cap)
{
  const shortcut_priv *p = l->priv;
  int k = 0;
  for (; k < p->nfrom && k < cap; k++) idx[k] = p->from[k].index;
  return k;
}

const cnnb_layer_ops cnnb_layer_shortcut_ops = {
    .section = "shortcut",
    .setup = shortcut_setup,
    .init = shortcut_init,
    .forward = shortcut_forward,
    .backward = shortcut_backward,
    .free = shortcut_free,
    .loss = NULL,
    .sources = shortcut_sources,
};
