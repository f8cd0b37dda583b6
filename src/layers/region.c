/* [region]: YOLOv2's detection head. Per anchor the input holds coords box planes (tx, ty, tw,
 * th), one objectness plane and classes class planes, each h x w, anchor after anchor: in.c
 * must be num * (classes + coords + 1). The output has the input's shape; forward applies
 * Darknet's activation of the raw values: logistic on tx, ty and objectness, and over the
 * class planes a softmax across classes at each cell when softmax=1 (else a logistic each).
 *   anchors     w,h pairs in output cells, num pairs
 *   classes 20, coords 4, num 1, softmax 0 (Darknet's defaults)
 * The loss (region_loss below, YOLOv2's as Darknet's region_layer.c computes its deltas) reads:
 *   bias_match 0   choose a truth's anchor by its shape (1) or by the predicted box's shape (0)
 *   thresh .5      no no-object term for a prediction overlapping a truth by more
 *   object_scale 1, noobject_scale 1, class_scale 1, coord_scale 1   weights of the terms
 *   rescore 0      objectness target: 1, or (rescore=1) the IoU of the prediction with its truth
 * Darknet's other training keys (jitter, absolute, random) are accepted with a warning. The
 * truths come from net->truth_f (detect.h, CNNB_YOLO_MAX_TRUTH rows per sample). */
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
  int n, classes, coords, softmax, bias_match, rescore;
  float anchors[2 * REGION_MAX_ANCHORS];
  float thresh, object_scale, noobject_scale, class_scale, coord_scale;
  int loss_done; /* the loss of the last forward wrote dL/d input into grad */
  int *assign;   /* per anchor and cell of one sample: the truth it learns, -1 none (loss) */
  float *grad;   /* dL/d input of the loss, max_batch samples (training only) */
} region_priv;

static int region_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  region_priv p;
  memset(&p, 0, sizeof p);
  int rc, nanch, v;
  /* classes=0: boxes with objectness only (face-api.js's one-class tiny face detector) */
  if ((rc = cnnb_cfg_int(cfg, s, "classes", 20, 0, 1 << 20, &p.classes)) < 0) return rc;
  /* At least tx, ty: the logistic below addresses them. */
  if ((rc = cnnb_cfg_int(cfg, s, "coords", 4, 2, 64, &p.coords)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "num", 1, 1, REGION_MAX_ANCHORS, &p.n)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "softmax", 0, 0, 1, &p.softmax)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "bias_match", 0, 0, 1, &p.bias_match)) < 0) return rc;
  if ((rc = cnnb_cfg_floats(cfg, s, "anchors", p.anchors, 2 * REGION_MAX_ANCHORS, &nanch)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "rescore", 0, 0, 1, &p.rescore)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "thresh", 0.5f, 0, 1, &p.thresh)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "object_scale", 1, 0, 1e6f, &p.object_scale)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "noobject_scale", 1, 0, 1e6f, &p.noobject_scale)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "class_scale", 1, 0, 1e6f, &p.class_scale)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "coord_scale", 1, 0, 1e6f, &p.coord_scale)) < 0) return rc;
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
  if (net->train && net->max_batch > 0) {
    pp->assign = malloc(sizeof *pp->assign * (size_t)l->in.h * l->in.w * p.n);
    pp->grad = malloc(sizeof *pp->grad * (size_t)net->max_batch * cnnb_shape_size(l->in));
    if (!pp->assign || !pp->grad) {
      free(pp->assign);
      free(pp->grad);
      free(pp);
      return cnnb_error(CNNB_ENOMEM, "[region] out of memory");
    }
  }
  l->priv = pp;
  l->out = l->in;
  l->madds = 0; /* activations only */
  return 0;
}

