/* Boxes, IoU, per-class non-max suppression and the whole decoding of a detection network's
 * output (docs/FORMATS.md "Detections"). The arithmetic follows Darknet's box.c and
 * correct_yolo_boxes step by step, in float, so that boxes agree with Darknet to rounding. */
#include <stdlib.h>
#include <string.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "layers/heads.h"

/* Length of the overlap of two 1-D segments given by centre and width (negative if apart). */
static float overlap(float x1, float w1, float x2, float w2)
{
  float l1 = x1 - w1 / 2, l2 = x2 - w2 / 2, r1 = x1 + w1 / 2, r2 = x2 + w2 / 2;
  float left = l1 > l2 ? l1 : l2, right = r1 < r2 ? r1 : r2;
  return right - left;
}

float cnnb_box_iou(cnnb_box a, cnnb_box b)
{
  float w = overlap(a.x, a.w, b.x, b.w), h = overlap(a.y, a.h, b.y, b.h);
  if (w < 0 || h < 0) return 0;
  float i = w * h, u = a.w * a.h + b.w * b.h - i;
  return u > 0 ? i / u : 0;
}

static int by_class_score(const void *pa, const void *pb)
{
  const cnnb_det *a = pa, *b = pb;
  if (a->cls != b->cls) return a->cls < b->cls ? -1 : 1;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return 0;
}

int cnnb_nms(cnnb_det *d, int n, float thresh)
{
  if (n <= 0) return 0;
  qsort(d, (size_t)n, sizeof *d, by_class_score);
  /* A dropped candidate gets score -1: it no longer suppresses others (Darknet skips zeroed
   * probabilities the same way), and the final pass compacts the survivors. */
  for (int s = 0; s < n;) {
    int e = s;
    while (e < n && d[e].cls == d[s].cls) e++;
    for (int i = s; i < e; i++) {
      if (d[i].score < 0) continue;
      for (int j = i + 1; j < e; j++)
        if (d[j].score >= 0 && cnnb_box_iou(d[i].box, d[j].box) > thresh) d[j].score = -1;
    }
    s = e;
  }
  int k = 0;
  for (int i = 0; i < n; i++)
    if (d[i].score >= 0) d[k++] = d[i];
  return k;
}

size_t cnnb_detect_capacity(const cnnb_net *net)
{
  size_t cap = 0;
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    int na, nc;
    if (cnnb_yolo_info(l, &na, &nc) || cnnb_region_info(l, &na, &nc))
      cap += (size_t)l->out.h * l->out.w * na * nc;
  }
  return cap;
}

int cnnb_detect_has_heads(const cnnb_net *net) { return cnnb_detect_num_classes(net) > 0; }

int cnnb_detect_num_classes(const cnnb_net *net)
{
  for (int i = 0; i < net->n; i++) {
    int na, nc;
    if (cnnb_yolo_info(&net->layers[i], &na, &nc) || cnnb_region_info(&net->layers[i], &na, &nc)) return nc;
  }
  return 0;
}

void cnnb_detect_unletterbox(cnnb_det *d, size_t n, int imw, int imh, int netw, int neth)
{
  int new_w, new_h;
  if ((float)netw / imw < (float)neth / imh)
    new_w = netw, new_h = (imh * netw) / imw;
  else
    new_h = neth, new_w = (imw * neth) / imh;
  for (size_t i = 0; i < n; i++) {
    cnnb_box b = d[i].box;
    /* Darknet computes the offsets in double and the scales in float; so do we */
    b.x = (float)((b.x - (netw - new_w) / 2. / netw) / ((float)new_w / netw));
    b.y = (float)((b.y - (neth - new_h) / 2. / neth) / ((float)new_h / neth));
    b.w *= (float)netw / new_w;
    b.h *= (float)neth / new_h;
    d[i].box = b;
  }
}

int cnnb_detect(const cnnb_net *net, int b, int imw, int imh, float thresh, float nms, cnnb_det *d, size_t cap)
{
  size_t n = 0;
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    int na, nc;
    size_t got = 0;
    if (cnnb_yolo_info(l, &na, &nc))
      got = cnnb_yolo_decode(l, b, net->in.w, net->in.h, thresh, d + n, cap - n);
    else if (cnnb_region_info(l, &na, &nc))
      got = cnnb_region_decode(l, b, thresh, d + n, cap - n);
    else
      continue;
    if (got > cap - n)
      return cnnb_error(CNNB_ESHAPE, "detection: %zu candidates exceed the capacity %zu", n + got, cap);
    n += got;
  }
  cnnb_detect_unletterbox(d, n, imw, imh, net->in.w, net->in.h);
  int k = (int)n;
  if (nms > 0)
    k = cnnb_nms(d, k, nms);
  else /* the same order as with suppression: class, then falling score */
    qsort(d, n, sizeof *d, by_class_score);
  for (int i = 0; i < k; i++) {
    d[i].box.x *= imw, d[i].box.w *= imw;
    d[i].box.y *= imh, d[i].box.h *= imh;
  }
  return k;
}
