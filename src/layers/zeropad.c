/* [zeropad]: cnn-batch addition. Pads each channel with zero rows and columns:
 *   top, bottom, left, right   (default 0 each) -> out = (h + top + bottom) x (w + left + right)
 * Why a layer: TensorFlow's padding='same' with stride 2 on an even input pads only after (the
 * window starts at 0 and the last one reaches one past the edge), which Darknet's symmetric
 * `pad` cannot express; [zeropad] bottom=1 right=1 followed by a convolution with padding=0
 * reproduces it exactly (face-api.js's landmark net). It also zero-extends a residual branch to
 * its shortcut's size (face-api.js's ResNet-34, tf.concat with zeros at the bottom and right).
 * Backward passes the delta of the copied window back to the input. */
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct zeropad_priv {
  int top, left;
} zeropad_priv;

static int zeropad_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int t, b, lf, r, rc;
  if ((rc = cnnb_cfg_int(cfg, s, "top", 0, 0, 1 << 12, &t)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "bottom", 0, 0, 1 << 12, &b)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "left", 0, 0, 1 << 12, &lf)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "right", 0, 0, 1 << 12, &r)) < 0) return rc;
  l->out = (cnnb_shape){l->in.c, l->in.h + t + b, l->in.w + lf + r};
  zeropad_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[zeropad] out of memory");
  p->top = t;
  p->left = lf;
  l->priv = p;
  l->madds = 0;
  return 0;
}

static void zeropad_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void zeropad_forward(cnnb_layer *l, cnnb_net *net)
{
  const zeropad_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
  memset(l->output, 0, (size_t)net->batch * cnnb_shape_size(l->out) * sizeof(float));
  for (int b = 0; b < net->batch; b++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < H; i++)
        memcpy(l->output + (((size_t)b * C + c) * OH + i + p->top) * OW + p->left,
               l->input + (((size_t)b * C + c) * H + i) * W, (size_t)W * sizeof(float));
}

static void zeropad_backward(cnnb_layer *l, cnnb_net *net)
{
  if (!l->input_delta) return;
  const zeropad_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
  for (int b = 0; b < net->batch; b++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < H; i++) {
        const float *d = l->delta + (((size_t)b * C + c) * OH + i + p->top) * OW + p->left;
        float *di = l->input_delta + (((size_t)b * C + c) * H + i) * W;
        for (int j = 0; j < W; j++) di[j] += d[j];
      }
}

static void zeropad_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_zeropad_ops = {
    .section = "zeropad",
    .setup = zeropad_setup,
    .init = zeropad_init,
    .forward = zeropad_forward,
    .backward = zeropad_backward,
    .free = zeropad_free,
    .loss = NULL,
};
