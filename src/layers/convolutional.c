/* [convolutional]: 2-D cross-correlation (no kernel flip) by im2col + sgemm, with Darknet's
 * keys and defaults (filters 1, size 1, stride 1, pad 0, padding 0, groups 1, batch_normalize 0,
 * activation logistic). pad=1 means padding = size/2 and overrides `padding`.
 * Params: weights [filters, c/groups, size, size], then biases [filters] without BN, or
 * scales, biases, rolling_mean, rolling_variance [filters] with BN (the conv then has no bias of
 * its own: BN's beta plays that role, stored under the same name as Darknet does). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "core/im2col.h"
#include "core/parallel.h"
#include "core/winograd.h"
#include "layers/batchnorm_impl.h"

/* The scatter/gather loops below copy runs of out_h*out_w floats (1 in ResNet's last stage):
 * loops, not memcpy calls (see im2col.c). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

/* The batched convolution's scratch, in floats: a chunk of samples is convolved at once, with
 * their column matrices side by side (K x chunk*out_hw) and the GEMM's F x chunk*out_hw result
 * next to it, so that each weight matrix is packed once per chunk rather than once per sample
 * and the GEMM's N is large enough for OpenBLAS to run near its peak. The chunk is as many
 * samples as fit this budget (at least one). */
#ifndef CNNB_CONV_WS_FLOATS
#define CNNB_CONV_WS_FLOATS ((size_t)256 << 10) /* 1 MiB */
#endif

typedef struct conv_priv {
  int filters, size, stride, pad, groups, bn_on;
  int direct;  /* 1x1, stride 1, no padding: the input already is the column matrix */
  int chunk;   /* samples per GEMM (1: one GEMM per sample straight into the output) */
  int band_rows; /* > 0: forward of one sample in bands of this many output rows */
  int depthwise; /* one input channel and one filter per group: direct loops (conv_forward_dw) */
  int window;  /* the input has no more pixels than the kernel has taps (3x3 on 1x1 or 2x2
                * maps): one dense GEMM per batch, see conv_forward_window */
  int p_weights, p_biases;
  int *taps;   /* window path: window_taps' table (oh*ow x h*w) */
  float *wwin; /* window path: the dense weights, packed by forward (G x fg*ohw x cg*h*w) and
                * reused by backward (the weights do not change in between) */
  int wino_ok;      /* 3x3, stride 1, groups 1: Winograd at inference when large enough (winograd.h) */
  cnnb_wino *wino;  /* its transformed-filter cache, made by the first such forward */
  cnnb_bn bn;
  float *fold;      /* batch norm: 2 x filters, its scale and shift folded for inference */
} conv_priv;


/* The window path (conv_forward_window) when the input has no more pixels than the kernel has
 * taps, and the dense weights (fg*ohw x cg*h*w per group) stay under 16 MiB. */
static int window_fits(int h, int w, int k, int ohw, int cg, int fg, int direct)
{
  return !direct && h * w <= k * k && (size_t)fg * ohw * cg * h * w <= ((size_t)1 << 22);
}
static void window_taps(const conv_priv *p, const cnnb_layer *l, int *tab);

