/* [route]: concatenates earlier layers' outputs along channels, in the order listed.
 *   layers    -k (relative) or absolute indices, comma-separated; all must share h and w
 *   groups, group_id  AlexeyAB's (yolov4-tiny): each input contributes only its channel
 *             slice [group_id*c/groups, (group_id+1)*c/groups); c must divide by groups
 * l->input (the previous layer) is ignored; backward adds into each source layer's delta. */
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

#define ROUTE_MAX 32

typedef struct route_priv {
  int n, groups, group_id;
  int index[ROUTE_MAX];
} route_priv;

static int route_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, idx[ROUTE_MAX], n = 0, groups, gid;
  if (!cnnb_cfg_find(s, "layers"))
    return cnnb_error(CNNB_ECFG, "%s:%d: [route] needs layers=", cfg->path, s->line);
  if ((rc = cnnb_cfg_ints(cfg, s, "layers", idx, ROUTE_MAX, &n)) < 0) return rc;
  if (n < 1) return cnnb_error(CNNB_ECFG, "%s:%d: [route] layers= is empty", cfg->path, s->line);
  if ((rc = cnnb_cfg_int(cfg, s, "groups", 1, 1, 1 << 16, &groups)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "group_id", 0, 0, groups - 1, &gid)) < 0) return rc;

  route_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[route] out of memory");
  p->n = n;
  p->groups = groups;
  p->group_id = gid;
  int c = 0, first = -1;
  for (int k = 0; k < n; k++) {
    int j = idx[k] < 0 ? l->index + idx[k] : idx[k];
    if (j < 0 || j >= l->index) {
      free(p);
      return cnnb_error(CNNB_ECFG, "%s:%d: [route] layers=%d: layer %d is not an earlier layer of layer %d",
                        cfg->path, s->line, idx[k], j, l->index);
    }
    cnnb_shape sh = net->layers[j].out;
    if (first >= 0) {
      cnnb_shape f = net->layers[first].out;
      if (sh.h != f.h || sh.w != f.w) {
        free(p);
        return cnnb_error(CNNB_ESHAPE, "%s:%d: [route] layer %d is %dx%d but layer %d is %dx%d (route needs equal h and w)",
                          cfg->path, s->line, first, f.h, f.w, j, sh.h, sh.w);
      }
    } else {
      first = j;
    }
    if (sh.c % groups) {
      free(p);
      return cnnb_error(CNNB_ESHAPE, "%s:%d: [route] layer %d has %d channels, not divisible by groups=%d",
                        cfg->path, s->line, j, sh.c, groups);
    }
    c += sh.c / groups;
    p->index[k] = j;
  }
  cnnb_shape f = net->layers[first].out;
  l->out = (cnnb_shape){c, f.h, f.w};
  l->priv = p;
  return 0;
}

static void route_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void route_forward(cnnb_layer *l, cnnb_net *net)
{
  const route_priv *p = l->priv;
  const size_t osz = cnnb_shape_size(l->out);
  size_t off = 0;
  for (int k = 0; k < p->n; k++) {
    const cnnb_layer *src = &net->layers[p->index[k]];
    const size_t isz = cnnb_shape_size(src->out), part = isz / p->groups;
    for (int b = 0; b < net->batch; b++) {
      const float *in = src->output + b * isz + part * p->group_id;
      float *out = l->output + b * osz + off;
      for (size_t i = 0; i < part; i++) out[i] = in[i];
    }
    off += part;
  }
}

static void route_backward(cnnb_layer *l, cnnb_net *net)
{
  const route_priv *p = l->priv;
  const size_t osz = cnnb_shape_size(l->out);
  size_t off = 0;
  for (int k = 0; k < p->n; k++) {
    cnnb_layer *src = &net->layers[p->index[k]];
    const size_t isz = cnnb_shape_size(src->out), part = isz / p->groups;
    if (src->delta)
      for (int b = 0; b < net->batch; b++) {
        float *din = src->delta + b * isz + part * p->group_id;
        const float *d = l->delta + b * osz + off;
        for (size_t i = 0; i < part; i++) din[i] += d[i];
      }
    off += part;
  }
}

static void route_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

static int route_sources(const cnnb_layer *l, int *idx, int cap)
{
  const route_priv *p = l->priv;
  int k = 0;
  for (; k < p->n && k < cap; k++) idx[k] = p->index[k];
  return k;
}

const cnnb_layer_ops cnnb_layer_route_ops = {
    .section = "route",
    .setup = route_setup,
    .init = route_init,
    .forward = route_forward,
    .backward = route_backward,
    .free = route_free,
    .loss = NULL,
    .sources = route_sources,
};
