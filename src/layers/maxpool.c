/* [maxpool]: Darknet's max pooling.
 *   size     window (default: stride when only stride is given, else 1)
 *   stride   step (default: size; Darknet itself defaults to 1, but cnn-batch follows the
 *            common reading "size=2" => 2x2/2), stride_x / stride_y override it per axis
 *   padding  total padding per axis (default size-1, as Darknet), split as Darknet does:
 *            the window starts at -padding/2, so out = (h + padding - size)/stride + 1.
 *            With size=2 stride=1 (yolov3-tiny) that keeps 13x13.
 * Backward routes each output gradient to the input that won the max (argmax kept in priv;
 * not kept by a net that never runs backward). */
#include <float.h>
#include <stdlib.h>

#include "core/simd.h"
#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"
#include "core/parallel.h"

typedef struct maxpool_priv {
  int size, stride_x, stride_y, pad;
  int *argmax; /* max_batch x outputs; index into the sample's input, -1 if none */
} maxpool_priv;

static int maxpool_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int size, stride, sx, sy, pad, rc, v;
  int have_size = cnnb_cfg_find(s, "size") != NULL;
  int have_stride = cnnb_cfg_find(s, "stride") != NULL;
  if ((rc = cnnb_cfg_int(cfg, s, "size", 1, 1, 1 << 16, &size)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "stride", 1, 1, 1 << 16, &stride)) < 0) return rc;
  if (!have_size && have_stride) size = stride;
  if (have_size && !have_stride) stride = size;
  if ((rc = cnnb_cfg_int(cfg, s, "stride_x", stride, 1, 1 << 16, &sx)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "stride_y", stride, 1, 1 << 16, &sy)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "padding", size - 1, 0, 1 << 16, &pad)) < 0) return rc;
  /* AlexeyAB's variants that change the meaning of the layer: refuse rather than ignore. */
  if ((rc = cnnb_cfg_int(cfg, s, "maxpool_depth", 0, 0, 1 << 16, &v)) < 0) return rc;
  if (v) return cnnb_error(CNNB_ECFG, "%s:%d: [maxpool] maxpool_depth is not supported", cfg->path, s->line);
  if ((rc = cnnb_cfg_int(cfg, s, "antialiasing", 0, 0, 2, &v)) < 0) return rc;
  if (v) return cnnb_error(CNNB_ECFG, "%s:%d: [maxpool] antialiasing is not supported", cfg->path, s->line);

  int oh = (l->in.h + pad - size) / sy + 1, ow = (l->in.w + pad - size) / sx + 1;
  if (l->in.h + pad < size || l->in.w + pad < size || oh < 1 || ow < 1)
    return cnnb_error(CNNB_ESHAPE, "%s:%d: [maxpool] window %d (padding %d) larger than input %dx%d",
                      cfg->path, s->line, size, pad, l->in.h, l->in.w);
  l->out = (cnnb_shape){l->in.c, oh, ow};

  maxpool_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[maxpool] out of memory");
  p->size = size;
  p->stride_x = sx;
  p->stride_y = sy;
  p->pad = pad;
  /* max_batch 0 means planning only (info): nothing will run */
  size_t na = net->max_batch > 0 ? (size_t)net->max_batch * cnnb_shape_size(l->out) : 0;
  if (!net->backprop) na = 0; /* inference only: no backward needs the winners */
  p->argmax = na ? malloc(sizeof(int) * na) : NULL;
  if (na && !p->argmax) {
    free(p);
    return cnnb_error(CNNB_ENOMEM, "[maxpool] out of memory for %zu argmax indices", na);
  }
  l->priv = p;
  l->madds = (double)cnnb_shape_size(l->out) * size * size;
  return 0;
}

static void maxpool_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

/* 2x2 windows at stride 2 that all lie inside the image (no padding reached): per output, the
 * max of four inputs by selects, with the same winner as the general loop (the first maximum in
 * row-major window order; a NaN first element stays the winner there as here). Branch-free, so a
 * data-dependent compare costs no misprediction. */