static int conv_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int filters, size, stride, pad, padding, groups, bn_on, dilation, rc;
  if ((rc = cnnb_cfg_int(cfg, s, "filters", 1, 1, 1 << 20, &filters)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "size", 1, 1, 1 << 12, &size)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "stride", 1, 1, 1 << 12, &stride)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "pad", 0, 0, 1 << 12, &pad)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "padding", 0, 0, 1 << 12, &padding)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "groups", 1, 1, 1 << 20, &groups)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "batch_normalize", 0, 0, 1, &bn_on)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "dilation", 1, 1, 1 << 12, &dilation)) < 0) return rc;
  if (dilation != 1)
    return cnnb_error(CNNB_ECFG, "dilation=%d is not supported (only 1)", dilation);
  const char *an = cnnb_cfg_str(s, "activation", "logistic");
  int act = cnnb_act_parse(an);
  if (act < 0)
    return cnnb_error(CNNB_ECFG, "unknown activation '%s' (known: linear, relu, leaky, logistic, tanh, relu6)", an);
  if (pad) padding = size / 2;

  const int c = l->in.c, h = l->in.h, w = l->in.w;
  if (c < 1 || h < 1 || w < 1)
    return cnnb_error(CNNB_ESHAPE, "empty input %dx%dx%d", c, h, w);
  if (c % groups || filters % groups)
    return cnnb_error(CNNB_ESHAPE,
                      "groups=%d must divide input channels %d and filters %d", groups, c, filters);
  if (size > h + 2 * padding || size > w + 2 * padding)
    return cnnb_error(CNNB_ESHAPE,
                      "filter %dx%d larger than padded input %dx%d (pad %d)", size, size, h + 2 * padding, w + 2 * padding, padding);

  l->out.c = filters;
  l->out.h = cnnb_conv_out_size(h, size, padding, stride);
  l->out.w = cnnb_conv_out_size(w, size, padding, stride);
  l->act = (cnnb_act)act;

  conv_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  p->filters = filters;
  p->size = size;
  p->stride = stride;
  p->pad = padding;
  p->groups = groups;
  p->bn_on = bn_on;
  p->direct = size == 1 && stride == 1 && padding == 0;
  /* Depthwise: direct loops. Tried for one input channel and several filters per group too
   * (LeNet-5's C1: 6 filters of 5x5 on 28x28): 30% slower than im2col + GEMM, its rows of 28
   * floats too short for the per-tap loops. */
  p->depthwise = c == groups && filters == groups;
  p->window = !p->depthwise && window_fits(h, w, size, l->out.h * l->out.w, c / groups, filters / groups, p->direct);
  p->wino_ok = size == 3 && stride == 1 && groups == 1 && !p->window;

  int wd[4] = {filters, c / groups, size, size};
  if ((rc = p->p_weights = cnnb_layer_param(l, "weights", 1, 4, wd)) < 0) goto fail;
  if (bn_on) {
    if ((rc = cnnb_bn_setup(&p->bn, l, filters, l->out.h * l->out.w, net)) < 0) goto fail;
    p->p_biases = p->bn.p_biases;
    if (!(p->fold = malloc(sizeof(float) * 2 * (size_t)filters))) {
      cnnb_bn_free(&p->bn);
      rc = cnnb_error(CNNB_ENOMEM, "out of memory");
      goto fail;
    }
  } else {
    int bd[1] = {filters};
    if ((rc = p->p_biases = cnnb_layer_param(l, "biases", 1, 1, bd)) < 0) goto fail;
  }
  l->priv = p;
  /* per sample and group: the column matrix (kk x out_hw) and the GEMM result (fg x out_hw);
   * groups are processed in turn. With one sample per chunk the GEMM writes the output directly,
   * and a direct 1x1 convolution needs no scratch at all. */
  const size_t ohw = (size_t)l->out.h * l->out.w, kk = (size_t)(c / groups) * size * size;
  const size_t per = (kk + (size_t)(filters / groups)) * ohw;
  size_t chunk = CNNB_CONV_WS_FLOATS / (per ? per : 1);
  if (chunk > (size_t)net->max_batch) chunk = (size_t)net->max_batch;
  if (chunk < 1) chunk = 1;
  p->chunk = (int)chunk;
  /* One sample's column matrix over the budget (yolov3-tiny's 416x416 layers: 27 x 173056
   * floats): forward builds it in bands of output rows, each GEMM'd into its rows of the output
   * while still in cache. Only for small weight matrices (few filters, few taps), which every
   * band's GEMM reads again: with 1024 x 4608 weights (yolov3-tiny's 13x13 layer) that re-read
   * from memory costs more than the cache misses it saves. */
  if (chunk == 1 && !p->direct && !p->depthwise && kk * ohw > CNNB_CONV_WS_FLOATS &&
      (size_t)(filters / groups) * kk <= CNNB_CONV_WS_FLOATS / 4) {
    const size_t rows = CNNB_CONV_WS_FLOATS / (kk * (size_t)l->out.w);
    p->band_rows = rows < 1 ? 1 : (int)rows;
  }
  if (p->depthwise)
    l->workspace = 0;
  else if (p->window) { /* dWwin (fg*ohw x cg*h*w) in the workspace; the packed Wwin in p->wwin */
    l->workspace = (size_t)(filters / groups) * ohw * (size_t)(c / groups) * h * w;
    p->wwin = malloc(sizeof(float) * (size_t)filters * ohw * (size_t)(c / groups) * h * w);
    p->taps = malloc(sizeof(int) * ohw * (size_t)h * w);
    if (p->taps) window_taps(p, l, p->taps);
    if (!p->wwin || !p->taps) {
      free(p->wwin);
      free(p->taps);
      l->priv = NULL;
      if (bn_on) cnnb_bn_free(&p->bn);
      free(p->fold);
      rc = cnnb_error(CNNB_ENOMEM, "out of memory");
      goto fail;
    }
  }
  else if (chunk == 1)
    l->workspace = p->direct ? 0 : kk * ohw;
  else
    l->workspace = chunk * per;
  l->madds = (double)l->out.h * l->out.w * filters * (c / groups) * size * size;
  return 0;
fail:
  free(p);
  return rc;
}

