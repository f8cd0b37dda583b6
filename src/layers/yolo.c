/* [yolo]: YOLOv3's detection head. The input (from a 1x1 convolution) holds, per anchor of
 * this head, the planes tx, ty, tw, th, objectness, class 0..classes-1 (each h x w), anchor after
 * anchor: in.c must be n * (classes + 5) where n is the number of mask entries. The output has
 * the input's shape; forward applies Darknet's activation of the raw values: logistic on tx, ty,
 * objectness and class scores, tw and th left raw (decoded with the anchors at inference).
 *   mask     which anchors this head predicts (default: all num of them)
 *   anchors  w,h pairs in input pixels, num pairs (shared by every head of the network)
 *   classes  default 20; num default 1
 * Darknet's training keys (jitter, ignore_thresh, truth_thresh, random) are accepted with a
 * warning: the loss comes with the YOLO issue, so there is no loss op yet and backward only
 * passes the given delta back through the activations. */
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
  if (l->in.c != p.n * (p.classes + 5))
    return cnnb_error(CNNB_ESHAPE,
                      "%s:%d: layer %d [yolo]: input has %d channels, expected mask count %d x (classes %d + 5) "
                      "= %d",
                      cfg->path, s->line, l->index, l->in.c, p.n, p.classes, p.n * (p.classes + 5));
  yolo_priv *pp = malloc(sizeof *pp);
  if (!pp) return cnnb_error(CNNB_ENOMEM, "[yolo] out of memory");
  *pp = p;
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
  const yolo_priv *p = l->priv;
  const size_t sz = cnnb_shape_size(l->out);
  size_t off[2 * YOLO_MAX_ANCHORS], len[2 * YOLO_MAX_ANCHORS];
  logistic_spans(l, off, len);
  memcpy(l->output, l->input, (size_t)net->batch * sz * sizeof(float));
  for (int b = 0; b < net->batch; b++)
    for (int k = 0; k < 2 * p->n; k++) cnnb_act_forward(CNNB_ACT_SIGMOID, l->output + b * sz + off[k], len[k]);
}

/* No loss yet (it comes with the YOLO issue); given a delta, passes it to the input through
 * the activations so that the layer composes with a future loss. */
static void yolo_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta || !l->delta) return;
  const yolo_priv *p = l->priv;
  const size_t sz = cnnb_shape_size(l->out);
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

static void yolo_free(cnnb_layer *l)
{
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
  .loss = NULL,
};