static inline void maxpool_forward_2x2(const float *in, float *out, int *am, int planes, int H, int W, int OH, int OW,
                                       const int keep)
{
  for (int c = 0; c < planes; c++)
    for (int i = 0; i < OH; i++) {
      const int r0 = (c * H + 2 * i) * W;
      const float *a = in + r0, *b = in + r0 + W;
      float *o = out + ((size_t)c * OH + i) * OW;
      int *m = keep ? am + ((size_t)c * OH + i) * OW : NULL;
      for (int j = 0; j < OW; j++) {
        const float v0 = a[2 * j], v1 = a[2 * j + 1], v2 = b[2 * j], v3 = b[2 * j + 1];
        float best = v0;
        int bi = r0 + 2 * j;
        bi = v1 > best ? r0 + 2 * j + 1 : bi;
        best = v1 > best ? v1 : best;
        bi = v2 > best ? r0 + W + 2 * j : bi;
        best = v2 > best ? v2 : best;
        bi = v3 > best ? r0 + W + 2 * j + 1 : bi;
        best = v3 > best ? v3 : best;
        o[j] = best;
        if (keep) m[j] = bi;
      }
    }
}

/* One output row of maxpool_forward_2x2 without the winners (inference), from input rows a
 * and b: the same selects, which vectorise (8 wide where the CPU has AVX2). */
CNNB_CLONES static void max2x2_row(const float *restrict a, const float *restrict b, float *restrict o, int OW)
{
  for (int j = 0; j < OW; j++) {
    float best = a[2 * j];
    best = a[2 * j + 1] > best ? a[2 * j + 1] : best;
    best = b[2 * j] > best ? b[2 * j] : best;
    best = b[2 * j + 1] > best ? b[2 * j + 1] : best;
    o[j] = best;
  }
}

/* Any window, stride and padding: the part of each window inside the image is found once per
 * output (no bounds test per element), and the running maximum is kept by selects, with the same
 * winner as a compare-and-branch loop (the first maximum in row-major window order; a NaN first
 * element stays the winner). maxpool_forward calls it with k = 3 and 2 as constants, so that
 * the window loops of the stem's 3x3/2 pad-1 pool of ResNet and of yolov3-tiny's 2x2/1 unroll. */
static inline void maxpool_forward_k(const maxpool_priv *p, const float *in, float *out, int *am, int planes,
                                     int H, int W, int OH, int OW, const int k, const int keep)
{
  const int off = -p->pad / 2, sy = p->stride_y, sx = p->stride_x;
  for (int c = 0; c < planes; c++)
    for (int i = 0; i < OH; i++) {
      const int y0 = off + i * sy;
      const int u0 = y0 < 0 ? -y0 : 0, u1 = H - y0 < k ? H - y0 : k;
      float *o = out + ((size_t)c * OH + i) * OW;
      int *m = keep ? am + ((size_t)c * OH + i) * OW : NULL;
      for (int j = 0; j < OW; j++) {
        const int x0 = off + j * sx;
        const int v0 = x0 < 0 ? -x0 : 0, v1 = W - x0 < k ? W - x0 : k;
        if (u0 >= u1 || v0 >= v1) { /* a window wholly in padding: cannot occur with padding < size */
          o[j] = 0.0f;
          if (keep) m[j] = -1;
          continue;
        }
        int bi = (c * H + y0 + u0) * W + x0 + v0;
        float best = in[bi];
        if (u0 == 0 && u1 == k && v0 == 0 && v1 == k) { /* inside the image: fixed trip counts */
          for (int u = 0; u < k; u++) {
            const int r = (c * H + y0 + u) * W + x0;
            for (int v = 0; v < k; v++) {
              const float x = in[r + v];
              bi = x > best ? r + v : bi;
              best = x > best ? x : best;
            }
          }
        } else {
          for (int u = u0; u < u1; u++) {
            const int r = (c * H + y0 + u) * W + x0;
            for (int v = v0; v < v1; v++) {
              const float x = in[r + v];
              bi = x > best ? r + v : bi;
              best = x > best ? x : best;
            }
          }
        }
        o[j] = best;
        if (keep) m[j] = bi;
      }
    }
}