static void conv_init(cnnb_layer *l, cnnb_rng *rng)
{
  conv_priv *p = l->priv;
  cnnb_param *wp = &l->param[p->p_weights];
  /* He-normal: keeps activation variance roughly constant through ReLU-like layers */
  const float sd = sqrtf(2.f / (float)(wp->dims[1] * p->size * p->size));
  for (size_t i = 0; i < wp->count; i++) wp->data[i] = sd * cnnb_rng_normal(rng);
  if (p->bn_on)
    cnnb_bn_init(&p->bn, l);
  else
    memset(l->param[p->p_biases].data, 0, sizeof(float) * (size_t)p->filters);
}

/* Sample b's group g of the layer input (cg channels of H x W). */
static inline const float *in_at(const cnnb_layer *l, int b, int g, int cg)
{
  return l->input + ((size_t)b * l->in.c + (size_t)g * cg) * l->in.h * l->in.w;
}

/* The window path. When the input has no more pixels than the kernel has taps (h*w <= k*k: a
 * 3x3 pad-1 conv on 2x2 or 1x1 maps, 3x3/2 on 2x2; ResNet-18-32's stages 3-4), the layer is
 * written as one dense matrix from a sample's input image to its output image: row (f, p) of
 * Wwin holds, at column (c, q), the weight of the tap that output pixel p applies to input pixel
 * q (0 where q is outside p's window). The batch's inputs form a B x (C*h*w) row-major matrix and
 * its outputs a B x (F*oh*ow) one, already NCHW, so forward, dW and dX are each one GEMM over the
 * whole batch, with no im2col, col2im or scatter. K is cg*h*w instead of cg*k*k: no multiply by
 * a padding zero (9x fewer for a 1x1 input, 2.25x for 2x2). Wwin is packed by forward and reused
 * by backward (the weights do not change in between). */
/* tab[p*h*w + q]: the tap (ky*k + kx) that output pixel p applies to input pixel q, or -1 when
 * q is outside p's window. */
static void window_taps(const conv_priv *p, const cnnb_layer *l, int *tab)
{
  const int h = l->in.h, w = l->in.w, k = p->size;
  for (int oy = 0; oy < l->out.h; oy++)
    for (int ox = 0; ox < l->out.w; ox++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
          const int ky = y - (oy * p->stride - p->pad), kx = x - (ox * p->stride - p->pad);
          *tab++ = ky < 0 || ky >= k || kx < 0 || kx >= k ? -1 : ky * k + kx;
        }
}

/* Wwin (fg*ohw x cg*hw) from the group's weights wg (fg x cg x k x k). */
static void window_pack(const conv_priv *p, const cnnb_layer *l, const float *wg, float *wp)
{
  const int cg = l->in.c / p->groups, fg = p->filters / p->groups, hw = l->in.h * l->in.w;
  const int ohw = l->out.h * l->out.w;
  const size_t kk = (size_t)p->size * p->size, row = (size_t)cg * hw;
  const int *tab = p->taps;
  if (hw == 1 && ohw == 1 && tab[0] >= 0) { /* one tap per (filter, channel) */
    const size_t n = (size_t)fg * cg;
    const int t = tab[0];
    for (size_t i = 0; i < n; i++) wp[i] = wg[i * kk + t];
    return;
  }
  for (int f = 0; f < fg; f++)
    for (int c = 0; c < cg; c++) {
      const float *src = wg + ((size_t)f * cg + c) * kk;
      float *dst = wp + (size_t)f * ohw * row + (size_t)c * hw;
      for (int o = 0; o < ohw; o++, dst += row)
        for (int q = 0; q < hw; q++) {
          const int t = tab[o * hw + q];
          dst[q] = t < 0 ? 0.f : src[t];
        }
    }
}

/* dW (fg x cg x k x k) += the taps of dWwin (laid out as Wwin). */
static void window_unpack_add(const conv_priv *p, const cnnb_layer *l, const float *wp, float *gg)
{
  const int cg = l->in.c / p->groups, fg = p->filters / p->groups, hw = l->in.h * l->in.w;
  const int ohw = l->out.h * l->out.w;
  const size_t kk = (size_t)p->size * p->size, row = (size_t)cg * hw;
  const int *tab = p->taps;
  if (hw == 1 && ohw == 1 && tab[0] >= 0) {
    const size_t n = (size_t)fg * cg;
    const int t = tab[0];
    for (size_t i = 0; i < n; i++) gg[i * kk + t] += wp[i];
    return;
  }
  for (int f = 0; f < fg; f++)
    for (int c = 0; c < cg; c++) {
      float *dst = gg + ((size_t)f * cg + c) * kk;
      const float *src = wp + (size_t)f * ohw * row + (size_t)c * hw;
      for (int o = 0; o < ohw; o++, src += row)
        for (int q = 0; q < hw; q++) {
          const int t = tab[o * hw + q];
          if (t >= 0) dst[t] += src[q];
        }
    }
}

