/* [avgpool]: Darknet's global average pooling (out 1x1xC) when the section has no size key.
 * cnn-batch extension: with size= (and optionally stride=, default size; padding=, default 0,
 * placed like maxpool's: the window starts at -padding/2, out = (h + padding - size)/stride + 1)
 * it is a local window average. Padded positions count as zeros and every window divides by
 * size*size (count_include_pad), so each output is a fixed linear map of the input whatever its
 * position, which keeps the backward a plain scatter of delta/(size*size). */
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct avgpool_priv {
  int global;
  int size, stride, pad;
} avgpool_priv;

static int avgpool_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, size = 0, stride = 0, pad = 0;
  int local = cnnb_cfg_find(s, "size") != NULL;
  if (local) {
    if ((rc = cnnb_cfg_int(cfg, s, "size", 1, 1, 1 << 16, &size)) < 0) return rc;
    if ((rc = cnnb_cfg_int(cfg, s, "stride", size, 1, 1 << 16, &stride)) < 0) return rc;
    if ((rc = cnnb_cfg_int(cfg, s, "padding", 0, 0, 1 << 16, &pad)) < 0) return rc;
    if (l->in.h + pad < size || l->in.w + pad < size)
      return cnnb_error(CNNB_ESHAPE, "%s:%d: [avgpool] window %d (padding %d) larger than input %dx%d",
                        cfg->path, s->line, size, pad, l->in.h, l->in.w);
    l->out = (cnnb_shape){l->in.c, (l->in.h + pad - size) / stride + 1, (l->in.w + pad - size) / stride + 1};
    l->madds = (double)cnnb_shape_size(l->out) * size * size;
  } else {
    if (cnnb_cfg_find(s, "stride") || cnnb_cfg_find(s, "padding"))
      return cnnb_error(CNNB_ECFG, "%s:%d: [avgpool] stride/padding need size= (without size it is a global average)",
                        cfg->path, s->line);
    l->out = (cnnb_shape){l->in.c, 1, 1};
    l->madds = (double)cnnb_shape_size(l->in);
  }
  avgpool_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[avgpool] out of memory");
  p->global = !local;
  p->size = size;
  p->stride = stride;
  p->pad = pad;
  l->priv = p;
  return 0;
}

static void avgpool_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void avgpool_forward(cnnb_layer *l, cnnb_net *net)
{
  const avgpool_priv *p = l->priv;
  const int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
  const size_t insz = cnnb_shape_size(l->in), outsz = cnnb_shape_size(l->out);
  for (int b = 0; b < net->batch; b++) {
    const float *in = l->input + b * insz;
    float *out = l->output + b * outsz;
    if (p->global) {
      const int hw = H * W;
      for (int c = 0; c < C; c++) {
        double sum = 0; /* double: a large map summed in float loses digits */
        for (int k = 0; k < hw; k++) sum += in[c * hw + k];
        out[c] = (float)(sum / hw);
      }
      continue;
    }
    const int off = -p->pad / 2;
    const float inv = 1.0f / (float)(p->size * p->size);
    for (int c = 0; c < C; c++)
      for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++) {
          float sum = 0;
          for (int u = 0; u < p->size; u++) {
            int y = off + i * p->stride + u;
            if (y < 0 || y >= H) continue;
            for (int v = 0; v < p->size; v++) {
              int x = off + j * p->stride + v;
              if (x >= 0 && x < W) sum += in[(c * H + y) * W + x];
            }
          }
          out[(c * OH + i) * OW + j] = sum * inv;
        }
  }
}

static void avgpool_backward(cnnb_layer *l, cnnb_net *net)
{
  const avgpool_priv *p = l->priv;
  if (!l->input_delta) return;
  const int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
  const size_t insz = cnnb_shape_size(l->in), outsz = cnnb_shape_size(l->out);
  for (int b = 0; b < net->batch; b++) {
    float *din = l->input_delta + b * insz;
    const float *d = l->delta + b * outsz;
    if (p->global) {
      const int hw = H * W;
      for (int c = 0; c < C; c++) {
        float g = d[c] / (float)hw;
        for (int k = 0; k < hw; k++) din[c * hw + k] += g;
      }
      continue;
    }
    const int off = -p->pad / 2;
    const float inv = 1.0f / (float)(p->size * p->size);
    for (int c = 0; c < C; c++)
      for (int i = 0; i < OH; i++)
        for (int j = 0; j < OW; j++) {
          float g = d[(c * OH + i) * OW + j] * inv;
          for (int u = 0; u < p->size; u++) {
            int y = off + i * p->stride + u;
            if (y < 0 || y >= H) continue;
            for (int v = 0; v < p->size; v++) {
              int x = off + j * p->stride + v;
              if (x >= 0 && x < W) din[(c * H + y) * W + x] += g;
            }
          }
        }
  }
}

static void avgpool_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_avgpool_ops = {
    .section = "avgpool",
    .setup = avgpool_setup,
    .init = avgpool_init,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .free = avgpool_free,
    .loss = NULL,
};
