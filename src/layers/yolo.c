/* [yolo]: YOLOv3's detection head. The input (from a 1x1 convolution) holds, per anchor of
 * this head, the planes tx, ty, tw, th, objectness, class 0..classes-1 (each h x w), anchor after
 * anchor: in.c must be n * (classes + 5) where n is the number of mask entries. The output has
 * the input's shape; forward applies Darknet's activation of the raw values: logistic on tx, ty,
 * objectness and class scores, tw and th left raw (decoded with the anchors at inference).
 *   mask     which anchors this head predicts (default: all num of them)
 *   anchors  w,h pairs in input pixels, num pairs (shared by every head of the network)
 *   classes  default 20; num default 1
 *   ignore_thresh  (loss) no no-object term for a box that overlaps a truth by more (default .5)
 * The loss (yolo_loss below: the last head sums every head's) takes its truths from net->truth_f.
 * Darknet's other training keys (jitter, truth_thresh, random) are accepted with a warning. */
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"
#include "layers/heads.h"

#define YOLO_MAX_ANCHORS 64

typedef struct yolo_priv {
  int n, classes, total;
  int mask[YOLO_MAX_ANCHORS];
  float anchors[2 * YOLO_MAX_ANCHORS];
  float ignore_thresh;
  int loss_done; /* the loss of the last forward wrote dL/d input into grad */
  int *assign;   /* per cell and anchor of one sample: the truth it learns, -1 none (loss) */
  float *grad;   /* dL/d input of the loss, max_batch samples (training only) */
} yolo_priv;

static int yolo_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  yolo_priv p;
  memset(&p, 0, sizeof p);
  int rc, nanch;
  if ((rc = cnnb_cfg_int(cfg, s, "classes", 20, 1, 1 << 20, &p.classes)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "num", 1, 1, YOLO_MAX_ANCHORS, &p.total)) < 0) return rc;
  if ((rc = cnnb_cfg_ints(cfg, s, "mask", p.mask, YOLO_MAX_ANCHORS, &p.n)) < 0) return rc;
  if ((rc = cnnb_cfg_floats(cfg, s, "anchors", p.anchors, 2 * YOLO_MAX_ANCHORS, &nanch)) < 0) return rc;
  if (!p.n) { /* Darknet: without a mask the head uses every anchor */
    p.n = p.total;
    for (int i = 0; i < p.n; i++) p.mask[i] = i;
  }
  for (int i = 0; i < p.n; i++)
    if (p.mask[i] < 0 || p.mask[i] >= p.total)
      return cnnb_error(CNNB_ECFG, "%s:%d: layer %d [yolo]: mask entry %d outside [0, num=%d)", cfg->path,
                        s->line, l->index, p.mask[i], p.total);
  if (nanch && nanch != 2 * p.total)
    return cnnb_error(CNNB_ECFG, "%s:%d: layer %d [yolo]: %d anchor values, expected 2 x num = %d", cfg->path,
                      s->line, l->index, nanch, 2 * p.total);
  if ((rc = cnnb_cfg_float(cfg, s, "ignore_thresh", 0.5f, 0, 1, &p.ignore_thresh)) < 0) return rc;
  if (l->in.c != p.n * (p.classes + 5))
    return cnnb_error(CNNB_ESHAPE,
                      "%s:%d: layer %d [yolo]: input has %d channels, expected mask count %d x (classes %d + 5) "
                      "= %d",
                      cfg->path, s->line, l->index, l->in.c, p.n, p.classes, p.n * (p.classes + 5));
  yolo_priv *pp = malloc(sizeof *pp);
  if (!pp) return cnnb_error(CNNB_ENOMEM, "[yolo] out of memory");
  *pp = p;
  pp->assign = NULL, pp->grad = NULL;
  if (net->train && net->max_batch > 0) {
    pp->assign = malloc(sizeof *pp->assign * (size_t)l->in.h * l->in.w * p.n);
    pp->grad = malloc(sizeof *pp->grad * (size_t)net->max_batch * cnnb_shape_size(l->in));
    if (!pp->assign || !pp->grad) {
      free(pp->assign);
      free(pp->grad);
      free(pp);
      return cnnb_error(CNNB_ENOMEM, "[yolo] out of memory");
    }
  }
  l->priv = pp;
  l->out = l->in;
  l->madds = 0; /* activations only */
  return 0;
}