/* Samples lo..hi-1 (threads take whole samples: argmax indices are per sample); keep: record
 * the winners for backward (a constant at each call, so each variant compiles without the
 * test). */
static inline void forward_samples(cnnb_layer *l, int lo, int hi, const int keep)
{
  const maxpool_priv *p = l->priv;
  const int H = l->in.h, W = l->in.w, C = l->in.c, OH = l->out.h, OW = l->out.w;
  const int off = -p->pad / 2;
  const size_t insz = cnnb_shape_size(l->in), outsz = cnnb_shape_size(l->out);
  if (p->size == 2 && p->stride_x == 2 && p->stride_y == 2 && off == 0 && 2 * OH <= H && 2 * OW <= W) {
    for (int b = lo; b < hi && !keep; b++)
      for (int r = 0; r < C * OH; r++) { /* output row r = (c, i) reads input rows 2r, 2r + 1 of plane c */
        const float *a = l->input + b * insz + ((size_t)(r / OH) * H + 2 * (size_t)(r % OH)) * W;
        max2x2_row(a, a + W, l->output + b * outsz + (size_t)r * OW, OW);
      }
    for (int b = lo; b < hi && keep; b++)
      maxpool_forward_2x2(l->input + b * insz, l->output + b * outsz, keep ? p->argmax + b * outsz : NULL, C, H, W,
                          OH, OW, keep);
    return;
  }
  for (int b = lo; b < hi; b++) {
    const float *in = l->input + b * insz;
    float *out = l->output + b * outsz;
    int *am = keep ? p->argmax + b * outsz : NULL;
    if (p->size == 3)
      maxpool_forward_k(p, in, out, am, C, H, W, OH, OW, 3, keep);
    else if (p->size == 2)
      maxpool_forward_k(p, in, out, am, C, H, W, OH, OW, 2, keep);
    else
      maxpool_forward_k(p, in, out, am, C, H, W, OH, OW, p->size, keep);
  }
}

static void maxpool_forward_range(void *ctx, int lo, int hi)
{
  cnnb_layer *l = ctx;
  const maxpool_priv *p = l->priv;
  if (p->argmax)
    forward_samples(l, lo, hi, 1);
  else
    forward_samples(l, lo, hi, 0);
}

static void maxpool_forward(cnnb_layer *l, cnnb_net *net)
{
  cnnb_pool_for(net->pool, net->batch, maxpool_forward_range, l);
}

static void maxpool_backward_range(void *ctx, int lo, int hi)
{
  cnnb_layer *l = ctx;
  const maxpool_priv *p = l->priv;
  const size_t insz = cnnb_shape_size(l->in), outsz = cnnb_shape_size(l->out);
  for (int b = lo; b < hi; b++) {
    float *din = l->input_delta + b * insz;
    const float *d = l->delta + b * outsz;
    const int *am = p->argmax + b * outsz;
    for (size_t o = 0; o < outsz; o++)
      if (am[o] >= 0) din[am[o]] += d[o];
  }
}

static void maxpool_backward(cnnb_layer *l, cnnb_net *net)
{
  const maxpool_priv *p = l->priv;
  if (l->input_delta && p->argmax) cnnb_pool_for(net->pool, net->batch, maxpool_backward_range, l);
}

static void maxpool_free(cnnb_layer *l)
{
  maxpool_priv *p = l->priv;
  if (p) free(p->argmax);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_maxpool_ops = {
    .section = "maxpool",
    .setup = maxpool_setup,
    .init = maxpool_init,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .free = maxpool_free,
    .loss = NULL,
};