static void region_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void region_forward(cnnb_layer *l, cnnb_net *net)
{
  region_priv *p = l->priv;
  p->loss_done = 0;
  const size_t hw = (size_t)l->out.h * l->out.w, sz = cnnb_shape_size(l->out);
  const int per = p->classes + p->coords + 1;
  memcpy(l->output, l->input, (size_t)net->batch * sz * sizeof(float));
  for (int b = 0; b < net->batch; b++)
    for (int a = 0; a < p->n; a++) {
      float *o = l->output + b * sz + (size_t)a * per * hw;
      cnnb_act_forward(CNNB_ACT_SIGMOID, o, 2 * hw);
      cnnb_act_forward(CNNB_ACT_SIGMOID, o + p->coords * hw, hw);
      float *cls = o + (p->coords + 1) * hw;
      if (!p->softmax || !p->classes) {
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

/* After the loss: adds its dL/d input. Otherwise, given a delta, passes it to the input through
 * the activations (a [region] that is not last, gradient checks of the activations). */
static void region_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta || !l->delta) return;
  const region_priv *p = l->priv;
  const size_t hw = (size_t)l->out.h * l->out.w, sz = cnnb_shape_size(l->out);
  if (p->loss_done) {
    for (size_t i = 0; i < (size_t)net->batch * sz; i++) l->input_delta[i] += p->grad[i];
    return;
  }
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
      if (!p->softmax || !p->classes) {
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

static inline float sq(float v) { return v * v; }

/* YOLOv2's loss, written as the function whose gradient with respect to the layer's raw inputs
 * is Darknet's region deltas (after its logistic gradient on x, y and objectness), per sample:
 *   - every truth (rows of net->truth_f) is learnt at the cell holding its centre by the anchor
 *     whose box best overlaps it, both centred: the anchor's own shape with bias_match=1, the
 *     shape the anchor predicts there otherwise; a later truth for the same cell and anchor
 *     replaces an earlier one, as in Darknet (with logistic classes, its class targets then hold
 *     the classes of both: Darknet's delta_region_class);
 *   - coordinates: coord_scale (2 - w h) / 2 x [(sigmoid(tx) - x*)^2 + (sigmoid(ty) - y*)^2 +
 *     (tw - tw*)^2 + (th - th*)^2], x* the centre's offset in the cell, tw* = log(w lw / anchor w);
 *   - objectness where a truth is learnt: object_scale / 2 x (sigmoid(to) - 1)^2, or with
 *     rescore=1 towards the IoU of the predicted box with the truth (a constant target);
 *   - no object elsewhere: noobject_scale / 2 x sigmoid(to)^2, unless the predicted box overlaps
 *     some truth by IoU > thresh (then no term);
 *   - classes where a truth is learnt: class_scale x the cross-entropy of the softmax (softmax=1),
 *     else class_scale x the binary cross-entropy of each class's logistic towards one-hot.
 * Darknet's first-12800-images term pulling every box towards its anchor is not reproduced.
 * dL/d input (times net->loss_scale) goes into the layer's own gradient buffer, added to the
 * input's delta by backward; returns the loss summed over the batch. */
static double region_loss(cnnb_layer *l, cnnb_net *net)
{
  region_priv *p = l->priv;
  const int lw = l->out.w, lh = l->out.h, hw = lw * lh, per = p->classes + p->coords + 1;
  const size_t sz = cnnb_shape_size(l->out);
  const float ls = net->loss_scale;
  double total = 0;
  if (!net->truth_f || !p->assign) return NAN;
  for (int b = 0; b < net->batch; b++) {
    const float *y = l->output + b * sz, *in = l->input + b * sz;
    const float *tr = net->truth_f + (size_t)b * CNNB_YOLO_MAX_TRUTH * 5;
    float *d = p->grad + b * sz;
    memset(d, 0, sz * sizeof *d);
    int nt = 0;
    while (nt < CNNB_YOLO_MAX_TRUTH && tr[5 * nt + 2] > 0) nt++;
    for (int i = 0; i < hw * p->n; i++) p->assign[i] = -1;
    int entry[CNNB_YOLO_MAX_TRUTH]; /* anchor and cell each truth is learnt at, -1: none */
    for (int t = 0; t < nt; t++) {
      const float *T = tr + 5 * t;
      const int ci = (int)(T[0] * lw), cj = (int)(T[1] * lh);
      entry[t] = -1;
      if (ci < 0 || cj < 0 || ci >= lw || cj >= lh) continue;
      const int c = cj * lw + ci;
      int best = 0;
      float bi = 0;
      for (int a = 0; a < p->n; a++) {
        const size_t e = (size_t)a * per * hw + c;
        float w = p->anchors[2 * a] / lw, h = p->anchors[2 * a + 1] / lh;
        if (!p->bias_match) w *= (float)exp(in[e + 2 * hw]), h *= (float)exp(in[e + 3 * hw]);
        float iou = cnnb_box_iou((cnnb_box){0, 0, w, h}, (cnnb_box){0, 0, T[2], T[3]});
        if (iou > bi) bi = iou, best = a;
      }
      p->assign[entry[t] = best * hw + c] = t;
    }
    for (int a = 0; a < p->n; a++)
      for (int c = 0; c < hw; c++) {
        const size_t e = (size_t)a * per * hw + c; /* entry k at e + k * hw */
        const int t = p->assign[a * hw + c], row = c / lw, col = c % lw;
        const size_t eo = e + (size_t)p->coords * hw;
        const float obj = y[eo], dobj = obj * (1 - obj);
        cnnb_box pred = {(col + y[e]) / lw, (row + y[e + hw]) / lh,
                         (float)(exp(in[e + 2 * hw]) * p->anchors[2 * a] / lw),
                         (float)(exp(in[e + 3 * hw]) * p->anchors[2 * a + 1] / lh)};
        if (t < 0) {
          float best = 0;
          for (int k = 0; k < nt; k++) {
            const float *T = tr + 5 * k;
            float iou = cnnb_box_iou(pred, (cnnb_box){T[0], T[1], T[2], T[3]});
            if (iou > best) best = iou;
          }
          if (best > p->thresh) continue;
          total += 0.5 * p->noobject_scale * obj * obj;
          d[eo] = ls * p->noobject_scale * obj * dobj;
          continue;
        }
        const float *T = tr + 5 * t;
        const float sc = p->coord_scale * (2 - T[2] * T[3]);
        const float tx = T[0] * lw - col, ty = T[1] * lh - row;
        const float tw = logf(T[2] * lw / p->anchors[2 * a]), th = logf(T[3] * lh / p->anchors[2 * a + 1]);
        const float ex = y[e] - tx, ey = y[e + hw] - ty, dw = in[e + 2 * hw] - tw, dh = in[e + 3 * hw] - th;
        const float target = p->rescore ? cnnb_box_iou(pred, (cnnb_box){T[0], T[1], T[2], T[3]}) : 1.0f;
        total += 0.5 * sc * (ex * ex + ey * ey + dw * dw + dh * dh) + 0.5 * p->object_scale * sq(obj - target);
        d[e] = ls * sc * ex * y[e] * (1 - y[e]);
        d[e + hw] = ls * sc * ey * y[e + hw] * (1 - y[e + hw]);
        d[e + 2 * hw] = ls * sc * dw;
        d[e + 3 * hw] = ls * sc * dh;
        d[eo] = ls * p->object_scale * (obj - target) * dobj;
        const int cls = (int)T[4];
        const size_t ec = e + (size_t)(p->coords + 1) * hw;
        for (int k = 0; k < p->classes; k++) {
          const float pk = y[ec + (size_t)k * hw];
          float yk = k == cls ? 1.f : 0.f;
          for (int u = 0; u < nt && !p->softmax && !yk; u++) yk = entry[u] == a * hw + c && (int)tr[5 * u + 4] == k;
          if (p->softmax) {
            if (k == cls) total -= p->class_scale * log(fmax(pk, 1e-12));
          } else {
            const float e7 = 1e-7f; /* keeps log finite where the logistic saturates in float */
            total -= p->class_scale * (yk * logf(fmaxf(pk, e7)) + (1 - yk) * logf(fmaxf(1 - pk, e7)));
          }
          d[ec + (size_t)k * hw] = ls * p->class_scale * (pk - yk); /* softmax and logistic alike */
        }
      }
  }
  p->loss_done = 1;
  return total;
}

static void region_free(cnnb_layer *l)
{
  if (l->priv) {
    free(((region_priv *)l->priv)->assign);
    free(((region_priv *)l->priv)->grad);
  }
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
      for (int c = 0; c < (p->classes ? p->classes : 1); c++) { /* classes=0: prob = objectness */
        const float prob = p->classes ? obj * e[(size_t)(p->coords + 1 + c) * hw] : obj;
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
  .loss = region_loss,
};