static void yolo_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

/* Per anchor, the two runs of planes that get the logistic: x, y; objectness and classes. */
static void logistic_spans(const cnnb_layer *l, size_t *off, size_t *len)
{
  const yolo_priv *p = l->priv;
  const size_t hw = (size_t)l->out.h * l->out.w;
  for (int a = 0; a < p->n; a++) {
    size_t base = (size_t)a * (p->classes + 5) * hw;
    off[2 * a] = base, len[2 * a] = 2 * hw;
    off[2 * a + 1] = base + 4 * hw, len[2 * a + 1] = (size_t)(1 + p->classes) * hw;
  }
}

static void yolo_forward(cnnb_layer *l, cnnb_net *net)
{
  yolo_priv *p = l->priv;
  p->loss_done = 0;
  const size_t sz = cnnb_shape_size(l->out);
  size_t off[2 * YOLO_MAX_ANCHORS], len[2 * YOLO_MAX_ANCHORS];
  logistic_spans(l, off, len);
  memcpy(l->output, l->input, (size_t)net->batch * sz * sizeof(float));
  for (int b = 0; b < net->batch; b++)
    for (int k = 0; k < 2 * p->n; k++) cnnb_act_forward(CNNB_ACT_SIGMOID, l->output + b * sz + off[k], len[k]);
}

/* After the loss: adds its dL/d input. Otherwise, given a delta, passes it to the input through
 * the activations (gradient checks of the activations). */
static void yolo_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta || !l->delta) return;
  const yolo_priv *p = l->priv;
  const size_t sz = cnnb_shape_size(l->out);
  if (p->loss_done) { /* the loss already differentiated through the activations; nothing
                        * downstream consumes a head's output, so its delta is not added */
    for (size_t i = 0; i < (size_t)net->batch * sz; i++) l->input_delta[i] += p->grad[i];
    return;
  }
  size_t off[2 * YOLO_MAX_ANCHORS], len[2 * YOLO_MAX_ANCHORS];
  logistic_spans(l, off, len);
  for (int b = 0; b < net->batch; b++) {
    float *d = l->delta + b * sz;
    for (int k = 0; k < 2 * p->n; k++)
      cnnb_act_backward(CNNB_ACT_SIGMOID, l->output + b * sz + off[k], d + off[k], len[k]);
    float *din = l->input_delta + b * sz;
    for (size_t i = 0; i < sz; i++) din[i] += d[i];
  }
}

static inline float bce(float p, float y)
{
  const float e = 1e-7f; /* keeps log finite where the logistic saturates in float */
  return -(y * logf(p > e ? p : e) + (1 - y) * logf(1 - p > e ? 1 - p : e));
}

/* The YOLO loss of the notes, per sample, over truths in net->truth_f (CNNB_YOLO_MAX_TRUTH rows
 * of x, y, w, h relative to the network input and the class; a row with w <= 0 ends the list):
 *   - every truth is learnt by the anchor (of all num) whose shape has the best IoU with it,
 *     if this head has that anchor in its mask, at the cell holding the truth's centre (a later
 *     truth for the same cell and anchor replaces an earlier one's box, as in Darknet, whose
 *     class targets then hold the classes of both: Darknet's delta_yolo_class);
 *   - coordinates: (2 - w h) x [BCE(sigmoid(tx), x*) + BCE(sigmoid(ty), y*) + (tw - tw*)^2/2 +
 *     (th - th*)^2/2] with x* the offset in the cell and tw* = log(w netw / anchor w): the
 *     gradients with respect to the raw values are Darknet's deltas (sigmoid - x*, tw - tw*);
 *   - objectness: BCE towards 1 where a truth is learnt, towards 0 elsewhere unless the predicted
 *     box overlaps some truth with IoU > ignore_thresh (then no objectness term);
 *   - classes: BCE of every class's logistic towards one-hot (or towards 1 for each class of the
 *     truths sharing the cell and anchor), where a truth is learnt.
 * Writes dL/d input (times net->loss_scale) into the head's own gradient buffer, which its
 * backward adds to the input's delta (not into l->delta: the network clears the deltas of all
 * but the last layer between loss and backward); returns the loss summed over the batch. */
