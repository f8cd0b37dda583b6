/* [region]: YOLOv2's detection head. Per anchor the input holds coords box planes (tx, ty, tw,
 * th), one objectness plane and classes class planes, each h x w, anchor after anchor: in.c
 * must be num * (classes + coords + 1). The output has the input's shape; forward applies
 * Darknet's activation of the raw values: logistic on tx, ty and objectness, and over the
 * class planes a softmax across classes at each cell when softmax=1 (else a logistic each).
 *   anchors     w,h pairs in output cells, num pairs   bias_match (kept for the loss)
 *   classes 20, coords 4, num 1, softmax 0 (Darknet's defaults)
 * Darknet's training keys (jitter, rescore, *_scale, thresh, absolute, random) are accepted with a
 * warning: the loss comes with the YOLO issue, so there is no loss op yet and backward only
 * passes the given delta back through the activations. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"
#include "layers/heads.h"

#define REGION_MAX_ANCHORS 64

typedef struct region_priv {
  int n, classes, coords, softmax, bias_match;
  float anchors[2 * REGION_MAX_ANCHORS];
} region_priv;

static int region_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  region_priv p;
  memset(&p, 0, sizeof p);
  int rc, nanch, v;
  if ((rc = cnnb_cfg_int(cfg, s, "classes", 20, 1, 1 << 20, &p.classes)) < 0) return rc;
  /* At least tx, ty: the logistic below addresses them. */
  if ((rc = cnnb_cfg_int(cfg, s, "coords", 4, 2, 64, &p.coords)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "num", 1, 1, REGION_MAX_ANCHORS, &p.n)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "softmax", 0, 0, 1, &p.softmax)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "bias_match", 0, 0, 1, &p.bias_match)) < 0) return rc;
  if ((rc = cnnb_cfg_floats(cfg, s, "anchors", p.anchors, 2 * REGION_MAX_ANCHORS, &nanch)) < 0) return rc;
  /* YOLO9000's hierarchical softmax and background class change the layout: refuse, not ignore. */
  if (cnnb_cfg_find(s, "tree"))
    return cnnb_error(CNNB_ECFG, "%s:%d: layer %d [region]: tree (hierarchical softmax) is not supported",
                      cfg->path, cnnb_cfg_find(s, "tree")->line, l->index);
  if ((rc = cnnb_cfg_int(cfg, s, "background", 0, 0, 1, &v)) < 0) return rc;
  if (v)
    return cnnb_error(CNNB_ECFG, "%s:%d: layer %d [region]: background=1 is not supported", cfg->path,
                      cnnb_cfg_find(s, "background")->line, l->index);
  if (nanch && nanch != 2 * p.n)
    return cnnb_error(CNNB_ECFG, "%s:%d: layer %d [region]: %d anchor values, expected 2 x num = %d",
                      cfg->path, s->line, l->index, nanch, 2 * p.n);
  if (l->in.c != p.n * (p.classes + p.coords + 1))
    return cnnb_error(CNNB_ESHAPE,
                      "%s:%d: layer %d [region]: input has %d channels, expected num %d x (classes %d + coords "
                      "%d + 1) = %d",
                      cfg->path, s->line, l->index, l->in.c, p.n, p.classes, p.coords,
                      p.n * (p.classes + p.coords + 1));
  region_priv *pp = malloc(sizeof *pp);
  if (!pp) return cnnb_error(CNNB_ENOMEM, "[region] out of memory");
  *pp = p;
  l->priv = pp;
  l->out = l->in;
  l->madds = 0; /* activations only */
  return 0;
}

static void region_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void region_forward(cnnb_layer *l, cnnb_net *net)
{
  const region_priv *p = l->priv;
  const size_t hw = (size_t)l->out.h * l->out.w, sz = cnnb_shape_size(l->out);
  const int per = p->classes + p->coords + 1;
  memcpy(l->output, l->input, (size_t)net->batch * sz * sizeof(float));
  for (int b = 0; b < net->batch; b++)
    for (int a = 0; a < p->n; a++) {
      float *o = l->output + b * sz + (size_t)a * per * hw;
      cnnb_act_forward(CNNB_ACT_SIGMOID, o, 2 * hw);
      cnnb_act_forward(CNNB_ACT_SIGMOID, o + p->coords * hw, hw);
      float *cls = o + (p->coords + 1) * hw;
      if (!p->softmax) {
        cnnb_act_forward(CNNB_ACT_SIGMOID, cls, (size_t)p->classes * hw);
        continue;
      }
      for (size_t i = 0; i < hw; i++) { /* classes are hw apart at each cell */
        float mx = cls[i], sum = 0;
        for (int k = 1; k < p->classes; k++) mx = fmaxf(mx, cls[k * hw + i]);
        for (int k = 0; k < p->classes; k++) sum += cls[k * hw + i] = expf(cls[k * hw + i] - mx);
        for (int k = 0; k < p->classes; k++) cls[k * hw + i] /= sum;
      }
    }
}