static void conv_forward_window(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, F = p->filters, G = p->groups, cg = C / G, fg = F / G;
  const int hw = l->in.h * l->in.w, ohw = l->out.h * l->out.w, kw = cg * hw, kk = cg * p->size * p->size;
  const int nw = fg * ohw; /* rows of Wwin per group */
  const float *weights = l->param[p->p_weights].data;
  for (int g = 0; g < G; g++) {
    float *wp = p->wwin + (size_t)g * nw * kw;
    window_pack(p, l, weights + (size_t)g * fg * kk, wp);
    /* out (B x nw, ld F*ohw) = in (B x kw, ld C*hw) * Wwin^T */
    /* split only when training: a split GEMM may round differently, and inference gives the
     * same bits on any thread count */
    cnnb_pool_sgemm(net->backprop ? net->pool : NULL, 0, 1, net->batch, nw, kw, 1.f, l->input + (size_t)g * kw,
                    C * hw, wp, kw, 0.f, l->output + (size_t)g * nw, F * ohw);
  }
}

static void conv_backward_window(cnnb_layer *l, cnnb_net *net, float *gw)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, F = p->filters, G = p->groups, cg = C / G, fg = F / G;
  const int hw = l->in.h * l->in.w, ohw = l->out.h * l->out.w, kw = cg * hw, kk = cg * p->size * p->size;
  const int nw = fg * ohw;
  for (int g = 0; g < G; g++) {
    if (gw) { /* dWwin (nw x kw) = delta^T (nw x B) * in (B x kw), added into the taps of dW */
      cnnb_pool_sgemm(net->pool, 1, 0, nw, kw, net->batch, 1.f, l->delta + (size_t)g * nw, F * ohw,
                      l->input + (size_t)g * kw, C * hw, 0.f, net->workspace, kw);
      window_unpack_add(p, l, net->workspace, gw + (size_t)g * fg * kk);
    }
    if (l->input_delta) { /* dIn (B x kw) += delta (B x nw) * Wwin (nw x kw), packed by forward */
      cnnb_pool_sgemm(net->pool, 0, 0, net->batch, kw, nw, 1.f, l->delta + (size_t)g * nw, F * ohw,
                      p->wwin + (size_t)g * nw * kw, kw, 1.f, l->input_delta + (size_t)g * kw, C * hw);
    }
  }
}

/* Depthwise path (groups = channels = filters, as in MobileNet-style and face nets): each
 * output plane is its input plane filtered by k*k taps. Through im2col each group was a 1 x N x
 * k*k GEMM, a dozen times slower per multiply-add than a dense layer; here every tap is one
 * multiply-add over a row segment whose taps lie inside the image (dw_range), with no column
 * matrix and no padding zeros. */
static inline void dw_range(int ow, int w, int kx, int stride, int pad, int *lo, int *hi)
{
  /* output columns ox with 0 <= ox*stride - pad + kx < w */
  const int a = pad - kx, b = w - 1 + pad - kx;
  int l = a <= 0 ? 0 : (a + stride - 1) / stride, h = b < 0 ? 0 : b / stride + 1;
  if (h > ow) h = ow;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* Samples s0..s1-1: output channel f of sample b is input channel f / fg (one input channel
 * per group) filtered by f's k*k taps. */
static void conv_forward_dw_samples(cnnb_layer *l, int s0, int s1)
{
  const conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, oh = l->out.h, ow = l->out.w, k = p->size, s = p->stride;
  const int F = p->filters, fg = F / p->groups;
  const float *weights = l->param[p->p_weights].data;
  for (int b = s0; b < s1; b++)
    for (int f = 0; f < F; f++) {
      const float *in = l->input + ((size_t)b * C + f / fg) * H * W, *wc = weights + (size_t)f * k * k;
      float *out = l->output + ((size_t)b * F + f) * oh * ow;
      for (int i = 0; i < oh * ow; i++) out[i] = 0.f;
      for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
          const float wt = wc[ky * k + kx];
          int lo, hi;
          dw_range(ow, W, kx, s, p->pad, &lo, &hi);
          for (int oy = 0; oy < oh; oy++) {
            const int iy = oy * s - p->pad + ky;
            if (iy < 0 || iy >= H || lo >= hi) continue;
            const float *restrict src = in + (size_t)iy * W + (lo * s - p->pad + kx);
            float *restrict dst = out + (size_t)oy * ow + lo;
            if (s == 1) /* contiguous: vectorised */
              for (int x = 0; x < hi - lo; x++) dst[x] += wt * src[x];
            else
              for (int x = 0; x < hi - lo; x++) dst[x] += wt * src[(size_t)x * s];
          }
        }
    }
}