static double head_loss(cnnb_layer *l, cnnb_net *net)
{
  yolo_priv *p = l->priv;
  const int lw = l->out.w, lh = l->out.h, hw = lw * lh, per = p->classes + 5;
  const int netw = net->in.w, neth = net->in.h;
  const size_t sz = cnnb_shape_size(l->out);
  const float ls = net->loss_scale;
  double total = 0;
  if (!net->truth_f || !p->assign) return NAN;
  for (int b = 0; b < net->batch; b++) {
    const float *y = l->output + b * sz, *in = l->input + b * sz, *tr = net->truth_f + (size_t)b * CNNB_YOLO_MAX_TRUTH * 5;
    float *d = p->grad + b * sz;
    memset(d, 0, sz * sizeof *d); /* entries without a term have no gradient */
    int nt = 0;
    while (nt < CNNB_YOLO_MAX_TRUTH && tr[5 * nt + 2] > 0) nt++;
    for (int i = 0; i < hw * p->n; i++) p->assign[i] = -1;
    int entry[CNNB_YOLO_MAX_TRUTH]; /* anchor and cell each truth is learnt at, -1: none here */
    for (int t = 0; t < nt; t++) {
      entry[t] = -1;
      const float *T = tr + 5 * t;
      int best = 0;
      float bi = -1;
      for (int a = 0; a < p->total; a++) { /* anchor shapes against the truth's, both centred */
        float iou = cnnb_box_iou((cnnb_box){0, 0, p->anchors[2 * a] / netw, p->anchors[2 * a + 1] / neth},
                                 (cnnb_box){0, 0, T[2], T[3]});
        if (iou > bi) bi = iou, best = a;
      }
      int m = -1;
      for (int a = 0; a < p->n; a++)
        if (p->mask[a] == best) m = a;
      int ci = (int)(T[0] * lw), cj = (int)(T[1] * lh);
      if (m < 0 || ci < 0 || cj < 0 || ci >= lw || cj >= lh) continue;
      p->assign[entry[t] = m * hw + cj * lw + ci] = t;
    }
    for (int a = 0; a < p->n; a++)
      for (int c = 0; c < hw; c++) {
        const size_t e = (size_t)a * per * hw + c; /* entry k at e + k * hw */
        const int t = p->assign[a * hw + c], row = c / lw, col = c % lw;
        const float obj = y[e + 4 * hw];
        if (t < 0) {
          cnnb_box pred = {(col + y[e]) / lw, (row + y[e + hw]) / lh,
                           (float)(exp(in[e + 2 * hw]) * p->anchors[2 * p->mask[a]] / netw),
                           (float)(exp(in[e + 3 * hw]) * p->anchors[2 * p->mask[a] + 1] / neth)};
          float best = 0;
          for (int k = 0; k < nt; k++) {
            const float *T = tr + 5 * k;
            float iou = cnnb_box_iou(pred, (cnnb_box){T[0], T[1], T[2], T[3]});
            if (iou > best) best = iou;
          }
          if (best > p->ignore_thresh) continue;
          total += bce(obj, 0);
          d[e + 4 * hw] = ls * obj;
          continue;
        }
        const float *T = tr + 5 * t;
        const float sc = 2 - T[2] * T[3];
        const float tx = T[0] * lw - col, ty = T[1] * lh - row;
        const float tw = logf(T[2] * netw / p->anchors[2 * p->mask[a]]),
                    th = logf(T[3] * neth / p->anchors[2 * p->mask[a] + 1]);
        const float dw = in[e + 2 * hw] - tw, dh = in[e + 3 * hw] - th;
        total += sc * (bce(y[e], tx) + bce(y[e + hw], ty) + 0.5 * dw * dw + 0.5 * dh * dh) + bce(obj, 1);
        d[e] = ls * sc * (y[e] - tx);
        d[e + hw] = ls * sc * (y[e + hw] - ty);
        d[e + 2 * hw] = ls * sc * dw;
        d[e + 3 * hw] = ls * sc * dh;
        d[e + 4 * hw] = ls * (obj - 1);
        for (int k = 0; k < p->classes; k++) {
          float yk = 0;
          for (int u = 0; u < nt && !yk; u++) yk = entry[u] == a * hw + c && (int)tr[5 * u + 4] == k ? 1.f : 0.f;
          const float pk = y[e + (size_t)(5 + k) * hw];
          total += bce(pk, yk);
          d[e + (size_t)(5 + k) * hw] = ls * (pk - yk);
        }
      }
  }
  p->loss_done = 1;
  return total;
}