/* No loss yet (it comes with the YOLO issue); given a delta, passes it to the input through
 * the activations so that the layer composes with a future loss. */
static void region_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta || !l->delta) return;
  const region_priv *p = l->priv;
  const size_t hw = (size_t)l->out.h * l->out.w, sz = cnnb_shape_size(l->out);
  const int per = p->classes + p->coords + 1;
  for (int b = 0; b < net->batch; b++) {
    for (int a = 0; a < p->n; a++) {
      size_t base = b * sz + (size_t)a * per * hw;
      const float *y = l->output + base;
      float *d = l->delta + base;
      cnnb_act_backward(CNNB_ACT_SIGMOID, y, d, 2 * hw);
      cnnb_act_backward(CNNB_ACT_SIGMOID, y + p->coords * hw, d + p->coords * hw, hw);
      const float *yc = y + (p->coords + 1) * hw;
      float *dc = d + (p->coords + 1) * hw;
      if (!p->softmax) {
        cnnb_act_backward(CNNB_ACT_SIGMOID, yc, dc, (size_t)p->classes * hw);
        continue;
      }
      for (size_t i = 0; i < hw; i++) { /* softmax Jacobian: y * (d - sum(d * y)) */
        float dot = 0;
        for (int k = 0; k < p->classes; k++) dot += dc[k * hw + i] * yc[k * hw + i];
        for (int k = 0; k < p->classes; k++) dc[k * hw + i] = yc[k * hw + i] * (dc[k * hw + i] - dot);
      }
    }
    float *din = l->input_delta + b * sz;
    const float *d = l->delta + b * sz;
    for (size_t i = 0; i < sz; i++) din[i] += d[i];
  }
}

static void region_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

extern const cnnb_layer_ops cnnb_layer_region_ops;

int cnnb_region_info(const cnnb_layer *l, int *n, int *classes)
{
  if (l->ops != &cnnb_layer_region_ops || !l->priv) return 0;
  const region_priv *p = l->priv;
  *n = p->n, *classes = p->classes;
  return 1;
}

/* Darknet's get_region_detections + get_region_box: as [yolo] but with anchors in output
 * cells, and every box kept whose objectness passes (its class probabilities are the
 * objectness times the softmax or logistic class scores). */
size_t cnnb_region_decode(const cnnb_layer *l, int b, float thresh, cnnb_det *out, size_t cap)
{
  const region_priv *p = l->priv;
  const int lw = l->out.w, lh = l->out.h, hw = lw * lh, per = p->classes + p->coords + 1;
  const float *y = l->output + (size_t)b * cnnb_shape_size(l->out);
  size_t k = 0;
  for (int i = 0; i < hw; i++) {
    const int row = i / lw, col = i % lw;
    for (int a = 0; a < p->n; a++) {
      const float *e = y + (size_t)a * per * hw + i;
      const float obj = e[(size_t)p->coords * hw];
      if (!(obj > thresh)) continue;
      cnnb_box bx;
      bx.x = (col + e[0]) / lw;
      bx.y = (row + e[hw]) / lh;
      bx.w = (float)(exp(e[2 * hw]) * p->anchors[2 * a] / lw);
      bx.h = (float)(exp(e[3 * hw]) * p->anchors[2 * a + 1] / lh);
      for (int c = 0; c < p->classes; c++) {
        const float prob = obj * e[(size_t)(p->coords + 1 + c) * hw];
        if (!(prob > thresh)) continue;
        if (k < cap) out[k] = (cnnb_det){bx, prob, obj, c};
        k++;
      }
    }
  }
  return k;
}

const cnnb_layer_ops cnnb_layer_region_ops = {
  .section = "region",
  .setup = region_setup,
  .init = region_init,
  .forward = region_forward,
  .backward = region_backward,
  .free = region_free,
  .loss = NULL,
};