static void conv_forward_dw_range(void *ctx, int lo, int hi) { conv_forward_dw_samples(ctx, lo, hi); }

static void conv_forward_dw(cnnb_layer *l, cnnb_net *net)
{
  cnnb_pool_for(net->pool, net->batch, conv_forward_dw_range, l);
}

/* dW[f, tap] += sum of delta * input over the tap's valid outputs; dIn += w * delta on the same
 * positions, for samples s0..s1-1. delta has already been through the activation and batch norm. */
static void conv_backward_dw_samples(cnnb_layer *l, int s0, int s1, float *gw)
{
  const conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, oh = l->out.h, ow = l->out.w, k = p->size, s = p->stride;
  const int F = p->filters, fg = F / p->groups;
  const float *weights = l->param[p->p_weights].data;
  for (int b = s0; b < s1; b++)
    for (int f = 0; f < F; f++) {
      const size_t io = ((size_t)b * C + f / fg) * H * W;
      const float *in = l->input + io, *d = l->delta + ((size_t)b * F + f) * oh * ow;
      float *din = l->input_delta ? l->input_delta + io : NULL;
      for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
          const int t = f * k * k + ky * k + kx;
          int lo, hi;
          dw_range(ow, W, kx, s, p->pad, &lo, &hi);
          float acc = 0.f;
          for (int oy = 0; oy < oh; oy++) {
            const int iy = oy * s - p->pad + ky;
            if (iy < 0 || iy >= H || lo >= hi) continue;
            const size_t off = (size_t)iy * W + (lo * s - p->pad + kx);
            const float *restrict dr = d + (size_t)oy * ow + lo;
            const int n = hi - lo;
            if (gw) { /* a dot product: 8 partial sums so that it vectorises without -ffast-math */
              const float *restrict src = in + off;
              float part[8] = {0};
              int x = 0;
              if (s == 1)
                for (; x + 8 <= n; x += 8)
                  for (int j = 0; j < 8; j++) part[j] += dr[x + j] * src[x + j];
              for (; x < n; x++) part[0] += dr[x] * src[(size_t)x * s];
              acc += ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
            }
            if (din) {
              const float wt = weights[t];
              float *restrict dst = din + off;
              if (s == 1)
                for (int x = 0; x < n; x++) dst[x] += wt * dr[x];
              else
                for (int x = 0; x < n; x++) dst[(size_t)x * s] += wt * dr[x];
            }
          }
          if (gw) gw[t] += acc;
        }
    }
}

/* Where thread t of a backward region adds its weight gradient: thread 0 into the layer's own
 * (gw), the others into a zeroed buffer past their scratch, which add_thread_grads sums into gw
 * in thread order after the region, so the result depends only on the thread count. */
static float *thread_grad(const cnnb_layer *l, const cnnb_net *net, int t, float *gw)
{
  if (!gw || t == 0) return gw;
  const conv_priv *p = l->priv;
  const size_t nw = l->param[p->p_weights].count;
  float *g = cnnb_net_thread_ws(net, t) + net->nworkspace;
  for (size_t i = 0; i < nw; i++) g[i] = 0.f;
  return g;
}

static void add_thread_grads(const cnnb_layer *l, const cnnb_net *net, float *gw)
{
  if (!gw) return;
  const conv_priv *p = l->priv;
  const size_t nw = l->param[p->p_weights].count;
  for (int t = 1; t < cnnb_pool_size(net->pool); t++) {
    const float *g = cnnb_net_thread_ws(net, t) + net->nworkspace;
    for (size_t i = 0; i < nw; i++) gw[i] += g[i];
  }
}

typedef struct dw_job {
  cnnb_layer *l;
  cnnb_net *net;
  float *gw;
} dw_job;

static void conv_backward_dw_task(void *ctx, int t, int n)
{
  dw_job *j = ctx;
  float *gw = thread_grad(j->l, j->net, t, j->gw);
  int lo, hi;
  cnnb_pool_range(j->net->batch, t, n, &lo, &hi);
  if (lo < hi) conv_backward_dw_samples(j->l, lo, hi, gw);
}

static void conv_backward_dw(cnnb_layer *l, cnnb_net *net, float *gw)
{
  if (!net->pool || net->batch < 2) {
    conv_backward_dw_samples(l, 0, net->batch, gw);
    return;
  }
  dw_job j = {l, net, gw};
  cnnb_pool_run(net->pool, conv_backward_dw_task, &j);
  add_thread_grads(l, net, gw);
}

