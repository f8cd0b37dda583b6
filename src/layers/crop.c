/* [crop]: Darknet's data-augmentation crop.
 *   crop_height, crop_width  output size (default 1, as Darknet), at most the input's
 *   flip       in training, mirror horizontally with chance 1/2
 *   noadjust   Darknet maps the cropped values x -> 2x-1 (images in [0,1] to [-1,1]) unless
 *              noadjust=1; we do the same
 *   angle, saturation, exposure, shift  read but ignored: Darknet applies them only in its
 *              GPU path; a non-default value gets a warning
 * Training: one offset (and flip) per forward, drawn from net->rng, shared by the batch as in
 * Darknet. Inference: the centre crop, no flip. Darknet's backward does nothing; ours adds the
 * gradient back onto the cropped window so the layer can sit inside a checked network. */
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct crop_priv {
  int flip_key;
  float scale, trans;
  int dh, dw, flip; /* of the last forward, for backward */
} crop_priv;

static int crop_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, ch, cw, flip, noadjust;
  float angle, sat, expo, shift;
  if ((rc = cnnb_cfg_int(cfg, s, "crop_height", 1, 1, 1 << 16, &ch)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "crop_width", 1, 1, 1 << 16, &cw)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "flip", 0, 0, 1, &flip)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "noadjust", 0, 0, 1, &noadjust)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "angle", 0, -360, 360, &angle)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "saturation", 1, 0, 1e3f, &sat)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "exposure", 1, 0, 1e3f, &expo)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "shift", 0, -1e3f, 1e3f, &shift)) < 0) return rc;
  if (angle != 0 || sat != 1 || expo != 1 || shift != 0)
    cnnb_log(CNNB_LOG_WARN, "%s:%d: [crop] angle/saturation/exposure/shift are ignored (Darknet applies them only on GPU)",
             cfg->path, s->line);
  if (ch > l->in.h || cw > l->in.w)
    return cnnb_error(CNNB_ESHAPE, "%s:%d: [crop] crop %dx%d larger than input %dx%d", cfg->path, s->line,
                      ch, cw, l->in.h, l->in.w);
  l->out = (cnnb_shape){l->in.c, ch, cw};
  crop_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[crop] out of memory");
  p->flip_key = flip;
  p->scale = noadjust ? 1.0f : 2.0f;
  p->trans = noadjust ? 0.0f : -1.0f;
  l->priv = p;
  return 0;
}

static void crop_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void crop_forward(cnnb_layer *l, cnnb_net *net)
{
  crop_priv *p = l->priv;
  const int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
  if (net->train) {
    p->dh = (int)cnnb_rng_below(&net->rng, (uint64_t)(H - OH + 1));
    p->dw = (int)cnnb_rng_below(&net->rng, (uint64_t)(W - OW + 1));
    p->flip = p->flip_key && cnnb_rng_below(&net->rng, 2);
  } else {
    p->dh = (H - OH) / 2;
    p->dw = (W - OW) / 2;
    p->flip = 0;
  }
  float *out = l->output;
  for (int b = 0; b < net->batch; b++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < OH; i++) {
        const float *row = l->input + (((size_t)b * C + c) * H + i + p->dh) * W;
        for (int j = 0; j < OW; j++) {
          int col = p->flip ? W - p->dw - j - 1 : j + p->dw;
          *out++ = row[col] * p->scale + p->trans;
        }
      }
}

static void crop_backward(cnnb_layer *l, cnnb_net *net)
{
  const crop_priv *p = l->priv;
  if (!l->input_delta) return;
  const int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
  const float *d = l->delta;
  for (int b = 0; b < net->batch; b++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < OH; i++) {
        float *row = l->input_delta + (((size_t)b * C + c) * H + i + p->dh) * W;
        for (int j = 0; j < OW; j++) {
          int col = p->flip ? W - p->dw - j - 1 : j + p->dw;
          row[col] += *d++ * p->scale;
        }
      }
}

static void crop_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_crop_ops = {
    .section = "crop",
    .setup = crop_setup,
    .init = crop_init,
    .forward = crop_forward,
    .backward = crop_backward,
    .free = crop_free,
    .loss = NULL,
};
