/* [upsample]: nearest-neighbour upsampling, as Darknet.
 *   stride  factor (default 2); a negative stride is Darknet's "reverse": the output is
 *           |stride| times smaller and each output sums its |stride|x|stride| block
 *   scale   multiplies the output (default 1)
 * Backward: each input gradient is scale times the sum of the gradients it was copied to
 * (reverse: every input in the block receives scale times its output's gradient). */
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct upsample_priv {
  int stride, reverse;
  float scale;
} upsample_priv;

static int upsample_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, stride;
  float scale;
  if ((rc = cnnb_cfg_int(cfg, s, "stride", 2, -(1 << 12), 1 << 12, &stride)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "scale", 1.0f, -1e6f, 1e6f, &scale)) < 0) return rc;
  if (stride == 0) return cnnb_error(CNNB_ECFG, "%s:%d: [upsample] stride must not be 0", cfg->path, s->line);
  int reverse = stride < 0;
  if (reverse) stride = -stride;
  if (reverse) {
    if (l->in.h % stride || l->in.w % stride)
      return cnnb_error(CNNB_ESHAPE, "%s:%d: [upsample] stride=-%d needs input %dx%d divisible by %d",
                        cfg->path, s->line, stride, l->in.h, l->in.w, stride);
    l->out = (cnnb_shape){l->in.c, l->in.h / stride, l->in.w / stride};
  } else {
    l->out = (cnnb_shape){l->in.c, l->in.h * stride, l->in.w * stride};
  }
  upsample_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[upsample] out of memory");
  p->stride = stride;
  p->reverse = reverse;
  p->scale = scale;
  l->priv = p;
  return 0;
}

static void upsample_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

/* big = the stride-times larger tensor, small = the other one. dir 1: small -> big
 * (big = scale*small), dir 0: big -> small (small += scale*sum of its block). */
static void upsample_map(const upsample_priv *p, int batch, int C, int sh, int sw, float *big,
                         float *small, int dir)
{
  const int s = p->stride, bh = sh * s, bw = sw * s;
  for (int b = 0; b < batch; b++)
    for (int c = 0; c < C; c++) {
      float *bp = big + ((size_t)b * C + c) * bh * bw;
      float *sp = small + ((size_t)b * C + c) * sh * sw;
      for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
          int si = (y / s) * sw + x / s;
          if (dir) bp[y * bw + x] = p->scale * sp[si];
          else sp[si] += p->scale * bp[y * bw + x];
        }
    }
}

static void upsample_forward(cnnb_layer *l, cnnb_net *net)
{
  const upsample_priv *p = l->priv;
  if (!p->reverse) {
    /* the map only reads small when dir=1, so dropping const is safe */
    upsample_map(p, net->batch, l->in.c, l->in.h, l->in.w, l->output, (float *)l->input, 1);
  } else {
    const size_t n = cnnb_shape_size(l->out) * net->batch;
    for (size_t i = 0; i < n; i++) l->output[i] = 0;
    upsample_map(p, net->batch, l->in.c, l->out.h, l->out.w, (float *)l->input, l->output, 0);
  }
}

static void upsample_backward(cnnb_layer *l, cnnb_net *net)
{
  const upsample_priv *p = l->priv;
  if (!l->input_delta) return;
  if (!p->reverse) {
    upsample_map(p, net->batch, l->in.c, l->in.h, l->in.w, l->delta, l->input_delta, 0);
    return;
  }
  /* reverse: each input gets scale * its block's output gradient, added (not stored) */
  const int s = p->stride, C = l->in.c, H = l->in.h, W = l->in.w, OH = l->out.h, OW = l->out.w;
  for (int b = 0; b < net->batch; b++)
    for (int c = 0; c < C; c++) {
      float *din = l->input_delta + ((size_t)b * C + c) * H * W;
      const float *d = l->delta + ((size_t)b * C + c) * OH * OW;
      for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) din[y * W + x] += p->scale * d[(y / s) * OW + x / s];
    }
}

static void upsample_free(cnnb_layer *l)
{
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_upsample_ops = {
    .section = "upsample",
    .setup = upsample_setup,
    .init = upsample_init,
    .forward = upsample_forward,
    .backward = upsample_backward,
    .free = upsample_free,
    .loss = NULL,
};