/* ep (NULL: nothing) on n floats of channel f at o. */
static void ep_apply(const cnnb_wino_ep *ep, int f, float *o, size_t n)
{
  if (ep) cnnb_act_affine(ep->act, o, n, ep->scale ? ep->scale[f] : 1.f, ep->shift ? ep->shift[f] : 0.f);
}

/* Samples s0..s1-1 through the im2col path, with ws as scratch (l->workspace floats): chunks of
 * p->chunk samples as one GEMM, one sample straight into the output, or a large image in bands
 * (conv_setup). ep (bias or folded batch norm, and the activation; NULL when batch norm
 * follows) is applied as each band, sample or chunk is written, while it is in cache, and per
 * sample, so that a thread finishes its own samples. */
static void conv_forward_samples(cnnb_layer *l, cnnb_net *net, int s0, int s1, float *ws, const cnnb_wino_ep *ep)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, F = p->filters, G = p->groups;
  const int cg = C / G, fg = F / G, ohw = l->out.h * l->out.w, kk = cg * p->size * p->size;
  const float *weights = l->param[p->p_weights].data;
  for (int b0 = s0; b0 < s1; b0 += p->chunk) {
    const int nb = s1 - b0 < p->chunk ? s1 - b0 : p->chunk;
    const size_t ld = (size_t)nb * ohw;
    for (int g = 0; g < G; g++) {
      const float *wg = weights + (size_t)g * fg * kk;
      if (nb == 1 && p->band_rows) { /* a large image: bands of output rows (conv_setup) */
        const int oh = l->out.h, ow = l->out.w;
        float *out = l->output + ((size_t)b0 * F + (size_t)g * fg) * ohw;
        for (int y0 = 0; y0 < oh; y0 += p->band_rows) {
          const int y1 = y0 + p->band_rows < oh ? y0 + p->band_rows : oh, n = (y1 - y0) * ow;
          cnnb_im2col_rows(in_at(l, b0, g, cg), cg, H, W, p->size, p->stride, p->pad, y0, y1, ws, (size_t)n);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, fg, n, kk, 1.f, wg, kk, ws, n, 0.f,
                      out + (size_t)y0 * ow, ohw);
          for (int f = 0; ep && f < fg; f++) ep_apply(ep, g * fg + f, out + (size_t)f * ohw + (size_t)y0 * ow, (size_t)n);
        }
        continue;
      }
      if (nb == 1) { /* one sample: the GEMM writes the output in place */
        const float *col = in_at(l, b0, g, cg);
        if (!p->direct) {
          cnnb_im2col(col, cg, H, W, p->size, p->stride, p->pad, ws);
          col = ws;
        }
        float *out = l->output + ((size_t)b0 * F + (size_t)g * fg) * ohw;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, fg, ohw, kk, 1.f, wg, kk, col, ohw, 0.f, out, ohw);
        for (int f = 0; ep && f < fg; f++) ep_apply(ep, g * fg + f, out + (size_t)f * ohw, (size_t)ohw);
        continue;
      }
      /* columns of the chunk side by side: sample i at column i*ohw */
      float *col = ws, *res = ws + (size_t)kk * ld;
      for (int i = 0; i < nb; i++)
        cnnb_im2col_ld(in_at(l, b0 + i, g, cg), cg, H, W, p->size, p->stride, p->pad, col + (size_t)i * ohw, ld);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, fg, (int)ld, kk, 1.f, wg, kk, col, (int)ld, 0.f,
                  res, (int)ld);
      /* fg x (nb*ohw) -> NCHW */
      for (int i = 0; i < nb; i++) {
        float *out = l->output + ((size_t)(b0 + i) * F + (size_t)g * fg) * ohw;
        for (int f = 0; f < fg; f++) {
          float *o = out + (size_t)f * ohw;
          const float *r = res + (size_t)f * ld + (size_t)i * ohw;
          for (int j = 0; j < ohw; j++) o[j] = r[j];
          ep_apply(ep, g * fg + f, o, (size_t)ohw);
        }
      }
    }
  }
}

/* A region of the net's pool: thread t takes its share of the batch (core/parallel.h). In
 * inference, whole chunks of the grid one thread uses (p->chunk samples from sample 0), so that
 * every GEMM sees the same samples whatever the thread count and the outputs have the same bits
 * on 1 or N threads; in training (whose weight gradients depend on the thread count anyway) an
 * even share of samples, since a few large chunks split unevenly (ResNet's 4x4 maps: 3 chunks
 * of 12 for a batch of 32). */
typedef struct conv_job {
  cnnb_layer *l;
  cnnb_net *net;
  const cnnb_wino_ep *ep; /* forward's epilogue (conv_forward_samples) */
} conv_job;