extern const cnnb_layer_ops cnnb_layer_yolo_ops;

/* The network asks its last layer for the loss; YOLOv3 has two or three heads, so the last
 * head answers for all of them: the loss is the sum of every [yolo] layer's. */
static double yolo_loss(cnnb_layer *l, cnnb_net *net)
{
  if (l->index != net->n - 1) return head_loss(l, net);
  double total = 0;
  for (int i = 0; i < net->n; i++)
    if (net->layers[i].ops == &cnnb_layer_yolo_ops) total += head_loss(&net->layers[i], net);
  return total;
}

static void yolo_free(cnnb_layer *l)
{
  if (l->priv) {
    free(((yolo_priv *)l->priv)->assign);
    free(((yolo_priv *)l->priv)->grad);
  }
  free(l->priv);
  l->priv = NULL;
}

extern const cnnb_layer_ops cnnb_layer_yolo_ops;

int cnnb_yolo_info(const cnnb_layer *l, int *n, int *classes)
{
  if (l->ops != &cnnb_layer_yolo_ops || !l->priv) return 0;
  const yolo_priv *p = l->priv;
  *n = p->n, *classes = p->classes;
  return 1;
}

/* Darknet's get_yolo_detections + get_yolo_box: centre from the cell and the logistic
 * offsets, size from exp(tw, th) times the anchor (in input pixels) over the network size.
 * exp in double and the divisions in the order Darknet writes them keep the boxes bitwise
 * close to Darknet's. */
size_t cnnb_yolo_decode(const cnnb_layer *l, int b, int netw, int neth, float thresh, cnnb_det *out, size_t cap)
{
  const yolo_priv *p = l->priv;
  const int lw = l->out.w, lh = l->out.h, hw = lw * lh, per = p->classes + 5;
  const float *y = l->output + (size_t)b * cnnb_shape_size(l->out);
  size_t k = 0;
  for (int i = 0; i < hw; i++) {
    const int row = i / lw, col = i % lw;
    for (int a = 0; a < p->n; a++) {
      const float *e = y + (size_t)a * per * hw + i; /* entry j at e[j * hw] */
      const float obj = e[4 * hw];
      if (!(obj > thresh)) continue;
      cnnb_box bx;
      bx.x = (col + e[0]) / lw;
      bx.y = (row + e[hw]) / lh;
      bx.w = (float)(exp(e[2 * hw]) * p->anchors[2 * p->mask[a]] / netw);
      bx.h = (float)(exp(e[3 * hw]) * p->anchors[2 * p->mask[a] + 1] / neth);
      for (int c = 0; c < p->classes; c++) {
        const float prob = obj * e[(size_t)(5 + c) * hw];
        if (!(prob > thresh)) continue;
        if (k < cap) out[k] = (cnnb_det){bx, prob, obj, c};
        k++;
      }
    }
  }
  return k;
}

const cnnb_layer_ops cnnb_layer_yolo_ops = {
  .section = "yolo",
  .setup = yolo_setup,
  .init = yolo_init,
  .forward = yolo_forward,
  .backward = yolo_backward,
  .free = yolo_free,
  .loss = yolo_loss,
};