static void chunk_range(const cnnb_layer *l, const cnnb_net *net, int t, int n, int *lo, int *hi)
{
  const int batch = net->batch;
  if (net->backprop) {
    cnnb_pool_range(batch, t, n, lo, hi);
    return;
  }
  const int c = ((const conv_priv *)l->priv)->chunk, nchunks = (batch + c - 1) / c;
  int k0, k1;
  cnnb_pool_range(nchunks, t, n, &k0, &k1);
  *lo = k0 * c < batch ? k0 * c : batch;
  *hi = k1 * c < batch ? k1 * c : batch;
}

static void conv_forward_task(void *ctx, int t, int n)
{
  conv_job *j = ctx;
  int lo, hi;
  chunk_range(j->l, j->net, t, n, &lo, &hi);
  if (lo < hi) conv_forward_samples(j->l, j->net, lo, hi, cnnb_net_thread_ws(j->net, t), j->ep);
}

static void conv_forward(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, F = p->filters;
  const float *weights = l->param[p->p_weights].data;
  /* A net that cannot backpropagate keeps no batch-norm xhat: its batch norm is one affine map
   * per channel, applied with the bias and the activation by the GEMM and Winograd paths as
   * they write the output (ep), instead of two more passes over it. e is NULL when batch norm
   * with batch statistics follows. */
  const int fold = p->bn_on && !net->backprop;
  if (fold) cnnb_bn_fold(&p->bn, l, p->fold, p->fold + F);
  const cnnb_wino_ep ep = {fold ? p->fold : NULL, fold ? p->fold + F : l->param[p->p_biases].data, l->act};
  const cnnb_wino_ep *e = p->bn_on && !fold ? NULL : &ep;
  int applied = 1; /* e applied by the path that wrote the output (not the depthwise and window ones) */
  if (p->depthwise) {
    conv_forward_dw(l, net);
    applied = 0;
  } else if (p->window) {
    conv_forward_window(l, net);
    applied = 0;
  } else if (p->wino_ok && !net->train && cnnb_wino_enabled() && cnnb_wino_worth(net->batch, C, F, l->out.h, l->out.w) &&
             cnnb_wino_forward_ep(&p->wino, 0, weights, F, C, l->input, net->batch, H, W, p->pad, l->output, e) == 0) {
    /* Winograd when not training (it returns -1 only when out of memory: then im2col) */
  } else if (net->pool && net->batch > 1) {
    conv_job j = {l, net, e};
    cnnb_pool_run(net->pool, conv_forward_task, &j);
  } else {
    conv_forward_samples(l, net, 0, net->batch, net->workspace, e);
  }
  if (applied && e) return;
  if (p->bn_on) { /* normalise, scale, shift and activate in one pass (one affine pass when folded) */
    cnnb_bn_forward_act(&p->bn, l, l->output, net->batch, net->train, l->act);
    return;
  }
  const size_t ohw = (size_t)l->out.h * l->out.w; /* the depthwise and window paths: bias and activation */
  for (int b = 0; b < net->batch; b++)
    for (int f = 0; f < F; f++) ep_apply(&ep, f, l->output + ((size_t)b * F + f) * ohw, ohw);
}

/* dW (added into gw when not NULL) and dIn of samples s0..s1-1 through the im2col path, from
 * delta already through the activation and batch norm; ws is scratch of l->workspace floats. */
static void conv_backward_samples(cnnb_layer *l, cnnb_net *net, int s0, int s1, float *ws, float *gw)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, F = p->filters, G = p->groups;
  const int cg = C / G, fg = F / G, ohw = l->out.h * l->out.w, kk = cg * p->size * p->size;
  const float *weights = l->param[p->p_weights].data;
  const float *delta = l->delta;
  for (int b0 = s0; b0 < s1; b0 += p->chunk) {
    const int nb = s1 - b0 < p->chunk ? s1 - b0 : p->chunk;
    const size_t ld = (size_t)nb * ohw;
    for (int g = 0; g < G; g++) {
      const float *wg = weights + (size_t)g * fg * kk;
      const size_t in_off = ((size_t)b0 * C + (size_t)g * cg) * H * W;
      if (nb == 1) { /* one sample: delta and input are the GEMM operands as they are */
        const float *d = delta + ((size_t)b0 * F + (size_t)g * fg) * ohw;
        if (gw) {
          const float *col = l->input + in_off;
          if (!p->direct) {
            cnnb_im2col(col, cg, H, W, p->size, p->stride, p->pad, ws);
            col = ws;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, fg, kk, ohw, 1.f, d, ohw, col, ohw, 1.f,
                      gw + (size_t)g * fg * kk, kk);
        }
        if (l->input_delta) {
          float *id = l->input_delta + in_off;
          if (p->direct) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, ohw, fg, 1.f, wg, kk, d, ohw, 1.f,
                        id, ohw);
          } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, ohw, fg, 1.f, wg, kk, d, ohw, 0.f,
                        ws, ohw);
            cnnb_col2im_add(ws, cg, H, W, p->size, p->stride, p->pad, id);
          }
        }
        continue;
      }
      float *col = ws, *dm = ws + (size_t)kk * ld;
      /* NCHW -> fg x (nb*ohw) */
      for (int i = 0; i < nb; i++) {
        const float *d = delta + ((size_t)(b0 + i) * F + (size_t)g * fg) * ohw;
        for (int f = 0; f < fg; f++) {
          float *o = dm + (size_t)f * ld + (size_t)i * ohw;
          const float *r = d + (size_t)f * ohw;
          for (int j = 0; j < ohw; j++) o[j] = r[j];
        }
      }
      if (gw) { /* dW += delta(fg x nb*ohw) * col^T: the batch folded into the inner dimension */
        for (int i = 0; i < nb; i++)
          cnnb_im2col_ld(in_at(l, b0 + i, g, cg), cg, H, W, p->size, p->stride, p->pad, col + (size_t)i * ohw, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, fg, kk, (int)ld, 1.f, dm, (int)ld, col, (int)ld, 1.f,
                    gw + (size_t)g * fg * kk, kk);
      }
      if (l->input_delta) { /* dcol = W^T * delta for the chunk, then col2im per sample */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, (int)ld, fg, 1.f, wg, kk, dm, (int)ld, 0.f, col,
                    (int)ld);
        for (int i = 0; i < nb; i++)
          cnnb_col2im_add_ld(col + (size_t)i * ohw, ld, cg, H, W, p->size, p->stride, p->pad,
                             l->input_delta + ((size_t)(b0 + i) * C + (size_t)g * cg) * H * W);
      }
    }
  }
}

/* Thread t's samples; its weight gradient goes where thread_grad says. */
static void conv_backward_task(void *ctx, int t, int n)
{
  conv_job *j = ctx;
  const conv_priv *p = j->l->priv;
  int lo, hi;
  chunk_range(j->l, j->net, t, n, &lo, &hi);
  float *gw = thread_grad(j->l, j->net, t, j->l->param[p->p_weights].grad);
  if (lo < hi) conv_backward_samples(j->l, j->net, lo, hi, cnnb_net_thread_ws(j->net, t), gw);
}

static void conv_backward(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int F = p->filters, ohw = l->out.h * l->out.w;
  float *gw = l->param[p->p_weights].grad;
  float *delta = l->delta;

  if (p->bn_on && l->act == CNNB_ACT_RELU) { /* the activation's derivative inside BN's sweep */
    cnnb_bn_backward_relu(&p->bn, l, l->output, delta, net->batch, net->train);
  } else if (p->bn_on) {
    cnnb_act_backward(l->act, l->output, delta, (size_t)net->batch * F * ohw);
    cnnb_bn_backward(&p->bn, l, delta, delta, net->batch, net->train, 0);
  } else {
    cnnb_act_backward(l->act, l->output, delta, (size_t)net->batch * F * ohw);
  }
  if (!p->bn_on && l->param[p->p_biases].grad) {
    float *gb = l->param[p->p_biases].grad;
    for (int b = 0; b < net->batch; b++)
      for (int f = 0; f < F; f++) {
        const float *d = delta + ((size_t)b * F + f) * ohw;
        float s = 0.f;
        for (int k = 0; k < ohw; k++) s += d[k];
        gb[f] += s;
      }
  }
  if (!gw && !l->input_delta) return;
  if (p->depthwise) {
    conv_backward_dw(l, net, gw);
    return;
  }
  if (p->window) {
    conv_backward_window(l, net, gw);
    return;
  }
  if (!net->pool || net->batch < 2) {
    conv_backward_samples(l, net, 0, net->batch, net->workspace, gw);
    return;
  }
  conv_job j = {l, net, NULL};
  cnnb_pool_run(net->pool, conv_backward_task, &j);
  add_thread_grads(l, net, gw);
}

static void conv_free(cnnb_layer *l)
{
  conv_priv *p = l->priv;
  if (!p) return;
  if (p->bn_on) cnnb_bn_free(&p->bn);
  free(p->wwin);
  free(p->taps);
  cnnb_wino_free(p->wino);
  free(p->fold);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_convolutional_ops = {
  .section = "convolutional",
  .setup = conv_setup,
  .init = conv_init,
  .forward = conv_forward,
  .backward = conv_backward,
  .free = conv_free,
  .loss = NULL,
};
